"""CLIP and SigLIP vision towers from transformers: patch tokens from a chosen block (LLaVA style).

Shape letters: n images, H/W pixels, p patch tokens, s output tokens, d ``embed_dim`` (``hidden_size``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    PretrainedConfig,
    PreTrainedModel,
    SiglipImageProcessor,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from mmadapter.encoders.base import ENCODERS, on_meta_device
from mmadapter.encoders.vision_tower import VisionTowerEncoder, VisionTowerSpec, block_index

__all__ = ["HfVisionEncoder", "HfVisionSpec", "hf_vision", "hf_vision_test"]

logger = logging.getLogger(__name__)

TEST_CONFIG: dict[str, Any] = {
    "model_type": "clip_vision_model",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 8,
}


def _clip_processor(image_size: int) -> CLIPImageProcessor:
    """Resize the short side, centre-crop, normalise with the OpenAI CLIP mean/std."""
    return CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})


def _siglip_processor(image_size: int) -> SiglipImageProcessor:
    """Resize to a square, normalise with mean/std 0.5."""
    return SiglipImageProcessor(size={"height": image_size, "width": image_size})


@dataclass(frozen=True)
class _Tower:
    """How one transformers vision tower is built, and its preprocessing when the checkpoint has none."""

    model: type[PreTrainedModel]
    config: type[PretrainedConfig]
    class_token: bool
    processor: Callable[[int], Any]


TOWERS = {
    "clip_vision_model": _Tower(CLIPVisionModel, CLIPVisionConfig, class_token=True, processor=_clip_processor),
    "siglip_vision_model": _Tower(
        SiglipVisionModel, SiglipVisionConfig, class_token=False, processor=_siglip_processor
    ),
}
FULL_MODELS = {"clip": "clip_vision_model", "siglip": "siglip_vision_model"}
"""model_type of a whole dual-encoder checkpoint → that of its vision tower."""


class HfVisionSpec(VisionTowerSpec):
    """Options of the ``hf_vision`` encoders.

    ``name_or_path`` is a hub id or local directory of a CLIP / SigLIP checkpoint (vision tower alone or the
    whole dual encoder, whose text tower is not loaded); ``config`` holds a vision config with ``model_type``
    ``clip_vision_model`` or ``siglip_vision_model`` for random weights.
    """


class HfVisionEncoder(VisionTowerEncoder):
    """Tokens of a transformers CLIP / SigLIP vision tower.

    Args:
        model: ``CLIPVisionModel`` or ``SiglipVisionModel``; blocks after ``layer``, the final norm and the
            pooling head are removed.
        processor: The image processor (``processor(images=..., return_tensors="pt")``).
        layer: Block whose output gives the tokens.
        cls_token: Keep the class token (CLIP only; SigLIP has none).
        name: Registry key, named in errors.
    """

    def __init__(
        self, model: PreTrainedModel, processor: Any, layer: int = -2, cls_token: bool = False, name: str = "hf_vision"
    ) -> None:
        tower = _tower(model.config.model_type, name)
        model.encoder.layers = model.encoder.layers[: block_index(layer, len(model.encoder.layers), name) + 1]
        model.post_layernorm = nn.Identity()
        if hasattr(model, "head"):
            model.head = nn.Identity()
        config = model.config
        super().__init__(
            embed_dim=config.hidden_size,
            num_patches=(config.image_size // config.patch_size) ** 2,
            prefix_tokens=int(tower.class_token),
            has_class_token=tower.class_token,
            cls_token=cls_token,
            preprocess=partial(_process, processor),
            name=name,
        )
        self.model = model

    def blocks_output(self, pixels: Tensor) -> Tensor:
        hidden = self.model.embeddings(pixels)
        if hasattr(self.model, "pre_layrnorm"):  # CLIP normalises before the blocks, SigLIP does not
            hidden = self.model.pre_layrnorm(hidden)
        return self.model.encoder(inputs_embeds=hidden).last_hidden_state


def _process(processor: Any, image: Image.Image) -> Tensor:
    return processor(images=image, return_tensors="pt")["pixel_values"][0]


def _tower(model_type: str, name: str) -> _Tower:
    try:
        return TOWERS[FULL_MODELS.get(model_type, model_type)]
    except KeyError:
        raise ValueError(
            f"{name}: model_type {model_type!r} is not a supported vision tower; "
            f"supported: {', '.join([*TOWERS, *FULL_MODELS])}"
        ) from None


def _vision_config(config: PretrainedConfig) -> PretrainedConfig:
    return config.vision_config if config.model_type in FULL_MODELS else config


def _load(spec: HfVisionSpec) -> tuple[PreTrainedModel, Any]:
    """The tower and its image processor, loaded or random; only the architecture on the meta device."""
    if spec.name_or_path is None:
        options = dict(spec.config or {})
        tower = _tower(str(options.pop("model_type", None)), spec.name)
        config = tower.config(**options)
        return tower.model(config), tower.processor(config.image_size)
    path = spec.name_or_path
    full_config = AutoConfig.from_pretrained(path)
    tower = _tower(full_config.model_type, spec.name)
    config = _vision_config(full_config)
    if on_meta_device():
        return tower.model(config), tower.processor(config.image_size)
    model, info = tower.model.from_pretrained(path, output_loading_info=True)
    if info["missing_keys"]:  # transformers only warns; random weights in a pretrained tower are a bug
        missing = sorted(info["missing_keys"])
        raise ValueError(f"{spec.name}: {path} lacks {len(missing)} weight(s) of the vision tower, e.g. {missing[:3]}")
    if Path(path).is_dir() and not (Path(path) / "preprocessor_config.json").is_file():
        return model, tower.processor(config.image_size)
    try:
        return model, AutoImageProcessor.from_pretrained(path)
    except OSError as e:
        logger.info("%s: no image processor with %s (%s); using %s defaults", spec.name, path, e, config.model_type)
        return model, tower.processor(config.image_size)


@ENCODERS.register(spec=HfVisionSpec)
def hf_vision(spec: HfVisionSpec) -> HfVisionEncoder:
    """CLIP / SigLIP vision tower, e.g. ``name_or_path: openai/clip-vit-large-patch14-336``."""
    model, processor = _load(spec)
    return HfVisionEncoder(model, processor, layer=spec.layer, cls_token=spec.cls_token, name=spec.name).eval()


@ENCODERS.register(spec=HfVisionSpec)
def hf_vision_test(spec: HfVisionSpec) -> HfVisionEncoder:
    """Tiny random CLIP vision tower (image 32, patch 8, width 64, 2 blocks of 4 heads) for tests; ``config``
    may override it, e.g. ``model_type: siglip_vision_model``."""
    model, processor = _load(spec.model_copy(update={"config": {**TEST_CONFIG, **(spec.config or {})}}))
    return HfVisionEncoder(model, processor, layer=spec.layer, cls_token=spec.cls_token, name=spec.name).eval()
