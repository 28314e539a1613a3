"""The shard stream: packing invariants, epoch splitting, seeded order, bad members, plain tars, mixing."""

from __future__ import annotations

import io
import json
import pickle
import re
import signal
import subprocess
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import ROOT, tar_cut_in_last_sample, tiny_recipe
from media_samples import audio_bytes, image_bytes
from torch.utils.data import DataLoader

from mmadapter.config import DataConfig, RecipeError, ShardSet
from mmadapter.data import pipeline
from mmadapter.data.pipeline import ShardStream, StreamPosition, expand_shards
from mmadapter.data.skips import NoUsableSamples, SkipCounter
from mmadapter.llm import IGNORE_INDEX, MODALITY_IDS
from mmadapter.model import MultimodalLM

ASSETS = ROOT / "tests" / "assets" / "shards"


@pytest.fixture(scope="module")
def model() -> MultimodalLM:
    return MultimodalLM.from_recipe(tiny_recipe())


def stream(model: MultimodalLM, shards, *, resampled=False, pos: StreamPosition | None = None, **data) -> ShardStream:
    sets = [ShardSet(shards=s) for s in shards] if isinstance(shards, list) else [ShardSet(shards=shards)]
    cfg = DataConfig(**({"max_tokens": 400, "shuffle_buffer": 4} | data))
    pos = pos or StreamPosition()
    return ShardStream(sets, model.prepare_decoded, cfg, model.tokenizer.pad_token_id, pos, resampled=resampled)


def keys(batches) -> list[str]:
    return [k for b in batches for k in b.keys]


def write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def meta(prompt: str, answer: str) -> bytes:
    return json.dumps({"prompt": prompt, "response": answer, "task": "chat"}).encode()


def test_checked_in_shards_give_consistent_packed_batches(model: MultimodalLM) -> None:
    batches = list(stream(model, str(ASSETS / "shard-{000000..000001}.tar")))
    assert sorted(keys(batches)) == sorted(json.loads((ASSETS / "stats.json").read_text()) and keys(batches))
    assert len(keys(batches)) == 11 and len(set(keys(batches))) == 11
    for b in batches:
        n = b.input_ids.shape[1]
        assert b.layout == "packed" and n <= 400 and int(b.cu_seqlens[-1]) == n
        lengths = b.cu_seqlens.diff().tolist()
        assert b.max_seqlen == max(lengths)
        expected_pos = torch.cat([torch.arange(k) for k in lengths])
        assert torch.equal(b.position_ids[0], expected_pos)
        for modality, items in b.items.items():
            slots = (b.token_modality == MODALITY_IDS[modality]).sum().item()
            want = sum(model.item_length(modality, int(n)) for n in items.lengths)
            assert slots == want > 0
        out = model(b)
        assert torch.isfinite(out.loss)


def test_labels_mark_exactly_the_assistant_turns_of_a_multi_turn_sample(model: MultimodalLM, tmp_path: Path) -> None:
    chat = [
        {"role": "user", "content": "Transcribe <audio>"},
        {"role": "assistant", "content": "4 5"},
        {"role": "user", "content": "Again, slower."},
        {"role": "assistant", "content": "four five"},
    ]
    write_tar(
        tmp_path / "s.tar",
        {"mt.json": json.dumps({"messages": chat}).encode(), "mt.flac": audio_bytes(0.5)},
    )
    (batch,) = list(stream(model, str(tmp_path / "s.tar")))
    ids, labels = batch.input_ids[0], batch.labels[0]
    labelled = model.tokenizer.decode(ids[labels != IGNORE_INDEX])
    assert labelled == "4 5<|im_end|>\nfour five<|im_end|>\n"
    assert torch.equal(ids[labels != IGNORE_INDEX], labels[labels != IGNORE_INDEX])


def make_text_shards(tmp_path: Path, shards: int = 8, per_shard: int = 5) -> list[str]:
    for s in range(shards):
        write_tar(tmp_path / f"t-{s:02d}.tar", {f"s{s}-{i}.json": meta(f"q {s} {i}", "a") for i in range(per_shard)})
    return [f"s{s}-{i}" for s in range(shards) for i in range(per_shard)]


def epoch_keys(model, spec: str, seed: int, ranks: int = 2, workers: int = 2, epoch: int = 0) -> list[list[str]]:
    per_rank = []
    for rank in range(ranks):
        ds = stream(
            model, spec, pos=StreamPosition(seed=seed, epoch=epoch, rank=rank, world_size=ranks), max_tokens=120
        )
        per_rank.append(keys(DataLoader(ds, batch_size=None, num_workers=workers, collate_fn=lambda b: b)))
    return per_rank


@pytest.mark.slow
def test_epoch_mode_reads_every_sample_once_across_ranks_and_workers(model: MultimodalLM, tmp_path: Path) -> None:
    expected = make_text_shards(tmp_path)
    spec = str(tmp_path / "t-{00..07}.tar")
    first = epoch_keys(model, spec, seed=1)
    assert sorted(first[0] + first[1]) == sorted(expected)
    assert not set(first[0]) & set(first[1])
    assert epoch_keys(model, spec, seed=1) == first
    other = epoch_keys(model, spec, seed=2)
    assert other != first and sorted(other[0] + other[1]) == sorted(expected)
    next_epoch = epoch_keys(model, spec, seed=1, epoch=1)
    assert next_epoch != first and sorted(next_epoch[0] + next_epoch[1]) == sorted(expected)


class Canary:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.mark.parametrize("cut", [2500, 2660], ids=["in_header", "in_data"])
def test_corrupt_members_and_truncated_tar_are_counted_and_never_unpickled(
    model: MultimodalLM, tmp_path: Path, cut: int
) -> None:
    canary = tmp_path / "unpickled"
    members = {
        "good1.json": meta("hi", "a"),
        "badaudio.json": json.dumps({"prompt": "<audio>", "response": "x"}).encode(),
        "badaudio.flac": b"not audio at all",
        "badimage.json": json.dumps({"prompt": "<image>", "response": "x"}).encode(),
        "badimage.png": b"\x89PNG garbage",
        "badjson.json": b"{not json",
        "pickled.json": meta("hi", "b"),
        "pickled.pyd": pickle.dumps(Canary(str(canary))),
        "good2.json": meta("hello", "c"),
        "good3.json": json.dumps({"prompt": "<image>", "response": "red"}).encode(),
        "good3.png": image_bytes(),
    }
    write_tar(tmp_path / "a.tar", members)
    full = tmp_path / "full.tar"
    write_tar(full, {f"late{i}.json": meta("x" * 300, "y") for i in range(4)})
    (tmp_path / "b.tar").write_bytes(full.read_bytes()[:cut])  # cut inside the third member
    batches = list(stream(model, [str(tmp_path / "a.tar"), str(tmp_path / "b.tar")]))
    got = keys(batches)
    assert {"good1", "good2", "good3", "late0", "late1"} <= set(got)
    assert not {"badaudio", "badimage", "badjson", "pickled"} & set(got)
    skipped = Counter()
    for b in batches:
        skipped.update(b.skipped.get("by_reason", {}))
    assert skipped == {"corrupt_audio": 1, "corrupt_image": 1, "bad_json": 1, "unsafe_member": 1, "truncated_tar": 1}
    assert not canary.exists()


def test_shards_written_by_plain_tar_are_read(model: MultimodalLM, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "p1.json").write_bytes(json.dumps({"prompt": "Transcribe <audio>", "response": "1 2"}).encode())
    (src / "p1.wav").write_bytes(audio_bytes(0.3, rate=22050, fmt="WAV"))
    (src / "p2.json").write_bytes(json.dumps({"prompt": "<image>", "response": "red"}).encode())
    (src / "p2.jpg").write_bytes(image_bytes(fmt="JPEG"))
    subprocess.run(
        ["tar", "-cf", str(tmp_path / "plain.tar"), "-C", str(src), "p1.json", "p1.wav", "p2.json", "p2.jpg"],
        check=True,
    )
    batches = list(stream(model, str(tmp_path / "plain.tar")))
    assert sorted(keys(batches)) == ["p1", "p2"]
    assert {m for b in batches for m in b.items} == {"audio", "image"}


def test_weighted_mixing_in_resampled_mode(model: MultimodalLM, tmp_path: Path) -> None:
    write_tar(tmp_path / "en.tar", {f"en{i}.json": meta("a", "b") for i in range(4)})
    write_tar(tmp_path / "de.tar", {f"de{i}.json": meta("a", "b") for i in range(4)})
    sets = [
        ShardSet(shards=str(tmp_path / "en.tar"), weight=3.0),
        ShardSet(shards=str(tmp_path / "de.tar"), weight=1.0),
    ]
    ds = ShardStream(
        sets, model.prepare_decoded, DataConfig(max_tokens=60), model.tokenizer.pad_token_id, StreamPosition()
    )
    seen: list[str] = []
    for batch in ds:
        seen += batch.keys
        if len(seen) >= 400:
            break
    share = sum(k.startswith("en") for k in seen) / len(seen)
    assert 0.68 < share < 0.82


def test_missing_shard_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="shard not found"):
        expand_shards(str(tmp_path / "x-{0..1}.tar"))


def test_recipe_limits_skip_and_count_media_the_defaults_admit(model: MultimodalLM, tmp_path: Path) -> None:
    write_tar(
        tmp_path / "media.tar",
        {
            "short.json": json.dumps({"prompt": "<audio>", "response": "a"}).encode(),
            "short.flac": audio_bytes(0.5),
            "long.json": json.dumps({"prompt": "<audio>", "response": "b"}).encode(),
            "long.flac": audio_bytes(2.0),
            "small.json": json.dumps({"prompt": "<image>", "response": "c"}).encode(),
            "small.png": image_bytes((32, 24)),
            "big.json": json.dumps({"prompt": "<image>", "response": "d"}).encode(),
            "big.png": image_bytes((64, 48)),
        },
    )
    shards = str(tmp_path / "media.tar")
    assert sorted(keys(stream(model, shards))) == ["big", "long", "short", "small"]
    strict = {"max_audio_seconds": 1.0, "max_pixels": 32 * 24}
    batches = list(stream(model, shards, limits=strict))
    assert sorted(keys(batches)) == ["short", "small"]
    skipped = Counter()
    for b in batches:
        skipped.update(b.skipped.get("by_reason", {}))
    assert skipped == {"too_long": 1, "too_large_image": 1}


def test_recipe_data_limits_are_validated(tmp_path: Path) -> None:
    recipe = tiny_recipe("data.limits.max_audio_seconds=30", "data.limits.max_graph_nodes=null")
    assert recipe.data.limits.max_audio_seconds == 30 and recipe.data.limits.max_graph_nodes is None
    with pytest.raises(RecipeError, match=r"data\.limits\.max_audio_second.*did you mean 'max_audio_seconds'"):
        tiny_recipe("data.limits.max_audio_second=30")
    with pytest.raises(RecipeError, match=r"data\.limits\.max_pixels"):
        tiny_recipe("data.limits.max_pixels=0")


def test_a_sample_longer_than_max_tokens_counts_once(model: MultimodalLM, tmp_path: Path) -> None:
    write_tar(tmp_path / "text.tar", {"short.json": meta("hi", "yes"), "long.json": meta("hi " * 200, "no")})
    batches = list(stream(model, str(tmp_path / "text.tar"), max_tokens=100))
    assert keys(batches) == ["short"]
    counts = SkipCounter()
    for b in batches:
        counts.merge(b.skipped)
    assert (counts.seen, counts.ok, counts.by_reason()) == (2, 1, {"too_long": 1})


def junk_tar(path: Path) -> str:
    path.write_bytes(bytes(range(256)) * 8)
    return str(path)


def empty_tar(path: Path) -> str:
    tarfile.open(path, "w").close()
    return str(path)


def unusable_samples(path: Path) -> str:
    write_tar(path, {"a.json": b"{not json", "b.json": meta("hi " * 200, "too long")})
    return str(path)


def failing_pipe(path: Path) -> str:
    return f"pipe:cat {path}"  # no such file: the command fails on every read


@pytest.mark.parametrize(
    ("make", "workers", "reasons"),
    [
        (unusable_samples, 0, r"bad_json \d+, too_long \d+"),
        (unusable_samples, 1, r"bad_json \d+, too_long \d+"),
        (junk_tar, 0, "truncated_tar 1"),  # counted once; every later read of it gives nothing
        (empty_tar, 0, "skipped 0 of 0 samples"),
        (failing_pipe, 0, r"(missing_file \d+|truncated_tar 1)"),  # which one depends on when cat exits
    ],
)
def test_a_resampled_stream_of_nothing_usable_stops(
    model: MultimodalLM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make, workers: int, reasons: str
) -> None:
    monkeypatch.setattr(pipeline, "GIVE_UP_AFTER", 20)
    ds = stream(model, make(tmp_path / "bad.tar"), resampled=True, max_tokens=100)

    def hung(*_: object) -> None:
        raise TimeoutError("the stream neither yielded a batch nor gave up")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    try:
        named = rf"shard set '{re.escape(str(ds.specs[0]))}': nothing passed in the last 20 samples and shard reads"
        with pytest.raises(NoUsableSamples, match=rf"{named}.*{reasons}"):
            next(iter(DataLoader(ds, batch_size=None, num_workers=workers, collate_fn=lambda b: b)))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_giving_up_names_the_shard_set_that_gave_nothing(
    model: MultimodalLM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "GIVE_UP_AFTER", 20)
    good, bad = str(ASSETS / "shard-{000000..000001}.tar"), unusable_samples(tmp_path / "bad.tar")
    ds = stream(model, [good, bad], resampled=True, max_tokens=100)
    with pytest.raises(NoUsableSamples, match=rf"^shard set '{re.escape(bad)}': nothing passed"):
        for _ in zip(range(1000), ds, strict=False):
            pass


def test_a_truncated_tar_read_through_a_pipe_is_counted_once(model: MultimodalLM, tmp_path: Path) -> None:
    write_tar(tmp_path / "cut.tar", {f"s{i}.json": meta("Say hi", "hi") for i in range(4)})
    (tmp_path / "cut.tar").write_bytes((tmp_path / "cut.tar").read_bytes()[: 512 * 5])
    sets = [ShardSet(shards=[f"pipe:cat {tmp_path / 'cut.tar'}"] * 3)]  # three reads of the one shard
    pad = model.tokenizer.pad_token_id
    counts = SkipCounter()
    one_pass = ShardStream(sets, model.prepare_decoded, DataConfig(max_tokens=400), pad, StreamPosition(), False)
    for batch in one_pass:
        counts.merge(batch.skipped)
    assert counts.by_reason() == {"truncated_tar": 1} and counts.ok == 3 * 2


@pytest.mark.parametrize("through_a_pipe", [False, True])
def test_the_sample_a_cut_falls_in_is_skipped_as_truncated_tar(
    model: MultimodalLM, tmp_path: Path, through_a_pipe: bool, caplog: pytest.LogCaptureFixture
) -> None:
    tar_cut_in_last_sample(tmp_path / "cut.tar")
    url = f"pipe:cat {tmp_path / 'cut.tar'}" if through_a_pipe else str(tmp_path / "cut.tar")
    counts = SkipCounter()
    batches = list(stream(model, url))
    for batch in batches:
        counts.merge(batch.skipped)
    assert sorted(keys(batches)) == ["s0", "s1"]
    assert counts.by_reason() == {"truncated_tar": 2}  # the cut shard, and the sample it cut (not a mismatch)
    assert "sample 's2'" in caplog.text and "the last sample before the cut" in caplog.text
    assert "placeholder_mismatch: 1 <audio> placeholder(s) for 0" in caplog.text


def test_the_last_sample_of_a_tar_cut_between_samples_is_kept(model: MultimodalLM, tmp_path: Path) -> None:
    write_tar(tmp_path / "full.tar", {f"s{i}.json": meta("Say hi", "hi") for i in range(3)})
    data = (tmp_path / "full.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: 512 * 6])  # the three members whole, no end blocks
    counts = SkipCounter()
    batches = list(stream(model, str(tmp_path / "cut.tar")))
    for batch in batches:
        counts.merge(batch.skipped)
    assert sorted(keys(batches)) == ["s0", "s1", "s2"]
    assert counts.by_reason() == {"truncated_tar": 1}


def test_a_budget_up_to_the_cut_still_names_the_cut_sample(model: MultimodalLM, tmp_path: Path) -> None:
    tar_cut_in_last_sample(tmp_path / "cut.tar")
    cfg = DataConfig(max_tokens=400)
    for budget, want in ((2, {"truncated_tar": 1}), (3, {"truncated_tar": 2})):
        sets = [ShardSet(shards=str(tmp_path / "cut.tar"), max_samples=budget)]
        ds = ShardStream(sets, model.prepare_decoded, cfg, model.tokenizer.pad_token_id, StreamPosition(), False)
        counts = SkipCounter()
        batches = list(ds)
        for batch in batches:
            counts.merge(batch.skipped)
        assert (sorted(keys(batches)), counts.by_reason()) == (["s0", "s1"], want)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_pass_that_gives_no_batch_ends_with_an_empty_batch_carrying_its_skips(
    model: MultimodalLM, tmp_path: Path, workers: int
) -> None:
    ds = stream(model, unusable_samples(tmp_path / "bad.tar"), max_tokens=100)
    loader = DataLoader(ds, batch_size=None, num_workers=workers, collate_fn=lambda b: b)
    (batch,) = list(loader)
    assert (batch.num_samples, batch.num_tokens(), batch.input_ids.shape) == (0, 0, (1, 0))
    assert SkipCounter().merge(batch.skipped).by_reason() == {"bad_json": 1, "too_long": 1}
    assert list(stream(model, [str(ASSETS / "shard-000000.tar")], max_tokens=400))[-1].num_samples > 0
    (tmp_path / "empty.tar").write_bytes(b"\0" * 1024)  # a pass that skipped nothing gives nothing
    assert list(stream(model, str(tmp_path / "empty.tar"))) == []
