"""MultimodalLM: splicing, labelled-position loss, generation, trainable groups."""

from __future__ import annotations

import pytest
import torch
from conftest import random_audio, random_graph, random_image, tiny_recipe
from torch.nn import functional as F

from mmadapter.batch import MultimodalBatch
from mmadapter.config import Recipe
from mmadapter.encoders import ENCODERS
from mmadapter.llm import IGNORE_INDEX
from mmadapter.model import MultimodalLM
from mmadapter.projectors import PROJECTORS

TEST_ENCODERS = [n for n in ENCODERS.names() if n.endswith("_test")]


def chat(prompt: str, answer: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "user", "content": prompt}]
    return msgs + ([{"role": "assistant", "content": answer}] if answer is not None else [])


def raw_item(modality: str, seed: int = 0, seconds: float = 1.0):
    if modality == "graph":
        return random_graph(seed, nodes=5 + seed)
    return random_audio(seconds, seed) if modality == "audio" else random_image(seed)


@pytest.fixture(scope="module")
def tiny() -> MultimodalLM:
    return MultimodalLM.from_recipe(tiny_recipe())


def mixed_samples(model: MultimodalLM) -> list:
    return [
        model.prepare("a", chat("Say <audio>", "1 2 3"), {"audio": [random_audio(1.0, 1)]}),
        model.prepare("b", chat("Describe <image>", "a red circle"), {"image": [random_image(2)]}),
        model.prepare("c", chat("Hello there", "hi")),
        model.prepare(
            "d", chat("<audio> and <image>", "both"), {"audio": [random_audio(2.3, 3)], "image": [random_image(4)]}
        ),
    ]


@pytest.mark.parametrize("projector", PROJECTORS.names())
@pytest.mark.parametrize("encoder", TEST_ENCODERS)
def test_every_encoder_projector_pair_trains_only_trainable_parameters(encoder: str, projector: str) -> None:
    modality = ENCODERS.get(encoder)(ENCODERS.spec(encoder)(name=encoder)).modality
    recipe = Recipe.from_dict(
        {
            "model": {
                "llm": {"name": "causal_lm_test"},
                "encoders": {modality: {"name": encoder}},
                "projectors": {modality: {"name": projector}},
            },
            "train": {"stages": [{"name": "align", "trainable": ["projectors"]}]},
        }
    )
    model = MultimodalLM.from_recipe(recipe).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("projectors.") for n in trainable)
    samples = [
        model.prepare(f"s{i}", chat(f"<{modality}> {i}", "7 1"), {modality: [raw_item(modality, i)]}) for i in range(2)
    ]
    out = model(MultimodalBatch.pack(samples))
    assert torch.isfinite(out.loss) and out.num_labels > 0
    out.loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    for name, p in model.named_parameters():
        if name in trainable:
            assert p.grad is not None, name
        else:
            assert p.grad is None and torch.equal(p, before[name]), name
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n in trainable)


def reference_loss(model: MultimodalLM, batch: MultimodalBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy over full logits, per sample and overall, the textbook way."""
    logits = model(batch, return_logits=True).logits
    per_sample, tokens = [], []
    bounds = batch.cu_seqlens.tolist()
    for s in range(batch.num_samples):
        lo, hi = bounds[s], bounds[s + 1]
        lg, lb = logits[0, lo : hi - 1], batch.labels[0, lo + 1 : hi]
        ce = F.cross_entropy(lg, lb, ignore_index=IGNORE_INDEX, reduction="none")[lb != IGNORE_INDEX]
        tokens.append(ce)
        per_sample.append(ce.mean() if ce.numel() else torch.tensor(0.0))
    return torch.cat(tokens).mean(), torch.stack(per_sample)


def test_labelled_position_loss_equals_full_logits_reference(tiny: MultimodalLM) -> None:
    samples = mixed_samples(tiny)
    samples.append(tiny.prepare("nolabels", chat("just a prompt"), add_generation_prompt=True))
    batch = MultimodalBatch.pack(samples)
    out = tiny(batch)
    ref, ref_per = reference_loss(tiny, batch)
    assert torch.allclose(out.loss, ref, atol=1e-5, rtol=0)
    assert torch.allclose(out.sample_loss, ref_per, atol=1e-5, rtol=0)
    assert out.sample_loss[-1] == 0 and torch.isfinite(out.sample_loss).all()


def test_batch_without_labels_gives_zero_loss_with_gradient_path(tiny: MultimodalLM) -> None:
    batch = MultimodalBatch.pack(
        [tiny.prepare("x", chat("<audio>"), {"audio": [random_audio(0.5)]}, add_generation_prompt=True)]
    )
    out = tiny(batch)
    assert out.num_labels == 0 and out.loss.item() == 0.0 and out.loss.requires_grad


def test_packed_loss_equals_padded_loss(tiny: MultimodalLM) -> None:
    samples = mixed_samples(tiny)
    packed = tiny(MultimodalBatch.pack(samples))
    padded = tiny(MultimodalBatch.pad(samples, tiny.tokenizer.pad_token_id))
    assert torch.allclose(packed.sample_loss, padded.sample_loss, atol=1e-5, rtol=0)


def test_slot_count_mismatch_names_the_sample_and_both_counts(tiny: MultimodalLM) -> None:
    good = tiny.prepare("good", chat("<audio>", "1"), {"audio": [random_audio(1.0)]})
    bad = tiny.prepare("utt-042", chat("<audio>", "1"), {"audio": [random_audio(1.0)]})
    n = bad.chat.token_modality.count(1)
    drop = bad.chat.token_modality.index(1)
    for name in ("input_ids", "labels", "token_modality"):
        del getattr(bad.chat, name)[drop]
    with pytest.raises(ValueError, match=rf"'utt-042'.* {n - 1} <audio> slot\(s\).* produce {n} feature"):
        tiny(MultimodalBatch.pack([good, bad]))


def test_batched_greedy_generation_equals_one_at_a_time() -> None:
    # A wide initialisation makes the random LLM's greedy output depend on its context, so equal outputs
    # are evidence rather than a repeated newline.
    tiny = MultimodalLM.from_recipe(tiny_recipe("model.llm.config.initializer_range=0.6"))
    prompts = [
        tiny.prepare("p0", chat("hi"), add_generation_prompt=True),
        tiny.prepare(
            "p1", chat("Transcribe this: <audio>"), {"audio": [random_audio(2.0, 1)]}, add_generation_prompt=True
        ),
        tiny.prepare(
            "p2",
            chat("What is in <image>? Answer in a few words, please."),
            {"image": [random_image(3)]},
            add_generation_prompt=True,
        ),
        tiny.prepare(
            "p3",
            chat("<audio><image> long " * 3),
            {"audio": [random_audio(0.7, 2)] * 3, "image": [random_image(5)] * 3},
            add_generation_prompt=True,
        ),
    ]
    lengths = {len(p.chat) for p in prompts}
    assert len(lengths) == 4
    batched = tiny.generate(prompts, max_new_tokens=12)
    alone = [tiny.generate([p], max_new_tokens=12)[0] for p in prompts]
    assert batched == alone
    assert len(set(batched)) == 4 and all(len(b) > 4 for b in batched)


def test_trainable_groups_and_eval_mode_of_frozen_parts(tiny: MultimodalLM) -> None:
    names = tiny.set_trainable(["projectors.audio"])
    assert names and all(n.startswith("projectors.audio.") for n in names)
    tiny.train()
    assert not tiny.llm.training and not tiny.encoders["audio"].training and tiny.projectors["audio"].training
    names = tiny.set_trainable(["encoders.image", "llm"])
    assert {n.split(".")[0] for n in names} == {"encoders", "llm"}
    with pytest.raises(KeyError, match="unknown trainable group"):
        tiny.set_trainable(["projectors.video"])
    tiny.set_trainable(tiny.recipe.train.stages[0].trainable)


def test_audio_features_on_the_model_device_equal_features_in_the_pipeline() -> None:
    cpu = MultimodalLM.from_recipe(tiny_recipe())
    gpu_mode = MultimodalLM.from_recipe(tiny_recipe("data.audio_features=gpu"))
    gpu_mode.load_state_dict(cpu.state_dict())

    def samples(model: MultimodalLM) -> list:
        return [
            model.prepare("a", chat("<audio>", "1 2"), {"audio": [random_audio(1.3, 1)]}),
            model.prepare("b", chat("<audio> <audio>", "3"), {"audio": [random_audio(0.4, 2), random_audio(2.2, 3)]}),
        ]

    raw = MultimodalBatch.pack(samples(gpu_mode))
    assert raw.items["audio"].raw and raw.items["audio"].inputs.dim() == 2
    with torch.no_grad():
        want = cpu(MultimodalBatch.pack(samples(cpu))).sample_loss
        got = gpu_mode(raw).sample_loss
    assert torch.allclose(got, want, atol=1e-5, rtol=0)


def test_activation_checkpointing_recomputes_layers_of_a_frozen_llm() -> None:
    # attention and hidden dropout in the config: a frozen LLM must run neither, recomputed or not
    dropout = 'model.llm.config={"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, ' + (
        '"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "attention_dropout": 0.5}'
    )
    model = MultimodalLM.from_recipe(tiny_recipe('train.stages.0.trainable=["projectors"]', dropout))
    assert model.llm.config.attention_dropout == 0.5
    batch = MultimodalBatch.pack(mixed_samples(model))
    calls: list[int] = []
    model.llm.model.layers[0].mlp.register_forward_pre_hook(lambda *_: calls.append(1))
    model.train()
    plain = model(batch)
    plain.loss.backward()
    grads = [p.grad.clone() for p in model.projectors.parameters()]
    assert len(calls) == 1
    model.zero_grad()
    model.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    calls.clear()
    again = model(batch)
    again.loss.backward()
    assert len(calls) == 2  # the layer ran again during backward
    assert not model.llm.model.layers[0].self_attn.training and model.llm.model.layers[0].training
    assert torch.allclose(again.loss, plain.loss, atol=1e-6)
    assert all(torch.allclose(p.grad, g, atol=1e-6) for p, g in zip(model.projectors.parameters(), grads, strict=True))
