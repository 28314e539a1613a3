"""``data/make_ego_subgraphs.py``: k-hop ego-subgraphs relabelled around their target, split by node, answered by
class name; the manifests go through ``mmadapter shard`` unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_prep_helpers import assert_shards_accept, load_script, read_manifest

from mmadapter.data.ego_subgraphs import ego_subgraph, save_text_graph, split_nodes, undirected
from mmadapter.data.graph import decode_graph

prep = load_script("make_ego_subgraphs")
# A path 0-1-2-3-4-5 plus a star 2-6, 2-7, 2-8; node 9 is isolated and unlabelled.
EDGES = np.array([[0, 1, 2, 3, 4, 2, 2, 2], [1, 2, 3, 4, 5, 6, 7, 8]])


def small_graph(path: Path, **extra: np.ndarray) -> Path:
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, -1])
    texts = np.array([f"paper {i}" for i in range(10)])
    return save_text_graph(path, edge_index=EDGES, y=y, class_names=np.array(["theory", "systems"]),
                           node_text=texts, **extra)  # fmt: skip


def test_ego_subgraph_relabels_and_caps_by_hop() -> None:
    edges = undirected(EDGES, 10)
    subset, sub_edges, target = ego_subgraph(3, edges, 10, 2, None, np.random.default_rng(0))
    assert subset.tolist() == [1, 2, 3, 4, 5, 6, 7, 8] and subset[target] == 3
    pairs = {(int(subset[a]), int(subset[b])) for a, b in sub_edges.T}
    assert pairs == {(a, b) for a, b in edges.T.tolist() if a in subset and b in subset}
    capped, _, t = ego_subgraph(3, edges, 10, 2, 5, np.random.default_rng(0))
    assert len(capped) == 5 and capped[t] == 3 and {2, 3, 4} <= set(capped.tolist())  # hop 1 kept whole
    alone, alone_edges, t = ego_subgraph(9, edges, 10, 2, None, np.random.default_rng(0))
    assert alone.tolist() == [9] and alone_edges.shape == (2, 0) and t == 0


def test_split_nodes_uses_the_file_split_or_a_seeded_shuffle() -> None:
    y = np.array([0, 1, -1, 0, 1, 0, 1, 0, 1, 0, 1])
    parts = split_nodes(y, None, [0.6, 0.2, 0.2], seed=1)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == [0, 1, *range(3, 11)]
    assert [len(parts[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    assert all(np.array_equal(parts[s], split_nodes(y, None, [3, 1, 1], seed=1)[s]) for s in parts)
    own = split_nodes(y, np.array(["train", "test", "", "val"] + ["train"] * 7), [1, 0, 0], seed=0)
    assert own["test"].tolist() == [1] and own["val"].tolist() == [3] and 2 not in own["train"]


def test_manifests_and_subgraph_files(tmp_path: Path) -> None:
    source = small_graph(tmp_path / "toy.npz", split=np.array(["train"] * 6 + ["val", "test", "test", ""]))
    out = tmp_path / "ego"
    assert prep.main([str(source), "--out", str(out), "--hops", "1", "--list-classes"]) == 0
    lines = {s: read_manifest(out / f"{s}.jsonl") for s in ("train", "val", "test")}
    assert [line["node"] for line in lines["test"]] == [7, 8] and len(lines["train"]) == 6
    line = lines["test"][0]
    assert line["key"] == "toy-000007" and line["response"] == "systems" and line["task"] == "node_classification"
    assert line["prompt"].endswith("Answer with one of: theory, systems.") and line["prompt"].count("<graph>") == 1
    graph = decode_graph((out / line["graph"]).read_bytes(), line["graph"])
    assert graph["node_text"][int(graph["target"])] == "paper 7" and int(graph["y"]) == 1
    assert sorted(graph["node_text"].tolist()) == ["paper 2", "paper 7"] and "x" not in graph
    for split in ("train", "test"):
        assert_shards_accept(out / f"{split}.jsonl", tmp_path / "shards" / split, len(lines[split]))


def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = small_graph(tmp_path / "toy.npz")
    assert prep.main([str(tmp_path / "absent.npz"), "--out", str(tmp_path / "o")]) == 2
    assert prep.main([str(source), "--out", str(tmp_path / "o"), "--features", "x"]) == 2
    assert "has no x for --features x" in capsys.readouterr().err
    assert prep.main([str(source), "--out", str(tmp_path / "o"), "--prompt", "no placeholder"]) == 2
    np.savez(tmp_path / "bad.npz", edge_index=EDGES, y=np.zeros(10, np.int64))
    assert prep.main([str(tmp_path / "bad.npz"), "--out", str(tmp_path / "o")]) == 2
    assert "missing arrays ['class_names']" in capsys.readouterr().err
    with pytest.raises(ValueError, match="edge_index must be"):
        save_text_graph(
            tmp_path / "x.npz", edge_index=EDGES, y=np.zeros(3), class_names=np.array(["a"]), x=np.zeros((3, 1))
        )
