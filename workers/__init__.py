"""The worker side, in the order a job meets it.

- ``boot/``: start-up. Load every model once per process, announce it, run the job
  path inside a Celery worker (events, heartbeats, remote control).
- ``broker/``: take messages off the model queues (atomic fetch, leases, envelope,
  inputs stored beside a message).
- ``models/``: the registry and the runtimes (LiteRT, TensorFlow) that run a batch.
- ``serving/``: decode, validate, batch, predict, store the result (the cache), ack.

Nothing here is imported by ``producers`` or ``tasks``; runtimes import their backend
(LiteRT, TensorFlow) lazily.
"""
