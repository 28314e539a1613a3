"""Data loaders for training and validation, built from a recipe's data section and the trainer's rank."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from mmadapter.batch import MultimodalBatch
from mmadapter.config import DataConfig, Recipe, StageConfig
from mmadapter.data.pipeline import ShardStream, StreamPosition
from mmadapter.model import MultimodalLM

__all__ = ["Passes", "SkipFirst", "stage_data", "train_loader", "val_loader"]


class SkipFirst:
    """Iterate a loader without its first ``n`` batches: a resumed run regenerates the deterministic stream
    and skips what the killed run consumed. Every iterator skips them (Lightning may open one to probe the
    loader before training), which is right for the endless resampled stream this wraps."""

    def __init__(self, loader: DataLoader, n: int = 0) -> None:
        self.loader = loader
        self.n = n

    def __iter__(self) -> Iterator[MultimodalBatch]:
        return itertools.islice(iter(self.loader), self.n, None)


class Passes:
    """Iterate a one-pass loader, numbering each pass on its stream first (:attr:`ShardStream.passes`, read by
    the loader's workers, which start after it), so that validation passes after the first do not warn again
    about the samples the first one warned about. A pass begins with its first batch: an iterator that is
    opened and never read (Lightning probes its loaders so) neither counts nor starts the workers."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[MultimodalBatch]:
        self.loader.dataset.passes += 1
        yield from self.loader


def stage_data(recipe: Recipe, stage: StageConfig) -> DataConfig:
    """The recipe's data section with the stage's overrides applied (:meth:`DataConfig.with_overrides`)."""
    return recipe.data.with_overrides(stage.data) if stage.data else recipe.data


def train_loader(
    model: MultimodalLM,
    data: DataConfig,
    seed: int,
    rank: int,
    world_size: int,
    skip_batches: int = 0,
    base: Path | None = None,
) -> SkipFirst:
    """An endless (resampled) stream of training batches for this rank."""
    if not data.train:
        raise ValueError("data.train is empty: name at least one shard set ({shards: ..., weight: ...})")
    stream = ShardStream(
        data.train,
        model.prepare_decoded,
        data,
        model.tokenizer.pad_token_id,
        StreamPosition(seed=seed, rank=rank, world_size=world_size),
        resampled=True,
        base=base,
    )
    return SkipFirst(_loader(stream, data.num_workers), skip_batches)


def val_loader(model: MultimodalLM, data: DataConfig, seed: int, rank: int, world_size: int) -> Passes | None:
    """One pass over ``data.val`` split across ranks, or ``None`` without validation data."""
    if not data.val:
        return None
    stream = ShardStream(
        data.val,
        model.prepare_decoded,
        data,
        model.tokenizer.pad_token_id,
        StreamPosition(seed=seed, rank=rank, world_size=world_size),
        resampled=False,
    )
    return Passes(_loader(stream, min(data.num_workers, 1)))


def _loader(stream: ShardStream, workers: int) -> DataLoader:
    return DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=_as_is, persistent_workers=False)


def _as_is(batch: Any) -> Any:
    return batch
