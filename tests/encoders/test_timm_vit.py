"""timm ViTs loaded by name with a local checkpoint file give the original model's tokens, which are the
library's own intermediate-layer outputs."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from conftest import random_image
from safetensors.torch import save_file

from mmadapter.encoders import ENCODERS
from mmadapter.encoders.timm_vit import TimmVitEncoder, TimmVitSpec

NAME = "test_vit"  # timm's own tiny registered ViT (160 px, patch 16, 6 blocks)


@pytest.fixture(scope="module")
def original() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(NAME).eval()


@pytest.mark.parametrize("file_name", ["weights.safetensors", "weights.pth"])
def test_checkpoint_file_gives_identical_outputs(tmp_path, original, file_name: str) -> None:
    path = tmp_path / file_name
    if path.suffix == ".safetensors":
        save_file(original.state_dict(), path)
    else:
        torch.save(original.state_dict(), path)
    loaded = ENCODERS.get("timm_vit")(TimmVitSpec(name="timm_vit", name_or_path=NAME, pretrained=str(path)))
    reference = TimmVitEncoder(copy.deepcopy(original)).eval()

    x = torch.stack([loaded.transform(random_image(seed=i, size=200)) for i in range(2)])
    assert x.shape == (2, 3, 160, 160)
    with torch.no_grad():
        tokens, lengths = loaded(x, None)
        assert torch.equal(tokens, reference(x, None)[0])
        depth = len(original.blocks)
        library = original.forward_intermediates(x, indices=[depth - 2], output_fmt="NLC", intermediates_only=True)
    assert tokens.shape == (2, 100, original.embed_dim)
    assert lengths.tolist() == [100, 100]
    assert torch.equal(tokens, library[0])


def test_missing_checkpoint_file(tmp_path) -> None:
    spec = TimmVitSpec(name="timm_vit", name_or_path=NAME, pretrained=str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ENCODERS.get("timm_vit")(spec)
