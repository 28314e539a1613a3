"""A resume checkpoint restores every random generator a training step may draw from."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from conftest import tiny_recipe

from mmadapter.model import MultimodalLM
from mmadapter.train.checkpoint_io import SafeCheckpointIO
from mmadapter.train.module import StageModule
from mmadapter.train.rng import restore_rng_states, rng_states


def draws() -> tuple[float, float, float]:
    return torch.rand(1).item(), random.random(), float(np.random.rand())


def test_rng_states_survive_a_weights_only_checkpoint(tmp_path: Path) -> None:
    recipe = tiny_recipe()
    module = StageModule(MultimodalLM.from_recipe(recipe), recipe.train.stages[0], recipe.train, 5, 0.05)
    module._trainer = SimpleNamespace(global_step=0, global_rank=0, world_size=1, accumulate_grad_batches=1)
    module.counts.tokens, module.counts.samples = 70, 3
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    module.counts.tokens = 99
    io = SafeCheckpointIO()
    io.save_checkpoint(checkpoint, tmp_path / "state.ckpt")
    expected = draws()
    draws()  # the generators move on, as a killed run's would
    module.on_load_checkpoint(io.load_checkpoint(tmp_path / "state.ckpt"))  # weights_only=True
    assert draws() == expected
    assert (module.counts.tokens, module.counts.samples, module.counts.resumed_tokens) == (70, 3, 70)
    # a checkpoint from before per-rank counts: its rank-0 tokens and skips still count
    old = {"stage": recipe.train.stages[0].name, "tokens": 40, "skips": {"ok": 5, "by_reason": {"bad_json": 1}}}
    module.on_load_checkpoint({"mmadapter": old})
    assert (module.counts.tokens, module.counts.resumed_tokens, module.counts.skips.skipped) == (40, 40, 1)


def test_each_rank_gets_its_own_states_back() -> None:
    torch.manual_seed(0)
    first = rng_states()
    expected_first = draws()
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    second = rng_states()
    expected_second = draws()
    restore_rng_states([first, second], rank=1)
    assert draws() == expected_second
    restore_rng_states([first, second], rank=0)
    assert draws() == expected_first
    restore_rng_states([first], rank=1)  # resumed on more ranks than were saved: rank 0's, with a warning
    assert draws() == expected_first
