"""The errors a conversion reports, each naming what to change.

They are ``BadInput``: the model or the data given is the problem, and the command
line shows each as one line, ``inferq: <Kind>: ...``.
"""

from __future__ import annotations

from tasks.errors import BadInput


class CalibrationRequired(BadInput):
    """A mode that quantizes activations was asked for without calibration data."""


class UnreadableModel(BadInput):
    """The source file or folder is not a model this tool can read (corrupt, wrong kind)."""


class UnsupportedOps(BadInput):
    """The model uses operations the target (TFLite builtins, int8 kernels) lacks."""


class ConversionFailed(BadInput):
    """The converter or quantizer refused the model for another reason (its words kept)."""
