"""The request parameters the gateway reads itself (priority, no_cache, deadline_ms), without Redis."""

from __future__ import annotations

import pytest

from gateway.dataplane import _submit_options
from tasks.errors import BadInput


@pytest.mark.parametrize(
    ("given", "priority"),
    [("high", "high"), ("low", "low"), (0, "normal"), (1, "high"), (2, "normal"), (3, "low")],
)
def test_priority_is_a_name_or_tritons_integer_form(given, priority):
    # tritonclient reserves the name "priority" and sends only an integer (1 the highest).
    assert _submit_options({"priority": given}) == {"priority": priority}


@pytest.mark.parametrize("given", [4, -1, True, 1.0, "1", "urgent", None, [1]])
def test_any_other_priority_is_400_naming_both_forms(given):
    with pytest.raises(
        BadInput, match=r"expected one of high, low, normal, or Triton.s 0 \(the default\) to 3"
    ):
        _submit_options({"priority": given})


def test_no_parameters_pass_no_options():
    assert _submit_options({}) == {}
