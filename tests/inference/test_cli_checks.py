"""What ``mmadapter infer`` / ``eval`` check before loading a model, and how their outputs are written:
through a symbolic link, straight into a pipe, whatever the file names in a folder."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
import torch
from conftest import ROOT, infer_cli, nudged_artefact

from mmadapter import inference
from mmadapter.artefact import rename_target
from mmadapter.cli import main
from mmadapter.cli_checks import check_device, check_output, check_text
from mmadapter.inference import GenerationOptions, Prediction, write_predictions
from mmadapter.inference_inputs import folder_requests, open_requests

MEDIA = ROOT / "tests" / "assets" / "media"


def test_devices_are_checked_against_this_machine() -> None:
    check_device(None)
    check_device("cpu")
    with pytest.raises(ValueError, match="'gpu' is not a torch device"):
        check_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            check_device("cuda")


def test_command_line_text_must_be_utf8() -> None:
    check_text("café", "--prompt")
    with pytest.raises(ValueError, match=r"--prompt is not valid UTF-8 text"):
        check_text(os.fsdecode(b"caf\xff"), "--prompt")  # how Python hands over such argv bytes


def test_outputs_that_cannot_be_written_are_refused_up_front(tmp_path: Path) -> None:
    check_output(tmp_path / "new" / "out.jsonl", "--output")
    with pytest.raises(ValueError, match="is a directory"):
        check_output(tmp_path, "--output")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="afile is a file, not a directory"):
        check_output(tmp_path / "afile" / "out.jsonl", "--output")
    manifest = tmp_path / "in.jsonl"
    manifest.write_text("{}\n")
    with pytest.raises(ValueError, match="is also an input"):
        check_output(manifest, "--output", [str(manifest)])
    dangling = tmp_path / "link.jsonl"
    dangling.symlink_to(tmp_path / "afile" / "deeper.jsonl")  # written through: its target's parent is a file
    with pytest.raises(ValueError, match="afile is a file, not a directory"):
        check_output(dangling, "--output")


def test_non_finite_generation_options_are_refused() -> None:
    for options in ({"temperature": float("nan")}, {"temperature": float("inf")}, {"repetition_penalty": float("nan")}):
        with pytest.raises(ValueError, match="finite"):
            GenerationOptions(**options)


def test_predictions_go_through_a_link_and_straight_into_a_pipe(tmp_path: Path) -> None:
    lines = [Prediction("a", output="one"), Prediction("b", error="broken")]
    target, link = tmp_path / "target.jsonl", tmp_path / "link.jsonl"
    target.write_text("old\n")
    link.symlink_to(target)
    assert write_predictions(lines, link) == {"written": 2, "errors": 1}
    assert link.is_symlink() and [json.loads(x)["key"] for x in target.read_text().splitlines()] == ["a", "b"]

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    write_predictions(lines, fifo)
    reader.join(timeout=30)
    assert fifo.exists() and not fifo.is_file() and len(got[0].splitlines()) == 2  # still the pipe
    # /dev/stdout may resolve to the file a shell redirected it to: written into, never replaced
    assert rename_target(Path("/dev/stdout")) is None and rename_target(link) == target


def test_duplicate_keys_fail_after_their_first_item(tmp_path: Path) -> None:
    shutil.copy(MEDIA / "red.png", tmp_path / "red.png")
    line = json.dumps({"key": "a", "image": "red.png", "response": "red"})
    broken = json.dumps({"key": "a", "image": "gone.png", "response": "red"})
    (tmp_path / "m.jsonl").write_text(f"{broken}\n{line}\n{line}\n")
    failed, first, second = open_requests(str(tmp_path / "m.jsonl"))
    assert "missing_file" in failed.error  # a failed item does not take its key from a later good one
    assert first.error is None and first.reference == "red"
    assert second.key == "a" and "bad_json: duplicate key, first at" in second.error and "m.jsonl:2" in second.error


def test_a_folder_without_media_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no media here")
    with pytest.raises(ValueError, match="holds no audio, image or graph file"):
        folder_requests(tmp_path)


@pytest.fixture(scope="module")
def artefact(tmp_path_factory) -> Path:
    return nudged_artefact(tmp_path_factory.mktemp("artefact"))


def test_a_file_name_that_is_not_utf8_fails_only_its_item(artefact: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(MEDIA / "tone.flac", folder / "a.flac")
    (folder / os.fsdecode(b"b\xff.png")).write_bytes(b"not an image")
    shutil.copy(MEDIA / "red.png", folder / "z.png")
    out = tmp_path / "out.jsonl"
    assert infer_cli(artefact, "--input", folder, "--output", out) == 0
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [x["key"] for x in lines] == ["a", "b", "z"]
    assert "output" in lines[0] and "corrupt_image" in lines[1]["error"] and "output" in lines[2]
    assert [Path(x["file"]).name for x in lines] == ["a.flac", os.fsdecode(b"b\xff.png"), "z.png"]


def test_bad_arguments_stop_before_the_model_is_loaded(artefact: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(inference, "load_model", never)
    monkeypatch.setattr("mmadapter.evaluate.load_model", never)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"key": "a", "image": str(MEDIA / "red.png"), "response": "red"}) + "\n")
    runs = {
        "is a directory": ["infer", "--checkpoint", artefact, "--input", MEDIA, "--output", tmp_path],
        "is also an input": ["infer", "--checkpoint", artefact, "--input", manifest, "--output", manifest],
        "is not a torch device": ["infer", "--checkpoint", artefact, "--image", MEDIA / "red.png", "--device", "gpu"],
        "holds no audio, image or graph file": [
            "infer",
            "--checkpoint",
            artefact,
            "--input",
            ROOT / "recipes",
            "--output",
            tmp_path / "o.jsonl",
        ],
        "are the same file": [
            "eval",
            "--checkpoint",
            artefact,
            "--input",
            manifest,
            "--output",
            tmp_path / "r.json",
            "--predictions",
            tmp_path / "r.json",
        ],
    }
    for message, argv in runs.items():
        assert main([str(a) for a in argv]) == 2, message
        err = capsys.readouterr().err
        assert err.startswith(f"mmadapter {argv[0]}: error: ") and message in err and "Traceback" not in err


def test_recipe_overrides_reach_the_artefact_at_load_time(artefact: Path, capsys) -> None:
    image = ["--image", MEDIA / "red.png"]
    assert infer_cli(artefact, *image, "--override", "train.seed=5") == 0
    capsys.readouterr()
    argv = ["infer", "--checkpoint", artefact, *image, "--override", "model.llm.nmae_or_path=/elsewhere"]
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "model.llm.nmae_or_path: unknown key; did you mean 'name_or_path'?" in err and "recipe.yaml" in err
