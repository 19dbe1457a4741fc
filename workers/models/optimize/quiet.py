"""Keep the converters' own console chatter out of the command's output.

TensorFlow's converter and the LiteRT quantizer write progress and warnings straight
to file descriptors 1 and 2 from C++ (``TF_CPP_MIN_LOG_LEVEL`` does not reach all of
it). A command's output should be its result, or its one-line error, so both
descriptors point at a temporary file while a tool runs; the text is kept for the
error message when the tool fails.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


class Captured:
    """What a tool wrote while captured (read after the block ends)."""

    text: str = ""


@contextlib.contextmanager
def captured_output() -> Iterator[Captured]:
    """Point fds 1 and 2 at a temporary file for the block; its text in ``.text`` afterwards."""
    out = Captured()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield out
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            out.text = sink.read().decode(errors="replace")
