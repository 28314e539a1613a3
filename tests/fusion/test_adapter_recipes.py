"""The MoLoRA and LLaMA-Adapter recipes load and, with tiny *_test components, every stage trains on CPU."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from adapter_helpers import chat, one_thread
from conftest import ROOT, random_audio, random_image

from mmadapter.batch import MultimodalBatch
from mmadapter.config import load_recipe
from mmadapter.lora import MoLoRALinear
from mmadapter.model import MultimodalLM

TINY_LLM = ["model.llm.name=causal_lm_test", "model.llm.name_or_path=null"]
RECIPES = {
    "speech/asr_whisper_llama_molora.yaml": [
        *TINY_LLM,
        "model.encoders.audio.name=whisper_test",
        "model.encoders.audio.name_or_path=null",
        "model.projectors.audio.hidden=64",
    ],
    "vision/llama_adapter_clip.yaml": [
        *TINY_LLM,
        "model.encoders.image.name=hf_vision_test",
        "model.encoders.image.name_or_path=null",
    ],
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


def training_batch(model: MultimodalLM) -> MultimodalBatch:
    if "audio" in model.encoders:
        data = [("Transcribe <audio>", "hello world", random_audio(1.0, i)) for i in range(3)]
    else:
        data = [("Describe <image>", f"a picture, number {i}", random_image(i)) for i in range(3)]
    modality = next(iter(model.encoders))
    return MultimodalBatch.pack(
        [model.prepare(f"s{i}", chat(q, a), {modality: [item]}) for i, (q, a, item) in enumerate(data)]
    )


@pytest.mark.parametrize("path", sorted(RECIPES))
def test_recipe_loads_and_every_stage_trains_20_steps_with_decreasing_loss(path: str) -> None:
    recipe = load_recipe(ROOT / "recipes" / path)  # as written: hub ids, real encoders
    assert recipe.model.molora is not None or recipe.model.gated_attention is not None
    torch.manual_seed(0)
    model = MultimodalLM.from_recipe(load_recipe(ROOT / "recipes" / path, RECIPES[path]))
    if recipe.model.molora is not None:
        assert sum(isinstance(m, MoLoRALinear) for m in model.llm.modules()) == 2 * 4
    else:  # the recipe's top 30 layers are all the tiny LLM has
        assert list(model.gated_attention.layers) == ["0", "1"]
    batch = training_batch(model)
    for stage in recipe.train.stages:
        names = model.set_trainable(stage.trainable)
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
        losses = []
        for _ in range(20):
            loss = model(batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert names and losses[-1] < losses[0], (stage.name, losses)
        assert sum(losses[-5:]) < sum(losses[:5]), (stage.name, losses)
