"""MoLoRA language experts: a LoRA that every token of a sample in its language uses besides its modality's
expert, so that training it for a new language leaves every other language exactly as it was."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from adapter_helpers import build, chat, one_thread, section, wake
from conftest import ROOT, infer_cli, nudged_artefact, random_audio, tiny_recipe
from torch import nn

from mmadapter.adapter_config import MoLoRAConfig
from mmadapter.adapter_context import AdapterContext, BatchTokens
from mmadapter.artefact import load_trained_weights
from mmadapter.batch import MultimodalBatch
from mmadapter.config import RecipeError, load_recipe
from mmadapter.inference import InferenceRunner
from mmadapter.inference_inputs import Request
from mmadapter.lora import MoLoRALinear
from mmadapter.model import MultimodalLM
from mmadapter.train.run import train

LANGUAGE = section("molora", experts=["text", "audio", "image", "de"], language_experts={"de": "de"})
SHARDS = str(ROOT / "tests" / "assets" / "shards" / "shard-{000000..000001}.tar")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


def test_tokens_of_a_sample_in_the_language_use_its_expert_besides_their_modality_expert() -> None:
    config = MoLoRAConfig(experts=["text", "audio", "de"], language_experts={"de": "de"})
    layer = MoLoRALinear(nn.Linear(8, 8), config.experts, language_expert=config.language_expert)
    context = AdapterContext()
    layer.context = context
    modality = torch.tensor([[0, 1, 0, 0, 1, 0, 0]])  # samples: 0 de-AT, 1 en, 2 none; then one padding position
    sample = torch.tensor([[0, 0, 1, 1, 1, 2, -1]])
    with context.bind(BatchTokens(modality, sample, 3, langs=("de-AT", "en", None))):
        context.window_hook(nn.Identity(), (), {"inputs_embeds": torch.zeros(1, 7, 8)})
        weights = layer.expert_weights(torch.zeros(1, 7, 8))[0]
    text, audio, de = torch.eye(3)
    assert torch.equal(weights, torch.stack([text + de, audio + de, text, text, audio, text, text]))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"experts": ["text", "de"], "language_experts": {"de": "fr"}}, "names experts that do not exist"),
        ({"experts": ["text", "de"], "language_experts": {"de": "de"}, "routing": "soft"}, "need routing 'modality'"),
        ({"experts": ["text", "audio"], "language_experts": {"de": "audio"}}, "serve a modality and a language"),
        ({"experts": ["text", "de"], "language_experts": {"de": "de", "DE": "de"}}, "one language twice"),
    ],
)
def test_language_experts_are_checked_with_the_recipe(options: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        tiny_recipe(section("molora", **options))


def samples(model: MultimodalLM, langs: list[str | None]) -> MultimodalBatch:
    """One audio conversation, the same in every sample but its ``lang``."""
    audio = random_audio(1.0, 1)
    return MultimodalBatch.pack(
        [
            model.prepare(f"s{i}", chat("Say <audio>", "1 2 3"), {"audio": [audio]}, lang=lang)
            for i, lang in enumerate(langs)
        ]
    )


def per_sample_logits(model: MultimodalLM, batch: MultimodalBatch) -> list[torch.Tensor]:
    with torch.no_grad():
        logits = model(batch, return_logits=True).logits[0]
    bounds = batch.cu_seqlens.tolist()
    return [logits[a:b] for a, b in itertools.pairwise(bounds)]


def test_the_language_expert_changes_its_language_and_no_other() -> None:
    model = wake(build(LANGUAGE))
    batch = samples(model, ["de", "en", None, "de-AT", "DE"])
    de, en, none, de_at, de_upper = per_sample_logits(model, batch)
    assert torch.equal(en, none)  # no language expert for either
    assert torch.allclose(de, de_at, atol=1e-6) and torch.allclose(de, de_upper, atol=1e-6)
    assert (de - en).abs().max() > 1e-3
    with torch.no_grad():
        for layer in model.adapters.molora:
            layer.lora_B["de"].weight.zero_()
    de, en_after, *_ = per_sample_logits(model, batch)
    assert torch.equal(en_after, en)
    assert torch.allclose(de, en, atol=1e-6)  # a zero language expert: the sample is as any other


def test_merging_a_modality_expert_with_a_language_expert() -> None:
    model = wake(build(LANGUAGE))
    text = [model.prepare(f"t{i}", chat("A text-only prompt"), lang=lang) for i, lang in enumerate(["de", "en"])]
    batch = MultimodalBatch.pad(text, model.tokenizer.pad_token_id)
    with torch.no_grad():
        ours = model(batch, return_logits=True).logits
        german = model.merged_llm("text", "de")(input_ids=batch.input_ids[:1]).logits
        english = model.merged_llm("text", "en")(input_ids=batch.input_ids[1:]).logits
    assert (ours[0] - german[0]).abs().max() <= 1e-5
    assert (ours[1] - english[0]).abs().max() <= 1e-5
    assert (german - english).abs().max() > 1e-3


def test_inference_routes_by_the_request_language_or_the_default(monkeypatch, tmp_path: Path) -> None:
    model = build(LANGUAGE)
    seen = []
    prepare = MultimodalLM.prepare

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("lang"))
        return prepare(self, *args, **kwargs)

    monkeypatch.setattr(MultimodalLM, "prepare", spy)
    messages = [{"role": "user", "content": "hi"}]
    requests = [Request("a", messages, {}, lang="fr"), Request("b", messages, {})]
    list(InferenceRunner(model, 2, default_lang="de").predict(requests))
    assert seen == ["fr", "de"]
    artefact = nudged_artefact(tmp_path / "artefact", LANGUAGE)
    assert infer_cli(artefact, "--prompt", "hi", "--lang", "de-AT", "--max-new-tokens", "2") == 0
    assert seen[-1] == "de-AT"


def test_a_new_language_expert_trained_from_an_artefact_leaves_english_exactly_as_it_was(tmp_path: Path) -> None:
    """The new-language workflow with a language LoRA: the artefact has no ``de`` expert; the new stage adds
    one (zero B, so the model starts exactly as the artefact) and trains it alone on German and English."""
    base = nudged_artefact(tmp_path / "base", section("molora", experts=["text", "audio", "image"]))
    recipe = tiny_recipe(
        f"model.from={base}",
        LANGUAGE,
        f'data.train=[{{"shards": "{SHARDS}"}}]',
        f'train.stages=[{{"name": "de", "trainable": ["molora.de"], "max_steps": 4, "init_from": "{base}"}}]',
        "train.lr=0.05",
    )
    train(recipe, tmp_path / "run")
    before, after = MultimodalLM.load(base), MultimodalLM.load(tmp_path / "run")
    added = {n for n, _ in after.named_parameters()} - {n for n, _ in before.named_parameters()}
    assert added and all(".lora_A.de." in n or ".lora_B.de." in n for n in added)
    en_before, de_before = per_sample_logits(before, samples(before, ["en", "de"]))
    en_after, de_after = per_sample_logits(after, samples(after, ["en", "de"]))
    assert torch.allclose(en_after, en_before, atol=1e-6)  # (bit-equal here; other kernels may round otherwise)
    assert (de_after - de_before).abs().max() > 1e-2  # the German samples trained the expert


def test_the_new_language_lora_recipe_trains_the_audio_projector_and_the_expert_alone(tmp_path: Path) -> None:
    base = nudged_artefact(tmp_path / "base", section("molora", experts=["text", "audio", "image"]))
    recipe = load_recipe(
        ROOT / "recipes" / "language" / "new_language_lora.yaml",
        [
            f"model.from={base}",
            'model.molora.experts=["text", "audio", "image", "de"]',
            f"train.stages.0.init_from={base}",
            f'data.train=[{{"shards": "{SHARDS}"}}]',
            "data.num_workers=0",
            "train.max_steps=2",
        ],
    )
    assert recipe.model.molora.language_experts == {"de": "de"}
    model = MultimodalLM.from_recipe(recipe)
    model.set_trainable(recipe.train.stages[0].trainable)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("projectors.audio.") or ".de." in n for n in trainable)
    assert any(".lora_B.de." in n for n in trainable)
    train(recipe, tmp_path / "run")
    assert (tmp_path / "run" / "adapter.safetensors").is_file()


def test_molora_added_to_an_artefact_saved_without_it_starts_from_the_artefacts_weights(tmp_path: Path) -> None:
    base = nudged_artefact(tmp_path / "base")  # its LLM weights are stored, under the unwrapped layer names
    molora = {"experts": ["text", "de"], "modality_map": {"audio": "text", "image": "text"}}
    molora["language_experts"] = {"de": "de"}
    recipe = tiny_recipe(f"model.from={base}", section("molora", **molora))
    model = MultimodalLM.from_recipe(recipe)
    loaded = load_trained_weights(model, base)
    assert any(".q_proj.base_layer.weight" in n for n in loaded)
    before = MultimodalLM.load(base)
    batch = samples(model, ["de", "en"])
    for ours, theirs in zip(per_sample_logits(model, batch), per_sample_logits(before, batch), strict=True):
        assert torch.allclose(ours, theirs, atol=1e-6)


def test_a_language_key_must_be_a_tag_and_the_longest_matching_prefix_wins() -> None:
    for bad in ("german", "de de", "-de"):
        with pytest.raises(ValueError, match="must be language tags"):
            MoLoRAConfig(experts=["text", "x"], language_experts={bad: "x"})
    config = MoLoRAConfig(experts=["text", "zh", "hant"], language_experts={"zh": "zh", "zh-Hant": "hant"})
    assert [config.language_expert(t) for t in ("zh-hant-TW", "zh-Hant", "zh-CN", "zh", "ja", None)] == [
        "hant",
        "hant",
        "zh",
        "zh",
        None,
        None,
    ]


def test_a_language_expert_merged_as_the_expert_counts_once() -> None:
    model = wake(build(LANGUAGE))
    layer = model.adapters.molora[0]
    assert torch.equal(layer.merge("de", "de").weight, layer.merge("de").weight)


def test_sample_languages_must_match_the_samples() -> None:
    with pytest.raises(ValueError, match="2 sample languages for 3 samples"):
        BatchTokens(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long), 3, langs=("de", "en"))


@pytest.mark.parametrize("options", [{}, {"num_beams": 3}, {"num_beams": 2, "num_return_sequences": 2}])
def test_batched_generation_routes_each_sample_by_its_language(options: dict) -> None:
    model = wake(build(LANGUAGE, "model.llm.config.initializer_range=0.6"))
    audio = random_audio(1.0, 1)
    prompts = [
        model.prepare(f"p{i}", chat("Say <audio>"), {"audio": [audio]}, add_generation_prompt=True, lang=lang)
        for i, lang in enumerate(["de", "en", None, "de-AT"])
    ]
    together = model.generate(prompts, max_new_tokens=5, **options)
    alone = [out for p in prompts for out in model.generate([p], max_new_tokens=5, **options)]
    assert together == alone
    k = options.get("num_return_sequences", 1)
    assert together[:k] == together[3 * k :] and together[:k] != together[k : 2 * k]  # de-AT as de; en otherwise
