"""Worker start-up: the ``inferq worker`` and ``inferq models`` commands, loading models,
announcing them, and running the job path inside a Celery worker (``start``)."""
