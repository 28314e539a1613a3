"""The adapters inside the LLM as trainable groups, in ``mmadapter summary`` and in artefacts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from adapter_helpers import ADAPTERS, EXPERTS, build, mixed_samples, one_thread, section, wake
from conftest import TINY_RECIPE
from safetensors.torch import load_file

from mmadapter.artefact import adapter_state_names
from mmadapter.batch import MultimodalBatch
from mmadapter.cli import main
from mmadapter.model import MultimodalLM

LAYERS = (0, 1)
MOLORA = {
    f"llm.model.layers.{i}.self_attn.{p}.lora_{ab}.{e}.weight"
    for i in LAYERS
    for p in ("q_proj", "v_proj")
    for ab in "AB"
    for e in EXPERTS
}
PROMPT = {"gated_attention.layers.1.prompt", "gated_attention.layers.1.gate.scale", "gated_attention.condition.weight"}
CROSS_PARTS = [
    "attn_norm.weight",
    "q_proj.weight",
    "k_proj.weight",
    "v_proj.weight",
    "o_proj.weight",
    "attn_gate.scale",
]
CROSS_PARTS += ["ffn_norm.weight", "ffn.0.weight", "ffn.0.bias", "ffn.2.weight", "ffn.2.bias", "ffn_gate.scale"]
BIAS_NORM = {
    f"bias_norm.biases.{i}.{t}" for i in LAYERS for t in ("q_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
}
BIAS_NORM |= {
    f"llm.model.layers.{i}.{n}.weight" for i in LAYERS for n in ("input_layernorm", "post_attention_layernorm")
}
BIAS_NORM |= {"llm.model.norm.weight"}
PROMPT_SECTION = section("gated_attention", mode="prompt", layers=1, conditioned=True)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


def trainable(model: MultimodalLM, groups: list[str]) -> set[str]:
    return set(model.set_trainable(groups))


def test_exact_trainable_parameter_names_of_each_adapter_and_all_together() -> None:
    model = build(ADAPTERS["molora_modality"], PROMPT_SECTION, ADAPTERS["bias_norm"])
    projectors = {f"projectors.{n}" for n, _ in model.projectors.named_parameters()}
    assert projectors and trainable(model, ["projectors"]) == projectors
    assert trainable(model, ["molora"]) == MOLORA
    assert trainable(model, ["molora.audio"]) == {n for n in MOLORA if n.endswith(".audio.weight")}
    assert trainable(model, ["gated_attention"]) == PROMPT
    assert trainable(model, ["llm.bias_norm"]) == BIAS_NORM
    every = ["projectors", "molora", "gated_attention", "llm.bias_norm"]
    assert trainable(model, every) == projectors | MOLORA | PROMPT | BIAS_NORM
    llm = set(model.groups()["llm"])
    wrapped = {"q_proj.weight": "q_proj.base_layer.weight", "v_proj.weight": "v_proj.base_layer.weight"}
    plain = set()
    for name, _ in build().llm.named_parameters():
        for old, new in wrapped.items():
            name = name.replace(old, new)
        plain.add(f"llm.{name}")
    assert llm == plain  # the pretrained weights only, none of the adapters'
    assert llm & BIAS_NORM == {n for n in BIAS_NORM if n.startswith("llm.")}  # norms are pretrained weights too


def test_routers_and_cross_attention_blocks_are_named_exactly() -> None:
    soft = build(section("molora", experts=EXPERTS, routing="soft", targets=["o_proj"]))
    routed = {f"llm.model.layers.{i}.self_attn.o_proj.router.weight" for i in LAYERS}
    assert routed < trainable(soft, ["molora"]) and not routed & trainable(soft, ["molora.text"])
    cross = build(section("gated_attention", mode="cross", every=2))
    assert trainable(cross, ["gated_attention"]) == {f"gated_attention.layers.1.{n}" for n in CROSS_PARTS}


def test_summary_json_counts_molora_and_gated_attention(capsys) -> None:
    overrides = [ADAPTERS["molora_soft"], ADAPTERS["cross"], 'train.stages.0.trainable=["molora"]']
    assert main(["summary", str(TINY_RECIPE), *overrides, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    model = build(*overrides)
    molora = sum(p.numel() for w in model.adapters.molora for m in w.adapter_modules() for p in m.parameters())
    gated = sum(p.numel() for p in model.gated_attention.parameters())
    assert report["components"]["molora"] == {"trainable": molora, "frozen": 0}
    assert report["components"]["gated_attention"] == {"trainable": 0, "frozen": gated}
    assert molora > 0 and gated > 0
    assert sum(report["components"]["llm"].values()) == sum(p.numel() for p in build().llm.parameters())
    params = list(model.parameters())
    assert report["total_trainable"] + report["total_frozen"] == sum(p.numel() for p in params)
    audio = sum(w.lora_A["audio"].weight.numel() + w.lora_B["audio"].weight.numel() for w in model.adapters.molora)
    assert report["groups"]["molora.audio"] == {"trainable": audio, "frozen": 0}


@pytest.mark.parametrize("reloadable", [False, True])
def test_save_then_load_gives_identical_logits(tmp_path: Path, reloadable: bool) -> None:
    adapters = [ADAPTERS["molora_topk"], PROMPT_SECTION, ADAPTERS["bias_norm"]]
    if reloadable:  # the LLM comes back from its path; the wrappers are built around it after loading
        llm_dir = tmp_path / "llm"
        base = build()
        base.llm.save_pretrained(llm_dir)
        base.tokenizer.save_pretrained(llm_dir)
        adapters += [f"model.llm.name_or_path={llm_dir}", "model.llm.config=null"]
    model = wake(build(*adapters, 'train.stages.0.trainable=["projectors"]'))
    model.save(tmp_path / "run")
    saved = set(load_file(tmp_path / "run" / "adapter.safetensors"))
    assert set(adapter_state_names(model)) <= saved  # whichever stage trained them
    if reloadable:
        assert not any(n.startswith("llm.") for n in load_file(tmp_path / "run" / "frozen.safetensors"))
    again = MultimodalLM.load(tmp_path / "run")
    batch = MultimodalBatch.pack(mixed_samples(model))
    with torch.no_grad():
        assert torch.equal(model(batch, return_logits=True).logits, again(batch, return_logits=True).logits)
