# One image for every inferq service: worker, Flower, model builder, producers.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tasks tasks
COPY workers workers
COPY producers producers
COPY ops ops
COPY gateway gateway
RUN pip install --no-cache-dir ".[cli,worker,tf,flower,gateway,bench]"
# Not root: a process that only reads models and talks to Redis needs no privileges.
# /models is created here, owned by that user, so a new named volume mounted there
# starts with the same owner and `models build-examples` can write into it.
RUN useradd --create-home --uid 10001 inferq && mkdir /models && chown inferq /models
USER inferq
ENV INFERQ_MODELS_DIR=/models
ENTRYPOINT ["inferq"]
