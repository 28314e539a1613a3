"""The README's commands that CI does not run as written: each still names real recipe keys and values."""

from __future__ import annotations

import re
import shlex

from conftest import ROOT, nudged_artefact

from mmadapter.config import load_recipe


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)


def _train_commands() -> list[list[str]]:
    """Every ``mmadapter train RECIPE [overrides] --run DIR`` of the README, split as bash would."""
    commands = []
    for block in _bash_blocks():
        for command in block.replace("\\\n", " ").splitlines():
            words = shlex.split(command, comments=True)
            if words[:2] == ["mmadapter", "train"]:
                commands.append(words[2:])
    return commands


def test_the_real_weights_commands_validate() -> None:
    """Swapping the demo's components for real checkpoints: the overrides are valid recipe keys and values
    (the checkpoints themselves cannot be downloaded here)."""
    commands = _train_commands()
    real = [c for c in commands if c[0] == "recipes/demo/speech_vision_graph.yaml" and len(c) > 3]
    assert real, "the README shows how to swap in pretrained components"
    for words in real:
        overrides = [w for w in words[1:] if "=" in w]
        recipe = load_recipe(ROOT / words[0], overrides)
        audio, image = recipe.model.encoders["audio"], recipe.model.encoders["image"]
        assert (audio.name, audio.name_or_path) == ("whisper", "openai/whisper-large-v3")
        assert image.name == "hf_vision" and image.name_or_path.startswith("openai/clip-")
        assert recipe.model.llm.name_or_path == "meta-llama/Llama-3.2-1B-Instruct"
        assert "encoders.graph" in recipe.train.stages[0].trainable


def test_the_new_language_command_validates_against_a_trained_artefact(tmp_path) -> None:
    commands = [c for c in _train_commands() if c[0] == "recipes/language/new_language_projector.yaml" and len(c) > 3]
    assert commands, "the README shows the new-language recipe with real checkpoints"
    artefact = str(nudged_artefact(tmp_path / "asr"))  # stands in for the README's runs/asr
    for words in commands:
        overrides = [w.replace("runs/asr", artefact, 1) for w in words[1:] if "=" in w]
        recipe = load_recipe(ROOT / words[0], overrides)
        assert recipe.model == load_recipe(f"{artefact}/recipe.yaml").model
        assert recipe.train.stages[0].init_from == artefact
        assert recipe.train.stages[0].trainable == ["projectors.audio"]
        assert "fleurs_de" in recipe.data.train[0].shards
