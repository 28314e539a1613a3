"""open_clip ViT image towers: patch tokens from a chosen block (LLaVA: the penultimate, class token dropped).

Shape letters: n images, H/W pixels, p patch tokens, s output tokens, d ``embed_dim`` (the tower's width).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from open_clip import (
    create_model,
    get_model_config,
    get_model_preprocess_cfg,
    get_pretrained_cfg,
    list_models,
    list_pretrained_tags_by_model,
)
from open_clip.model import _build_vision_tower
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict
from open_clip.transformer import VisionTransformer
from torch import Tensor, nn

from mmadapter.encoders.base import ENCODERS, on_meta_device
from mmadapter.encoders.vision_tower import VisionTowerEncoder, VisionTowerSpec, block_index

__all__ = ["OpenClipEncoder", "OpenClipSpec", "open_clip", "open_clip_test"]

TEST_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 16},
}


class OpenClipSpec(VisionTowerSpec):
    """Options of the ``open_clip`` encoders.

    ``name_or_path`` is an open_clip model name (``ViT-L-14-336``, or ``local-dir:PATH`` / ``hf-hub:ORG/REPO``,
    which carry their own weights); ``config`` is an open_clip model config (``embed_dim``, ``vision_cfg``, ...)
    for random weights.
    """

    pretrained: str | None = None
    """Weights for a built-in model name: a pretrained tag (``openai``, ``laion2b_s32b_b82k``) or a local
    checkpoint file of the whole CLIP model."""


class OpenClipEncoder(VisionTowerEncoder):
    """Tokens of an open_clip ``VisionTransformer``.

    Args:
        visual: The vision tower; blocks after ``layer``, the final norm, pooling head and projection are removed.
        preprocess_cfg: open_clip preprocessing config (``size``, ``mean``, ``std``, ``interpolation``, ...).
        layer: Block whose output gives the tokens.
        cls_token: Keep the class token.
        name: Registry key, named in errors.
    """

    def __init__(
        self,
        visual: VisionTransformer,
        preprocess_cfg: dict[str, Any],
        layer: int = -2,
        cls_token: bool = False,
        name: str = "open_clip",
    ) -> None:
        if not isinstance(visual, VisionTransformer):
            raise ValueError(
                f"{name}: the vision tower is a {type(visual).__name__}; only open_clip VisionTransformer towers "
                "give patch tokens (use timm_vit for timm towers)"
            )
        keep = block_index(layer, len(visual.transformer.resblocks), name)
        visual.prune_intermediate_layers([keep], prune_norm=True, prune_head=True)
        visual.attn_pool = visual.attn_pool_contrastive = None
        visual.patch_dropout = nn.Identity()  # dropping patches would change the token count in training
        grid_h, grid_w = visual.grid_size
        super().__init__(
            embed_dim=visual.transformer.width,
            num_patches=grid_h * grid_w,
            prefix_tokens=1,
            has_class_token=True,
            cls_token=cls_token,
            preprocess=image_transform_v2(PreprocessCfg(**preprocess_cfg), is_train=False),
            name=name,
        )
        self.visual = visual

    def blocks_output(self, pixels: Tensor) -> Tensor:
        return self.visual.transformer(self.visual._embeds(pixels))


def _model_config(name: str) -> dict[str, Any]:
    config = get_model_config(name)
    if config is None:
        raise ValueError(f"open_clip: unknown model {name!r}; available: {', '.join(list_models())}")
    return config


def _tower_from_config(config: dict[str, Any], name: str) -> VisionTransformer:
    """A randomly initialised vision tower (on the current default device) from an open_clip model config."""
    missing = {"embed_dim", "vision_cfg"} - set(config)
    if missing:
        raise ValueError(f"{name}: the open_clip config lacks {sorted(missing)} (has {sorted(config)})")
    quick_gelu = bool(config.get("quick_gelu", False))  # open_clip's own default for configs without the key
    return _build_vision_tower(config["embed_dim"], config["vision_cfg"], quick_gelu=quick_gelu)


def _preprocess_cfg(visual: VisionTransformer, overlay: dict[str, Any] | None) -> dict[str, Any]:
    return merge_preprocess_dict(PreprocessCfg(size=visual.image_size), overlay or {})


def _load(spec: OpenClipSpec) -> tuple[VisionTransformer, dict[str, Any]]:
    """The vision tower and its preprocessing config, loaded or random; only architecture on the meta device."""
    if spec.name_or_path is None:
        visual = _tower_from_config(spec.config or {}, spec.name)
        return visual, _preprocess_cfg(visual, None)
    has_schema = spec.name_or_path.startswith(("local-dir:", "hf-hub:"))
    tag = get_pretrained_cfg(spec.name_or_path, spec.pretrained) if spec.pretrained else {}
    if on_meta_device():
        visual = _tower_from_config(_model_config(spec.name_or_path), spec.name)
        return visual, _preprocess_cfg(visual, tag)
    if not has_schema:
        _model_config(spec.name_or_path)
        if spec.pretrained is None:
            tags = list_pretrained_tags_by_model(spec.name_or_path)
            raise ValueError(
                f"{spec.name}: {spec.name_or_path!r} without pretrained would be random weights (use config for "
                f"that); set pretrained to a tag ({', '.join(tags) or 'none known'}) or a checkpoint file"
            )
        if not tag and not Path(spec.pretrained).is_file():
            raise FileNotFoundError(
                f"{spec.name}: pretrained={spec.pretrained!r} is neither a tag of {spec.name_or_path!r} "
                f"({', '.join(list_pretrained_tags_by_model(spec.name_or_path)) or 'none known'}) "
                "nor a file"
            )
    model = create_model(
        spec.name_or_path,
        pretrained=None if has_schema else spec.pretrained,
        device="cpu",
        force_quick_gelu=bool(tag.get("quick_gelu", False)),  # OpenAI weights were trained with QuickGELU
        pretrained_text=False,
        require_pretrained=True,
    )
    return model.visual, get_model_preprocess_cfg(model)


@ENCODERS.register(spec=OpenClipSpec)
def open_clip(spec: OpenClipSpec) -> OpenClipEncoder:
    """open_clip ViT tower, e.g. ``name_or_path: ViT-L-14-336, pretrained: openai``."""
    visual, preprocess_cfg = _load(spec)
    return OpenClipEncoder(visual, preprocess_cfg, layer=spec.layer, cls_token=spec.cls_token, name=spec.name).eval()


@ENCODERS.register(spec=OpenClipSpec)
def open_clip_test(spec: OpenClipSpec) -> OpenClipEncoder:
    """Tiny random open_clip ViT (image 32, patch 8, width 64, 2 blocks of 4 heads) for tests."""
    config = {**TEST_CONFIG, **(spec.config or {})}
    visual = _tower_from_config(config, spec.name)
    return OpenClipEncoder(
        visual, _preprocess_cfg(visual, None), layer=spec.layer, cls_token=spec.cls_token, name=spec.name
    ).eval()
