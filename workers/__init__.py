"""The worker side: model registry, runtimes (LiteRT, TensorFlow), pipeline, start-up.

Nothing here is imported by ``producers``; runtimes import their backend lazily.
"""
