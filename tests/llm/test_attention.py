"""Attention backends: the choice and its reason, the CPU packed-SDPA path, and every packed kernel against each
sequence run alone through SDPA (forward, padded rows, generation and, on CUDA, gradients)."""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import sys
import types
from collections.abc import Callable
from typing import Any

import pytest
import torch
from conftest import requires_cuda
from torch import Tensor
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.masking_utils import create_causal_mask

from mmadapter.batch import MultimodalBatch
from mmadapter.config import LLMSpec
from mmadapter.llm import LLMS, attention, packed_attention, varlen_kernels
from mmadapter.llm.attention import Backend, apply_backend, choose_backend, packed_kwargs
from mmadapter.llm.varlen_kernels import (
    AttentionOptions,
    RaggedLayout,
    run_flash_attn,
    run_flex,
    run_padded_sdpa,
    run_reference,
    run_varlen,
)

LENGTHS = [7, 12, 5]
BACKENDS = {
    n: Backend(n, attention._HF_NAMES[n], "test") for n in ("flash_attn", "varlen", "flex", "sdpa_varlen", "sdpa")
}


def tiny_llm(dtype: str = "float32", device: str = "cpu") -> PreTrainedModel:
    model, _ = LLMS.get("causal_lm_test")(LLMSpec(name="causal_lm_test", dtype=dtype, attn="sdpa"))
    return model.to(device)


def sequences(lengths: list[int] = LENGTHS) -> list[Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, 250, (n,), generator=g) for n in lengths]


def packed(seqs: list[Tensor], tail: int = 0) -> MultimodalBatch:
    """One packed row; ``tail`` pad tokens after the last sample."""
    lengths = [len(s) for s in seqs]
    ids = torch.cat([*seqs, torch.zeros(tail, dtype=torch.long)])[None]
    return MultimodalBatch(
        input_ids=ids,
        labels=torch.full_like(ids, -100),
        token_modality=torch.zeros_like(ids),
        position_ids=torch.cat([torch.arange(n) for n in [*lengths, tail]])[None],
        keys=[f"s{i}" for i in range(len(seqs))],
        cu_seqlens=torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32),
        max_seqlen=max(lengths),
    )


def padded(seqs: list[Tensor], side: str = "left") -> tuple[Tensor, Tensor, Tensor]:
    """``(b, t)`` ids, attention mask and positions."""
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        cols = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, cols], mask[i, cols] = s, 1
    return ids, mask, (mask.cumsum(1) - 1).clamp(min=0)


def decode(model: PreTrainedModel, batch: MultimodalBatch, backend: Backend | None = None, **extra: Any) -> Tensor:
    """Final hidden states ``(t, d)`` of a packed row, called as ``MultimodalLM.hidden_states`` does."""
    kwargs = {"attention_mask": batch.attention_mask} | (packed_kwargs(batch, backend) if backend else {}) | extra
    out = model.get_decoder()(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False, **kwargs)
    return out.last_hidden_state[0]


def alone(model: PreTrainedModel, seqs: list[Tensor]) -> list[Tensor]:
    """Each sequence on its own through SDPA: the reference."""
    apply_backend(model, BACKENDS["sdpa"])
    device = model.device
    return [model.get_decoder()(input_ids=s[None].to(device), use_cache=False).last_hidden_state[0] for s in seqs]


def assert_per_sequence(got: Tensor, want: list[Tensor], atol: float, rel: float | None = None) -> None:
    """Each sequence of ``got`` (its rows, in order) against ``want``: max |diff| ≤ atol and, when given,
    ‖diff‖ ≤ rel·‖want‖ (a leak between sequences gives a relative error of 0.5 or more on this model)."""
    for i, (g, w) in enumerate(zip(got.float().split([len(x) for x in want]), want, strict=True)):
        diff = g - w.float()
        assert diff.abs().max() <= atol, f"sequence {i}: max |diff| {diff.abs().max():.2e} > {atol:.0e}"
        if rel is not None:
            assert diff.norm() <= rel * w.float().norm(), f"sequence {i}: relative error {diff.norm() / w.norm():.2e}"


def assert_relative(got: Tensor, want: Tensor, rel: float, what: str) -> None:
    error = (got.float() - want.float()).norm() / want.float().norm()
    assert error <= rel, f"{what}: relative error {error:.2e} > {rel:.0e}"


# --- choosing ----------------------------------------------------------------------------------------------


def test_auto_on_cpu_is_padded_sdpa_and_logs_why_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(attention, "_logged", set())
    caplog.set_level(logging.INFO, logger="mmadapter.llm.attention")
    backend = choose_backend("auto", torch.device("cpu"))
    choose_backend("auto", torch.device("cpu"))
    assert (backend.name, backend.attn_implementation) == ("sdpa_varlen", "mmadapter_padded")
    assert "no dense (t, t) mask" in backend.reason
    assert backend.takes_cu_seqlens
    records = [r for r in caplog.records if r.name == "mmadapter.llm.attention"]
    assert len(records) == 1 and records[0].levelno == logging.INFO
    assert backend.reason in records[0].getMessage()
    assert not choose_backend("sdpa", "cpu").takes_cu_seqlens


FOUND = {"flash_attn": "flash-attn 2.8.3 found on CUDA", "varlen": "varlen on CUDA", "flex": "flex (compiled)"}
MISSING = {"flash_attn": "flash_attn not installed: ImportError: x", "varlen": "no varlen", "flex": "no flex"}


@pytest.mark.parametrize(
    ("available", "chosen", "reason"),
    [
        (["flash_attn", "varlen", "flex"], "flash_attn", "flash-attn 2.8.3 found on CUDA"),
        (
            ["varlen", "flex"],
            "varlen",
            "CUDA but flash_attn not installed: ImportError: x; using torch.nn.attention.varlen",
        ),
        (["flex"], "flex", "CUDA but flash_attn not installed: ImportError: x and no varlen; using flex attention"),
        ([], "sdpa", "CUDA but flash_attn not installed: ImportError: x, no varlen and no flex; transformers' packed"),
    ],
)
def test_auto_on_cuda_prefers_flash_attn_then_varlen_then_flex(
    monkeypatch: pytest.MonkeyPatch, available: list[str], chosen: str, reason: str
):
    def probe(name: str, device: torch.device) -> tuple[bool, str]:
        return (True, FOUND[name]) if name in available else (False, MISSING[name])

    monkeypatch.setattr(attention, "_probe", probe)
    backend = choose_backend("auto", torch.device("cuda"))
    assert backend.name == chosen and backend.reason.startswith(reason)
    assert backend.attn_implementation == attention._HF_NAMES[chosen]


@pytest.mark.parametrize("name", ["varlen", "flash_attn"])
def test_cuda_backend_on_cpu_raises_naming_the_recipe_key(name: str):
    with pytest.raises(ValueError, match=rf"model\.llm\.attn='{name}' cannot run here: device is cpu") as e:
        choose_backend(name, "cpu")
    assert "CUDA GPU (sm80+)" in str(e.value)
    assert "available on cpu: ['flex', 'sdpa_varlen', 'sdpa', 'eager', 'auto']" in str(e.value)


def test_unknown_backend_raises():
    with pytest.raises(ValueError, match=r"model\.llm\.attn='flash' is not one of \['auto', 'flash_attn'"):
        choose_backend("flash", "cpu")


def test_explicit_flex_on_cpu_says_it_is_forward_only():
    backend = choose_backend("flex", "cpu")
    assert (backend.name, backend.attn_implementation, backend.takes_cu_seqlens) == ("flex", "mmadapter_flex", True)
    assert "forward only" in backend.reason


def test_registered_functions_never_build_a_dense_mask():
    attention.register_attention_functions()
    model = tiny_llm()
    config = model.config
    config._attn_implementation = "mmadapter_varlen"
    batch = packed(sequences())
    embeds = torch.zeros(1, batch.input_ids.shape[1], 64)
    mask = create_causal_mask(config, embeds, None, None, position_ids=batch.position_ids)
    assert mask is None
    ids, pad, positions = padded(sequences())
    mask = create_causal_mask(config, torch.zeros(*ids.shape, 64), pad, None, position_ids=positions)
    assert mask is not None and mask.shape == ids.shape and mask.dtype == torch.bool  # 2-D padding mask only


def test_packed_kwargs():
    batch = packed(sequences())
    assert packed_kwargs(batch, BACKENDS["sdpa"]) == {}
    kwargs = packed_kwargs(batch, BACKENDS["varlen"])
    assert kwargs["attention_mask"] is None and kwargs["cu_seq_lens_q"] is kwargs["cu_seq_lens_k"]
    assert kwargs["cu_seq_lens_q"].tolist() == [0, 7, 19, 24] and kwargs["cu_seq_lens_q"].dtype == torch.int32
    assert kwargs["max_length_q"] == kwargs["max_length_k"] == 12
    tail = packed_kwargs(packed(sequences(), tail=3), BACKENDS["flex"])
    assert tail["cu_seq_lens_q"].tolist() == [0, 7, 19, 24, 27]
    ids, mask, positions = padded(sequences())
    pad = MultimodalBatch(ids, ids, ids, positions, ["a", "b", "c"], attention_mask=mask, max_seqlen=12)
    assert packed_kwargs(pad, BACKENDS["varlen"]) == {}


def test_apply_backend_switches_a_loaded_model():
    model = tiny_llm()
    apply_backend(model, BACKENDS["flex"])
    assert model.config._attn_implementation == "mmadapter_flex"
    assert model.get_decoder().config._attn_implementation == "mmadapter_flex"


# --- the CPU path: transformers' packed-sequence SDPA -------------------------------------------------------


@torch.no_grad()
def test_cpu_sdpa_packed_row_equals_each_sequence_alone():
    model, seqs = tiny_llm(), sequences()
    want = alone(model, seqs)
    batch = packed(seqs)
    assert_per_sequence(decode(model, batch, choose_backend("sdpa", "cpu")), want, atol=1e-5)
    # With a dense all-ones mask transformers no longer splits the row: later samples see earlier ones.
    leaked = decode(model, batch, attention_mask=torch.ones_like(batch.input_ids)).split(LENGTHS)
    assert_per_sequence(leaked[0], want[:1], atol=1e-5)  # the first sample has nothing before it to see
    for i in (1, 2):
        error = (leaked[i] - want[i]).norm() / want[i].norm()
        assert error > 0.1, f"sequence {i} attends to the samples before it, yet differs by only {error:.2e}"


# --- packed kernels on CPU ----------------------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize("kernel", ["flex", "sdpa_varlen"])
@pytest.mark.parametrize("how", ["cu_seqlens", "position_ids"])
def test_cpu_kernel_packed_row_equals_sdpa_alone(how: str, kernel: str):
    model, seqs = tiny_llm(), sequences()
    want = alone(model, seqs)
    backend = choose_backend(kernel, "cpu")
    apply_backend(model, backend)
    batch = packed(seqs)
    got = decode(model, batch, backend) if how == "cu_seqlens" else decode(model, batch)
    assert_per_sequence(got, want, atol=1e-5)


@torch.no_grad()
def test_packed_kwargs_give_the_layout_and_one_block_mask_per_batch(monkeypatch: pytest.MonkeyPatch):
    built: list[RaggedLayout] = []
    real = varlen_kernels._document_mask
    monkeypatch.setattr(varlen_kernels, "_document_mask", lambda layout, *a: built.append(layout) or real(layout, *a))
    monkeypatch.setattr(packed_attention, "_from_positions", lambda _: pytest.fail("boundaries from position_ids"))
    model, backend = tiny_llm(), choose_backend("flex", "cpu")
    apply_backend(model, backend)
    batch = packed(sequences())
    decode(model, batch, backend)
    decode(model, batch, backend)  # both layers of both forwards share one block mask
    assert len(built) == 1 and built[0].cu_q.tolist() == [0, 7, 19, 24] and built[0].max_q == 12
    decode(model, packed(sequences([4, 4])), backend)
    assert len(built) == 2 and built[1].cu_q.tolist() == [0, 4, 8]


@torch.no_grad()
@pytest.mark.parametrize("kernel", ["flex", "varlen", "sdpa_varlen"])  # varlen on CPU runs the PyTorch reference
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_rows_equal_sdpa_alone(kernel: str, side: str):
    model, seqs = tiny_llm(), sequences()
    want = alone(model, seqs)
    apply_backend(model, BACKENDS[kernel])
    ids, mask, positions = padded(seqs, side)
    out = model.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
    got = torch.cat([h[m.bool()] for h, m in zip(out.last_hidden_state, mask, strict=True)])
    assert_per_sequence(got, want, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("kernel", ["flex", "varlen", "sdpa_varlen"])
def test_generation_with_a_cache_matches_sdpa(kernel: str):
    model, seqs = tiny_llm(), sequences()
    ids, mask, _ = padded(seqs, "left")
    options = {"max_new_tokens": 4, "do_sample": False, "output_logits": True, "return_dict_in_generate": True}
    apply_backend(model, BACKENDS["sdpa"])
    want = model.generate(input_ids=ids, attention_mask=mask, pad_token_id=0, **options)
    apply_backend(model, BACKENDS[kernel])
    got = model.generate(input_ids=ids, attention_mask=mask, pad_token_id=0, **options)
    assert torch.equal(got.sequences, want.sequences)
    torch.testing.assert_close(torch.stack(got.logits), torch.stack(want.logits), atol=1e-4, rtol=1e-4)


def test_cuda_kernel_on_cpu_tensors_falls_back_to_the_reference_with_gradients():
    model, seqs = tiny_llm(), sequences()
    with torch.no_grad():
        want = alone(model, seqs)
    apply_backend(model, BACKENDS["varlen"])
    got = decode(model, packed(seqs), BACKENDS["varlen"])
    assert_per_sequence(got.detach(), want, atol=1e-5)
    got.square().mean().backward()
    grad = model.get_decoder().layers[0].self_attn.q_proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0


# --- kernel semantics, checked against SDPA with an explicit mask ------------------------------------------

# (query lengths, key lengths): equal for training, fewer queries when decoding with a cache.
SHAPES = {"packed": ([5, 9, 3], [5, 9, 3]), "cached": ([1, 2, 1], [6, 9, 4])}
OPTIONS = {
    "causal": AttentionOptions(causal=True, scale=0.3),
    "window": AttentionOptions(causal=True, window=3),
    "full": AttentionOptions(causal=False),
    "full-window": AttentionOptions(causal=False, window=2),
}


def ragged(shape: str, heads: tuple[int, int] = (4, 2)) -> tuple[Tensor, Tensor, Tensor, RaggedLayout]:
    """q ``(n, h, 16)`` and k, v ``(n, g, 16)`` for ``heads == (h, g)``, with their layout."""
    lq, lk = SHAPES[shape]
    cu_q, cu_k = (torch.tensor([0, *itertools.accumulate(x)], dtype=torch.int32) for x in (lq, lk))
    g = torch.Generator().manual_seed(2)
    q = torch.randn(sum(lq), heads[0], 16, generator=g)
    k, v = (torch.randn(sum(lk), heads[1], 16, generator=g) for _ in range(2))
    return q, k, v, RaggedLayout(cu_q, cu_k, max(lq), max(lk))


def sdpa_per_sequence(q: Tensor, k: Tensor, v: Tensor, layout: RaggedLayout, opts: AttentionOptions) -> Tensor:
    outs = []
    for i in range(len(layout.cu_q) - 1):
        qs = q[layout.cu_q[i] : layout.cu_q[i + 1]].transpose(0, 1).float()
        ks, vs = (x[layout.cu_k[i] : layout.cu_k[i + 1]].transpose(0, 1).float() for x in (k, v))
        lq, lk = qs.shape[1], ks.shape[1]
        ahead = torch.arange(lq)[:, None] + lk - lq - torch.arange(lk)  # query position minus key position
        keep = ahead >= 0 if opts.causal else torch.ones(lq, lk, dtype=torch.bool)
        if opts.window is not None:
            keep &= ahead.abs() < opts.window
        out = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=keep, scale=opts.scale, enable_gqa=True)
        outs.append(out.transpose(0, 1))
    return torch.cat(outs)


@pytest.mark.parametrize("heads", [(4, 2), (6, 2)], ids=["gqa2", "gqa3"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("kernel", [run_reference, run_flex, run_padded_sdpa], ids=["reference", "flex", "padded_sdpa"])
def test_kernel_matches_sdpa_with_an_explicit_mask(
    kernel: Callable[..., Tensor], option: str, shape: str, heads: tuple[int, int]
):
    q, k, v, layout = ragged(shape, heads)
    torch.testing.assert_close(
        kernel(q, k, v, layout, OPTIONS[option]), sdpa_per_sequence(q, k, v, layout, OPTIONS[option])
    )


def test_padded_sdpa_gradients_equal_the_reference_and_an_empty_sequence_stays_finite():
    q, k, v, layout = ragged("packed")
    grads = []
    for kernel in (run_reference, run_padded_sdpa):
        leaves = [x.clone().requires_grad_() for x in (q, k, v)]
        kernel(*leaves, layout, OPTIONS["causal"]).square().sum().backward()
        grads.append([x.grad for x in leaves])
    for ref, ours in zip(*grads, strict=True):
        torch.testing.assert_close(ours, ref)
    # a zero-length sequence among them (the padding tail of a row): nothing of it is output, nothing turns NaN
    cu = torch.tensor([0, 5, 5, 14], dtype=torch.int32)
    out = run_padded_sdpa(q[:14], k[:14], v[:14], RaggedLayout(cu, cu, 9, 9), AttentionOptions(causal=False))
    assert out.shape == (14, 4, 16) and torch.isfinite(out).all()


def fake_kernel(real: Callable[..., Any], calls: list[inspect.BoundArguments]) -> Callable[..., Tensor]:
    """Stands in for a FlashAttention varlen function: binds the call to ``real``'s signature (so a wrong keyword
    fails), checks the dtype and decodes the FlashAttention arguments back into :class:`AttentionOptions`."""

    @functools.wraps(real)
    def kernel(*args: Any, **kwargs: Any) -> Tensor:
        bound = inspect.signature(real).bind(*args, **kwargs)
        bound.apply_defaults()
        calls.append(bound)
        a = bound.arguments
        q, k, v = a.get("query", a.get("q")), a.get("key", a.get("k")), a.get("value", a.get("v"))
        assert q.dtype in (torch.float16, torch.bfloat16)
        if "enable_gqa" in a and not a["enable_gqa"]:
            assert k.shape[1] == q.shape[1], "varlen_attn needs enable_gqa=True for fewer key/value heads"
        left, right = a["window_size"]
        causal = a["causal"] if "causal" in a else a["window_size"] == (-1, 0) or right == 0
        opts = AttentionOptions(causal, None if left < 0 else left + 1, a.get("scale", a.get("softmax_scale")))
        cu = (a.get("cu_seq_q", a.get("cu_seqlens_q")), a.get("cu_seq_k", a.get("cu_seqlens_k")))
        maxes = (a.get("max_q", a.get("max_seqlen_q")), a.get("max_k", a.get("max_seqlen_k")))
        return run_reference(q, k, v, RaggedLayout(*cu, *maxes), opts)

    return kernel


def flash_attn_varlen_func(  # the signature documented in flash-attn 2.7 flash_attn_interface.py
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    block_table: Tensor | None = None,
) -> Tensor:
    raise NotImplementedError


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("option", ["causal", "window"])
def test_varlen_call_fits_the_installed_torch_signature(monkeypatch: pytest.MonkeyPatch, option: str, shape: str):
    from torch.nn.attention import varlen

    calls: list[inspect.BoundArguments] = []
    monkeypatch.setattr(varlen, "varlen_attn", fake_kernel(varlen.varlen_attn, calls))
    q, k, v, layout = ragged(shape)
    got = run_varlen(q, k, v, layout, OPTIONS[option])
    assert got.dtype == torch.float32 and isinstance(calls[0].arguments["window_size"], tuple)
    torch.testing.assert_close(got, run_reference(q, k, v, layout, OPTIONS[option]), atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("option", ["causal", "window", "full"])
def test_flash_attn_call_fits_its_documented_signature(monkeypatch: pytest.MonkeyPatch, option: str):
    calls: list[inspect.BoundArguments] = []
    module = types.ModuleType("flash_attn")
    module.flash_attn_varlen_func = fake_kernel(flash_attn_varlen_func, calls)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "flash_attn", module)
    q, k, v, layout = ragged("cached")
    got = run_flash_attn(q, k, v, layout, OPTIONS[option])
    assert calls[0].arguments["causal"] is OPTIONS[option].causal
    torch.testing.assert_close(got, run_reference(q, k, v, layout, OPTIONS[option]), atol=3e-2, rtol=3e-2)


# --- CUDA: every backend against SDPA alone, in bf16 --------------------------------------------------------


CUDA = "cuda"


def cuda_backend(name: str) -> Backend:
    if name == "flash_attn":
        pytest.importorskip("flash_attn", reason="flash-attn is not installed")
    return choose_backend(name, "cuda")


@pytest.mark.gpu
@requires_cuda
def test_auto_on_cuda_picks_a_packed_kernel_and_says_why():
    backend = choose_backend("auto", "cuda")
    assert backend.name in ("flash_attn", "varlen", "flex") and backend.takes_cu_seqlens
    assert "CUDA" in backend.reason


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("name", ["flash_attn", "varlen", "flex"])
def test_cuda_backend_packed_forward_and_gradients_match_sdpa(name: str):
    backend = cuda_backend(name)
    model, seqs = tiny_llm("bfloat16", CUDA), sequences()
    weights = torch.randn(sum(LENGTHS), 64, device=CUDA).split(LENGTHS)
    want = alone(model, seqs)
    torch.stack([(h.float() * w).sum() for h, w in zip(want, weights, strict=True)]).sum().backward()
    params = dict(model.get_decoder().named_parameters())
    want_grads = {n: p.grad.clone() for n, p in params.items() if p.grad is not None}
    model.zero_grad()
    apply_backend(model, backend)
    got = decode(model, packed(seqs).to(CUDA), backend)
    assert_per_sequence(got.detach(), [w.detach() for w in want], atol=0.1, rel=2e-2)
    torch.stack([(h.float() * w).sum() for h, w in zip(got.split(LENGTHS), weights, strict=True)]).sum().backward()
    assert len(want_grads) == len(params), "not every decoder parameter got a gradient through SDPA"
    for n, g in want_grads.items():
        grad = params[n].grad
        assert grad is not None, f"no gradient for {n} through {name}"
        assert_relative(grad, g, 5e-2, f"gradient of {n}")


def prefill_and_step(model: PreTrainedModel, ids: Tensor, mask: Tensor) -> Tensor:
    """Last-position logits ``(b, 2, v)`` of a left-padded prefill and of one cached step with a fixed token."""
    first = model(input_ids=ids, attention_mask=mask, use_cache=True)
    token = torch.full((ids.shape[0], 1), 42, device=ids.device)
    mask = torch.cat([mask, torch.ones_like(token)], 1)
    step = model(input_ids=token, attention_mask=mask, past_key_values=first.past_key_values, use_cache=True)
    return torch.stack([first.logits[:, -1], step.logits[:, -1]], 1)


@torch.no_grad()
@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("name", ["flash_attn", "varlen", "flex"])
def test_cuda_backend_padded_rows_and_cached_decoding_match_sdpa(name: str):
    backend = cuda_backend(name)
    model, seqs = tiny_llm("bfloat16", CUDA), sequences()
    want = alone(model, seqs)
    ids, mask, positions = (x.to(CUDA) for x in padded(seqs, "left"))
    want_logits = prefill_and_step(model, ids, mask)
    apply_backend(model, backend)
    out = model.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
    got = torch.cat([h[m.bool()] for h, m in zip(out.last_hidden_state, mask, strict=True)])
    assert_per_sequence(got, want, atol=0.1, rel=2e-2)
    assert_relative(prefill_and_step(model, ids, mask), want_logits, 3e-2, "logits")
