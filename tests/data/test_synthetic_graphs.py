"""Synthetic planted-community graphs: seeded, valid ``.graph.npz`` files, answers that follow from the graph,
and shards that hold every sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmadapter.data.graph import decode_graph
from mmadapter.data.synthetic_graphs import COUNT_WORDS, TOPICS, community_graph, synthesize_graphs


def test_community_graph_plants_its_blocks() -> None:
    g = community_graph([30, 40], ["music", "cooking"], np.random.default_rng(0), p_in=0.3, p_out=0.01)
    src, dst = g["edge_index"]
    same = g["y"][src] == g["y"][dst]
    assert g["y"].tolist() == [0] * 30 + [1] * 40 and g["class_names"].tolist() == ["music", "cooking"]
    assert same.mean() > 0.9 and sorted(zip(src, dst, strict=True)) == sorted(
        zip(dst, src, strict=True)
    )  # mostly inside, undirected
    music = " ".join(g["node_text"][:30]).split()
    assert sum(w in TOPICS["music"] for w in music) > 0.5 * len(music) and not set(music) & set(TOPICS["cooking"])
    assert g["x"][:30, list(TOPICS).index("music")].mean() > 0.8


def test_community_graph_topical_leaves_the_other_texts_without_topic_words() -> None:
    sizes, topics, topic_words = [60, 60], ["music", "cooking"], set(TOPICS["music"]) | set(TOPICS["cooking"])
    g = community_graph(sizes, topics, np.random.default_rng(1), noise=0.0, topical=0.3)
    words = [set(text.split()) for text in g["node_text"]]
    topical = np.array([bool(w & topic_words) for w in words])
    assert all(w <= topic_words for w, t in zip(words, topical, strict=True) if t)  # noise 0: topic words only
    assert 0.15 < topical.mean() < 0.45
    none = community_graph(sizes, topics, np.random.default_rng(1), noise=0.0, topical=0.0)
    assert not set(" ".join(none["node_text"]).split()) & topic_words
    with pytest.raises(ValueError, match="topical is a probability"):
        community_graph(sizes, topics, np.random.default_rng(1), topical=1.5)


def test_synthesize_graphs_is_seeded_valid_and_sharded(tmp_path: Path) -> None:
    a = synthesize_graphs(tmp_path / "a", train=30, test=10, seed=3)
    b = synthesize_graphs(tmp_path / "b", train=30, test=10, seed=3)
    for split in ("train", "test"):
        assert a.manifests[split].read_bytes() == b.manifests[split].read_bytes()
        shard = Path(a.shard_pattern(split))
        assert shard.read_bytes() == Path(b.shard_pattern(split)).read_bytes()
        stats = json.loads((shard.parent / "stats.json").read_text())
        assert stats["written"] == (30 if split == "train" else 10) and stats["skipped"] == {}
    lines = [json.loads(line) for line in a.manifests["train"].read_text().splitlines()]
    assert {line["task"] for line in lines} == {"graph_topic", "graph_count"}
    for line in lines:
        graph = decode_graph((a.root / line["graph"]).read_bytes(), line["graph"])
        assert graph["x"].shape == (len(graph["node_text"]), len(TOPICS))
        if line["task"] == "graph_topic":
            target_words = set(str(graph["node_text"][int(graph["target"])]).split())
            assert line["response"] in line["topics"] and line["response"] == line["topics"][int(graph["y"])]
            assert not target_words & {w for t in line["topics"] if t != line["response"] for w in TOPICS[t]}
        else:
            assert line["response"] == COUNT_WORDS[len(line["topics"])]
    other = synthesize_graphs(tmp_path / "c", train=30, test=10, seed=4)
    assert other.manifests["train"].read_bytes() != a.manifests["train"].read_bytes()


def test_options_and_errors(tmp_path: Path) -> None:
    data = synthesize_graphs(tmp_path, train=3, test=2, questions=["count"], features="text", nodes=(12, 12))
    line = json.loads(data.manifests["test"].read_text().splitlines()[0])
    graph = decode_graph((tmp_path / line["graph"]).read_bytes(), "g")
    assert "x" not in graph and len(graph["node_text"]) == 12 and line["prompt"].startswith("How many")
    with pytest.raises(ValueError, match="questions from"):
        synthesize_graphs(tmp_path, questions=["colour"])  # type: ignore[list-item]
