"""save → load gives identical outputs; artefacts hold only safe formats and are never unpickled."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from conftest import random_audio, random_image, tiny_recipe

from mmadapter.artefact import ARTEFACT_FILES
from mmadapter.batch import MultimodalBatch
from mmadapter.model import MultimodalLM


def batch_for(model: MultimodalLM) -> MultimodalBatch:
    msgs = [{"role": "user", "content": "<audio> <image>"}, {"role": "assistant", "content": "4 2"}]
    return MultimodalBatch.pack([model.prepare("k", msgs, {"audio": [random_audio(1.5)], "image": [random_image(1)]})])


class Canary:
    """Unpickling this creates a file: proof that something unpickled the artefact."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[MultimodalLM, Path]:
    model = MultimodalLM.from_recipe(tiny_recipe())
    with torch.no_grad():  # move trainable weights away from their initial values
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    out = tmp_path_factory.mktemp("artefact")
    model.save(out)
    return model, out


def test_reload_gives_identical_logits(trained) -> None:
    model, out = trained
    again = MultimodalLM.load(out)
    b = batch_for(model)
    with torch.no_grad():
        assert torch.equal(model(b, return_logits=True).logits, again(b, return_logits=True).logits)


def test_artefact_holds_only_the_documented_files(trained) -> None:
    _, out = trained
    names = {p.name for p in out.iterdir()}
    assert names <= set(ARTEFACT_FILES)
    assert {"recipe.yaml", "adapter.safetensors", "frozen.safetensors", "tokenizer", "provenance.json"} == names


def test_crafted_pickles_are_never_loaded(trained, tmp_path: Path) -> None:
    _, out = trained
    canary = tmp_path / "unpickled"
    for name in ("adapter.bin", "model.pt", "pytorch_model.bin"):
        (out / name).write_bytes(pickle.dumps(Canary(str(canary))))
    try:
        MultimodalLM.load(out)
    finally:
        for name in ("adapter.bin", "model.pt", "pytorch_model.bin"):
            (out / name).unlink()
    assert not canary.exists()


def test_missing_adapter_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "recipe.yaml").write_text(tiny_recipe().to_yaml())
    with pytest.raises(FileNotFoundError, match=r"adapter\.safetensors is missing"):
        MultimodalLM.load(tmp_path)
