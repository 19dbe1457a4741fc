"""``inferq flower``: Flower on inferq's Celery app, aware of every model queue."""
