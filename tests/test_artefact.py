"""save → load gives identical outputs; artefacts hold only safe formats and are never unpickled."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import random_audio, random_image, tiny_recipe
from safetensors.torch import load_file

from mmadapter.artefact import ARTEFACT_FILES, load_trained_weights
from mmadapter.batch import MultimodalBatch
from mmadapter.config import Recipe
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


def test_a_cut_weight_file_or_a_changed_recipe_is_a_clear_error(trained, tmp_path: Path) -> None:
    _, out = trained
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    adapter = copy / "adapter.safetensors"
    whole = adapter.read_bytes()
    adapter.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=rf"{adapter} is not a readable safetensors file"):
        MultimodalLM.load(copy)
    adapter.write_bytes(whole)
    recipe = copy / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace("k: 2", "k: 3", 1))  # the audio projector stacks 3 frames now
    with pytest.raises(ValueError, match=r"another shape than the model the recipe builds, e\.g\. projectors\.audio"):
        MultimodalLM.load(copy)


def by_path(tmp_path: Path) -> Recipe:
    """A recipe naming every component by a local checkpoint path (all reloadable)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, WhisperConfig, WhisperForConditionalGeneration

    from mmadapter.config import LLMSpec
    from mmadapter.llm import LLMS

    llm, tok = LLMS.get("causal_lm_test")(LLMSpec(name="causal_lm_test"))
    llm.save_pretrained(tmp_path / "llm")
    tok.save_pretrained(tmp_path / "llm")
    whisper = dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2)
    whisper |= dict(decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64)
    WhisperForConditionalGeneration(WhisperConfig(**whisper)).save_pretrained(tmp_path / "whisper")
    clip = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=32)
    CLIPVisionModel(CLIPVisionConfig(**clip, patch_size=8)).save_pretrained(tmp_path / "clip")
    return Recipe.from_dict(
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


def nudge(parameters) -> None:
    with torch.no_grad():
        for p in parameters:
            p.add_(0.01 * torch.randn_like(p))


def same_logits(a: MultimodalLM, b: MultimodalLM) -> bool:
    batch = batch_for(a)
    with torch.no_grad():
        return torch.equal(a(batch, return_logits=True).logits, b(batch, return_logits=True).logits)


def test_components_by_path_reload_from_their_paths_not_the_artefact(tmp_path: Path) -> None:
    """A recipe naming checkpoints by path: the artefact holds only trained weights, and a reload reads the
    frozen parts from those paths and gives identical logits."""
    model = MultimodalLM.from_recipe(by_path(tmp_path))
    nudge(model.projectors.parameters())
    model.save(tmp_path / "run")
    assert not (tmp_path / "run" / "frozen.safetensors").exists()
    assert not (tmp_path / "run" / "tokenizer").exists()
    assert not any(n.startswith(("encoders.", "llm.")) for n in load_file(tmp_path / "run" / "adapter.safetensors"))
    assert same_logits(model, MultimodalLM.load(tmp_path / "run"))


def test_a_component_trained_in_an_earlier_stage_stays_in_the_artefact(tmp_path: Path) -> None:
    """Stage 1 trains the (reloadable) audio encoder, stage 2 only the projectors: the artefact still holds the
    encoder as trained, and so does one made from it by a stage that starts from it (``init_from``)."""
    recipe = by_path(tmp_path)
    model = MultimodalLM.from_recipe(recipe)
    nudge(model.groups()["encoders.audio"].values())  # as stage 1 would
    model.set_trainable(["encoders.audio", "projectors"])
    model.set_trainable(["projectors"])  # stage 2
    model.save(tmp_path / "run")
    encoder = set(model.groups()["encoders.audio"])
    assert encoder <= set(load_file(tmp_path / "run" / "adapter.safetensors"))
    assert same_logits(model, MultimodalLM.load(tmp_path / "run"))

    later = MultimodalLM.from_recipe(recipe)  # a later run: the pretrained encoder, then init_from the first
    assert not same_logits(model, later)
    assert encoder <= set(load_trained_weights(later, tmp_path / "run"))
    later.set_trainable(["projectors.audio"])
    later.save(tmp_path / "later")
    assert encoder <= set(load_file(tmp_path / "later" / "adapter.safetensors"))
    assert same_logits(model, MultimodalLM.load(tmp_path / "later"))


def test_init_from_brings_the_random_frozen_weights_too(trained) -> None:
    """A model built with another seed has other random frozen parts: ``init_from`` must bring the artefact's."""
    model, out = trained
    torch.manual_seed(1234)
    other = MultimodalLM.from_recipe(tiny_recipe())
    assert not same_logits(model, other)
    names = set(load_trained_weights(other, out))
    assert set(load_file(out / "frozen.safetensors")) <= names
    assert same_logits(model, other)


def test_init_from_keeps_what_this_model_trained_itself(trained) -> None:
    """A frozen part of the artefact that this run has trained (an earlier stage) is not overwritten."""
    _, out = trained
    other = MultimodalLM.from_recipe(tiny_recipe())
    name = next(iter(load_file(out / "frozen.safetensors")))
    mine = dict(other.named_parameters())[name]
    with torch.no_grad():
        mine.fill_(0.5)
    other.trained.add(name)
    assert name not in load_trained_weights(other, out)
    assert bool((mine == 0.5).all())


def test_the_buffers_of_a_trained_module_are_kept_with_its_weights() -> None:
    from mmadapter.artefact import _buffers_of_trained

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    assert _buffers_of_trained(model, {"1.weight"}) == {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
    assert _buffers_of_trained(model, {"0.weight"}) == set()
