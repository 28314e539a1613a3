"""``mmadapter demo --quick`` end to end: both artefacts, the report, the plots; and the demo recipes' frozen parts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from PIL import Image

from mmadapter.cli import main
from mmadapter.config import load_recipe
from mmadapter.demo.run import QUICK, RECIPE_ROOT, relocate

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (scripts/setup_env.sh installs it as root: apt-get install -y espeak-ng)",
)

MULTIMODAL = ROOT / "recipes" / "demo" / "speech_vision_graph.yaml"
NEW_LANGUAGE = ROOT / "recipes" / "language" / "new_language_projector.yaml"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--quick"]) == 0
    return out, json.loads((out / "report.json").read_text())


def test_relocate_moves_every_demo_path_and_nothing_else(tmp_path: Path) -> None:
    overrides = relocate(MULTIMODAL, tmp_path)
    assert f"model.llm.name_or_path={tmp_path / 'pretrained' / 'llm'}" in overrides
    assert any(o.startswith("train.stages.1.data.train.0.shards=") for o in overrides)
    assert all(RECIPE_ROOT not in o.split("=", 1)[1] for o in overrides)
    assert [o for o in relocate(NEW_LANGUAGE, tmp_path) if "init_from" in o] == [
        f"train.stages.0.init_from={tmp_path / 'speech_vision_graph'}"
    ]


@pytest.mark.slow
@pytest.mark.integration
def test_quick_demo_writes_both_artefacts_the_report_and_plots(demo: tuple[Path, dict]) -> None:
    out, report = demo
    for name in ("speech_vision_graph", "new_language"):
        assert (out / name / "adapter.safetensors").is_file() and (out / name / "recipe.yaml").is_file()
    assert set(report["reports"]) == {"english", "new_language"}
    assert set(report["reports"]["english"]) == {"en", "de", "images", "images_instruct", "graphs"}
    assert set(report["reports"]["new_language"]) == {"en", "de"}
    for scores in report["reports"].values():
        assert all(v >= 0.0 for v in scores.values())
    assert [r["task"] for r in report["table"]] == ["speech", "speech", "images", "images, asked otherwise", "graphs"]
    assert {"graphs: graph_topic", "graphs: graph_count", "images: caption"} <= set(report["by_task"])
    assert all(report["examples"].values())
    assert {"data", "step 1: the components learn (no pretrained weights offline)"} <= set(report["seconds"])
    for plot in report["plots"]:
        with Image.open(plot) as image:
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200
    # the eval reports behind the table are mmadapter eval's own
    en = json.loads((out / "eval" / "english" / "en.json").read_text())
    assert en["metric"] == "wer" and en["overall"] == report["reports"]["english"]["en"]
    graphs = json.loads((out / "eval" / "english" / "graphs.json").read_text())
    assert graphs["metric"] == "accuracy" and graphs["n"] == 40
    assert (out / "pretrained" / "graph_encoder.safetensors").is_file()
    assert len(report["plots"]) == 3


def _trainable(recipe_path: Path, overrides: list[str], stage: int) -> list[str]:
    from mmadapter.summary import build_on_meta

    recipe = load_recipe(recipe_path, overrides)
    model = build_on_meta(recipe)
    return model.set_trainable(recipe.train.stages[stage].trainable)


@pytest.mark.slow
def test_stage2_and_new_language_keep_encoders_and_llm_frozen(demo: tuple[Path, dict]) -> None:
    out, _ = demo
    multimodal = [*relocate(MULTIMODAL, out), *QUICK.multimodal]  # what the quick demo trained
    align, instruct = _trainable(MULTIMODAL, multimodal, 0), _trainable(MULTIMODAL, multimodal, 1)
    language = _trainable(NEW_LANGUAGE, [*relocate(NEW_LANGUAGE, out), *QUICK.new_language], 0)
    assert align and all(n.startswith("projectors.") for n in align)
    assert any(".lora_A." in n for n in instruct) and any(n.startswith("gated_attention.") for n in instruct)
    assert language and all(n.startswith("projectors.audio.") for n in language)
    for names in (align, instruct, language):
        assert not [n for n in names if n.startswith("encoders.")]
        llm_weights = [n for n in names if n.startswith("llm.") and ".lora_A." not in n and ".lora_B." not in n]
        assert not llm_weights, llm_weights[:5]  # only the LoRA experts inside the frozen LLM train


def test_the_demo_recipes_share_one_model_and_the_pretrained_graph_encoder_shape() -> None:
    from mmadapter.demo.graph_encoder import GraphPretrainSettings
    from mmadapter.demo.language_model import LlmPretrainSettings

    multimodal, language = yaml.safe_load(MULTIMODAL.read_text()), yaml.safe_load(NEW_LANGUAGE.read_text())
    assert multimodal["model"] == language["model"]  # the new-language recipe copies the artefact's model
    graph = dict(multimodal["model"]["encoders"]["graph"])
    assert graph.pop("name") == "gnn" and graph.pop("name_or_path").endswith("pretrained/graph_encoder.safetensors")
    assert graph == GraphPretrainSettings().encoder_options(LlmPretrainSettings().hidden)
