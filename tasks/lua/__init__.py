"""The Lua scripts inferq runs inside Redis, one ``.lua`` file each, read at start-up.

Each script is atomic in Redis, which is why it is Lua rather than Python: a claim is
checked and taken, a message is popped and recorded, a lease is re-checked and taken
back, all with nothing in between. A script may start with shared pieces
(``claim.lua``, ``status_record.lua``); ``source`` joins them in the order given. The
formats they read and write are those of ``tasks/wire/`` and ``tasks/kombu_layout.py``,
and tests hold each Lua reader to agreeing with its Python twin.
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def source(*names: str) -> str:
    """The text of ``names`` (without ``.lua``), joined in order: libraries first, then the script."""
    folder = resources.files(__package__)
    return "\n".join(folder.joinpath(f"{name}.lua").read_text(encoding="utf-8") for name in names)
