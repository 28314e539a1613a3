"""Non-finite steps are skipped, counted and logged; too many in a row stop the run; on DDP every rank skips
the step that one rank's loss spoiled; metrics.jsonl rows carry the values of their own step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY_RECIPE, tiny_recipe

from mmadapter.model import MultimodalLM
from mmadapter.train.module import NonFiniteLoss
from mmadapter.train.optim import warmup_cosine
from mmadapter.train.run import train

SHARDS = str(ROOT / "tests" / "assets" / "shards" / "shard-{000000..000001}.tar")

# Run as a script, so that Lightning's DDP launcher starts the second rank the same way: the loss of the
# calls named in NAN_CALLS on the rank named in NAN_RANK is made NaN.
SPOILER = """
import os, sys
import torch
from mmadapter.cli import main
from mmadapter.model import MultimodalLM

forward, calls = MultimodalLM.forward, [0]

def spoiled(self, batch, return_logits=False):
    out = forward(self, batch, return_logits)
    if self.training:
        calls[0] += 1
        bad = {int(c) for c in os.environ["NAN_CALLS"].split(",")}
        if os.environ.get("LOCAL_RANK", "0") == os.environ["NAN_RANK"] and calls[0] in bad:
            out.loss = out.loss * torch.tensor(float("nan"))
    return out

MultimodalLM.forward = spoiled
sys.exit(main(sys.argv[1:]))
"""


def spoil(monkeypatch: pytest.MonkeyPatch, bad_calls: set[int]) -> None:
    forward, calls = MultimodalLM.forward, [0]

    def spoiled(self, batch, return_logits=False):
        out = forward(self, batch, return_logits)
        if self.training:
            calls[0] += 1
            if calls[0] in bad_calls:
                out.loss = out.loss * torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(MultimodalLM, "forward", spoiled)


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def recipe(*overrides: str):
    return tiny_recipe(f'data.train=[{{"shards": "{SHARDS}"}}]', "train.log_every=1", *overrides)


def test_a_nan_step_is_skipped_counted_and_logged(tmp_path: Path, monkeypatch, capsys) -> None:
    spoil(monkeypatch, {2, 4})
    train(recipe("train.max_steps=5"), tmp_path)
    logged = {r["step"]: r for r in rows(tmp_path) if "nonfinite" in r}
    assert [logged[s]["nonfinite"] for s in range(1, 6)] == [0, 1, 1, 2, 2]
    assert "loss" not in logged[2] and "loss" in logged[3]
    assert "trained 5 steps (2 skipped: loss or gradient not finite)" in capsys.readouterr().out


def test_too_many_nonfinite_steps_in_a_row_stop_the_run(tmp_path: Path, monkeypatch) -> None:
    spoil(monkeypatch, set(range(2, 100)))
    with pytest.raises(NonFiniteLoss, match=r"3 consecutive steps were non-finite \(loss is nan\)"):
        train(recipe("train.max_steps=20", "train.max_nonfinite=3"), tmp_path)
    assert {r["step"] for r in rows(tmp_path)} == {1, 2, 3}  # 1 trained, 2 and 3 skipped, 4 stopped the run


@pytest.mark.parametrize("accumulate", [1, 2])
def test_metrics_rows_carry_their_own_steps_values(tmp_path: Path, accumulate: int) -> None:
    cfg = recipe("train.max_steps=4", "train.warmup_steps=3", "train.lr=0.01", f"train.accumulate={accumulate}")
    train(cfg, tmp_path)
    logged = [r for r in rows(tmp_path) if "loss" in r]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    for r in logged:
        assert {"lr", "tokens_per_s", "skipped", "nonfinite"} <= set(r), r
        assert r["lr"] == pytest.approx(0.01 * warmup_cosine(r["step"] - 1, 3, 4, cfg.train.min_lr_ratio))


@pytest.mark.slow
@pytest.mark.integration
def test_on_ddp_every_rank_skips_the_step_one_rank_spoiled(tmp_path: Path) -> None:
    script = tmp_path / "spoiled_train.py"
    script.write_text(SPOILER)
    cmd = [sys.executable, str(script), "train", str(TINY_RECIPE), "train.max_steps=4", "train.strategy=ddp",
           "train.devices=2", "data.max_tokens=160", "train.log_every=1", "--run", str(tmp_path / "ddp")]  # fmt: skip
    env = {**os.environ, "NAN_RANK": "1", "NAN_CALLS": "2"}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    logged = {r["step"]: r for r in rows(tmp_path / "ddp") if "nonfinite" in r}  # written by rank 0
    assert [logged[s]["nonfinite"] for s in range(1, 5)] == [0, 1, 1, 1]
    assert "trained 4 steps (1 skipped: loss or gradient not finite)" in done.stdout
