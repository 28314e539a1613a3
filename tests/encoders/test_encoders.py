"""The encoder contract, checked for every registered ``*_test`` variant, plus spec validation and real-size
builds on the meta device whose parameter counts must equal the libraries' own."""

from __future__ import annotations

from typing import Any

import open_clip
import pytest
import timm
import torch
from conftest import random_audio, random_image
from pydantic import ValidationError
from transformers import CLIPVisionConfig, CLIPVisionModel, WhisperConfig, WhisperModel

from mmadapter.encoders import ENCODERS, Encoder
from mmadapter.encoders.hf_vision import HfVisionSpec
from mmadapter.encoders.timm_vit import TimmVitSpec
from mmadapter.encoders.whisper import WhisperSpec

TEST_VARIANTS = [name for name in ENCODERS if name.endswith("_test")]
# Graph encoders take a torch_geometric Batch rather than padded tensors: tests/encoders/test_gnn.py checks them.
TENSOR_VARIANTS = [name for name in TEST_VARIANTS if name != "gnn_test"]
FAMILIES = ["whisper", "open_clip", "timm_vit", "hf_vision", "gnn"]


def build(name: str, **options: Any) -> Encoder:
    return ENCODERS.get(name)(ENCODERS.spec(name)(name=name, **options))


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def raw_items(encoder: Encoder) -> list[Any]:
    if encoder.modality == "audio":
        return [random_audio(0.5, seed=0), random_audio(1.27, seed=1)]
    return [random_image(seed=0, size=40), random_image(seed=1, size=57).convert("L")]


def test_every_family_has_a_test_variant() -> None:
    assert sorted(TEST_VARIANTS) == sorted(f"{family}_test" for family in FAMILIES)
    assert set(FAMILIES) <= set(ENCODERS)


@pytest.mark.parametrize("name", TENSOR_VARIANTS)
def test_forward_backward_on_transformed_inputs(name: str) -> None:
    encoder = build(name)
    assert not encoder.training
    assert all(p.requires_grad for n, p in encoder.named_parameters() if "embed_positions" not in n)

    items = [encoder.transform(raw) for raw in raw_items(encoder)]
    in_lengths = [encoder.input_length(x) for x in items]
    width = max(x.shape[-1] for x in items)
    inputs = torch.stack([torch.nn.functional.pad(x, (0, width - x.shape[-1])) for x in items])
    features, lengths = encoder(inputs, torch.tensor(in_lengths))

    want = [encoder.output_length(n) for n in in_lengths]
    assert features.shape == (len(items), max(want), encoder.embed_dim)
    assert lengths.tolist() == want
    assert torch.isfinite(features).all()

    features.pow(2).mean().backward()
    trainable = {n: p for n, p in encoder.named_parameters() if p.requires_grad}
    # Unused blocks and heads are pruned, so every trainable parameter takes part (DDP needs no unused ones).
    assert [n for n, p in trainable.items() if p.grad is None] == []
    assert any(bool(p.grad.abs().sum() > 0) for p in trainable.values())


@pytest.mark.parametrize("name", TEST_VARIANTS)
def test_test_variant_rejects_name_or_path(name: str) -> None:
    with pytest.raises(ValidationError, match="takes no name_or_path"):
        ENCODERS.spec(name)(name=name, name_or_path="somewhere")


@pytest.mark.parametrize("family", FAMILIES)
def test_real_family_needs_exactly_one_weight_source(family: str) -> None:
    spec = ENCODERS.spec(family)
    with pytest.raises(ValidationError, match="exactly one of name_or_path"):
        spec(name=family)
    with pytest.raises(ValidationError, match="exactly one of name_or_path"):
        spec(name=family, name_or_path="x", config={"a": 1})


def test_layer_and_cls_token_are_checked() -> None:
    with pytest.raises(ValueError, match="layer=5 is out of range"):
        build("timm_vit_test", layer=5)
    with pytest.raises(ValueError, match="no class token"):
        build("hf_vision_test", config={"model_type": "siglip_vision_model"}, cls_token=True)
    with pytest.raises(ValueError, match="not a supported vision tower"):
        build("hf_vision_test", config={"model_type": "vit"})
    with_cls = build("timm_vit_test", cls_token=True, config={"reg_tokens": 2})
    assert with_cls.output_length(0) == 16 + 1
    assert with_cls(torch.zeros(1, 3, 32, 32))[0].shape == (1, 17, 64)


def test_timm_name_without_weights_is_rejected() -> None:
    with pytest.raises(ValueError, match="pretrained=False"):
        ENCODERS.get("timm_vit")(TimmVitSpec(name="timm_vit", name_or_path="test_vit", pretrained=False))
    with pytest.raises(ValueError, match="unknown timm model"):
        ENCODERS.get("timm_vit")(TimmVitSpec(name="timm_vit", name_or_path="vit_nonexistent_patch3"))


# --- real sizes on the meta device --------------------------------------------------------------------------

WHISPER_LARGE_V3 = {
    "d_model": 1280,
    "encoder_layers": 32,
    "encoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "num_mel_bins": 128,
}
VIT_L_336_HF = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
}
VIT_L_336_TIMM = {"img_size": 336, "patch_size": 14, "embed_dim": 1024, "depth": 24, "num_heads": 16, "pre_norm": True}


def assert_all_meta(module: torch.nn.Module) -> None:
    assert {p.device.type for p in module.parameters()} == {"meta"}


def test_whisper_large_v3_on_meta(tmp_path) -> None:
    WhisperConfig(**WHISPER_LARGE_V3).save_pretrained(tmp_path)  # a config without weights is all it reads
    with torch.device("meta"):
        from_config = ENCODERS.get("whisper")(WhisperSpec(name="whisper", config=WHISPER_LARGE_V3))
        from_path = ENCODERS.get("whisper")(WhisperSpec(name="whisper", name_or_path=str(tmp_path)))
        library = WhisperModel(WhisperConfig(**WHISPER_LARGE_V3, decoder_attention_heads=20)).encoder
    for encoder in (from_config, from_path):
        assert_all_meta(encoder)
        assert n_params(encoder) == n_params(library) == 636_968_960  # openai/whisper-large-v3's encoder
        assert (encoder.embed_dim, encoder.n_mels) == (1280, 128)


def test_open_clip_vit_l_336_on_meta() -> None:
    config = open_clip.get_model_config("ViT-L-14-336")
    with torch.device("meta"):
        from_config = ENCODERS.get("open_clip")(ENCODERS.spec("open_clip")(name="open_clip", config=config))
        by_name = ENCODERS.get("open_clip")(
            ENCODERS.spec("open_clip")(name="open_clip", name_or_path="ViT-L-14-336", pretrained="openai")
        )
        library = open_clip.create_model("ViT-L-14-336", device="meta").visual
    library.prune_intermediate_layers([22], prune_norm=True, prune_head=True)  # what layer=-2 keeps
    for encoder in (from_config, by_name):
        assert_all_meta(encoder)
        assert n_params(encoder) == n_params(library)
        assert (encoder.embed_dim, encoder.output_length(0)) == (1024, 576)


def test_timm_vit_l_336_on_meta() -> None:
    with torch.device("meta"):
        from_config = ENCODERS.get("timm_vit")(TimmVitSpec(name="timm_vit", config=VIT_L_336_TIMM))
        by_name = ENCODERS.get("timm_vit")(TimmVitSpec(name="timm_vit", name_or_path="vit_large_patch14_clip_336"))
        library = timm.create_model("vit_large_patch14_clip_336")
    library.prune_intermediate_layers([22], prune_norm=True, prune_head=True)
    for encoder in (from_config, by_name):
        assert_all_meta(encoder)
        assert n_params(encoder) == n_params(library)
        assert (encoder.embed_dim, encoder.output_length(0)) == (1024, 576)
    assert from_config.transform(random_image()).shape == (3, 336, 336)  # preprocessing stays usable


def test_hf_clip_vit_l_336_on_meta(tmp_path) -> None:
    CLIPVisionConfig(**VIT_L_336_HF).save_pretrained(tmp_path)
    with torch.device("meta"):
        from_config = ENCODERS.get("hf_vision")(
            HfVisionSpec(name="hf_vision", config={"model_type": "clip_vision_model", **VIT_L_336_HF})
        )
        from_path = ENCODERS.get("hf_vision")(HfVisionSpec(name="hf_vision", name_or_path=str(tmp_path)))
        library = CLIPVisionModel(CLIPVisionConfig(**VIT_L_336_HF))
    dropped = n_params(library.encoder.layers[-1]) + n_params(library.post_layernorm)
    for encoder in (from_config, from_path):
        assert_all_meta(encoder)
        assert n_params(encoder) == n_params(library) - dropped == 290_909_184
        assert (encoder.embed_dim, encoder.output_length(0)) == (1024, 576)
