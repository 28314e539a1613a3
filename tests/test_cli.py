"""The command line's error lines: one line, without the traceback a DataLoader worker wraps an error in."""

from __future__ import annotations

import pytest
from torch.utils.data import DataLoader, IterableDataset

from mmadapter.cli import _without_worker_traceback
from mmadapter.data.skips import BadSample, NoUsableSamples


class Failing(IterableDataset):
    """Raises ``error`` in its loader worker, chained to a skip, as the data pipeline's errors are."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __iter__(self):
        try:
            raise BadSample("bad_json", "k", "not JSON")
        except BadSample:
            raise self.error  # noqa: B904 - chained on purpose, as in the data pipeline
        yield


def from_a_worker(error: BaseException) -> BaseException:
    """``error`` as torch's DataLoader re-raises it in the main process (its worker's traceback in the message)."""
    with pytest.raises(type(error)) as info:
        next(iter(DataLoader(Failing(error), batch_size=None, num_workers=1)))
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
