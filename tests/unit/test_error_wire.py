"""tasks/errors.py: the error hierarchy, its cacheable flags and how errors cross the wire."""

from __future__ import annotations

import pytest

from tasks.errors import (
    BadInput,
    ConfigError,
    Expired,
    InferqError,
    ModelNotFound,
    PayloadTooLarge,
    Timeout,
    TransientError,
    error_from_wire,
)

ALL = [InferqError, BadInput, PayloadTooLarge, ModelNotFound, TransientError, Timeout, Expired, ConfigError]


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_each_known_error_round_trips_by_class_name_with_its_message(cls):
    original = cls("input 'x': expected dtype float32, got float64")
    # Celery stores exc_type as the class name and exc_message as the exception's args.
    back = error_from_wire(type(original).__name__, original.args)
    assert type(back) is cls
    assert back.message == original.message
    assert str(back) == "input 'x': expected dtype float32, got float64"


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_error_message_may_come_as_a_plain_string(cls):
    back = error_from_wire(cls.__name__, "plain message")
    assert type(back) is cls
    assert str(back) == "plain message"


def test_multi_part_message_is_joined_with_spaces():
    assert str(error_from_wire("BadInput", ["a", 1, "b"])) == "a 1 b"


def test_unknown_type_becomes_transient_error_naming_the_original_type():
    back = error_from_wire("ZeroDivisionError", ["division by zero"])
    assert type(back) is TransientError
    assert str(back) == "ZeroDivisionError: division by zero"
    assert not back.cacheable


def test_non_inferq_builtin_with_a_known_looking_name_is_still_unknown():
    back = error_from_wire("TimeoutError", ("took too long",))
    assert type(back) is TransientError
    assert "TimeoutError: took too long" in str(back)


@pytest.mark.parametrize(
    ("cls", "cacheable"),
    [
        (BadInput, True),
        (PayloadTooLarge, True),
        (InferqError, False),
        (ModelNotFound, False),
        (TransientError, False),
        (Timeout, False),
        (Expired, False),
        (ConfigError, False),
    ],
)
def test_only_input_errors_are_cacheable(cls, cacheable):
    assert cls.cacheable is cacheable
    assert cls("m").cacheable is cacheable


@pytest.mark.parametrize("cls", ALL[1:], ids=lambda c: c.__name__)
def test_every_error_is_an_inferq_error(cls):
    assert issubclass(cls, InferqError)
    assert issubclass(cls, Exception)
