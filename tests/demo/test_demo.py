"""``mmadapter demo --quick`` end to end: its artefacts, the report, the plots; and the demo recipes' frozen parts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, requires_espeak
from PIL import Image

from mmadapter.cli import main
from mmadapter.config import load_recipe
from mmadapter.demo.run import RECIPE_ROOT, relocate
from mmadapter.demo.settings import load_demo_settings

QUICK = load_demo_settings(quick=True)

pytestmark = requires_espeak

MULTIMODAL = ROOT / "recipes" / "demo" / "speech_vision_graph.yaml"
NEW_LANGUAGE = ROOT / "recipes" / "language" / "new_language_projector.yaml"
LANGUAGE_LORA = ROOT / "recipes" / "language" / "new_language_lora.yaml"


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
    assert [o for o in relocate(NEW_LANGUAGE, tmp_path) if "init_from" in o or "from" in o] == [
        f"model.from={tmp_path / 'speech_vision_graph'}",
        f"train.stages.0.init_from={tmp_path / 'speech_vision_graph'}",
    ]


def test_the_new_language_recipe_takes_at_most_500_utterances_of_it() -> None:
    new, english = yaml.safe_load(NEW_LANGUAGE.read_text())["data"]["train"]
    assert "speech_de" in new["shards"] and 0 < new["max_samples"] <= 500
    assert "speech_en" in english["shards"] and english["weight"] < new["weight"]


@pytest.mark.slow
@pytest.mark.integration
def test_quick_demo_writes_both_artefacts_the_report_and_plots(demo: tuple[Path, dict]) -> None:
    out, report = demo
    for name in ("speech_vision_graph", "new_language", "new_language_lora"):
        assert (out / name / "adapter.safetensors").is_file() and (out / name / "recipe.yaml").is_file()
    assert set(report["reports"]) == {"english", "new_language", "new_language_lora"}
    held_out = {"en", "de", "images", "images_instruct", "graphs"}
    assert set(report["reports"]["english"]) == set(report["reports"]["new_language"]) == held_out
    assert set(report["reports"]["new_language_lora"]) == {"en", "de"}  # its expert changes no other set
    # small settings, but real learning: every score moves off its floor (154 s on 2 cores: English WER 40%,
    # German 89.5% → 69.8% after the projector step, captions 15%, graphs 55%)
    english, new_language = report["reports"]["english"], report["reports"]["new_language"]
    assert english["en"] < 0.8 and new_language["de"] < english["de"] < 1.0
    assert report["reports"]["new_language_lora"]["de"] < english["de"]
    assert min(english["images"], english["images_instruct"], english["graphs"]) > 0.0
    assert [r["task"] for r in report["table"]] == ["speech", "speech", "images", "images, asked otherwise", "graphs"]
    assert {"graphs: graph_topic", "graphs: graph_count", "images: caption"} <= set(report["by_task"])
    assert all(report["examples"].values())
    # mmadapter infer on held-out files: English and German audio, images and graphs, through both artefacts
    inferred = report["infer"]
    assert {r["key"].split("-")[0] for r in inferred} == {"en", "de", "img", "graph"} and len(inferred) == 12
    for row in inferred:
        assert isinstance(row["english"], str) and isinstance(row["new_language"], str)
        assert not row["english"].startswith("error:") and not row["new_language"].startswith("error:"), row
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


def _names(model, prefixes: tuple[str, ...]) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.startswith(prefixes)}


@pytest.mark.slow
def test_stage2_and_new_language_train_exactly_the_projectors_and_adapters(demo: tuple[Path, dict]) -> None:
    from mmadapter.summary import build_on_meta

    out, _ = demo
    multimodal = [*relocate(MULTIMODAL, out), *QUICK.multimodal]  # what the quick demo trained
    model = build_on_meta(load_recipe(MULTIMODAL, multimodal))
    projectors = {m: _names(model, (f"projectors.{m}.",)) for m in ("audio", "image", "graph")}
    lora = {n for n, _ in model.named_parameters() if ".lora_A." in n or ".lora_B." in n}
    gates = _names(model, ("gated_attention.",))
    assert all(projectors.values()) and lora and gates
    assert all(n.startswith("llm.") for n in lora)  # the experts sit inside the frozen LLM's layers
    align, instruct = _trainable(MULTIMODAL, multimodal, 0), _trainable(MULTIMODAL, multimodal, 1)
    language = _trainable(NEW_LANGUAGE, [*relocate(NEW_LANGUAGE, out), *QUICK.new_language], 0)
    with_expert = _trainable(LANGUAGE_LORA, [*relocate(LANGUAGE_LORA, out), *QUICK.new_language], 0)
    every_projector = set().union(*projectors.values())
    assert set(align) == every_projector
    assert set(instruct) == every_projector | lora | gates
    assert set(language) == projectors["audio"]
    german = set(with_expert) - projectors["audio"]
    assert projectors["audio"] <= set(with_expert) and german
    assert all(n.startswith("llm.") and (".lora_A.de." in n or ".lora_B.de." in n) for n in german)


@pytest.mark.slow
def test_the_artefacts_leave_encoders_and_llm_as_pretrained(demo: tuple[Path, dict]) -> None:
    """The weights themselves: the English artefact's encoders and LLM are the step-1 checkpoints; the
    new-language artefact differs from the English one in the audio projector only."""
    from mmadapter.artefact import load_artefact
    from mmadapter.model import MultimodalLM

    out, _ = demo
    english, second = load_artefact(out / "speech_vision_graph"), load_artefact(out / "new_language")
    pretrained = MultimodalLM.from_recipe(load_recipe(out / "speech_vision_graph" / "recipe.yaml")).state_dict()
    a, b = english.state_dict(), second.state_dict()
    assert a.keys() == b.keys() == pretrained.keys()
    base = [k for k in a if k.startswith(("encoders.", "llm.")) and ".lora_" not in k]
    assert any(k.startswith("encoders.audio.") for k in base) and any(k.startswith("llm.") for k in base)
    changed = [k for k in base if not torch.equal(a[k], pretrained[k])]
    assert not changed, changed[:5]
    differ = {k for k in a if not torch.equal(a[k], b[k])}
    assert differ and all(k.startswith("projectors.audio.") for k in differ), sorted(differ)[:5]
    c = load_artefact(out / "new_language_lora").state_dict()  # the same, plus a German expert of its own
    added = c.keys() - a.keys()
    assert added and all(".lora_A.de." in k or ".lora_B.de." in k for k in added)
    differ = {k for k in a if not torch.equal(a[k], c[k])}
    assert differ and all(k.startswith("projectors.audio.") for k in differ), sorted(differ)[:5]


def test_the_demo_recipes_share_one_model_and_the_pretrained_graph_encoder_shape() -> None:
    from mmadapter.demo.graph_encoder import GraphPretrainSettings
    from mmadapter.demo.language_model import LlmPretrainSettings

    multimodal, language = yaml.safe_load(MULTIMODAL.read_text()), yaml.safe_load(NEW_LANGUAGE.read_text())
    # the new-language recipe takes its model from the artefact it starts from
    assert language["model"] == {"from": "runs/demo/speech_vision_graph"}
    assert language["train"]["stages"][0]["init_from"] == language["model"]["from"]
    graph = dict(multimodal["model"]["encoders"]["graph"])
    assert graph.pop("name") == "gnn" and graph.pop("name_or_path").endswith("pretrained/graph_encoder.safetensors")
    assert graph == GraphPretrainSettings().encoder_options(LlmPretrainSettings().hidden)
