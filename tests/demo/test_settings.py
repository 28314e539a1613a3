"""recipes/demo/demo.yaml: the demo's data sizes, step-1 settings and --quick variant, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mmadapter.demo.audio_encoder import AudioPretrainSettings
from mmadapter.demo.settings import DEMO_RECIPE, PretrainSettings, load_demo_settings
from mmadapter.recipe_errors import RecipeError


def test_the_full_demo_uses_the_documented_step1_defaults_and_at_most_500_new_language_utterances() -> None:
    full = load_demo_settings()
    assert full.step1 == PretrainSettings()
    assert set(full.sizes.speech) == {"en", "de", "es", "fr", "it"}
    assert full.sizes.speech["de"] - full.sizes.speech_test["de"] <= 500  # what the new-language step trains on
    assert full.sizes.instruct == ("speech_en", "images") and full.graphs == (1000, 200)
    assert full.multimodal == () and full.new_language == ()


def test_quick_merges_over_the_full_settings_key_by_key() -> None:
    full, quick = load_demo_settings(), load_demo_settings(quick=True)
    assert quick.step1.audio.d_model == 96 and quick.step1.audio.d_model < full.step1.audio.d_model
    assert quick.step1.audio.heads == AudioPretrainSettings().heads  # not in quick: the default stays
    assert quick.sizes.speech["en"] < full.sizes.speech["en"] and quick.sizes.instruct == full.sizes.instruct
    assert quick.graphs == (120, 40)
    assert "model.encoders.graph.in_dim=64" in quick.multimodal and quick.new_language


def _variant(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load(DEMO_RECIPE.read_text())
    edit(raw)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda r: r["step1"]["audio"].update(stepz=3), "step1.audio.stepz"),
        (lambda r: r["step1"].update(text={}), "step1.text"),
        (lambda r: r.update(stage3={}), "stage3"),
        (lambda r: r["data"].pop("graphs"), "data.graphs"),
        (lambda r: r["data"].update(images_test=0), "images_test"),
        (lambda r: r.update(multimodal=["train.max_steps"]), "multimodal"),
    ],
)
def test_a_bad_key_or_value_is_an_error_naming_it(tmp_path: Path, edit, named: str) -> None:
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        load_demo_settings(_variant(tmp_path, edit))


def test_a_field_set_in_the_file_reaches_its_training(tmp_path: Path) -> None:
    path = _variant(tmp_path, lambda r: r["step1"]["vision"].update(steps=7))
    assert load_demo_settings(path).step1.vision.steps == 7
    assert load_demo_settings(path, quick=True).step1.vision.steps == 250  # quick still wins


def test_every_problem_is_reported_at_once_with_a_close_match(tmp_path: Path) -> None:
    def edit(r: dict) -> None:
        r["step1"]["audio"].update(stepz=3)
        r["step1"]["vision"].update(steps="many")
        r["data"]["images"] = -1

    with pytest.raises(RecipeError) as e:
        load_demo_settings(_variant(tmp_path, edit))
    keys = {key for key, _ in e.value.problems}
    assert {"step1.audio.stepz", "step1.vision.steps", "data.images"} <= keys
    assert "did you mean 'steps'?" in dict(e.value.problems)["step1.audio.stepz"]
    assert "'many'" in dict(e.value.problems)["step1.vision.steps"]


def test_a_mistake_in_quick_is_named_under_quick_even_for_the_full_demo(tmp_path: Path) -> None:
    path = _variant(tmp_path, lambda r: r["quick"]["step1"]["llm"].update(hiden=64))
    with pytest.raises(RecipeError) as e:
        load_demo_settings(path)  # not --quick: found before the long run
    assert [key for key, _ in e.value.problems] == ["quick.step1.llm.hiden"]
    path = _variant(tmp_path, lambda r: r["quick"]["data"].update(images_test=5000))
    with pytest.raises(RecipeError, match=r"quick\.data: .*images_test"):
        load_demo_settings(path, quick=True)
