"""Acceptance: a text-attributed graph → ego-subgraphs (data/make_ego_subgraphs.py) → ``mmadapter shard`` →
``mmadapter train`` → ``mmadapter eval --metric accuracy`` classifies held-out nodes from their node texts."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import yaml
from conftest import ROOT

from mmadapter.cli import main
from mmadapter.data.ego_subgraphs import save_text_graph
from mmadapter.data.synthetic_graphs import community_graph

TOPICS = ["physics", "biology", "music"]


def load_script(name: str) -> ModuleType:
    """Import ``data/<name>.py`` (``data/`` is no package)."""
    spec = importlib.util.spec_from_file_location(f"e2e_{name}", ROOT / "data" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def recipe(shards: Path) -> dict:
    """A random tiny LLM (trained with the rest: it must learn to spell the class names), a GNN over the
    LLM-embedded node texts, and a ``target`` graph projector."""
    return {
        "model": {
            "llm": {"name": "causal_lm_test", "config": {"initializer_range": 0.5}},
            "encoders": {
                "graph": {"name": "gnn_test", "arch": "sage", "in_dim": 64, "hidden": 64, "node_text": "llm_embeddings"}
            },
            "projectors": {"graph": {"name": "graph", "mode": "target", "pooling": "mean"}},
        },
        "data": {"train": [{"shards": str(shards / "shard-000000.tar")}], "max_tokens": 768, "num_workers": 0},
        "train": {"seed": 0, "max_steps": 140, "lr": 3.0e-3, "log_every": 20, "checkpoint_every": 1000,
                  "stages": [{"name": "nodes", "trainable": ["encoders.graph", "projectors", "llm"]}]},
    }  # fmt: skip


@pytest.mark.slow
def test_ego_subgraph_node_classification_reaches_90_percent(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    graph = community_graph([100, 90, 110], TOPICS, np.random.default_rng(0), p_in=0.06, p_out=0.006, noise=0.4)
    del graph["x"]  # node texts are the only node features
    save_text_graph(tmp_path / "papers.npz", **graph)
    make = load_script("make_ego_subgraphs")
    args = ["--out", str(tmp_path / "ego"), "--hops", "2", "--max-nodes", "12", "--fractions", "0.6", "0", "0.4"]
    assert make.main([str(tmp_path / "papers.npz"), *args, "--prompt", "<graph> topic?"]) == 1  # val is empty
    lines = {s: (tmp_path / "ego" / f"{s}.jsonl").read_text().splitlines() for s in ("train", "test")}
    assert len(lines["train"]) == 180 and len(lines["test"]) == 120
    first = json.loads(lines["test"][0])
    assert first["response"] == TOPICS[graph["y"][first["node"]]] and first["task"] == "node_classification"

    for split in ("train", "test"):
        assert main(["shard", str(tmp_path / "ego" / f"{split}.jsonl"), str(tmp_path / "shards" / split)]) == 0
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe(tmp_path / "shards" / "train")))
    assert main(["train", str(tmp_path / "recipe.yaml"), "--run", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    test_shards = str(tmp_path / "shards" / "test" / "shard-000000.tar")
    report = tmp_path / "report.json"
    argv = ["eval", "--checkpoint", str(tmp_path / "run"), "--input", test_shards, "--metric", "accuracy"]
    assert main([*argv, "--max-new-tokens", "8", "--batch-size", "32", "--output", str(report)]) == 0
    scores = json.loads(report.read_text())
    assert scores["n"] == 120 and scores["errors"] == 0
    assert scores["overall"] >= 0.9, scores
