"""What a stage trained on — tokens, samples, the samples its data stream skipped — counted by each rank,
kept per rank in resume checkpoints, and summed over ranks for the run's summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmadapter.data.skips import SkipCounter
from mmadapter.train.ranks import gather_from_ranks

__all__ = ["StageCounts"]


@dataclass
class StageCounts:
    """One rank's counts of one stage (or their sum over ranks).

    Attributes:
        tokens: Tokens in the batches it trained on.
        samples: Samples in those batches.
        resumed_tokens: Of ``tokens``, those counted before the run was resumed.
        skips: The data stream's samples read and skipped, by reason (judged by ``max_bad_fraction``).
    """

    tokens: int = 0
    samples: int = 0
    resumed_tokens: int = 0
    skips: SkipCounter = field(default_factory=SkipCounter)

    def __add__(self, other: StageCounts) -> StageCounts:
        skips = SkipCounter()
        skips.merge(self.skips)
        skips.merge(other.skips)
        return StageCounts(
            self.tokens + other.tokens, self.samples + other.samples, self.resumed_tokens + other.resumed_tokens, skips
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, and of types a ``weights_only`` checkpoint load accepts."""
        return {
            "tokens": self.tokens,
            "samples": self.samples,
            "resumed_tokens": self.resumed_tokens,
            "skips": self.skips.as_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageCounts:
        skips = SkipCounter.from_dict(data.get("skips", {}))
        return cls(int(data.get("tokens", 0)), int(data.get("samples", 0)), int(data.get("resumed_tokens", 0)), skips)

    def over_ranks(self) -> StageCounts:
        """The sum over every rank (a collective call: every rank must make it)."""
        return sum((StageCounts.from_dict(d) for d in gather_from_ranks(self.as_dict())), StageCounts())

    @classmethod
    def resumed(cls, per_rank: list[dict[str, Any]], rank: int, world_size: int) -> StageCounts:
        """This rank's counts from a checkpoint's per-rank list, all of them from before the resume. With
        another number of ranks than the checkpoint's, rank 0 takes the sum and the others start at 0."""
        if len(per_rank) == world_size:
            mine = cls.from_dict(per_rank[rank])
        elif rank == 0:
            mine = sum((cls.from_dict(d) for d in per_rank), StageCounts())
        else:
            mine = StageCounts()
        mine.resumed_tokens = mine.tokens
        return mine
