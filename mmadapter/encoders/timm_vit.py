"""timm ViT image towers: patch tokens from a chosen block (class and register tokens dropped by default).

Shape letters: n images, H/W pixels, p patch tokens, s output tokens, d ``embed_dim``.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import create_transform, resolve_data_config
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from mmadapter.encoders.base import ENCODERS, on_meta_device
from mmadapter.encoders.vision_tower import VisionTowerEncoder, VisionTowerSpec, block_index

__all__ = ["TimmVitEncoder", "TimmVitSpec", "timm_vit", "timm_vit_test"]

TEST_CONFIG: dict[str, Any] = {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 4}


class TimmVitSpec(VisionTowerSpec):
    """Options of the ``timm_vit`` encoders.

    ``name_or_path`` is a timm model name (``vit_large_patch14_clip_336.openai``, ``hf-hub:timm/...``);
    ``config`` holds keyword arguments of timm's ``VisionTransformer`` for random weights.
    """

    pretrained: bool | str = True
    """With ``name_or_path``: True loads timm's pretrained weights for the name, a string is a local
    checkpoint file (``.safetensors`` or a ``.pth`` state dict) for that architecture. False is rejected: random
    weights are what ``config`` is for, and could not be fetched again when an artefact is reloaded."""


class TimmVitEncoder(VisionTowerEncoder):
    """Tokens of a timm ``VisionTransformer``.

    Args:
        model: The ViT; blocks after ``layer``, the final norm and the head are removed.
        layer: Block whose output gives the tokens.
        cls_token: Keep the class token (registers are always dropped).
        name: Registry key, named in errors.
    """

    def __init__(
        self, model: VisionTransformer, layer: int = -2, cls_token: bool = False, name: str = "timm_vit"
    ) -> None:
        if not isinstance(model, VisionTransformer):
            raise ValueError(f"{name}: {type(model).__name__} is not a timm VisionTransformer")
        # Preprocessing runs on CPU in data workers, also when the tower is built on the meta device.
        with torch.device("cpu"):
            data_config = resolve_data_config({"input_size": (3, *model.patch_embed.img_size)}, model=model)
            preprocess = create_transform(**data_config, is_training=False)
        model.prune_intermediate_layers([block_index(layer, len(model.blocks), name)], prune_norm=True)
        model.patch_drop = nn.Identity()  # dropping patches would change the token count in training
        super().__init__(
            embed_dim=model.embed_dim,
            num_patches=model.patch_embed.num_patches,
            prefix_tokens=model.num_prefix_tokens,
            has_class_token=model.has_class_token,
            cls_token=cls_token,
            preprocess=preprocess,
            name=name,
        )
        self.model = model

    def blocks_output(self, pixels: Tensor) -> Tensor:
        return self.model.forward_features(pixels)  # the pruned tower ends at the chosen block, without norm


def _create(spec: TimmVitSpec) -> nn.Module:
    """The ViT by name, with its weights (only its architecture on the meta device)."""
    name = spec.name_or_path
    assert name is not None
    if ":" not in name and not timm.is_model(name):
        close = difflib.get_close_matches(name.split(".")[0], timm.list_models("*vit*"), n=5)
        raise ValueError(f"{spec.name}: unknown timm model {name!r}; close matches: {', '.join(close) or 'none'}")
    if spec.pretrained is False:
        raise ValueError(
            f"{spec.name}: name_or_path={name!r} with pretrained=False would be random weights that cannot be "
            "fetched again; set pretrained (true or a checkpoint file) or give config instead of name_or_path"
        )
    if on_meta_device():
        return timm.create_model(name, pretrained=False)
    if spec.pretrained is True:
        return timm.create_model(name, pretrained=True)
    if not Path(spec.pretrained).is_file():
        raise FileNotFoundError(f"{spec.name}: pretrained checkpoint file {spec.pretrained!r} does not exist")
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": spec.pretrained})


@ENCODERS.register(spec=TimmVitSpec)
def timm_vit(spec: TimmVitSpec) -> TimmVitEncoder:
    """timm ViT, e.g. ``name_or_path: vit_large_patch14_clip_336.openai`` or ``config`` for random weights."""
    model = VisionTransformer(**spec.config) if spec.config is not None else _create(spec)
    return TimmVitEncoder(model, layer=spec.layer, cls_token=spec.cls_token, name=spec.name).eval()


@ENCODERS.register(spec=TimmVitSpec)
def timm_vit_test(spec: TimmVitSpec) -> TimmVitEncoder:
    """Tiny random timm ViT (image 32, patch 8, width 64, 2 blocks of 4 heads) for tests."""
    model = VisionTransformer(**{**TEST_CONFIG, **(spec.config or {})})
    return TimmVitEncoder(model, layer=spec.layer, cls_token=spec.cls_token, name=spec.name).eval()
