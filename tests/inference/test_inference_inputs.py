"""Inference inputs: prompts, references, manifests and how ``--input`` is recognised (no model needed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from mmadapter.data import DEFAULT_PROMPTS
from mmadapter.inference_inputs import (
    Request,
    build_prompt,
    file_request,
    first_requests,
    folder_requests,
    manifest_requests,
    open_requests,
    split_reference,
)
from mmadapter.limits import MediaLimits

MEDIA = ROOT / "tests" / "assets" / "media"


def test_default_prompts_per_modality() -> None:
    assert build_prompt(None, {"audio": 1}) == DEFAULT_PROMPTS["asr"]
    assert build_prompt(None, {"image": 1}) == DEFAULT_PROMPTS["caption"]
    assert build_prompt(None, {"audio": 2}) == DEFAULT_PROMPTS["asr"].replace("<audio>", "<audio> <audio>")
    assert build_prompt(None, {"audio": 1, "image": 1}) == f"{DEFAULT_PROMPTS['asr']} {DEFAULT_PROMPTS['caption']}"
    with pytest.raises(ValueError, match="nothing to answer"):
        build_prompt(None, {})


def test_missing_placeholders_are_prepended_one_per_item() -> None:
    assert build_prompt("Same?", {"audio": 2, "image": 1}) == "<audio> <audio> <image>\nSame?"
    assert build_prompt("<image> vs sound", {"audio": 1, "image": 1}) == "<audio>\n<image> vs sound"
    assert build_prompt("Hi", {}) == "Hi"


def test_a_wrong_explicit_placeholder_count_is_reported() -> None:
    request = file_request("k", {"image": [MEDIA / "red.png"]}, "<image> and <image>?")
    assert request.error is not None
    assert "placeholder_mismatch" in request.error


def test_the_last_assistant_turn_is_the_reference() -> None:
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "<image> colour?"},
        {"role": "assistant", "content": "red"},
        {"role": "user", "content": "shape?"},
        {"role": "assistant", "content": "square"},
    ]
    prompt, reference = split_reference(chat)
    assert reference == "square"
    assert prompt == chat[:-1]
    assert split_reference(chat[:-1]) == (chat[:-1], None)
    with pytest.raises(ValueError, match="no user turn"):
        split_reference([{"role": "assistant", "content": "hi"}])


def test_manifest_lines_become_requests(tmp_path: Path) -> None:
    shutil.copy(MEDIA / "tone.flac", tmp_path / "a.flac")
    Image.new("RGB", (8, 8), (0, 0, 255)).save(tmp_path / "b.png")
    lines = [
        '{"key": "bare", "audio": "a.flac"}',
        '{"key": "own", "image": "b.png", "prompt": "Which colour?", "response": "blue", "lang": "de"}',
        "not json",
        '{"key": "bad key!", "prompt": "x"}',
        json.dumps({"key": "two", "image": ["b.png", "b.png"], "task": "caption", "response": "two squares"}),
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n\n")
    got = list(manifest_requests(tmp_path / "m.jsonl"))
    assert [r.key for r in got] == ["bare", "own", None, None, "two"]
    assert got[0].messages == [{"role": "user", "content": DEFAULT_PROMPTS["asr"]}]
    assert got[0].items["audio"][0].dtype == np.float32
    assert got[1].messages == [{"role": "user", "content": "<image>\nWhich colour?"}]
    assert (got[1].reference, got[1].lang, got[1].task) == ("blue", "de", None)
    assert "bad_json" in got[2].error and "m.jsonl:3" in got[2].error
    assert "bad_json" in got[3].error
    assert got[4].messages[0]["content"] == DEFAULT_PROMPTS["caption"].replace("<image>", "<image> <image>")
    assert len(got[4].items["image"]) == 2


def test_folder_requests_are_lazy_and_sorted(tmp_path: Path) -> None:
    for name in ("b.flac", "a.png", "c.PNG"):
        shutil.copy(MEDIA / ("tone.flac" if name.endswith("flac") else "red.png"), tmp_path / name)
    got = folder_requests(tmp_path)
    assert iter(got) is got
    assert [r.key for r in got] == ["a", "b", "c"]


def test_input_kinds(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"not a folder, a \.jsonl manifest"):
        open_requests(str(tmp_path / "notes.txt"))
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        open_requests(tmp_path / "none.jsonl")
    with pytest.raises(FileNotFoundError, match="shard not found"):
        open_requests([str(tmp_path / "a.tar"), str(tmp_path / "b.tar")])


def test_every_input_kind_reads_within_the_given_limits(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("tone.flac", "red.png"):
        shutil.copy(MEDIA / name, folder / name)
    lines = [{"key": "tone", "audio": "folder/tone.flac"}, {"key": "red", "image": "folder/red.png"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    shards = str(ROOT / "tests" / "assets" / "shards" / "shard-{000000..000001}.tar")
    strict = MediaLimits(max_audio_seconds=0.1, max_pixels=4)  # tone.flac lasts 0.4 s; every image is bigger
    for inputs in (folder, tmp_path / "m.jsonl", shards):
        assert all(r.error is None for r in open_requests(inputs))
        failed = {r.key: r.error for r in open_requests(inputs, limits=strict) if r.error is not None}
        audio = [key for key in failed if key.startswith("tone")]
        assert len(audio) == (6 if inputs == shards else 1) and len(failed) == (9 if inputs == shards else 2)
        for key, error in failed.items():
            assert (": too_long: " if key in audio else ": too_large_image: ") in error, (inputs, error)
    request = file_request("one", {"image": [folder / "red.png"]}, limits=strict)
    assert request.error is not None and ": too_large_image: " in request.error


def test_first_requests_counts_items_and_stops_reading_at_the_last() -> None:
    read: list[str | None] = []

    def requests():
        for r in [
            Request("a"),
            Request.failed(None, "a.tar: truncated_tar"),
            Request.failed("b", "corrupt"),
            Request("c"),
        ]:
            read.append(r.key)
            yield r

    assert [r.key for r in first_requests(requests(), 2)] == ["a", None, "b"]  # the shard's failure takes no place
    assert read == ["a", None, "b"]  # "c" was never decoded
    assert [r.key for r in first_requests(requests(), None)] == ["a", None, "b", "c"]
    with pytest.raises(ValueError, match="max_samples must be positive, got 0"):
        first_requests(requests(), 0)  # at once, not when first read
