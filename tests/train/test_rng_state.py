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


def draws() -> tuple[float, float, float]:
    return torch.rand(1).item(), random.random(), float(np.random.rand())


def test_rng_states_survive_a_weights_only_checkpoint(tmp_path: Path) -> None:
    recipe = tiny_recipe()
    module = StageModule(MultimodalLM.from_recipe(recipe), recipe.train.stages[0], recipe.train, 5, 0.05)
    module._trainer = SimpleNamespace(global_step=0, accumulate_grad_batches=1)  # what the hook reads
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    io = SafeCheckpointIO()
    io.save_checkpoint(checkpoint, tmp_path / "state.ckpt")
    expected = draws()
    draws()  # the generators move on, as a killed run's would
    module.on_load_checkpoint(io.load_checkpoint(tmp_path / "state.ckpt"))  # weights_only=True
    assert draws() == expected
