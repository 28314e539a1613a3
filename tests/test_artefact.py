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


def test_components_by_path_reload_from_their_paths_not_the_artefact(tmp_path: Path) -> None:
    """A recipe naming checkpoints by path: the artefact holds only trainable weights, and a reload
    reads the frozen parts from those paths and gives identical logits."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, WhisperConfig, WhisperForConditionalGeneration

    from mmadapter.config import LLMSpec, Recipe
    from mmadapter.llm import LLMS

    llm, tok = LLMS.get("causal_lm_test")(LLMSpec(name="causal_lm_test"))
    llm.save_pretrained(tmp_path / "llm")
    tok.save_pretrained(tmp_path / "llm")
    whisper = dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2)
    whisper |= dict(decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64)
    WhisperForConditionalGeneration(WhisperConfig(**whisper)).save_pretrained(tmp_path / "whisper")
    clip = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=32)
    CLIPVisionModel(CLIPVisionConfig(**clip, patch_size=8)).save_pretrained(tmp_path / "clip")
    recipe = Recipe.from_dict(
        {
            "model": {
                "llm": {"name_or_path": str(tmp_path / "llm")},
                "encoders": {
                    "audio": {"name": "whisper", "name_or_path": str(tmp_path / "whisper")},
                    "image": {"name": "hf_vision", "name_or_path": str(tmp_path / "clip")},
                },
                "projectors": {"audio": {"name": "stack", "k": 2}, "image": {"name": "mlp"}},
            }
        }
    )
    model = MultimodalLM.from_recipe(recipe)
    with torch.no_grad():
        for p in model.projectors.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save(tmp_path / "run")
    assert not (tmp_path / "run" / "frozen.safetensors").exists()
    assert not (tmp_path / "run" / "tokenizer").exists()
    again = MultimodalLM.load(tmp_path / "run")
    b = batch_for(model)
    with torch.no_grad():
        assert torch.equal(model(b, return_logits=True).logits, again(b, return_logits=True).logits)
