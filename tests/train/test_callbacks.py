"""The task-metric callback scores the validation shards within the stage's media limits."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from conftest import ROOT, tiny_recipe

from mmadapter.limits import MediaLimits
from mmadapter.model import MultimodalLM
from mmadapter.train.callbacks import TaskMetric

AUDIO_SHARD = str(ROOT / "tests" / "assets" / "shards" / "shard-000000.tar")  # six 0.4 s clips


def validate(metric: TaskMetric, model: MultimodalLM) -> dict[str, float]:
    logged: dict[str, float] = {}
    module = SimpleNamespace(
        model=model, device=torch.device("cpu"), log=lambda name, value, **_: logged.update({name: value})
    )
    trainer = SimpleNamespace(is_global_zero=True, strategy=SimpleNamespace(broadcast=lambda value, src: value))
    metric.on_validation_epoch_end(trainer, module)  # type: ignore[arg-type]
    return logged


def test_task_metric_leaves_out_what_the_stage_limits_leave_out() -> None:
    model = MultimodalLM.from_recipe(tiny_recipe())
    scored = validate(TaskMetric([AUDIO_SHARD], "wer"), model)
    assert set(scored) == {"val_wer"} and scored["val_wer"] >= 0
    assert validate(TaskMetric([AUDIO_SHARD], "wer", MediaLimits(max_audio_seconds=0.1)), model) == {}
