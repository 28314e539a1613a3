"""``gnn`` encoders: every arch through a batch of graphs, target relabelling, equivariance, weights from a
safetensors file, and the checks on options and graphs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from conftest import random_graph
from pydantic import ValidationError
from safetensors.torch import save_file

from mmadapter.batch import ModalityItems
from mmadapter.data.skips import BadSample
from mmadapter.encoders import ENCODERS
from mmadapter.encoders.gnn import GnnEncoder, GnnSpec

ARCHS = ["gcn", "sage", "gat", "gin"]
# Every arch, plus the edge-feature layers (GATConv with edge_dim, GINEConv) and norms/residuals.
VARIANTS: list[dict[str, Any]] = [{"arch": a} for a in ARCHS] + [
    {"arch": "gat", "edge_dim": 3, "norm": "layer", "residual": True, "layers": 3},
    {"arch": "gin", "edge_dim": 3, "norm": "batch", "residual": True, "layers": 3},
    {"arch": "sage", "in_dim": 32, "residual": True, "dropout": 0.1},
]


def build(name: str = "gnn_test", **options: Any) -> GnnEncoder:
    torch.manual_seed(0)
    return ENCODERS.get(name)(GnnSpec(name=name, **options))


def graphs(encoder: GnnEncoder, sizes: tuple[int, ...] = (5, 9, 1)) -> list[dict[str, np.ndarray]]:
    return [random_graph(i, n, encoder.in_dim, encoder.edge_dim) for i, n in enumerate(sizes)]


def encode(encoder: GnnEncoder, raw: list[dict[str, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    items = ModalityItems.collate([[encoder.transform(g)] for g in raw])
    return encoder(items.inputs, items.lengths)


def case_id(options: dict[str, Any]) -> str:
    return "-".join(f"{k}={v}" for k, v in options.items())


@pytest.mark.parametrize("options", VARIANTS, ids=[case_id(o) for o in VARIANTS])
def test_forward_backward_over_a_batch_of_graphs(options: dict[str, Any]) -> None:
    encoder = build(**options)
    assert not encoder.training and encoder.modality == "graph"
    raw = graphs(encoder)
    items = [encoder.transform(g) for g in raw]
    assert [encoder.input_length(x) for x in items] == [5, 9, 1]
    features, lengths = encode(encoder, raw)
    assert features.shape == (3, 9, encoder.embed_dim)
    assert lengths.tolist() == [encoder.output_length(n) for n in (5, 9, 1)] == [5, 9, 1]
    assert torch.all(features[0, 5:] == 0) and torch.all(features[2, 1:] == 0)
    assert torch.isfinite(features).all()
    # each graph alone gives the same node embeddings as in the batch: graphs do not mix
    for i, g in enumerate(raw):
        alone, _ = encode(encoder, [g])
        torch.testing.assert_close(alone[0], features[i, : lengths[i]], rtol=0, atol=1e-5)
    (features * torch.randn(features.shape)).sum().backward()
    assert [n for n, p in encoder.named_parameters() if p.grad is None] == []
    assert all(p.grad.abs().sum() > 0 for p in encoder.parameters())


@pytest.mark.parametrize("arch", ARCHS)
def test_relabelling_nodes_permutes_the_embeddings(arch: str) -> None:
    encoder = build(arch=arch)
    g = random_graph(3, 11, encoder.in_dim)
    perm = np.random.default_rng(0).permutation(11)  # new node j is old node perm[j]
    new_id = np.argsort(perm)
    relabelled = {"x": g["x"][perm], "edge_index": new_id[g["edge_index"]]}
    with torch.no_grad():
        original, _ = encode(encoder, [g])
        permuted, _ = encode(encoder, [relabelled])
    torch.testing.assert_close(permuted[0], original[0, torch.as_tensor(perm)], rtol=0, atol=1e-5)


def test_target_node_comes_first() -> None:
    encoder = build(arch="sage")
    g = random_graph(1, 6, encoder.in_dim)
    data = encoder.transform(g | {"target": np.int64(4)})
    assert data.target.tolist() == [0] and data.target_index.tolist() == [4]
    torch.testing.assert_close(data.x, torch.as_tensor(g["x"][[4, 0, 1, 2, 3, 5]]))
    with torch.no_grad():
        plain, _ = encode(encoder, [g])
        first, _ = encode(encoder, [g | {"target": np.int64(4)}])
    torch.testing.assert_close(first[0, 0], plain[0, 4], rtol=0, atol=1e-5)
    assert encoder.transform(g).target.tolist() == [-1]


def test_weights_load_from_a_safetensors_file(tmp_path) -> None:
    options = {"arch": "gin", "edge_dim": 3, "hidden": 24, "layers": 3, "norm": "batch"}
    source = build(**options)
    path = tmp_path / "gnn.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    loaded = build("gnn", name_or_path=str(path), **options)
    torch.manual_seed(1)
    random = ENCODERS.get("gnn")(GnnSpec(name="gnn", config={}, **options))
    raw = graphs(source)
    with torch.no_grad():
        want, _ = encode(source, raw)
        assert torch.equal(encode(loaded, raw)[0], want)
        assert not torch.allclose(encode(random, raw)[0], want)
    with pytest.raises(ValueError, match="do not fit the options"):
        build("gnn", name_or_path=str(path), **(options | {"hidden": 32}))
    with pytest.raises(FileNotFoundError, match="no GNN weights file"):
        build("gnn", name_or_path=str(tmp_path / "missing.safetensors"))


def test_options_are_checked() -> None:
    with pytest.raises(ValidationError, match="takes no edge features"):
        GnnSpec(name="gnn_test", arch="gcn", edge_dim=2)
    with pytest.raises(ValidationError, match="must divide hidden"):
        GnnSpec(name="gnn_test", arch="gat", heads=5)
    with pytest.raises(ValidationError, match="config must be empty"):
        GnnSpec(name="gnn", config={"hidden": 8})
    with pytest.raises(ValidationError, match=r"must be a \.safetensors file"):
        GnnSpec(name="gnn", name_or_path="model.pt")


def test_graphs_the_encoder_cannot_take_are_rejected() -> None:
    encoder = build(arch="gat", edge_dim=2)
    g = random_graph(0, 4, encoder.in_dim, edge_dim=2)
    with pytest.raises(ValueError, match="no numeric node features"):
        encoder.transform({"node_text": np.array(["a"] * 4), "edge_index": g["edge_index"]})
    with pytest.raises(ValueError, match=r"must be \(N, 16\)"):
        encoder.transform(g | {"x": np.zeros((4, 3), np.float32)})
    with pytest.raises(ValueError, match="the graph has none"):
        encoder.transform({k: v for k, v in g.items() if k != "edge_attr"})
    with pytest.raises(ValueError, match=r"edge_attr must be \(E, 2\)"):
        encoder.transform(g | {"edge_attr": np.zeros((3, 2), np.float32)})
    with pytest.raises(ValueError, match=r"one node index in \[0, 4\)"):
        encoder.transform(g | {"target": np.int64(4)})
    with pytest.raises(BadSample, match="one node index") as caught:
        encoder.transform(g | {"target": np.array("cat")})
    assert caught.value.reason == "bad_graph"  # the data pipeline skips and counts such samples
