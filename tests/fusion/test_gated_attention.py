"""Zero-init gated attention (prompt and cross modes) and bias/norm tuning: identity at init, the
LLaMA-Adapter formula, packing isolation, generation with and without a KV cache."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator

import pytest
import torch
from adapter_helpers import ADAPTERS, WIDE, build, layout, mixed_samples, one_thread, prompts, section, wake
from conftest import random_audio, tiny_recipe
from torch.nn import functional as F

from mmadapter.batch import MultimodalBatch
from mmadapter.config import RecipeError
from mmadapter.fusion import TanhGate
from mmadapter.model import MultimodalLM

GATED = ["prompt", "prompt_conditioned", "prompt_out_of_sequence", "cross", "cross_out_of_sequence", "bias_norm"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.mark.parametrize("mode", GATED)
def test_logits_at_init_equal_the_frozen_llm_exactly_packed_and_padded(mode: str) -> None:
    plain, model = build(), build(ADAPTERS[mode])
    samples = mixed_samples(model)
    if not model.adapters.in_sequence:  # no slots: the frozen LLM reads the same text without the items
        assert all(s.chat.token_modality.count(0) == len(s.chat) for s in samples)
    for kind in ("packed", "padded"):
        batch = layout(samples, kind, model)
        text_only = dataclasses.replace(batch, items={}) if not model.adapters.in_sequence else batch
        with torch.no_grad():
            assert torch.equal(model(batch, return_logits=True).logits, plain(text_only, return_logits=True).logits)


def test_tanh_gate_is_zero_at_init_and_gates_per_head() -> None:
    gate = TanhGate(3, dim=-2)
    x = torch.randn(2, 5, 3, 4)
    assert torch.equal(gate(x), torch.zeros_like(x))
    with torch.no_grad():
        gate.scale.copy_(torch.tensor([0.0, 1.0, -2.0]))
    assert torch.allclose(gate(x), x * torch.tanh(torch.tensor([0.0, 1.0, -2.0]))[:, None])


def reference_logits(model: MultimodalLM, embeds: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor:
    """The tiny Llama with LLaMA-Adapter prompt branches, written out densely for one unpadded sample."""
    llm, adapters = model.llm, model.gated_attention.layers
    cfg = llm.config
    H, G, t = cfg.num_attention_heads, cfg.num_key_value_heads, embeds.shape[1]
    c = cfg.hidden_size // H
    inv_freq = 1.0 / cfg.rope_parameters["rope_theta"] ** (torch.arange(0, c, 2).float() / c)
    angles = torch.arange(t).float()[:, None] * inv_freq[None]
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()

    def rope(x: torch.Tensor) -> torch.Tensor:
        return x * cos + torch.cat([-x[..., c // 2 :], x[..., : c // 2]], -1) * sin

    def heads(x: torch.Tensor, n: int) -> torch.Tensor:  # (l, n·c) → (H, l, c)
        return x.view(x.shape[0], n, c).transpose(0, 1).repeat_interleave(H // n, 0)

    def lin(module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:  # the weights alone, no hooks
        return F.linear(x, module.weight, module.bias)

    causal = torch.full((t, t), float("-inf")).triu(1)
    h = embeds[0]
    for i, layer in enumerate(llm.model.layers):
        attn, x = layer.self_attn, layer.input_layernorm(h)
        q = rope(heads(lin(attn.q_proj, x), H))
        k, v = rope(heads(lin(attn.k_proj, x), G)), heads(lin(attn.v_proj, x), G)
        out = torch.softmax(q @ k.mT / math.sqrt(c) + causal, -1) @ v  # (H, t, c)
        if str(i) in adapters:
            prompt = adapters[str(i)].prompt + (shift if shift is not None else 0.0)
            kp, vp = heads(lin(attn.k_proj, prompt), G), heads(lin(attn.v_proj, prompt), G)  # no rotary
            gate = torch.tanh(adapters[str(i)].gate.scale)[:, None, None]
            out = out + gate * (torch.softmax(q @ kp.mT / math.sqrt(c), -1) @ vp)
        h = h + lin(attn.o_proj, out.transpose(0, 1).reshape(t, H * c))
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    return llm.lm_head(llm.model.norm(h))[None]


@pytest.mark.parametrize("conditioned", [False, True])
def test_prompt_mode_equals_a_dense_llama_adapter_reference(conditioned: bool) -> None:
    mode = section("gated_attention", mode="prompt", layers=[0, 1], prompt_len=4, conditioned=conditioned)
    model = wake(build(mode, "model.llm.config.num_key_value_heads=1"))  # 4 query heads share a key head
    assert all(layer.gate.scale.abs().min() > 0.01 for layer in model.gated_attention.layers.values())
    sample = mixed_samples(model)[0]
    batch = MultimodalBatch.pack([sample])
    with torch.no_grad():
        shift = None
        if conditioned:
            tokens, lengths = model.encode_items("audio", batch.items["audio"])
            shift = model.gated_attention.condition(tokens[0, : lengths[0]].mean(0))
        ours = model(batch, return_logits=True).logits
        ref = reference_logits(model, model.embed(batch), shift)
        frozen = build()(batch, return_logits=True).logits
    assert (ours - ref).abs().max() <= 1e-5
    assert (ours - frozen).abs().max() > 1e-2


@pytest.mark.parametrize("mode", ["prompt_conditioned", "prompt", "cross", "cross_out_of_sequence", "molora_modality"])
def test_generation_with_kv_cache_equals_generation_without(mode: str) -> None:
    model = wake(build(WIDE, ADAPTERS[mode]), std=0.3)
    batch_prompts = prompts(model)
    cached = model.generate(batch_prompts, max_new_tokens=8)
    assert cached == model.generate(batch_prompts, max_new_tokens=8, use_cache=False)
    assert cached == [model.generate([p], max_new_tokens=8)[0] for p in batch_prompts]
    assert len(set(cached)) == len(cached)


@pytest.mark.parametrize("mode", ["cross", "cross_out_of_sequence"])
def test_cross_attention_never_crosses_samples_of_a_packed_row(mode: str) -> None:
    plain, model = build(), wake(build(ADAPTERS[mode]))
    first, second = mixed_samples(model, audio_seed=1), mixed_samples(model, audio_seed=9)
    assert [len(s.chat) for s in first] == [len(s.chat) for s in second]
    bounds = MultimodalBatch.pack(first).cu_seqlens.tolist()
    with torch.no_grad():
        a = model(MultimodalBatch.pack(first), return_logits=True).logits[0]
        b = model(MultimodalBatch.pack(second), return_logits=True).logits[0]
        text_batch = MultimodalBatch.pack([s for s in first if not s.items])
        frozen = plain(text_batch, return_logits=True).logits[0]
    part = [slice(lo, hi) for lo, hi in itertools.pairwise(bounds)]
    assert not torch.allclose(a[part[0]], b[part[0]], atol=1e-4)  # the changed sample changes
    for s in (1, 2, 3):
        assert torch.equal(a[part[s]], b[part[s]]), s
    # the text-only sample equals the frozen LLM, packed differently: float32 rounding only
    assert torch.isfinite(a).all() and torch.allclose(a[part[2]], frozen, atol=1e-5, rtol=1e-5)


def test_cross_attention_gradients_are_finite_with_a_text_only_sample() -> None:
    model = wake(build(ADAPTERS["cross"], 'train.stages.0.trainable=["gated_attention"]'))
    out = model(MultimodalBatch.pack(mixed_samples(model)))
    out.loss.backward()
    grads = [p.grad for p in model.gated_attention.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_out_of_sequence_items_take_no_slots_but_reach_the_llm() -> None:
    model = wake(build(ADAPTERS["cross_out_of_sequence"]))
    assert model.item_length("audio", 16000) == 0 and model.token_count("audio", 16000) > 0
    one = model.prepare("x", [{"role": "user", "content": "<audio>"}], {"audio": [random_audio(1.0, 1)]})
    two = model.prepare("x", [{"role": "user", "content": "<audio>"}], {"audio": [random_audio(1.0, 2)]})
    with torch.no_grad():
        a = model(MultimodalBatch.pack([one]), return_logits=True).logits
        b = model(MultimodalBatch.pack([two]), return_logits=True).logits
    assert a.shape == b.shape and not torch.allclose(a, b, atol=1e-4)


def test_gated_attention_options_are_checked() -> None:
    with pytest.raises(RecipeError, match=r"\['every'\] only apply to mode 'cross'"):
        tiny_recipe(section("gated_attention", mode="prompt", every=2))
    with pytest.raises(RecipeError, match="needs conditioned: true"):
        tiny_recipe(section("gated_attention", mode="prompt", in_sequence=False))
    with pytest.raises(ValueError, match=r"model\.gated_attention\.layers: indices \[5\] are outside"):
        build(section("gated_attention", mode="prompt", layers=[1, 5]))
    assert list(build(section("gated_attention", mode="prompt", layers=30)).gated_attention.layers) == ["0", "1"]
    with pytest.raises(ValueError, match="every=3: the LLM has only 2 layers"):
        build(section("gated_attention", mode="cross", every=3))


@pytest.mark.parametrize(
    "adapters",
    [
        [ADAPTERS["molora_topk"], ADAPTERS["prompt_conditioned"], ADAPTERS["bias_norm"]],
        [ADAPTERS["molora_modality"], ADAPTERS["cross"]],
    ],
)
def test_activation_checkpointing_gives_the_same_loss_and_gradients(adapters: list[str]) -> None:
    every = 'train.stages.0.trainable=["projectors", "molora", "gated_attention"]'
    results = []
    for checkpointing in (False, True):
        model = wake(build(*adapters, every))
        if checkpointing:
            model.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        model.llm.train()  # Hugging Face checkpoints only in training mode
        calls: list[int] = []
        model.llm.model.layers[0].mlp.register_forward_pre_hook(lambda *_, seen=calls: seen.append(1))
        out = model(MultimodalBatch.pack(mixed_samples(model)))
        out.loss.backward()
        assert len(calls) == (2 if checkpointing else 1)  # the layer really was re-run during backward
        results.append((out.loss, {n: p.grad for n, p in model.named_parameters() if p.requires_grad}))
    (loss, grads), (loss_ckpt, grads_ckpt) = results
    assert torch.allclose(loss, loss_ckpt, atol=1e-6) and grads.keys() == grads_ckpt.keys()
    for name, grad in grads.items():
        assert grad is not None and torch.allclose(grad, grads_ckpt[name], atol=1e-5), name


def test_beam_search_expands_the_adapters_rows_too() -> None:
    model = wake(build(WIDE, ADAPTERS["cross"]), std=0.3)
    beams = model.generate(prompts(model), max_new_tokens=4, num_beams=2)
    assert len(beams) == 3 and beams == [model.generate([p], max_new_tokens=4, num_beams=2)[0] for p in prompts(model)]


@pytest.mark.parametrize("mode", ["prompt_conditioned", "cross"])
def test_the_adapters_do_not_depend_on_the_attention_kernel(mode: str) -> None:
    sdpa, eager = wake(build(ADAPTERS[mode])), wake(build(ADAPTERS[mode], "model.llm.attn=eager"))
    assert eager.llm.config._attn_implementation == "eager" != sdpa.llm.config._attn_implementation
    batch = MultimodalBatch.pack(mixed_samples(sdpa))
    with torch.no_grad():
        a, b = sdpa(batch, return_logits=True).logits, eager(batch, return_logits=True).logits
    assert (a - b).abs().max() <= 1e-5 and (a - build()(batch, return_logits=True).logits).abs().max() > 1e-2
