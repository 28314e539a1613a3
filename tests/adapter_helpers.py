"""Helpers shared by the tests of the adapters inside the LLM (tests/lora, tests/fusion)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from conftest import random_audio, random_image, tiny_recipe

from mmadapter.batch import MultimodalBatch, Sample
from mmadapter.model import MultimodalLM

EXPERTS = ["text", "audio", "image"]
WIDE = "model.llm.config.initializer_range=0.6"  # a random LLM whose greedy output depends on its input


def section(name: str, **options: object) -> str:
    """A ``model.<name>={...}`` override."""
    return f"model.{name}={json.dumps(options)}"


ADAPTERS = {
    "molora_modality": section("molora", experts=EXPERTS),
    "molora_soft": section("molora", experts=EXPERTS, routing="soft", targets="all-linear"),
    "molora_topk": section("molora", experts=EXPERTS, routing="topk", top_k=2, targets="all-linear"),
    "prompt": section("gated_attention", mode="prompt", layers=1, prompt_len=3),
    "prompt_conditioned": section("gated_attention", mode="prompt", conditioned=True, prompt_len=3),
    "prompt_out_of_sequence": section(
        "gated_attention", mode="prompt", conditioned=True, prompt_len=3, in_sequence=False
    ),
    "cross": section("gated_attention", mode="cross", every=1),
    "cross_out_of_sequence": section("gated_attention", mode="cross", every=1, in_sequence=False),
    "bias_norm": section("bias_norm"),
}


def build(*overrides: str, seed: int = 0) -> MultimodalLM:
    """The tiny model; equal seeds give equal encoders, projectors and LLM with or without adapters."""
    torch.manual_seed(seed)
    return MultimodalLM.from_recipe(tiny_recipe(*overrides))


def chat(prompt: str, answer: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "user", "content": prompt}]
    return msgs + ([{"role": "assistant", "content": answer}] if answer is not None else [])


def mixed_samples(model: MultimodalLM, audio_seed: int = 1) -> list[Sample]:
    """Audio, image, text-only and audio+image samples with answers."""
    return [
        model.prepare("a", chat("Say <audio>", "1 2 3"), {"audio": [random_audio(1.0, audio_seed)]}),
        model.prepare("b", chat("Describe <image>", "a red circle"), {"image": [random_image(2)]}),
        model.prepare("c", chat("Hello there", "hi")),
        model.prepare(
            "d", chat("<audio> and <image>", "both"), {"audio": [random_audio(0.7, 3)], "image": [random_image(4)]}
        ),
    ]


def prompts(model: MultimodalLM) -> list[Sample]:
    """Generation prompts of different lengths (left padding), with and without modality items."""
    return [
        model.prepare("p0", chat("hi"), add_generation_prompt=True),
        model.prepare("p1", chat("Transcribe <audio>"), {"audio": [random_audio(2.0, 1)]}, add_generation_prompt=True),
        model.prepare(
            "p2", chat("What is in <image>? A few words."), {"image": [random_image(3)]}, add_generation_prompt=True
        ),
    ]


def layout(samples: list[Sample], kind: str, model: MultimodalLM) -> MultimodalBatch:
    return (
        MultimodalBatch.pack(samples)
        if kind == "packed"
        else MultimodalBatch.pad(samples, model.tokenizer.pad_token_id)
    )


@torch.no_grad()
def wake(model: MultimodalLM, std: float = 0.5, seed: int = 1) -> MultimodalLM:
    """Move every adapter parameter away from its init, so zero-init gates and B matrices are non-zero."""
    g = torch.Generator().manual_seed(seed)
    for group in ("molora", "gated_attention", "llm.bias_norm"):
        for p in model.groups().get(group, {}).values():
            p.add_(std * torch.randn(p.shape, generator=g))
    return model


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch ops on one thread: the tiny models gain nothing from intra-op threads, and on a busy 2-core
    machine their spin-waiting made these tests up to 50 times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
