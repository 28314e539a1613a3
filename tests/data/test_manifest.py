from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mmadapter.data.manifest import DEFAULT_PROMPTS, normalise, parse_record, read_media
from mmadapter.data.skips import BadSample


def parse(record: dict[str, Any] | str, root: Path = Path("/data")) -> Any:
    return parse_record(record if isinstance(record, str) else json.dumps(record), root, "m.jsonl:1")


def reason_of(record: dict[str, Any] | str) -> tuple[str, str]:
    with pytest.raises(BadSample) as info:
        parse(record)
    assert info.value.source == "m.jsonl:1"
    return info.value.reason, info.value.detail


def test_short_form_with_default_prompt() -> None:
    record = parse({"key": "utt-1", "audio": "a/utt-1.flac", "task": "asr", "lang": "de", "response": "hallo", "n": 3})
    assert record.key == "utt-1"
    assert record.messages == [
        {"role": "user", "content": DEFAULT_PROMPTS["asr"]},
        {"role": "assistant", "content": "hallo"},
    ]
    assert record.media == {"audio": [Path("/data/a/utt-1.flac")]}
    assert record.meta == {"task": "asr", "lang": "de", "n": 3}
    assert record.item_counts() == {"audio": 1, "image": 0, "graph": 0}


def test_messages_form_with_several_items_in_order() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "<image> vs <image>, and <audio>?"},
        {"role": "assistant", "content": "Same."},
    ]
    record = parse({"key": "k_2", "image": ["b.png", "a.JPG"], "audio": ["s.mp3"], "messages": messages})
    assert record.messages == messages
    assert record.media["image"] == [Path("/data/b.png"), Path("/data/a.JPG")]
    assert normalise({"messages": messages}) == messages


def test_prompt_given_and_inference_without_response() -> None:
    assert normalise({"prompt": "<image> What is it?", "response": "A cat."})[0]["content"] == "<image> What is it?"
    assert normalise({"task": "caption"}, require_response=False) == [
        {"role": "user", "content": DEFAULT_PROMPTS["caption"]}
    ]


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ("{not json", ("bad_json", "not JSON")),
        ("[1, 2]", ("bad_json", "must be a JSON object")),
        ({"key": "a.b", "response": "x", "task": "asr"}, ("bad_json", "key 'a.b'")),
        ({"response": "x"}, ("bad_json", "key None")),
        ({"key": "k", "audio": "a.flac", "task": "asr"}, ("bad_json", "no response")),
        ({"key": "k", "response": "x"}, ("bad_json", "task None has no default prompt")),
        ({"key": "k", "messages": [{"role": "user", "content": "hi"}]}, ("bad_json", "no assistant turn")),
        ({"key": "k", "messages": [{"role": "bot", "content": "hi"}]}, ("bad_json", "messages[0]")),
        ({"key": "k", "messages": [], "response": "x"}, ("bad_json", "not both")),
        ({"key": "k", "audio": "a.m4a", "task": "asr", "response": "x"}, ("bad_json", "is not one of .flac")),
        ({"key": "k", "audio": 3, "task": "asr", "response": "x"}, ("bad_json", "a path or a list")),
        ({"key": "k", "task": 3, "prompt": "p", "response": "x"}, ("bad_json", "task must be a string")),
        ({"key": "k", "audio": "a.flac", "prompt": "Say it.", "response": "x"}, ("placeholder_mismatch", "0 <audio>")),
        (
            {"key": "k", "prompt": "<image>", "response": "x"},
            ("placeholder_mismatch", "1 <image> placeholder(s) for 0"),
        ),
        (
            {
                "key": "k",
                "image": "a.png",
                "messages": [{"role": "user", "content": "<image>"}, {"role": "assistant", "content": "<image>"}],
            },
            ("placeholder_mismatch", "assistant turn holds a placeholder"),
        ),
    ],
)
def test_invalid_lines(record: dict[str, Any] | str, expected: tuple[str, str]) -> None:
    reason, detail = reason_of(record)
    assert reason == expected[0] and expected[1] in detail, detail


def test_missing_file(tmp_path: Path) -> None:
    (tmp_path / "a.flac").write_bytes(b"abc")
    messages = [{"role": "user", "content": "<audio><audio>"}, {"role": "assistant", "content": "x"}]
    record = parse({"key": "k", "audio": ["a.flac", "gone.flac"], "messages": messages}, tmp_path)
    with pytest.raises(BadSample) as info:
        read_media(record)
    assert (info.value.reason, info.value.key) == ("missing_file", "k")
    assert "gone.flac" in info.value.detail
