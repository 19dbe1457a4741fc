"""``inferq bench`` and ``inferq tune``: load through the real system, latency and throughput."""
