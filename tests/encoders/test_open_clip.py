"""open_clip towers loaded by path (a local-dir model and a named model with a checkpoint file) give the
original model's tokens, which are the library's own intermediate-layer outputs."""

from __future__ import annotations

import copy
import json

import open_clip
import pytest
import torch
from conftest import random_image
from open_clip.model import CLIP
from open_clip.transform import PreprocessCfg, image_transform_v2
from safetensors.torch import save_file

from mmadapter.encoders import ENCODERS
from mmadapter.encoders.open_clip import OpenClipEncoder, OpenClipSpec

MODEL_NAME = "mmadapter-tiny-clip"
MODEL_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 3, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 4, "layers": 1},
}
MEAN_STD = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


@pytest.fixture(scope="module")
def original() -> CLIP:
    torch.manual_seed(0)
    return CLIP(**MODEL_CFG).eval()


def pixels(encoder: OpenClipEncoder) -> torch.Tensor:
    return torch.stack([encoder.transform(random_image(seed=i, size=45)) for i in range(2)])


def test_local_dir_loads_weights_and_preprocessing(tmp_path, original) -> None:
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": MODEL_CFG, "preprocess_cfg": MEAN_STD}))
    save_file(original.state_dict(), tmp_path / "open_clip_model.safetensors")
    spec = OpenClipSpec(name="open_clip", name_or_path=f"local-dir:{tmp_path}")
    loaded = ENCODERS.get("open_clip")(spec)
    reference = OpenClipEncoder(copy.deepcopy(original.visual), {"size": 32}).eval()

    image = random_image(seed=3, size=45)
    expected = image_transform_v2(PreprocessCfg(size=32, **MEAN_STD), is_train=False)(image)
    assert torch.equal(loaded.transform(image), expected)
    x = pixels(loaded)
    with torch.no_grad():
        tokens, lengths = loaded(x, None)
        assert torch.equal(tokens, reference(x, None)[0])
        # LLaVA features: the penultimate block's patch tokens, as open_clip itself returns them.
        library = original.visual.forward_intermediates(x, indices=[1], output_fmt="NLC", intermediates_only=True)
    assert tokens.shape == (2, 16, 64)
    assert lengths.tolist() == [16, 16]
    assert torch.equal(tokens, library["image_intermediates"][0])


def test_named_model_with_checkpoint_file(tmp_path, original) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / f"{MODEL_NAME}.json").write_text(json.dumps(MODEL_CFG))
    open_clip.add_model_config(tmp_path / "configs")
    torch.save(original.state_dict(), tmp_path / "weights.pt")
    spec = OpenClipSpec(name="open_clip", name_or_path=MODEL_NAME, pretrained=str(tmp_path / "weights.pt"))
    loaded = ENCODERS.get("open_clip")(spec.model_copy(update={"layer": -1, "cls_token": True}))
    x = pixels(loaded)
    with torch.no_grad():
        tokens, _ = loaded(x, None)
        library = original.visual.forward_intermediates(
            x, indices=[2], output_fmt="NLC", intermediates_only=True, output_extra_tokens=True
        )
    assert loaded.output_length(0) == 17
    assert torch.equal(
        tokens, torch.cat([library["image_intermediates_prefix"][0], library["image_intermediates"][0]], 1)
    )

    with pytest.raises(ValueError, match="without pretrained"):
        ENCODERS.get("open_clip")(OpenClipSpec(name="open_clip", name_or_path=MODEL_NAME))
    with pytest.raises(FileNotFoundError, match="neither a tag"):
        ENCODERS.get("open_clip")(OpenClipSpec(name="open_clip", name_or_path=MODEL_NAME, pretrained="missing.pt"))
