"""``model: {from: RUN}``: a recipe takes a trained artefact's model, other keys merged on top."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TINY_RECIPE, nudged_artefact

from mmadapter.config import Recipe, RecipeError, load_recipe

NEW_LANGUAGE = ROOT / "recipes" / "language" / "new_language_projector.yaml"


@pytest.fixture(scope="module")
def artefact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return nudged_artefact(tmp_path_factory.mktemp("from") / "run")


def test_model_from_takes_the_artefacts_model(artefact: Path) -> None:
    recipe = Recipe.from_dict({"model": {"from": str(artefact)}})
    assert recipe.model == load_recipe(artefact / "recipe.yaml").model == load_recipe(TINY_RECIPE).model


def test_keys_beside_from_are_merged_on_top_mapping_by_mapping(artefact: Path) -> None:
    recipe = Recipe.from_dict({"model": {"from": str(artefact), "projectors": {"audio": {"k": 3}}}})
    assert recipe.model.projectors["audio"].name == "stack" and recipe.model.projectors["audio"].k == 3
    assert recipe.model.projectors["image"].name == "mlp"
    assert recipe.model.encoders == load_recipe(TINY_RECIPE).model.encoders


def test_an_override_can_name_the_artefact(artefact: Path) -> None:
    recipe = load_recipe(NEW_LANGUAGE, [f"model.from={artefact}", f"train.stages.0.init_from={artefact}"])
    assert recipe.model == load_recipe(TINY_RECIPE).model
    assert recipe.train.stages[0].trainable == ["projectors.audio"]


@pytest.mark.parametrize(
    ("value", "says"),
    [(None, "expected the directory of a trained artefact"), (7, "expected the directory"), ("", "expected")],
)
def test_a_bad_from_value_is_named(value: object, says: str) -> None:
    with pytest.raises(RecipeError) as e:
        Recipe.from_dict({"model": {"from": value}}, source="r.yaml")
    assert "model.from" in str(e.value) and says in str(e.value) and "r.yaml" in str(e.value)


def test_a_directory_that_is_no_artefact_is_named(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as e:
        Recipe.from_dict({"model": {"from": str(tmp_path)}})
    assert "model.from" in str(e.value) and "recipe.yaml is missing" in str(e.value)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({"train": {"max_steps": 1}}))
    with pytest.raises(RecipeError, match="has no model mapping"):
        Recipe.from_dict({"model": {"from": str(tmp_path)}})
    (tmp_path / "recipe.yaml").write_text("model: [unclosed")
    with pytest.raises(RecipeError, match="not valid YAML"):
        Recipe.from_dict({"model": {"from": str(tmp_path)}})


def test_the_saved_recipe_holds_the_resolved_model(artefact: Path) -> None:
    """An artefact trained from ``model.from`` saves the model itself, so it loads without its parent run."""
    recipe = Recipe.from_dict({"model": {"from": str(artefact)}})
    saved = yaml.safe_load(recipe.to_yaml())["model"]
    assert "from" not in saved and saved["projectors"]["audio"]["name"] == "stack"
