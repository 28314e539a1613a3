"""The graph recipes load as written and, with tiny *_test components (the node texts still embedded by the
LLM's input embeddings), every stage trains a few steps on synthetic graph shards; ``summary`` builds them on
the meta device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT
from safetensors.torch import load_file

from mmadapter.cli import main
from mmadapter.config import load_recipe
from mmadapter.data.synthetic_graphs import synthesize_graphs
from mmadapter.train.run import train

RECIPES = sorted((ROOT / "recipes" / "graph").glob("*.yaml"))
TEST_COMPONENTS = [
    "model.llm.name=causal_lm_test",
    "model.llm.name_or_path=null",
    "model.encoders.graph.name=gnn_test",
    "model.encoders.graph.config=null",
    "model.encoders.graph.in_dim=64",  # the tiny LLM's width, as node_text: llm_embeddings needs
    "model.encoders.graph.hidden=32",
]


@pytest.fixture(scope="module")
def graph_shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    data = synthesize_graphs(tmp_path_factory.mktemp("graphs"), train=24, test=4, features="text")
    return data.shard_pattern("train")


def test_both_graph_recipes_exist_and_load_as_written() -> None:
    assert [p.name for p in RECIPES] == ["graph_qa_gnn_llama.yaml", "node_classification_gnn_llama.yaml"]
    for path in RECIPES:
        recipe = load_recipe(path)
        graph = recipe.model.encoders["graph"]
        assert graph.name == "gnn" and graph.node_text is not None and graph.node_text.encoder is None
        assert recipe.model.llm.name_or_path.startswith("meta-llama/")


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_graph_recipe_trains_every_stage_with_test_components(path: Path, graph_shards: str, tmp_path: Path) -> None:
    data = [f'data.train=[{{"shards": "{graph_shards}"}}]', "data.val=[]", "data.max_tokens=512", "data.num_workers=0"]
    stages = [f"train.stages.{i}.max_steps=2" for i in range(len(load_recipe(path).train.stages))]
    settings = ["train.val_every=null", "train.val_metric=null", "train.best_metric=train_loss"]
    settings.append(f"model.encoders.graph.node_text.cache_dir={tmp_path / 'node_text'}")  # not the recipe's
    recipe = load_recipe(path, [*TEST_COMPONENTS, *data, *stages, *settings])
    train(recipe, tmp_path / "run")
    weights = load_file(tmp_path / "run" / "adapter.safetensors")
    assert any(name.startswith("encoders.graph.convs.") for name in weights)
    assert any("lora_B" in name for name in weights)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    trained = {r["stage"]: r["step"] for r in rows if "loss" in r}
    assert trained == {stage.name: 2 for stage in recipe.train.stages}


def test_summary_of_a_graph_recipe_on_the_meta_device(capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "recipes" / "graph" / "node_classification_gnn_llama.yaml"
    assert main(["summary", str(path), *TEST_COMPONENTS, "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["stage"] == "align"
    assert counts["groups"]["encoders.graph"]["trainable"] > 0 and counts["groups"]["llm"]["trainable"] == 0
