from pathlib import Path

import pytest
import yaml

from mmadapter.config import Recipe, RecipeError, apply_overrides, load_recipe

TINY = Path(__file__).parents[1] / "recipes" / "test" / "tiny.yaml"


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_all_problems_are_reported_at_once_with_dotted_paths(tmp_path: Path) -> None:
    data = yaml.safe_load(TINY.read_text())
    data["model"]["encoders"]["audio"]["variable_lenght"] = True  # typo in a family option
    data["train"]["max_stpes"] = 3  # typo in a section key
    data["data"]["max_tokens"] = "lots"  # bad type
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, data))
    paths = [p for p, _ in info.value.problems]
    assert sorted(paths) == sorted(["model.encoders.audio.variable_lenght", "train.max_stpes", "data.max_tokens"])
    text = str(info.value)
    assert "did you mean 'variable_length'" in text
    assert "did you mean 'max_steps'" in text
    assert "'lots'" in text


def test_unknown_component_name_lists_available(tmp_path: Path) -> None:
    data = yaml.safe_load(TINY.read_text())
    data["model"]["projectors"]["audio"]["name"] = "stak"
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, data))
    (path, msg), *_ = info.value.problems
    assert path == "model.projectors.audio.name"
    assert "'stack'" in msg and "mlp" in msg and "model.projectors.audio.name" in msg


def test_overrides_apply_json_values_and_list_indices() -> None:
    recipe = load_recipe(
        TINY,
        [
            "model.llm.dtype=float32",
            "train.stages.0.max_steps=10",
            'train.stages.0.trainable=["projectors.audio"]',
            "model.projectors.audio.k=4",
        ],
    )
    assert recipe.model.llm.dtype == "float32"
    assert recipe.train.stages[0].max_steps == 10
    assert recipe.train.stages[0].trainable == ["projectors.audio"]
    assert recipe.model.projectors["audio"].k == 4


def test_bad_overrides_are_reported() -> None:
    data: dict = {"train": {"stages": [{"name": "a", "trainable": ["projectors"]}]}}
    with pytest.raises(RecipeError) as info:
        apply_overrides(data, ["train.stages.3.max_steps=1", "novalue"])
    assert [p for p, _ in info.value.problems] == ["train.stages.3.max_steps", "novalue"]


def test_cross_field_rules() -> None:
    data = yaml.safe_load(TINY.read_text())
    del data["model"]["projectors"]["image"]
    data["train"]["stages"][0]["trainable"] = ["projectors.video"]
    with pytest.raises(RecipeError) as info:
        Recipe.from_dict(data)
    text = str(info.value)
    assert "encoder 'image' has no projector" in text
    assert "train.stages.0.trainable.0" in text


def test_recipe_round_trips_through_yaml() -> None:
    recipe = load_recipe(TINY)
    again = Recipe.from_dict(yaml.safe_load(recipe.to_yaml()))
    assert again == recipe
    assert type(again.model.projectors["audio"]).__name__ == type(recipe.model.projectors["audio"]).__name__


def test_stage_data_overrides_are_checked_at_load_and_merge_limits_key_by_key(tmp_path: Path) -> None:
    data = yaml.safe_load(TINY.read_text())
    data.setdefault("data", {})["limits"] = {"max_pixels": 4096, "max_audio_seconds": 20}
    stage = data["train"]["stages"][0]
    stage["data"] = {"limits": {"max_audio_seconds": 5}}
    recipe = load_recipe(write(tmp_path, data))
    limits = recipe.data.with_overrides(recipe.train.stages[0].data).limits
    assert (limits.max_pixels, limits.max_audio_seconds) == (4096, 5)  # the recipe's other limit is kept
    stage["data"] = {"max_tokns": 64, "limits": {"max_audio_secs": 5}}
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, data))
    paths = sorted(p for p, _ in info.value.problems)
    assert paths == ["train.stages.0.data.limits.max_audio_secs", "train.stages.0.data.max_tokns"]
    assert "did you mean 'max_tokens'" in str(info.value) and "did you mean 'max_audio_seconds'" in str(info.value)
    data["model"]["bogus"] = 1  # a problem elsewhere does not hide the stage's
    data["data"]["max_tokens"] = "many"  # nor one in the data the stage overrides
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, data))
    paths = sorted(p for p, _ in info.value.problems)
    assert paths == [
        "data.max_tokens",
        "model.bogus",
        "train.stages.0.data.limits.max_audio_secs",
        "train.stages.0.data.max_tokns",
    ]
