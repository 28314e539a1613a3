"""Per-rank stage counts: their sum, and how a resume hands each rank its own (or rank 0 all of them)."""

from __future__ import annotations

from mmadapter.data.skips import BadSample, SkipCounter
from mmadapter.train.counts import StageCounts


def counts(tokens: int, samples: int, bad: int = 0) -> StageCounts:
    skips = SkipCounter()
    for _ in range(samples):
        skips.record_ok()
    for i in range(bad):
        skips.record(BadSample("corrupt_audio", f"k{i}", "cut short"))
    return StageCounts(tokens, samples, 0, skips)


def test_counts_add_up_and_survive_a_checkpoint_round_trip() -> None:
    total = counts(100, 4, bad=1) + counts(50, 2, bad=2)
    assert (total.tokens, total.samples, total.skips.seen, total.skips.by_reason()) == (150, 6, 9, {"corrupt_audio": 3})
    again = StageCounts.from_dict(total.as_dict())
    assert again.as_dict() == total.as_dict()
    assert StageCounts().over_ranks().as_dict() == StageCounts().as_dict()  # one process: itself


def test_a_resume_gives_each_rank_its_own_counts_all_from_before_the_resume() -> None:
    saved = [counts(100, 4).as_dict(), counts(50, 2, bad=1).as_dict()]
    one = StageCounts.resumed(saved, rank=1, world_size=2)
    assert (one.tokens, one.samples, one.resumed_tokens, one.skips.skipped) == (50, 2, 50, 1)
    # another number of ranks: rank 0 carries the sum, so the run's totals stay right
    zero, two = (StageCounts.resumed(saved, rank=r, world_size=3) for r in (0, 2))
    assert (zero.tokens, zero.samples, zero.resumed_tokens, zero.skips.skipped) == (150, 6, 150, 1)
    assert (two.tokens, two.samples, two.resumed_tokens) == (0, 0, 0)
