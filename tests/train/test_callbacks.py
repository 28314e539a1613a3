"""The task-metric callback scores the validation sets within their budgets and the stage's media limits."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from conftest import ROOT, tiny_recipe

from mmadapter.config import ShardSet
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
    metric = TaskMetric([ShardSet(shards=AUDIO_SHARD)], "wer")
    scored = validate(metric, model)
    assert set(scored) == {"val_wer"} and scored["val_wer"] >= 0 and metric.report["n"] == 6
    assert validate(TaskMetric([ShardSet(shards=AUDIO_SHARD)], "wer", MediaLimits(max_audio_seconds=0.1)), model) == {}


def test_task_metric_scores_only_each_sets_budget() -> None:
    model = MultimodalLM.from_recipe(tiny_recipe())
    sets = [
        ShardSet(shards=AUDIO_SHARD, max_samples=2),
        ShardSet(shards=AUDIO_SHARD, max_samples=3),
        ShardSet(shards=AUDIO_SHARD),
    ]
    metric = TaskMetric(sets, "wer")
    validate(metric, model)
    assert metric.report["n"] == 2 + 3 + 6
