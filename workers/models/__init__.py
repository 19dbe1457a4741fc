"""Stage 2: the models a worker loaded once at start-up.

``registry`` is the models folder (one ``meta.json`` per variant); ``runtimes/`` runs a
batch through LiteRT or TensorFlow; ``examples`` builds the example models locally.
"""
