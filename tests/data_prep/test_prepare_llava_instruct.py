from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from data_prep_helpers import assert_shards_accept, load_script, read_manifest, resolve, write_image

prep = load_script("prepare_llava_instruct")


def turns(*values: str) -> list[dict[str, str]]:
    """LLaVA turns, alternating human and gpt."""
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(values)]


def messages(*contents: str) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": c} for i, c in enumerate(contents)]


RECORDS: list[dict[str, Any]] = [
    {
        "id": "000000033471",
        "image": "000000033471.jpg",
        "conversations": turns("<image>\nWhat?", "A bus.", "Colour?", "Blue."),
    },
    # the same id again (LLaVA-Instruct repeats ids), placeholder after the text: kept where it is
    {"id": "000000033471", "image": "000000033471.jpg", "conversations": turns("Describe it.\n<image>", "A bus.")},
    # no placeholder, an odd id, a png in a subfolder
    {"id": "vg/2.x", "image": "vg/2.png", "conversations": turns("Describe.", "A tree.")},
    # placeholders in a later user turn and in a gpt turn: moved to the start of the first user turn
    {"id": "4", "image": "4.jpg", "conversations": turns("Hi.", "Hello. <image>", "Look:\n<image>", "A dog.")},
    # text only: kept without media, a stray placeholder removed
    {"id": "text_only", "conversations": [{"from": "system", "value": "Be brief."}, *turns("Hi <image>", "Hi.")]},
    {"id": "5", "image": "missing.jpg", "conversations": turns("<image>\nWhat?", "Nothing.")},  # image missing
    {"id": "6", "image": "4.jpg", "conversations": [{"from": "bot", "value": "?"}]},  # unknown role
]


def make_llava(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "coco" / "train2017"
    for seed, name in enumerate(["000000033471.jpg", "vg/2.png", "4.jpg"]):
        write_image(images / name, seed)
    conversations = tmp_path / "llava" / "llava_instruct_150k.json"
    conversations.parent.mkdir()
    conversations.write_text(json.dumps(RECORDS))
    return conversations, images


def test_conversion_skips_and_shards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conversations, images = make_llava(tmp_path)
    manifest = tmp_path / "out" / "llava.jsonl"
    assert prep.main([str(conversations), "--images", str(images), "--out", str(manifest)]) == 0
    lines = read_manifest(manifest)
    meta = {"task": "instruct", "lang": "en"}
    assert lines == [
        {
            "key": "000000033471",
            "image": "../coco/train2017/000000033471.jpg",
            "messages": messages("<image>\nWhat?", "A bus.", "Colour?", "Blue."),
            **meta,
        },
        {
            "key": "000000033471-2",
            "image": "../coco/train2017/000000033471.jpg",
            "messages": messages("Describe it.\n<image>", "A bus."),
            **meta,
        },
        {
            "key": "vg-2-x",
            "image": "../coco/train2017/vg/2.png",
            "messages": messages("<image>\nDescribe.", "A tree."),
            **meta,
        },
        {
            "key": "4",
            "image": "../coco/train2017/4.jpg",
            "messages": messages("<image>\nHi.", "Hello.", "Look:", "A dog."),
            **meta,
        },
        {
            "key": "text_only",
            "messages": [{"role": "system", "content": "Be brief."}, *messages("Hi", "Hi.")],
            **meta,
        },
    ]
    for record in lines[:4]:
        assert resolve(manifest, record["image"]).is_file()
        assert resolve(manifest, record["image"]).is_relative_to(images.resolve())
    out = capsys.readouterr().out
    assert "wrote 5 samples" in out
    assert "skipped 2: bad_conversation 1" in out and "missing_image 1" in out
    assert str(images / "missing.jpg") in out
    assert_shards_accept(manifest, tmp_path / "shards", 5)


def test_jsonl_input_absolute(tmp_path: Path) -> None:
    _, images = make_llava(tmp_path)
    conversations = tmp_path / "one.jsonl"
    conversations.write_text(json.dumps(RECORDS[0]) + "\n\n" + json.dumps(RECORDS[4]) + "\n")
    manifest = tmp_path / "m.jsonl"
    assert prep.main([str(conversations), "--images", str(images), "--out", str(manifest), "--absolute"]) == 0
    lines = read_manifest(manifest)
    assert [line["key"] for line in lines] == ["000000033471", "text_only"]
    assert lines[0]["image"] == str((images / "000000033471.jpg").absolute())
    assert "image" not in lines[1]


def test_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conversations, images = make_llava(tmp_path)
    out = str(tmp_path / "m.jsonl")
    assert prep.main([str(conversations), "--out", out]) == 2
    assert "give their folder with --images" in capsys.readouterr().err

    assert prep.main([str(conversations), "--images", str(tmp_path / "nope"), "--out", out]) == 2
    assert f"image folder {tmp_path / 'nope'} not found" in capsys.readouterr().err

    conversations.write_text('{"id": 1}')
    assert prep.main([str(conversations), "--images", str(images), "--out", out]) == 2
    assert "holds a JSON dict, not a list" in capsys.readouterr().err

    assert prep.main([str(tmp_path / "absent.json"), "--images", str(images), "--out", out]) == 2
    assert f"conversation file {tmp_path / 'absent.json'} not found" in capsys.readouterr().err
    assert not Path(out).exists()
