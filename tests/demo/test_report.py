"""The demo report's table, loss curves and WER plot, and the instruction lines of the synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mmadapter.data.synthetic_instruct import ASR_PROMPTS, CAPTION_PROMPTS, instruct_lines
from mmadapter.demo import report
from mmadapter.demo.report import (
    EvalRow,
    format_table,
    plot_accuracy_by_task,
    plot_losses,
    plot_wer_by_language,
    read_stage_losses,
)


def test_table_has_one_column_per_artefact_and_dashes_for_missing_scores() -> None:
    rows = [
        EvalRow("speech", "en", "wer", {"english": 0.041, "new_language": 0.052}, 200),
        EvalRow("images", "-", "accuracy", {"english": 0.955}, 200),
    ]
    lines = format_table(rows, ["english", "new_language"]).splitlines()
    assert lines[0].split() == ["task", "lang", "metric", "n", "english", "new_language"]
    assert lines[2].split() == ["speech", "en", "WER", "200", "4.1%", "5.2%"]
    assert lines[3].split()[-2:] == ["95.5%", "—"] and "exact match" in lines[3]


def test_stage_losses_are_read_per_stage_from_metrics_jsonl(tmp_path: Path) -> None:
    rows = [
        {"step": 1, "stage": "align", "loss": 2.0},
        {"step": 10, "stage": "align", "loss": 1.0},
        {"step": 10, "stage": "align", "val_loss": 1.5},
        {"step": 5, "stage": "instruct", "loss": 0.5},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_stage_losses(tmp_path / "metrics.jsonl") == {"align": ([1, 10], [2.0, 1.0]), "instruct": ([5], [0.5])}


def test_plots_are_pngs_with_labelled_axes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    labels: dict[str, list[tuple[str, str]]] = {}
    save = report._save

    def recording_save(plt, fig, path: Path) -> Path:
        labels[path.name] = [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes if ax.get_visible()]
        return save(plt, fig, path)

    monkeypatch.setattr(report, "_save", recording_save)
    curves = {"step 1: llm": ([1, 2, 3], [3.0, 2.0, 1.0]), "speech_vision: align": ([10, 20], [1.0, 0.5])}
    loss = plot_losses(curves, tmp_path / "plots" / "loss.png", "loss")
    wer = plot_wer_by_language(
        {"english": {"en": 0.05, "de": 0.8}, "new_language": {"en": 0.06, "de": 0.1}}, tmp_path / "wer.png", "WER"
    )
    accuracy = plot_accuracy_by_task({"images: caption": 0.97, "graphs: graph_count": 1.0}, tmp_path / "acc.png", "")
    for path in (loss, wer, accuracy):
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 200
    assert labels["loss.png"] == [("training step", "training loss")] * 2
    assert labels["wer.png"] == [("language of the held-out spoken digits", "word error rate (%)")]
    assert labels["acc.png"] == [("exact match (%)", "held-out set: task")]


def test_instruction_lines_rephrase_and_ask_questions_deterministically() -> None:
    speech = [{"key": f"en-{i}", "audio": "a.flac", "task": "asr", "lang": "en", "response": "3 7"} for i in range(40)]
    objects = [{"shape": "circle", "colour": "red"}, {"shape": "square", "colour": "blue"}]
    images = [
        {"key": f"img-{i}", "image": "a.png", "task": "caption", "response": "a red circle and a blue square"}
        | {"objects": objects}
        for i in range(60)
    ]
    out = list(instruct_lines(speech + images, seed=0))
    assert out == list(instruct_lines(speech + images, seed=0)) and len(out) == 100
    prompts = {line.get("prompt") for line in out[:40]}
    assert None in prompts and prompts - {None} <= set(ASR_PROMPTS) and len(prompts) > 2
    assert all(line["response"] == "3 7" for line in out[:40])
    vqa = [line for line in out[40:] if line["task"] == "vqa"]
    assert vqa and {line["response"] for line in vqa} <= {"two", "red", "circle"}
    assert {line.get("prompt") for line in out[40:] if line["task"] == "caption"} - {None} <= set(CAPTION_PROMPTS)
    with pytest.raises(ValueError, match="k: no instruction phrasings for task 'ast'"):
        list(instruct_lines([{"key": "k", "task": "ast"}], seed=0))
