"""Stage 1 of a job's path: taking messages off Redis without losing any.

``doorbell`` wakes an idle worker when a queue changes; ``fetcher`` takes messages in
one atomic Lua call and records them as unacknowledged; ``leases`` keeps those records
alive while this worker lives (and takes back a dead worker's); ``envelope`` reads a
kombu message into job requests; ``stored_inputs`` reads inputs that travelled beside
their message; ``retry`` rides out a Redis outage for the writes that must not be lost.
"""
