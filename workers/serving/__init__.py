"""Stage 3: from a decoded request to a stored result.

``consumer`` drives the path (fetch -> decode -> validate -> batch -> predict -> store
-> ack); ``pipeline`` holds the per-job stages; ``batcher`` groups jobs and hands
computed batches to the completer; ``store`` writes results (the cache); ``events``
and ``metrics`` tell Flower and Prometheus what happened.
"""
