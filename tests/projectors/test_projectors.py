"""The projector contract, checked for every registered type (with default options) and for option variants
that change the geometry: exact output lengths, shapes, zero right padding, gradients, padding invariance."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from mmadapter.projectors import PROJECTORS, Projector

IN_DIM, OUT_DIM = 12, 16
LENGTHS = [1, 2, 7, 13, 50]
# The same values computed in a batch of another shape: the CPU kernels may sum in another order (it differs
# between machines), so allow float32 rounding; a leak across items or padding is orders of magnitude larger.
OTHER_SHAPE: dict[str, float] = {"rtol": 1e-5, "atol": 1e-5}

VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("stack", {"k": 3, "activation": "gelu"}),
    ("conv", {"k": 3, "kernel": 5, "hidden": 8}),
    ("pool", {"k": 4}),
    ("qformer", {"num_queries": 3, "window": 4, "heads": 2, "hidden": 8}),
    ("graph", {"mode": "nodes", "max_nodes": 9}),
    ("graph", {"mode": "pool", "pooling": "max"}),
    ("graph", {"mode": "pool", "pooling": "attention", "k": 3}),
    ("graph", {"mode": "target", "pooling": "attention", "k": 2}),
]
CASES = [(name, {}) for name in PROJECTORS] + VARIANTS


def build(name: str, options: dict[str, Any]) -> Projector:
    torch.manual_seed(0)
    spec = PROJECTORS.spec(name)(name=name, **options)
    return PROJECTORS.get(name)(spec, IN_DIM, OUT_DIM)


def batch(lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random frames, padded positions filled with zeros."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), IN_DIM, generator=g)
    lengths_t = torch.tensor(lengths)
    x[torch.arange(x.shape[1]) >= lengths_t[:, None]] = 0
    return x, lengths_t


def case_id(case: tuple[str, dict[str, Any]]) -> str:
    name, options = case
    return name + "".join(f"-{k}={v}" for k, v in options.items())


@pytest.fixture(params=CASES, ids=[case_id(c) for c in CASES])
def projector(request: pytest.FixtureRequest) -> Projector:
    return build(*request.param)


def test_every_type_is_registered() -> None:
    assert {"linear", "mlp", "stack", "conv", "qformer", "pool", "prefix", "graph"} <= set(PROJECTORS.names())


def test_output_lengths_shape_and_zero_padding(projector: Projector) -> None:
    x, lengths = batch(LENGTHS)
    tokens, out_lengths = projector(x, lengths)
    expected = [projector.output_length(n) for n in LENGTHS]
    assert out_lengths.tolist() == expected
    assert tokens.shape == (len(LENGTHS), max(expected), OUT_DIM)
    for i, n in enumerate(expected):
        assert torch.all(tokens[i, n:] == 0)
        assert tokens[i, :n].abs().sum(-1).min() > 0  # every valid token carries a value


def test_extra_padding_is_trimmed(projector: Projector) -> None:
    x, lengths = batch(LENGTHS)
    tokens, _ = projector(x, lengths)
    wider, _ = projector(torch.cat([x, torch.randn(len(LENGTHS), 9, IN_DIM)], 1), lengths)
    torch.testing.assert_close(wider, tokens, **OTHER_SHAPE)


def test_backward_reaches_every_parameter(projector: Projector) -> None:
    x, lengths = batch(LENGTHS)
    x.requires_grad_(True)
    tokens, _ = projector(x, lengths)
    # random weights: a plain sum through a final LayerNorm would have zero gradient
    (tokens * torch.randn(tokens.shape, generator=torch.Generator().manual_seed(2))).sum().backward()
    for name, p in projector.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
    for i, n in enumerate(LENGTHS):
        assert torch.all(x.grad[i, n:] == 0)  # padded frames do not influence anything
        assert x.grad[i, :n].abs().sum() > 0


def test_items_alone_equal_items_batched(projector: Projector) -> None:
    x, lengths = batch(LENGTHS)
    with torch.no_grad():
        tokens, _ = projector(x, lengths)
        for i, n in enumerate(LENGTHS):
            alone, alone_lengths = projector(x[i : i + 1, :n], lengths[i : i + 1])
            m = projector.output_length(n)
            assert alone.shape == (1, m, OUT_DIM)
            assert alone_lengths.tolist() == [m]
            torch.testing.assert_close(tokens[i, :m], alone[0], **OTHER_SHAPE)


@pytest.mark.parametrize("garbage", ["random", "nan_inf"])
def test_garbage_in_padding_changes_nothing(projector: Projector, garbage: str) -> None:
    x, lengths = batch(LENGTHS)
    padded = torch.arange(x.shape[1]) >= lengths[:, None]
    dirty = x.clone()
    if garbage == "random":
        dirty[padded] = 1e3 * torch.randn(int(padded.sum()), IN_DIM)
    else:
        dirty[padded] = torch.tensor([float("nan"), float("inf"), -float("inf")]).repeat(IN_DIM)[:IN_DIM]
    with torch.no_grad():
        clean_tokens, _ = projector(x, lengths)
        dirty_tokens, _ = projector(dirty, lengths)
    torch.testing.assert_close(dirty_tokens, clean_tokens, rtol=0, atol=1e-6)


def test_output_length_is_exact_for_short_items(projector: Projector) -> None:
    for n in range(1, 12):  # shorter than, equal to and just past every stride and window used here
        with torch.no_grad():
            tokens, out_lengths = projector(torch.randn(1, n, IN_DIM), torch.tensor([n]))
        assert tokens.shape[1] == out_lengths.item() == projector.output_length(n), n


def test_bad_lengths_raise(projector: Projector) -> None:
    for lengths, match in [([0, 3], r"\[1, 3\]"), ([2, 4], r"\[1, 3\]"), ([2], "shape")]:
        with pytest.raises(ValueError, match=match):
            projector(torch.randn(2, 3, IN_DIM), torch.tensor(lengths))
