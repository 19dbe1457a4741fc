# One image for every inferq service: worker, Flower, model builder, producers.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tasks tasks
COPY workers workers
COPY producers producers
COPY ops ops
COPY gateway gateway
RUN pip install --no-cache-dir ".[cli,worker,tf,flower,gateway]"
ENV INFERQ_MODELS_DIR=/models
ENTRYPOINT ["inferq"]
