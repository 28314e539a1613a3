"""MoLoRALinear: identity at init, PEFT equivalence, per-token expert routing, top-k router, merging."""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from adapter_helpers import ADAPTERS, EXPERTS, build, layout, mixed_samples, one_thread, section, wake
from conftest import tiny_recipe
from peft import LoraConfig, get_peft_model
from torch import nn

from mmadapter.adapter_context import AdapterContext, BatchTokens
from mmadapter.batch import MultimodalBatch
from mmadapter.config import RecipeError
from mmadapter.llm import MODALITY_IDS
from mmadapter.lora import MoLoRALinear, balance_loss

MOLORA_MODES = ["molora_modality", "molora_soft", "molora_topk"]


@contextmanager
def bound(x: torch.Tensor, modality: torch.Tensor) -> Iterator[tuple[AdapterContext, dict]]:
    """A context seeing a decoder call over ``x`` with these token modalities, and the aux losses it records."""
    context = AdapterContext()
    with context.bind(BatchTokens(modality, torch.zeros_like(modality), 1)) as aux:
        context.window_hook(nn.Identity(), (), {"inputs_embeds": x})
        yield context, aux


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.mark.parametrize("kind", ["packed", "padded"])
@pytest.mark.parametrize("mode", MOLORA_MODES)
def test_logits_at_init_equal_the_frozen_llm_exactly(mode: str, kind: str) -> None:
    plain, model = build(), build(ADAPTERS[mode])
    assert any(isinstance(m, MoLoRALinear) for m in model.llm.modules())
    batch = layout(mixed_samples(model), kind, model)
    with torch.no_grad():
        assert torch.equal(model(batch, return_logits=True).logits, plain(batch, return_logits=True).logits)


def test_one_expert_equals_peft_lora_with_the_same_weights() -> None:
    base = nn.Linear(16, 24)
    ours = MoLoRALinear(copy.deepcopy(base), ["text"], rank=4, alpha=8.0)
    nn.init.normal_(ours.lora_B["text"].weight)
    peft = get_peft_model(
        nn.Sequential(OrderedDict(proj=copy.deepcopy(base))), LoraConfig(r=4, lora_alpha=8, target_modules=["proj"])
    )
    proj = peft.base_model.model.proj
    with torch.no_grad():
        proj.lora_A["default"].weight.copy_(ours.lora_A["text"].weight)
        proj.lora_B["default"].weight.copy_(ours.lora_B["text"].weight)
    x = torch.randn(2, 7, 16)
    with torch.no_grad():
        assert (ours(x) - peft(x)).abs().max() <= 1e-6
        assert (ours(x) - base(x)).abs().max() > 1e-2


def test_one_expert_llm_equals_peft_llm() -> None:
    one = {"experts": ["text"], "modality_map": {"audio": "text", "image": "text"}, "rank": 4, "alpha": 8.0}
    model = wake(build(section("molora", **one)))
    reference = get_peft_model(
        build().llm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    )
    lora = {n: m for n, m in model.llm.named_modules() if isinstance(m, MoLoRALinear)}
    with torch.no_grad():
        for name, module in reference.named_modules():
            short = name.removeprefix("base_model.model.")
            if short in lora:
                module.lora_A["default"].weight.copy_(lora[short].lora_A["text"].weight)
                module.lora_B["default"].weight.copy_(lora[short].lora_B["text"].weight)
        ids = torch.randint(0, 256, (2, 11))
        ours, theirs = model.llm(input_ids=ids).logits, reference(input_ids=ids).logits
    assert len(lora) == 4 and (ours - theirs).abs().max() <= 1e-6


def test_each_token_gets_the_single_expert_lora_of_its_modality() -> None:
    layer = MoLoRALinear(nn.Linear(16, 24), [*EXPERTS, "graph_only"], rank=4, alpha=8.0, expert_of={"graph": "text"})
    for e in layer.experts:
        nn.init.normal_(layer.lora_B[e].weight)
    x = torch.randn(2, 9, 16)
    modality = torch.randint(0, 4, (2, 9))
    with bound(x, modality) as (layer.context, _), torch.no_grad():
        out = layer(x)
        for m, expert in [("text", "text"), ("audio", "audio"), ("image", "image"), ("graph", "text")]:
            a, b = layer.lora_A[expert].weight, layer.lora_B[expert].weight
            single = layer.base_layer(x) + layer.scaling * x @ a.T @ b.T
            picked = modality == MODALITY_IDS[m]
            assert picked.any() and (out[picked] - single[picked]).abs().max() <= 1e-6, m
    assert layer.lora_A_stacked.shape == (4, 4, 16) and layer.lora_B_stacked.shape == (4, 24, 4)


def test_without_a_bound_batch_every_token_is_text() -> None:
    layer = MoLoRALinear(nn.Linear(8, 8), ["audio", "text"], rank=2, context=AdapterContext())
    nn.init.normal_(layer.lora_B["text"].weight)
    with torch.no_grad():
        assert torch.allclose(layer(torch.ones(1, 3, 8)), layer.merge("text")(torch.ones(1, 3, 8)), atol=1e-6)


def test_topk_gradients_reach_the_router_and_balance_loss_has_floor_one() -> None:
    torch.manual_seed(0)
    layer = MoLoRALinear(nn.Linear(16, 16), ["a", "b", "c", "d"], rank=4, routing="topk", top_k=2)
    for e in layer.experts:
        nn.init.normal_(layer.lora_B[e].weight)
    x = torch.randn(3, 20, 16).abs()
    with bound(x, torch.zeros(3, 20, dtype=torch.long)) as (layer.context, aux):
        layer(x).square().mean().backward()  # the task loss alone, without the balance loss
        assert layer.router.weight.grad is not None and layer.router.weight.grad.abs().sum() > 0
        with torch.no_grad():
            layer.router.weight.zero_()  # uniform: every expert has probability 1/E
            layer(x)
            layer.router.weight[0] = 10.0  # collapsed: expert 0 always wins
            layer(x)
    uniform, collapsed = aux["balance_loss"][-2:]
    assert abs(uniform.item() - 1.0) <= 1e-6
    assert collapsed.item() > 1.9  # E / k = 2 for a router that always keeps the same two experts


def test_balance_loss_is_switch_style() -> None:
    probs = torch.full((5, 4), 0.25)
    assert balance_loss(probs, torch.zeros(5, 1, dtype=torch.long), 4).item() == pytest.approx(1.0)
    onehot = torch.eye(4)[torch.zeros(5, dtype=torch.long)]
    assert balance_loss(onehot, torch.zeros(5, 1, dtype=torch.long), 4).item() == pytest.approx(4.0)


def test_topk_model_adds_the_weighted_balance_loss_and_trains_the_router() -> None:
    model = wake(build(ADAPTERS["molora_topk"], 'train.stages.0.trainable=["molora"]'))
    batch = MultimodalBatch.pack(mixed_samples(model))
    out = model(batch)
    weight, model.adapters.balance_weight = model.adapters.balance_weight, 0.0
    cross_entropy = model(batch).loss
    assert weight == 0.01 and out.aux["balance_loss"] >= 1.0 - 1e-6
    assert torch.allclose(out.loss, cross_entropy + weight * out.aux["balance_loss"], atol=1e-6)
    out.loss.backward()
    routers = [m.router.weight for m in model.adapters.molora]
    assert len(routers) == 2 * 7 and all(r.grad is not None and r.grad.abs().sum() > 0 for r in routers)


def test_merged_text_llm_equals_the_unmerged_model_on_text() -> None:
    model = wake(build(ADAPTERS["molora_modality"], ADAPTERS["bias_norm"]))
    text = [s for s in mixed_samples(model) if not s.items]
    text.append(model.prepare("e", [{"role": "user", "content": "A longer text-only prompt"}]))
    batch = MultimodalBatch.pad(text, model.tokenizer.pad_token_id)
    merged = model.merged_llm("text")
    assert not any(isinstance(m, MoLoRALinear) for m in merged.modules())
    assert any(isinstance(m, MoLoRALinear) for m in model.llm.modules())  # the model itself is untouched
    with torch.no_grad():
        ours = model(batch, return_logits=True).logits
        served = merged(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        audio = model.merged_llm("audio")(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    real = batch.attention_mask.bool()
    assert (ours[real] - served[real]).abs().max() <= 1e-5
    assert (ours[real] - audio[real]).abs().max() > 1e-3
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in build().llm.parameters()) + sum(
        p.numel() for p in model.bias_norm.parameters()
    )


def test_learned_routing_and_gated_attention_cannot_be_merged() -> None:
    with pytest.raises(ValueError, match="only modality routing"):
        build(ADAPTERS["molora_soft"]).merged_llm("text")
    with pytest.raises(ValueError, match="gated attention"):
        build(ADAPTERS["prompt"]).merged_llm("text")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"experts": ["text", "audio"], "routing": "topk", "top_k": 3}, "top_k=3 exceeds the 2 expert"),
        ({"experts": ["text", "audio"], "modality_map": {"image": "vision"}}, "experts that do not exist"),
        ({"experts": ["text", "audio"]}, r"no expert for \['image'\]"),
        ({"experts": ["text", "text"]}, "unique"),
        ({"experts": ["text", "audio", "image"], "top_k": 2}, "only applies to routing 'topk'"),
    ],
)
def test_recipe_rejects_inconsistent_molora_sections(options: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        tiny_recipe(section("molora", **options))


def test_unknown_target_and_expert_group_are_reported() -> None:
    with pytest.raises(ValueError, match=r"model.molora.targets: \['qkv'\].*available: \['down_proj'"):
        build(section("molora", experts=EXPERTS, targets=["qkv"]))
    with pytest.raises(RecipeError, match=r"unknown group 'molora\.video'"):
        tiny_recipe(section("molora", experts=EXPERTS), 'train.stages.0.trainable=["molora.video"]')
