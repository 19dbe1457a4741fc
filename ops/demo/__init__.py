"""``inferq demo``: the whole path on one machine, and what ``--keep`` leaves running."""
