"""``mmadapter demo`` at its full settings, as the README's first command runs it: the acceptance numbers.

English held-out WER ≤ 15% and caption exact match ≥ 90% (both from ``mmadapter eval``'s own reports); the
new language: the English artefact's WER on it is reported, the projector step brings it to ≤ 25% and at most
half of that, and the new artefact's English WER stays within 5 points; the graph task ≥ 85%. About six
minutes on two CPU cores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import requires_espeak

from mmadapter.cli import main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    requires_espeak,
]


@pytest.fixture(scope="module")
def full_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo_full")
    assert main(["demo", "--out", str(out)]) == 0
    return out, json.loads((out / "report.json").read_text())


def _eval(out: Path, artefact: str, name: str) -> float:
    """The overall score in ``mmadapter eval``'s own report, checked against the demo's report."""
    return json.loads((out / "eval" / artefact / f"{name}.json").read_text())["overall"]


def test_english_speech_and_images_reach_their_targets(full_demo: tuple[Path, dict]) -> None:
    out, report = full_demo
    english = report["reports"]["english"]
    assert english["en"] == _eval(out, "english", "en") <= 0.15, english
    assert english["images"] == _eval(out, "english", "images") >= 0.90, english


def test_the_new_language_projector_step_halves_the_wer_and_keeps_english(full_demo: tuple[Path, dict]) -> None:
    out, report = full_demo
    english, second = report["reports"]["english"], report["reports"]["new_language"]
    before, after = _eval(out, "english", "de"), _eval(out, "new_language", "de")
    assert english["de"] == before and second["de"] == after
    assert after <= 0.25 and after <= before / 2, (before, after)
    assert abs(second["en"] - english["en"]) <= 0.05, (english["en"], second["en"])
    # the table reports both artefacts on every held-out set, the one with a German expert on speech
    assert all({"english", "new_language"} <= set(row["scores"]) for row in report["table"])
    assert [sorted(row["scores"]) for row in report["table"] if row["task"] == "speech"] == [
        ["english", "new_language", "new_language_lora"]
    ] * 2


def test_a_language_expert_of_its_own_also_halves_the_wer_and_keeps_english(full_demo: tuple[Path, dict]) -> None:
    out, report = full_demo
    english, lora = report["reports"]["english"], report["reports"]["new_language_lora"]
    before, after = _eval(out, "english", "de"), _eval(out, "new_language_lora", "de")
    assert lora["de"] == after <= 0.25 and after <= before / 2, (before, after)
    assert abs(lora["en"] - english["en"]) <= 0.05, (english["en"], lora["en"])


def test_the_graph_task_reaches_85_percent_and_is_in_the_report_and_plots(full_demo: tuple[Path, dict]) -> None:
    out, report = full_demo
    assert report["reports"]["english"]["graphs"] == _eval(out, "english", "graphs") >= 0.85
    assert {"graphs: graph_topic", "graphs: graph_count"} <= set(report["by_task"])
    assert any(row["task"] == "graphs" for row in report["table"])
    assert (out / "plots" / "accuracy_by_task.png").is_file()
