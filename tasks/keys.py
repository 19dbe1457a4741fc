"""Job ids, queue names and Redis keys.

The job id is a content hash, so the id *is* the cache key: the same model, variant,
version and input always map to the same Celery result key.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping

import numpy as np

from tasks import constants as C
from tasks.codec import contiguous, quote
from tasks.errors import BadInput

#: Model and variant names: no path separators, no dots (they delimit queue names).
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")


def check_name(kind: str, name: str) -> str:
    """Refuse names that could escape the models folder or break queue names."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise BadInput(
            f"{kind} name must match {NAME_RE.pattern} (letters, digits, _ and -), got {quote(name)}"
        )
    return name


#: A job id as callers hand it back: inferq's (32 hex digits, ``nc-`` + 32), a bulk item's,
#: or a plain Celery client's uuid4.
JOB_ID_RE = re.compile(r"[A-Za-z0-9\-]{1,64}")


def check_job_id(job_id: str) -> str:
    """Refuse a malformed id before any Redis call (it may come from a URL or a browser)."""
    if not isinstance(job_id, str) or not JOB_ID_RE.fullmatch(job_id):
        raise BadInput(f"a job id is 1 to 64 letters, digits and '-', got {quote(job_id)}")
    return job_id


def job_id(model: str, variant: str, version: str, inputs: Mapping[str, np.ndarray]) -> str:
    """Content hash of what determines a result: model, variant, version and the input.

    Inputs are hashed by name, dtype, shape and raw bytes in name order, so the same
    logical input hashes the same whatever dict order or memory layout it came in.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(f"v{C.WIRE_VERSION}\0{model}\0{variant}\0{version}\0".encode())
    for name in sorted(inputs):
        arr = contiguous(inputs[name])
        h.update(f"{name}\0{arr.dtype.str}\0{arr.shape}\0".encode())
        flat = arr.reshape(-1).view(np.uint8).data
        size = len(flat)
        if size <= _HASH_PIECES_UP_TO:
            # In pieces hashlib hashes holding the GIL, as ``job_ids`` does (why: there).
            for at in range(0, size, _HASH_PIECE):
                h.update(flat[at : at + _HASH_PIECE])
        else:
            h.update(flat)
    return h.hexdigest()


def job_ids(model: str, variant: str, version: str, stacked: Mapping[str, np.ndarray]) -> list[str]:
    """``job_id`` of each row of stacked inputs (row ``i`` of each array is input ``i``),
    equal to ``job_id`` of that row alone: the shared prefix is hashed once, then copied.

    A small row is fed in pieces under 2 KiB: hashlib lets go of the GIL for bigger
    updates, and getting it back behind a busy thread (the client's result listener)
    cost ten times the hashing itself.
    """
    base = hashlib.blake2b(digest_size=16)
    base.update(f"v{C.WIRE_VERSION}\0{model}\0{variant}\0{version}\0".encode())
    parts = []
    n = 0
    for name in sorted(stacked):
        arr = contiguous(stacked[name])
        n = len(arr)
        head = f"{name}\0{arr.dtype.str}\0{arr.shape[1:]}\0".encode()
        size = arr[0].nbytes if n else 0
        step = _HASH_PIECE if size <= _HASH_PIECES_UP_TO else max(1, size)
        parts.append((head, arr.reshape(-1).view(np.uint8).data, size, step))
    out = []
    for i in range(n):
        h = base.copy()
        for head, flat, size, step in parts:
            h.update(head)
            row = flat[i * size : (i + 1) * size]
            for at in range(0, size, step):
                h.update(row[at : at + step])
        out.append(h.hexdigest())
    return out


#: ``job_ids`` hashes rows up to ``_HASH_PIECES_UP_TO`` bytes in pieces that hashlib
#: hashes holding the GIL (it lets go from 2048 bytes on).
_HASH_PIECE = 2047
_HASH_PIECES_UP_TO = 64 * 1024


def random_job_id() -> str:
    """An id for a job that opted out of the cache: it must never collide with one."""
    return "nc-" + uuid.uuid4().hex


def queue_name(model: str, variant: str) -> str:
    return f"{C.QUEUE_PREFIX}.{model}.{variant}"


def result_key(job_id: str) -> str:
    return f"{C.RESULT_KEY_PREFIX}{job_id}"


def input_key(job_id: str, nonce: str) -> str:
    """Where a large input waits beside its message (the nonce keeps resends apart)."""
    return f"{C.INPUT_KEY_PREFIX}{job_id}:{nonce}"


def handle_key(handle: str) -> str:
    return f"{C.HANDLE_KEY_PREFIX}{handle}"


def owners_key(job_id: str) -> str:
    return f"{C.OWNERS_KEY_PREFIX}{job_id}"


def inflight_key(job_id: str) -> str:
    return f"{C.INFLIGHT_KEY_PREFIX}{job_id}"
