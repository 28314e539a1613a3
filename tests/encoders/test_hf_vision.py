"""CLIP / SigLIP vision towers loaded by path (tower alone or whole dual encoder) give the original model's
tokens, which are the library's own ``hidden_states[layer]``; the image processor is taken when saved."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import random_image
from safetensors.torch import load_file, save_file
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
)

from mmadapter.encoders import ENCODERS
from mmadapter.encoders.hf_vision import HfVisionEncoder, HfVisionSpec

VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 8,
}
TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 64}


def clip_model() -> CLIPModel:
    return CLIPModel(CLIPConfig(vision_config=VISION, text_config=TEXT, projection_dim=16))


def siglip_model() -> SiglipModel:
    return SiglipModel(SiglipConfig(vision_config=VISION, text_config=TEXT))


def clip_tower() -> CLIPVisionModel:
    return CLIPVisionModel(CLIPVisionConfig(**VISION))


@pytest.mark.parametrize(
    ("make", "processor", "prefix"),
    [
        (clip_tower, CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), 1),
        (clip_model, None, 1),
        (siglip_model, SiglipImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.2, 0.3, 0.4]), 0),
    ],
    ids=["clip_vision", "clip_full", "siglip_full"],
)
def test_load_by_path_gives_identical_outputs(tmp_path, make, processor, prefix: int) -> None:
    torch.manual_seed(0)
    original = make().eval()
    original.save_pretrained(tmp_path)
    if processor is not None:
        processor.save_pretrained(tmp_path)
    loaded = ENCODERS.get("hf_vision")(HfVisionSpec(name="hf_vision", name_or_path=str(tmp_path)))
    tower = getattr(original, "vision_model", original)
    reference = HfVisionEncoder(copy.deepcopy(tower), processor).eval()

    image = random_image(seed=1, size=45)
    if processor is not None:  # the saved processor is used (SigLIP's mean differs from the defaults)
        assert torch.equal(loaded.transform(image), processor(images=image, return_tensors="pt")["pixel_values"][0])
    x = torch.stack([loaded.transform(random_image(seed=i, size=45)) for i in range(2)])
    assert x.shape == (2, 3, 32, 32)
    with torch.no_grad():
        tokens, lengths = loaded(x, None)
        assert torch.equal(tokens, reference(x, None)[0])
        hidden = tower(pixel_values=x, output_hidden_states=True).hidden_states
    assert tokens.shape == (2, 16, 32)
    assert lengths.tolist() == [16, 16]
    assert torch.equal(tokens, hidden[-2][:, prefix:])  # LLaVA: penultimate layer, class token dropped


def test_cls_token_and_last_layer(tmp_path) -> None:
    torch.manual_seed(0)
    original = clip_tower().eval()
    original.save_pretrained(tmp_path)
    spec = HfVisionSpec(name="hf_vision", name_or_path=str(tmp_path), layer=-1, cls_token=True)
    loaded = ENCODERS.get("hf_vision")(spec)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens, _ = loaded(x, None)
        hidden = original(pixel_values=x, output_hidden_states=True).hidden_states
    assert loaded.output_length(0) == 17
    assert len(loaded.model.encoder.layers) == 3
    assert torch.equal(tokens, hidden[-1])


def test_checkpoint_without_vision_weights_is_rejected(tmp_path) -> None:
    clip_model().save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "vision_model.encoder" not in k}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"lacks \d+ weight"):
        ENCODERS.get("hf_vision")(HfVisionSpec(name="hf_vision", name_or_path=str(tmp_path)))
