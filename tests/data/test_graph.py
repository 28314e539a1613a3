from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from media_samples import Canary, good_graph, graph_bytes

from mmadapter.data.graph import MAX_GRAPH_EDGES, MAX_GRAPH_NODES, decode_graph
from mmadapter.data.skips import BadSample


def bad_graph_detail(data: bytes, reason: str = "bad_graph") -> str:
    with pytest.raises(BadSample) as info:
        decode_graph(data, "g.graph.npz")
    assert info.value.reason == reason and info.value.source == "g.graph.npz"
    return info.value.detail


def test_valid_graph() -> None:
    arrays = good_graph()
    arrays["edge_index"] = arrays["edge_index"].astype(np.int32)
    arrays["edge_attr"] = np.ones((3, 2))
    arrays["node_text"] = np.array(["a", "b", "c"])
    arrays["y"] = np.array(1)
    graph = decode_graph(graph_bytes(**arrays), "g.graph.npz")
    assert graph["edge_index"].dtype == np.int64 and graph["edge_index"].tolist() == [[0, 1, 2], [1, 2, 0]]
    assert graph["x"].dtype == np.float32 and graph["x"].shape == (3, 4)
    assert graph["edge_attr"].dtype == np.float32 and graph["node_text"].tolist() == ["a", "b", "c"]
    assert graph["y"] == 1


def test_text_only_graph_without_edges() -> None:
    graph = decode_graph(graph_bytes(edge_index=np.zeros((2, 0), np.int64), node_text=np.array(["solo"])), "g")
    assert graph["edge_index"].shape == (2, 0) and "x" not in graph


def test_out_of_range_and_no_nodes_have_their_own_reasons() -> None:
    out_of_range = graph_bytes(edge_index=np.array([[0, 3], [1, 0]]), x=np.zeros((3, 2)))
    no_nodes = graph_bytes(edge_index=np.zeros((2, 0), np.int64), x=np.zeros((0, 2)))
    assert "outside [0, 3)" in bad_graph_detail(out_of_range, "graph_edge_out_of_range")
    assert "no nodes" in bad_graph_detail(no_nodes, "graph_no_nodes")
    negative = graph_bytes(edge_index=np.array([[-1], [0]]), x=np.zeros((3, 2)))
    assert "outside" in bad_graph_detail(negative, "graph_edge_out_of_range")
    no_texts = graph_bytes(edge_index=np.zeros((2, 0), np.int64), node_text=np.zeros(0, dtype="<U1"))
    assert "no nodes" in bad_graph_detail(no_texts, "graph_no_nodes")


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"edge_index": np.zeros((3, 1), np.int64), "x": np.zeros((2, 2))}, "edge_index must be (2, E)"),
        ({"edge_index": np.zeros((2, 1)), "x": np.zeros((2, 2))}, "edge_index must be (2, E) integers"),
        ({"edge_index": np.zeros((2, 1), np.int64)}, "neither node features x nor node_text"),
        ({"x": np.zeros((2, 2))}, "no edge_index"),
        ({**good_graph(), "edge_atr": np.zeros(3)}, "unknown arrays ['edge_atr']"),
        ({**good_graph(), "x": np.zeros(3)}, "x must be (N, F)"),
        ({**good_graph(), "x": np.full((3, 2), np.nan)}, "x holds NaN or inf"),
        ({**good_graph(), "node_text": np.array(["a", "b"])}, "disagree on the node count"),
        ({**good_graph(), "edge_attr": np.zeros((2, 1))}, "edge_attr must be (E,) or (E, A)"),
    ],
)
def test_invalid_graphs(arrays: dict[str, np.ndarray], expected: str) -> None:
    assert expected in bad_graph_detail(graph_bytes(**arrays))


def test_object_arrays_are_never_unpickled(tmp_path: Path) -> None:
    canary = tmp_path / "unpickled"
    evil = np.empty(1, dtype=object)
    evil[0] = Canary(canary)
    assert "object arrays" in bad_graph_detail(graph_bytes(**good_graph(), y=evil))
    assert not canary.exists()
    np.load(io.BytesIO(graph_bytes(y=evil)), allow_pickle=True)["y"]  # the canary does fire when unpickled
    assert canary.exists()


def test_not_an_archive() -> None:
    assert "not a readable .npz" in bad_graph_detail(b"PK\x03\x04 definitely not a zip")
    one_array = io.BytesIO()
    np.save(one_array, np.zeros(3))
    assert "not a readable .npz" in bad_graph_detail(one_array.getvalue())


def test_size_is_checked_before_inflating() -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **good_graph(), y=np.zeros(10_000_000, np.uint8))  # 10 MB inflated, tiny compressed
    with pytest.raises(BadSample, match="more than 1000000") as info:
        decode_graph(buf.getvalue(), "zip-bomb.graph.npz", max_bytes=1_000_000)
    assert info.value.reason == "too_large_graph"


def test_node_and_edge_count_limits() -> None:
    three_nodes_three_edges = graph_bytes(**good_graph())
    with pytest.raises(BadSample) as info:
        decode_graph(three_nodes_three_edges, "g.graph.npz", max_nodes=2)
    assert info.value.reason == "too_large_graph" and info.value.detail == "3 nodes, more than 2"
    with pytest.raises(BadSample) as info:
        decode_graph(three_nodes_three_edges, "g.graph.npz", max_edges=2)
    assert info.value.reason == "too_large_graph" and info.value.detail == "3 edges, more than 2"
    at_the_limits = decode_graph(three_nodes_three_edges, "g.graph.npz", max_nodes=3, max_edges=3)
    assert at_the_limits["edge_index"].shape == (2, 3)
    unlimited = decode_graph(three_nodes_three_edges, "g.graph.npz", max_nodes=None, max_edges=None)
    assert unlimited["x"].shape == (3, 4)


def test_default_limits_admit_a_large_graph_and_refuse_a_larger_one() -> None:
    n = MAX_GRAPH_NODES
    ring = np.stack([np.arange(n), (np.arange(n) + 1) % n])
    largest = graph_bytes(edge_index=ring, x=np.zeros((n, 1), np.float32))
    assert decode_graph(largest, "g.graph.npz")["edge_index"].shape == (2, n)
    too_many_nodes = graph_bytes(edge_index=ring, x=np.zeros((n + 1, 1), np.float32))
    assert "more than" in bad_graph_detail(too_many_nodes, "too_large_graph")
    too_many_edges = graph_bytes(edge_index=np.zeros((2, MAX_GRAPH_EDGES + 1), np.int32), x=np.zeros((1, 1)))
    assert f"more than {MAX_GRAPH_EDGES}" in bad_graph_detail(too_many_edges, "too_large_graph")
