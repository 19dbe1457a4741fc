"""Operator tools: the ``inferq`` command line and what it runs on one machine.

Nothing here is imported by ``producers`` (the client library) or ``workers``: a web
backend installs and imports ``producers`` without these tools, and a worker runs
without them. The rooms:

- ``cli.py``: the ``inferq`` command (it hands ``worker`` and ``models`` to
  ``workers.boot.cli``);
- ``demo/``: ``inferq demo`` and what ``--keep`` leaves running;
- ``bench/``: ``inferq bench`` and ``inferq tune`` (load generation, reports, the
  worker processes they start themselves);
- ``flower/``: ``inferq flower`` and its view of every model queue;
- ``local/``: a private ``redis-server`` and the child processes these tools start;
- ``status.py``, ``stats.py``, ``input_files.py``: ``inferq status``, latency
  statistics, and reading ``inferq submit``'s input files.
"""
