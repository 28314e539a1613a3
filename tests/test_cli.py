"""The command line's error lines: one line, without the traceback a DataLoader worker wraps an error in."""

from __future__ import annotations

import pytest
from torch._utils import ExceptionWrapper

from mmadapter.cli import _without_worker_traceback
from mmadapter.data.skips import BadSample, NoUsableSamples


def from_a_worker(error: BaseException) -> BaseException:
    """``error`` as torch's DataLoader re-raises it in the main process (its worker's traceback in the message)."""
    try:
        try:
            raise BadSample("bad_json", "k", "not JSON")
        except BadSample:
            raise error  # noqa: B904 - chained on purpose, as in the data pipeline
    except type(error):
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(type(error)) as info:
        wrapped.reraise()
    return info.value


@pytest.mark.parametrize(
    "error",
    [NoUsableSamples("nothing passed: check the shards"), ValueError("bad: x"), FileNotFoundError("gone: a.tar")],
)
def test_an_error_from_a_loader_worker_prints_as_its_own_message(error: BaseException) -> None:
    reraised = from_a_worker(error)
    assert str(reraised).startswith("Caught ") and "Traceback" in str(reraised)
    assert _without_worker_traceback(str(reraised), reraised) == str(error)


def test_other_messages_are_left_as_they_are() -> None:
    assert _without_worker_traceback("recipe not found: x.yaml", ValueError()) == "recipe not found: x.yaml"
