"""Each projector type against a small reference computed by hand in the test, and the validation of options."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from mmadapter.projectors import PROJECTORS, Projector

IN_DIM, OUT_DIM = 6, 5


def build(name: str, **options: Any) -> Projector:
    torch.manual_seed(0)
    return PROJECTORS.get(name)(PROJECTORS.spec(name)(name=name, **options), IN_DIM, OUT_DIM)


def run_one(projector: Projector, x: torch.Tensor) -> torch.Tensor:
    """Tokens ``(s', o)`` of one item ``x`` ``(s, i)``, batched after a longer item so that padding is exercised."""
    longer = torch.randn(x.shape[0] + 9, IN_DIM)
    padded = torch.cat([x, torch.randn(9, IN_DIM)])
    with torch.no_grad():
        tokens, out_lengths = projector(torch.stack([padded, longer]), torch.tensor([x.shape[0], x.shape[0] + 9]))
    return tokens[0, : int(out_lengths[0])]


def test_linear_is_one_affine_map() -> None:
    p = build("linear")
    x = torch.randn(7, IN_DIM)
    torch.testing.assert_close(run_one(p, x), x @ p.net.weight.T + p.net.bias)


def test_mlp_is_llava_mlp2x_gelu() -> None:
    p = build("mlp")
    assert [n for n, _ in p.named_parameters()] == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]
    assert p.net[0].out_features == OUT_DIM  # hidden defaults to the LLM width
    x = torch.randn(7, IN_DIM)
    expected = F.gelu(x @ p.net[0].weight.T + p.net[0].bias) @ p.net[2].weight.T + p.net[2].bias
    torch.testing.assert_close(run_one(p, x), expected)


def test_stack_concatenates_k_frames_and_zero_fills_the_last_group() -> None:
    p = build("stack", k=3, hidden=4)
    x = torch.randn(7, IN_DIM)
    zero = torch.zeros(IN_DIM)
    groups = torch.stack([torch.cat([x[0], x[1], x[2]]), torch.cat([x[3], x[4], x[5]]), torch.cat([x[6], zero, zero])])
    expected = F.relu(groups @ p.net[0].weight.T + p.net[0].bias) @ p.net[2].weight.T + p.net[2].bias
    assert p.output_length(7) == 3
    torch.testing.assert_close(run_one(p, x), expected)


def test_conv_windows_start_every_k_frames_and_read_zeros_past_the_end() -> None:
    p = build("conv", k=2, kernel=3, hidden=4)
    x = torch.randn(7, IN_DIM)
    padded = torch.cat([x, torch.zeros(2, IN_DIM)])  # window 3 reads frames 6, 7, 8 of which 7, 8 do not exist
    windows = torch.stack([padded[j * 2 : j * 2 + 3] for j in range(4)])  # (4, kernel, i)
    h = torch.einsum("gti,hit->gh", windows, p.conv.weight) + p.conv.bias
    expected = F.gelu(h) @ p.proj.weight.T + p.proj.bias
    assert p.output_length(7) == 4
    torch.testing.assert_close(run_one(p, x), expected)


def test_pool_averages_only_real_frames_of_the_tail() -> None:
    p = build("pool", k=3)
    x = torch.randn(7, IN_DIM)
    means = torch.stack([x[0:3].mean(0), x[3:6].mean(0), x[6]])
    assert p.output_length(7) == 3
    torch.testing.assert_close(run_one(p, x), means @ p.proj.weight.T + p.proj.bias)


def test_qformer_without_window_gives_num_queries_tokens_from_all_frames() -> None:
    p = build("qformer", num_queries=4, heads=2)
    assert [p.output_length(n) for n in (1, 3, 100)] == [4, 4, 4]
    x = torch.randn(9, IN_DIM)
    tokens = run_one(p, x)
    assert tokens.shape == (4, OUT_DIM)
    for t in (0, 8):  # the first and the last frame both matter
        changed = x.clone()
        changed[t] = torch.randn(IN_DIM)  # not a constant shift, which the input LayerNorm removes
        assert not torch.allclose(run_one(p, changed), tokens)


def test_qformer_windows_are_independent_and_counted_exactly() -> None:
    p = build("qformer", num_queries=3, heads=2, window=4)
    lengths = [1, 4, 5, 13]
    assert [p.output_length(n) for n in lengths] == [3, 3, 6, 12]
    x = torch.randn(len(lengths), 13, IN_DIM)
    with torch.no_grad():
        tokens, out_lengths = p(x, torch.tensor(lengths))
    assert out_lengths.tolist() == [3, 3, 6, 12]
    assert tokens.shape == (4, 12, OUT_DIM)
    # item 3: windows [0, 4), [4, 8), [8, 12), [12, 13); each equals that window run as an item of its own
    for j, (start, stop) in enumerate([(0, 4), (4, 8), (8, 12), (12, 13)]):
        torch.testing.assert_close(tokens[3, 3 * j : 3 * j + 3], run_one(p, x[3, start:stop]), rtol=1e-5, atol=1e-5)
    assert torch.all(tokens[0, 3:] == 0) and torch.all(tokens[2, 6:] == 0)


def test_qformer_default_hidden_is_capped_and_divisible_by_heads() -> None:
    def hidden(in_dim: int, **options: Any) -> int:
        spec = PROJECTORS.spec("qformer")(name="qformer", **options)
        return PROJECTORS.get("qformer")(spec, in_dim, 8).queries.shape[1]

    assert hidden(1280) == 768
    assert hidden(12) == 16
    assert hidden(12, heads=3) == 12


def test_prefix_maps_the_class_token_or_the_mean_to_k_tokens_each_with_its_own_weights() -> None:
    p = build("prefix", length=3, hidden=4)
    x = torch.randn(7, IN_DIM)
    hidden = F.gelu(x[0] @ p.mlp[0].weight.T + p.mlp[0].bias)
    expected = (hidden @ p.mlp[2].weight.T + p.mlp[2].bias).reshape(3, OUT_DIM)
    torch.testing.assert_close(run_one(p, x), expected)
    assert p.output_length(1) == p.output_length(500) == 3
    mean = build("prefix", length=2, summary="mean")
    hidden = F.gelu(x.mean(0) @ mean.mlp[0].weight.T + mean.mlp[0].bias)  # padding frames do not count
    torch.testing.assert_close(run_one(mean, x), (hidden @ mean.mlp[2].weight.T + mean.mlp[2].bias).reshape(2, OUT_DIM))


@pytest.mark.parametrize("name", PROJECTORS.names())
def test_specs_reject_unknown_options(name: str) -> None:
    with pytest.raises(ValidationError, match="not_an_option"):
        PROJECTORS.spec(name)(name=name, not_an_option=1)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("stack", {"k": 0}),
        ("stack", {"activation": "tanh"}),
        ("mlp", {"hidden": -1}),
        ("conv", {"k": 3, "kernel": 2}),
        ("pool", {"k": 0}),
        ("qformer", {"hidden": 100, "heads": 8}),
        ("qformer", {"window": 0}),
        ("prefix", {"length": 0}),
        ("prefix", {"summary": "last"}),
    ],
)
def test_specs_reject_bad_values(name: str, options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PROJECTORS.spec(name)(name=name, **options)
