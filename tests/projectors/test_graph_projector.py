"""``graph`` projector: each mode against a reference computed here, exact output lengths, and permutation
invariance (``pool``) / equivariance (``nodes``) of GNN + projector under a relabelling of the nodes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from conftest import random_graph
from pydantic import ValidationError

from mmadapter.batch import ModalityItems
from mmadapter.encoders import ENCODERS
from mmadapter.encoders.gnn import GnnSpec
from mmadapter.projectors import PROJECTORS, GraphProjector

IN_DIM, OUT_DIM = 6, 5
ARCHS = ["gcn", "sage", "gat", "gin"]


def build(in_dim: int = IN_DIM, **options: Any) -> GraphProjector:
    torch.manual_seed(0)
    return PROJECTORS.get("graph")(PROJECTORS.spec("graph")(name="graph", **options), in_dim, OUT_DIM)


def run_one(projector: GraphProjector, x: torch.Tensor) -> torch.Tensor:
    """Tokens of one graph's nodes ``x`` ``(s, i)``, batched beside a larger graph so that padding is exercised."""
    padded = torch.cat([x, torch.randn(4, x.shape[1])])
    longer = torch.randn(x.shape[0] + 4, x.shape[1])
    with torch.no_grad():
        tokens, lengths = projector(torch.stack([padded, longer]), torch.tensor([x.shape[0], x.shape[0] + 4]))
    assert lengths.tolist() == [projector.output_length(x.shape[0]), projector.output_length(x.shape[0] + 4)]
    return tokens[0, : int(lengths[0])]


def test_nodes_mode_projects_each_node_up_to_the_cap() -> None:
    p = build(mode="nodes", max_nodes=4)
    x = torch.randn(7, IN_DIM)
    torch.testing.assert_close(run_one(p, x), p.proj(x[:4]))
    torch.testing.assert_close(run_one(p, x[:3]), p.proj(x[:3]))
    assert [p.output_length(n) for n in (1, 4, 5, 100)] == [1, 4, 4, 4]


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_mean_and_max_pool_the_valid_nodes_into_one_token(pooling: str) -> None:
    p = build(mode="pool", pooling=pooling)
    x = torch.randn(7, IN_DIM)
    pooled = x.mean(0) if pooling == "mean" else x.amax(0)
    torch.testing.assert_close(run_one(p, x), p.proj(pooled)[None])
    assert [p.output_length(n) for n in (1, 7, 300)] == [1, 1, 1]


def test_attention_pooling_is_one_softmax_over_nodes_per_query() -> None:
    p = build(mode="pool", pooling="attention", k=3)
    x = torch.randn(7, IN_DIM)
    weights = (p.pool.queries @ x.T / IN_DIM**0.5).softmax(-1)  # (k, s)
    torch.testing.assert_close(run_one(p, x), p.proj(weights @ x))
    assert [p.output_length(n) for n in (1, 7)] == [3, 3]


def test_target_mode_is_node_zero_then_the_pooled_neighbourhood() -> None:
    p = build(mode="target", pooling="attention", k=2)
    x = torch.randn(5, IN_DIM)
    weights = (p.pool.queries @ x.T / IN_DIM**0.5).softmax(-1)
    torch.testing.assert_close(run_one(p, x), p.proj(torch.cat([x[:1], weights @ x])))
    assert [p.output_length(n) for n in (1, 5)] == [3, 3]
    assert build(mode="target").output_length(9) == 2
    torch.testing.assert_close(run_one(build(mode="target"), x[:1]), build(mode="target").proj(x[:1].repeat(2, 1)))


def test_more_than_one_token_needs_attention_pooling() -> None:
    with pytest.raises(ValidationError, match="k=2 needs attention"):
        PROJECTORS.spec("graph")(name="graph", pooling="mean", k=2)


def encode(arch: str, projector: GraphProjector, raw: list[dict[str, np.ndarray]]) -> torch.Tensor:
    torch.manual_seed(0)
    encoder = ENCODERS.get("gnn_test")(GnnSpec(name="gnn_test", arch=arch, layers=3, norm="layer", residual=True))
    items = ModalityItems.collate([[encoder.transform(g)] for g in raw])
    with torch.no_grad():
        tokens, lengths = projector(*encoder(items.inputs, items.lengths))
    assert lengths.tolist() == [projector.output_length(encoder.output_length(g["x"].shape[0])) for g in raw]
    return tokens


def relabel(g: dict[str, np.ndarray], perm: np.ndarray) -> dict[str, np.ndarray]:
    """New node j is old node ``perm[j]``; edges are listed in another order too."""
    new_id = np.argsort(perm)
    edges = new_id[g["edge_index"]][:, ::-1]
    return {"x": g["x"][perm], "edge_index": np.ascontiguousarray(edges)}


@pytest.mark.parametrize("arch", ARCHS)
def test_relabelling_nodes_leaves_pool_tokens_unchanged_and_permutes_node_tokens(arch: str) -> None:
    g = random_graph(5, 12, 16)
    other = random_graph(6, 4, 16)
    perm = np.random.default_rng(1).permutation(12)
    for options in ({"pooling": "mean"}, {"pooling": "max"}, {"pooling": "attention", "k": 3}):
        p = build(32, mode="pool", **options)
        before = encode(arch, p, [g, other])
        after = encode(arch, p, [relabel(g, perm), other])
        torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    p = build(32, mode="nodes", max_nodes=64)
    before, after = encode(arch, p, [g]), encode(arch, p, [relabel(g, perm)])
    torch.testing.assert_close(after[0], before[0, torch.as_tensor(perm)], rtol=0, atol=1e-5)
    assert not torch.allclose(after, before, atol=1e-3)  # the order did change
