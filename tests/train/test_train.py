"""Training end to end on CPU: overfitting, stages, resume after SIGKILL, DDP, every recipe."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from conftest import ROOT, TINY_RECIPE, nudged_artefact, requires_cuda, tiny_recipe
from safetensors.torch import load_file

from mmadapter.cli import main
from mmadapter.config import Recipe, RecipeError
from mmadapter.model import MultimodalLM
from mmadapter.train.checkpoint_io import SafeCheckpointIO
from mmadapter.train.run import train, validate_for_training

SHARDS = str(ROOT / "tests" / "assets" / "shards" / "shard-{000000..000001}.tar")


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_tiny_recipe_overfits_the_checked_in_shards(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["train", str(TINY_RECIPE), "train.max_steps=60", "--run", str(tmp_path / "run")]) == 0
    rows = [r for r in metrics(tmp_path / "run") if "loss" in r]
    assert rows[0]["step"] == 1 and rows[-1]["step"] == 60
    assert rows[-1]["loss"] < 0.3 * rows[0]["loss"]
    for name in ("recipe.yaml", "adapter.safetensors", "provenance.json", "checkpoints/tiny.ckpt", "tb"):
        assert (tmp_path / "run" / name).exists(), name
    provenance = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert len(provenance["shards"]) == 2 and all(s["bytes"] > 0 for s in provenance["shards"])


def two_stage() -> Recipe:
    return tiny_recipe(
        f'data.train=[{{"shards": "{SHARDS}"}}]',
        'train.stages=[{"name": "align", "trainable": ["projectors.audio"], "max_steps": 3},'
        ' {"name": "both", "trainable": ["projectors", "llm"], "max_steps": 3,'
        ' "lr": {"projectors": 0.001, "llm": 0.0001}}]',
    )


def test_two_stages_train_exactly_their_groups(tmp_path: Path) -> None:
    recipe = two_stage()
    L.seed_everything(recipe.train.seed, verbose=False)
    initial = {n: p.detach().clone() for n, p in MultimodalLM.from_recipe(recipe).named_parameters()}
    train(recipe, tmp_path)
    after_align = MultimodalLM.load(tmp_path / "stages" / "align")
    final = MultimodalLM.load(tmp_path)
    changed = lambda m: {n for n, p in m.named_parameters() if not torch.equal(p, initial[n])}  # noqa: E731
    assert changed(after_align) == {n for n in initial if n.startswith("projectors.audio.")}
    assert changed(final) == {n for n in initial if n.startswith(("projectors.", "llm."))}
    assert all(torch.equal(p, initial[n]) for n, p in final.named_parameters() if n.startswith("encoders."))


def test_provenance_lists_the_shards_each_stage_read(tmp_path: Path) -> None:
    first, second = (str(ROOT / "tests" / "assets" / "shards" / f"shard-00000{i}.tar") for i in (0, 1))
    stages = [
        {"name": "a", "trainable": ["projectors"], "max_steps": 1},
        {"name": "b", "trainable": ["projectors"], "max_steps": 1, "data": {"train": [{"shards": second}]}},
    ]
    recipe = tiny_recipe(f'data.train=[{{"shards": "{first}"}}]', f"train.stages={json.dumps(stages)}")
    train(recipe, tmp_path)

    def shards(artefact: Path) -> dict[str, list[str]]:
        entries = json.loads((artefact / "provenance.json").read_text())["shards"]
        assert all(e["bytes"] == Path(e["url"]).stat().st_size and len(e["sha256_head_tail"]) == 64 for e in entries)
        return {e["url"]: e["stages"] for e in entries}

    assert shards(tmp_path) == {first: ["a"], second: ["b"]}
    assert shards(tmp_path / "stages" / "b") == {second: ["b"]}
    versions = json.loads((tmp_path / "provenance.json").read_text())["versions"]
    assert {"torch", "transformers", "lightning", "webdataset", "torch_geometric"} <= {
        k for k, v in versions.items() if v
    }


def test_gpu_only_strategies_are_rejected_on_cpu() -> None:
    recipe = tiny_recipe("train.strategy=fsdp", "train.precision=16-mixed")
    with pytest.raises(RecipeError) as info:
        validate_for_training(recipe, cuda=False)
    assert [p for p, _ in info.value.problems] == ["train.strategy", "train.precision"]


def test_existing_run_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_recipe(f'data.train=[{{"shards": "{SHARDS}"}}]'), tmp_path)


def test_the_cli_refuses_a_second_run_in_place_and_a_resume_with_another_recipe(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(ROOT)
    run = tmp_path / "run"
    started = ["train", str(TINY_RECIPE), "train.max_steps=2"]
    assert main([*started, "--run", str(run)]) == 0
    saved = (run / "recipe.yaml").read_text()
    assert (run / "checkpoints" / "recipe.yaml").read_text() == saved
    capsys.readouterr()
    assert main([*started, "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mmadapter train: error: {run} already holds a run: pass --resume")
    assert "Traceback" not in err

    assert main([*started, "train.lr=0.5", "train.stages.0.max_steps=20", "--run", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "train.lr: 0.003 when the run started, now 0.5" in err
    assert "train.stages.0.max_steps: None when the run started, now 20" in err
    assert "start a new --run whose stage sets init_from" in err and "Traceback" not in err
    assert (run / "recipe.yaml").read_text() == saved  # the refused resume rewrote nothing
    assert main([*started, "--run", str(run), "--resume"]) == 0  # the same recipe resumes (here: nothing left)


def test_stage_names_are_plain_directory_names() -> None:
    for name in ("../escaped", "a/b", ".", ""):
        with pytest.raises(RecipeError, match=r"train\.stages\.0\.name: .* a directory name"):
            tiny_recipe(f'train.stages=[{{"name": "{name}", "trainable": ["projectors"]}}]')
    assert tiny_recipe('train.stages=[{"name": "stage-1.b_2", "trainable": ["projectors"]}]')


def test_checkpoint_killed_while_writing_leaves_the_previous_one(tmp_path: Path, monkeypatch) -> None:
    io, path = SafeCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def dies_half_way(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert io.load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def cli(run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mmadapter.cli", "train", str(TINY_RECIPE), "train.max_steps=40",
            "train.checkpoint_every=5", "--run", str(run), *extra]  # fmt: skip


@pytest.mark.slow
def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    straight = subprocess.run(cli(tmp_path / "straight"), cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    killed = subprocess.Popen(
        cli(tmp_path / "killed"), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckpt = tmp_path / "killed" / "checkpoints" / "tiny.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and killed.poll() is None:
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["global_step"] >= 15:
            break
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    step = torch.load(ckpt, weights_only=True)["global_step"]
    assert 0 < step < 40 and not (tmp_path / "killed" / "adapter.safetensors").exists()
    resumed = subprocess.run(
        cli(tmp_path / "killed", "--resume"), cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    # the summary counts the whole run, the part before the kill too, and says which part this invocation did
    whole = re.search(r"trained 40 steps on [\d,]+ samples, [\d,]+ tokens", straight.stdout)
    assert whole and whole.group(0) + " (" in resumed.stdout and "of them before the resume" in resumed.stdout
    a = load_file(tmp_path / "straight" / "adapter.safetensors")
    b = load_file(tmp_path / "killed" / "adapter.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


@pytest.mark.slow
@pytest.mark.integration
def test_ddp_on_two_cpu_processes(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "mmadapter.cli", "train", str(TINY_RECIPE), "train.max_steps=6", "train.strategy=ddp",
           "train.devices=2", "data.max_tokens=160", "train.log_sample_keys=true",
           "--run", str(tmp_path / "ddp")]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "ddp" / "adapter.safetensors").exists()
    seen = {r: (tmp_path / "ddp" / "sample_keys" / f"rank{r}.txt").read_text().split("\n") for r in (0, 1)}
    batches = {r: [set(line.split()) for line in lines if line] for r, lines in seen.items()}
    assert batches[0] != batches[1]
    assert any(not any(k.startswith("colour") for k in b) for b in batches[0] + batches[1])
    keys_trained = sum(len(line.split()) for lines in seen.values() for line in lines)
    assert f"trained 6 steps on {keys_trained} samples," in done.stdout  # both ranks' samples, not rank 0's


def test_test_variant_recipe_helper_covers_every_recipe() -> None:
    found = sorted((ROOT / "recipes").rglob("*.yaml"))
    assert TINY_RECIPE in found and len(found) >= 5


# Graph recipes need graph shards (the test shards hold none): tests/train/test_graph_recipes.py trains them.
# recipes/demo/demo.yaml holds the demo's own settings, not a training recipe (tests/demo/test_settings.py).
DEMO_SETTINGS = ROOT / "recipes" / "demo" / "demo.yaml"
NON_GRAPH_RECIPES = sorted(
    p for p in (ROOT / "recipes").rglob("*.yaml") if p.parent.name != "graph" and p != DEMO_SETTINGS
)


@pytest.mark.slow
@pytest.mark.parametrize("path", NON_GRAPH_RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_recipe_validates_and_trains_two_steps_with_test_components(path: Path, tmp_path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    model = data.setdefault("model", {})
    base = None
    if "from" in model:  # continues from a trained artefact (model.from and init_from): a tiny one here
        base = str(nudged_artefact(tmp_path / "base"))
        model["from"] = base
    Recipe.from_dict(data)  # the recipe as written
    if base is None:
        model["llm"] = {"name": "causal_lm_test"}
        for modality, enc in model.get("encoders", {}).items():
            model["encoders"][modality] = {"name": enc["name"].removesuffix("_test") + "_test"}
    # The test shards mix audio, image and text samples: a single-modality recipe skips the others.
    data["data"] = {"train": [{"shards": SHARDS}], "max_tokens": 512, "num_workers": 0, "max_bad_fraction": 1.0}
    train_cfg = data.setdefault("train", {})
    train_cfg |= {"val_every": None, "activation_checkpointing": False, "strategy": "auto", "devices": 1}
    for stage in train_cfg.get("stages", []):
        stage |= {"max_steps": 2, "init_from": base if stage.get("init_from") else None, "data": None}
    train(Recipe.from_dict(data), tmp_path / "run")
    assert (tmp_path / "run" / "adapter.safetensors").exists()


@pytest.mark.slow
def test_validation_logs_loss_and_task_metric_and_keeps_the_best(tmp_path: Path) -> None:
    recipe = tiny_recipe(
        f'data.train=[{{"shards": "{SHARDS}"}}]',
        f'data.val=[{{"shards": "{SHARDS}"}}]',
        "train.max_steps=6",
        "train.val_every=3",
        "train.val_metric=wer",
        "train.best_metric=val_wer",
    )
    train(recipe, tmp_path)
    rows = [r for r in metrics(tmp_path) if "val_loss" in r]
    assert [r["step"] for r in rows] == [3, 6]
    assert all(r["val_wer"] >= 0 for r in rows)
    provenance = json.loads((tmp_path / "best" / "provenance.json").read_text())
    assert provenance["best"]["val_wer"] == min(r["val_wer"] for r in rows)
    assert provenance["stage"] == "tiny" and {s["stages"][0] for s in provenance["shards"]} == {"tiny"}
    assert len(provenance["shards"]) == 2 and all("sha256_head_tail" in s for s in provenance["shards"])


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed"])
def test_gpu_strategies_train_two_steps(strategy: str, tmp_path: Path) -> None:
    if strategy == "deepspeed":
        pytest.importorskip("deepspeed")
    recipe = tiny_recipe(f"train.strategy={strategy}", "train.devices=1", "train.max_steps=2")
    train(recipe, tmp_path)
    assert (tmp_path / "adapter.safetensors").exists()


@pytest.mark.parametrize("workers", [0, 1])
def test_a_run_that_skips_every_sample_stops_with_a_clear_error(tmp_path: Path, monkeypatch, capsys, workers) -> None:
    monkeypatch.chdir(ROOT)
    overrides = [
        'data.train=[{"shards": "tests/assets/shards/shard-000000.tar"}]',  # 0.4 s clips only
        "data.limits.max_audio_seconds=0.1",
        f"data.num_workers={workers}",
    ]
    assert main(["train", str(TINY_RECIPE), *overrides, "--run", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    head = "mmadapter train: error: shard set 'tests/assets/shards/shard-000000.tar': nothing passed in the last 1000"
    assert err.startswith(f"{head} samples and shard reads")
    assert "too_long 1000 (1000 above the limits)" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1  # not the loader worker's traceback


@pytest.mark.parametrize("workers", [0, 1])
def test_validation_passes_after_the_first_do_not_warn_again_about_the_same_skips(
    tmp_path: Path, caplog, workers: int
) -> None:
    audio_only = tmp_path / "val.tar"  # a copy, so that the validation skips are told from the training ones
    audio_only.write_bytes((ROOT / "tests" / "assets" / "shards" / "shard-000000.tar").read_bytes())
    shards = [f'data.train=[{{"shards": "{SHARDS}"}}]', f'data.val=[{{"shards": "{audio_only}"}}]']
    steps = ["train.max_steps=3", "train.val_every=1", f"data.num_workers={workers}"]
    with caplog.at_level(logging.DEBUG, logger="mmadapter.data.skips"):
        train(tiny_recipe(*shards, "data.limits.max_audio_seconds=0.1", *steps), tmp_path / "run")
    assert [r["val_skipped"] for r in metrics(tmp_path / "run") if "val_skipped" in r] == [6.0, 6.0, 6.0]
    if workers == 0:  # (a loader worker's log records stay in the worker)
        levels = Counter(r.levelname for r in caplog.records if "val.tar" in r.getMessage())
        assert levels == {"WARNING": 6, "DEBUG": 12}  # the second and third passes skip the same six


@pytest.mark.parametrize("workers", [0, 1])
def test_validation_counts_its_skips_and_says_when_it_scored_nothing(tmp_path: Path, caplog, workers: int) -> None:
    def run(val: str, directory: Path) -> list[dict]:
        shards = [f'data.train=[{{"shards": "{SHARDS}"}}]', f'data.val=[{{"shards": "{val}"}}]']
        limits = "data.limits.max_audio_seconds=0.1"  # the checked-in clips last 0.4 s
        steps = ["train.max_steps=2", "train.val_every=2", f"data.num_workers={workers}"]
        train(tiny_recipe(*shards, limits, *steps), directory)
        return metrics(directory)

    rows = [r for r in run(SHARDS, tmp_path / "a") if "val_skipped" in r]
    assert [(r["val_skipped"], "val_loss" in r) for r in rows] == [(6.0, True)]  # the images and texts are scored
    with caplog.at_level(logging.WARNING, logger="mmadapter.train.module"):
        rows = run(str(ROOT / "tests" / "assets" / "shards" / "shard-000000.tar"), tmp_path / "b")  # audio only
    skipped = [r["val_skipped"] for r in rows if "val_skipped" in r]
    assert skipped == [6.0] and not any("val_loss" in r for r in rows)  # an empty batch brought the skips here
    said = [r.getMessage() for r in caplog.records if "validation at step 2 scored no labelled token" in r.getMessage()]
    assert len(said) == 1 and "skipped 6 of 6 samples (100.0%): too_long 6" in said[0]


def problems_of(*overrides: str) -> dict[str, str]:
    try:
        validate_for_training(tiny_recipe(*overrides), cuda=False)
    except RecipeError as e:
        return dict(e.problems)
    return {}


def test_validation_settings_that_keep_the_wrong_best_are_errors_and_those_that_do_nothing_warnings(caplog) -> None:
    val = 'data.val=[{"shards": "tests/assets/shards/shard-000000.tar"}]'
    assert problems_of(val, "train.val_every=5", "train.val_metric=bleu", "train.best_metric=val_bleu",
                       "train.best_mode=max") == {}  # fmt: skip
    wer = problems_of(val, "train.val_every=5", "train.best_metric=val_wer")["train.best_metric"]
    assert "set train.val_metric: wer" in wer and "logged: val_loss" in wer
    assert (
        "would keep the worst val_accuracy (higher is better)"
        in problems_of(val, "train.val_every=5", "train.val_metric=accuracy", "train.best_metric=val_accuracy")[
            "train.best_mode"
        ]
    )
    assert "lower is better" in problems_of(val, "train.val_every=5", "train.best_mode=max")["train.best_mode"]
    with caplog.at_level(logging.WARNING, logger="mmadapter.train.run"):
        assert problems_of("data.val=[]", "train.val_every=5", "train.val_metric=wer", "train.best_metric=x") == {}
        assert problems_of("train.early_stopping_patience=2") == {}
    text = caplog.text
    assert "no stage has validation shards" in text and "train.val_metric does nothing" in text
    assert "train.early_stopping_patience does nothing" in text
    stage_val = 'train.stages.0.data={"val": [{"shards": "tests/assets/shards/shard-000000.tar"}]}'
    assert "train.best_metric" in problems_of("data.val=[]", "train.val_every=5", stage_val, "train.best_metric=x")


def test_missing_shards_are_recipe_problems_found_before_the_model_is_built(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(ROOT)
    found = problems_of(
        'data.train=[{"shards": "tests/assets/shards"}]',
        'train.stages=[{"name": "a", "trainable": ["projectors"], "data": {"val": [{"shards": "gone.tar"}]}}]',
    )
    assert "it is a directory holding 2 .tar file(s)" in found["data.train.0.shards"]
    assert found["train.stages.0.data.val.0.shards"].startswith("shard not found: gone.tar")

    def never(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(MultimodalLM, "from_recipe", never)
    assert main(["train", str(TINY_RECIPE), 'data.train=[{"shards": "gone-{0..1}.tar"}]', "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    head = f"mmadapter train: error: 1 problem(s) in {TINY_RECIPE}:\n  data.train.0.shards: shard not found"
    assert err.startswith(head)
