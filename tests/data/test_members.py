from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from media_samples import Canary, audio_bytes, canary_pickle, good_graph, graph_bytes, image_bytes

from mmadapter.data.members import decode_sample, split_members
from mmadapter.data.skips import BadSample
from mmadapter.limits import MediaLimits

MESSAGES = [
    {"role": "user", "content": "<audio> then <audio>, see <image> and <graph>"},
    {"role": "assistant", "content": "ok"},
]


def raw_sample(**members: Any) -> dict[str, Any]:
    return {"__key__": "s-1", "__url__": "shards/shard-000000.tar", **members}


def good_members() -> dict[str, Any]:
    return {
        "json": json.dumps({"messages": MESSAGES, "task": "mix"}).encode(),
        "0.flac": audio_bytes(0.5, 8000),
        "1.wav": audio_bytes(0.25, 48000, 2, fmt="WAV"),
        "jpg": image_bytes((20, 10), "JPEG"),
        "graph.npz": graph_bytes(**good_graph()),
        "txt": b"an extra member nobody asked for",
    }


def reason_of(raw: dict[str, Any]) -> BadSample:
    with pytest.raises(BadSample) as info:
        decode_sample(raw)
    assert info.value.key == "s-1"
    return info.value


def test_decodes_every_item_in_order() -> None:
    sample = decode_sample(raw_sample(**good_members()))
    assert sample["key"] == "s-1" and sample["url"] == "shards/shard-000000.tar"
    assert sample["meta"]["task"] == "mix" and sample["messages"] == MESSAGES
    assert [w.shape for w in sample["audio"]] == [(8000,), (4000,)]  # 0.5 s then 0.25 s at 16 kHz
    assert all(w.dtype == np.float32 for w in sample["audio"])
    assert sample["image"][0].size == (20, 10) and sample["image"][0].mode == "RGB"
    assert sample["graph"][0]["edge_index"].shape == (2, 3)


def test_short_form_json_gets_its_default_prompt() -> None:
    sample = decode_sample(raw_sample(json=b'{"task": "asr", "response": "hi"}', flac=audio_bytes()))
    assert sample["messages"][0]["content"] == "Transcribe the audio: <audio>"


def test_pickled_members_are_refused_unopened(tmp_path: Path) -> None:
    canary = tmp_path / "unpickled"
    payload = canary_pickle(canary)
    checkpoint = io.BytesIO()
    torch.save(Canary(canary), checkpoint)
    for ext, data in [("pyd", payload), ("0.pth", checkpoint.getvalue()), ("PKL", payload)]:
        bad = reason_of(raw_sample(**good_members(), **{ext: data}))
        assert bad.reason == "unsafe_member" and f"s-1.{ext}" in bad.detail
    assert not canary.exists()
    pickle.loads(payload)  # the canary does fire when unpickled
    assert canary.exists()


def test_numpy_members_with_objects_are_unsafe_plain_ones_ignored() -> None:
    objects, plain = io.BytesIO(), io.BytesIO()
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(plain, np.zeros(4, np.float32))
    assert reason_of(raw_sample(**good_members(), npy=objects.getvalue())).reason == "unsafe_member"
    assert len(decode_sample(raw_sample(**good_members(), npy=plain.getvalue()))["audio"]) == 2


@pytest.mark.parametrize(
    ("change", "reason", "detail"),
    [
        ({"json": b"{oops"}, "bad_json", "s-1.json is not JSON"),
        ({"json": b"[]"}, "bad_json", "must hold an object"),
        ({"json": b'{"messages": [{"role": "user", "content": "\\udcff"}]}'}, "bad_json", "lone surrogate"),
        ({"json": None}, "bad_json", "no s-1.json member"),
        ({"1.wav": None}, "placeholder_mismatch", "2 <audio> placeholder(s) for 1 audio item(s)"),
        ({"1.wav": None, "2.wav": audio_bytes()}, "placeholder_mismatch", "numbered [0, 2], not 0..1"),
        ({"jpg": None, "0.png": image_bytes(), "0.jpg": image_bytes()}, "placeholder_mismatch", "numbered 0"),
        ({"jpg": b"not an image"}, "corrupt_image", "cannot identify"),
        ({"1.wav": b""}, "empty_audio", "0 bytes"),
        (
            {"graph.npz": graph_bytes(edge_index=np.array([[0], [9]]), x=np.zeros((2, 1)))},
            "graph_edge_out_of_range",
            "outside",
        ),
    ],
)
def test_bad_samples(change: dict[str, Any], reason: str, detail: str) -> None:
    members = {k: v for k, v in {**good_members(), **change}.items() if v is not None}
    bad = reason_of(raw_sample(**members))
    assert bad.reason == reason and detail in bad.detail, str(bad)


def test_decoder_errors_name_the_shard_and_member() -> None:
    bad = reason_of(raw_sample(**{**good_members(), "jpg": b"not an image"}))
    assert str(bad).startswith("sample 's-1' (shards/shard-000000.tar:s-1.jpg): corrupt_image")


def test_split_members_orders_items() -> None:
    items = split_members({"__key__": "k", "2.flac": b"c", "0.flac": b"a", "1.mp3": b"b", "png": b"i"}, "k")
    assert items == {"audio": [("0.flac", b"a"), ("1.mp3", b"b"), ("2.flac", b"c")], "image": [("png", b"i")]}


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        ({"max_audio_seconds": 0.4}, "too_long"),  # the first clip is 0.5 s
        ({"max_pixels": 199}, "too_large_image"),  # the image is 20 × 10
        ({"max_graph_nodes": 2}, "too_large_graph"),  # the graph has 3 nodes and 3 edges
        ({"max_graph_edges": 2}, "too_large_graph"),
    ],
)
def test_limits_apply_to_every_modality(limits: dict[str, Any], reason: str) -> None:
    raw = raw_sample(**good_members())
    with pytest.raises(BadSample) as info:
        decode_sample(raw, limits=MediaLimits(**limits))
    assert info.value.reason == reason and info.value.key == "s-1"
    roomy = {name: limit + 1 for name, limit in limits.items()}  # just above the sample: it passes
    assert len(decode_sample(raw, limits=MediaLimits(**roomy))["graph"]) == 1


def test_limits_are_checked_and_none_lifts_one() -> None:
    with pytest.raises(ValueError, match="max_graph_edges"):
        MediaLimits(max_graph_edges=0)
    with pytest.raises(ValueError, match="max_pixel"):
        MediaLimits(max_pixel=10)
    assert MediaLimits(max_pixels=None, max_graph_nodes=None).max_pixels is None
