from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds
from media_samples import audio_bytes, good_graph, graph_bytes, image_bytes, png_header

from mmadapter.cli import main
from mmadapter.data.manifest import DEFAULT_PROMPTS
from mmadapter.data.members import decode_sample
from mmadapter.data.skips import BadSample
from mmadapter.data.writer import add_arguments, prepare_sample, run, write_shards
from mmadapter.limits import MediaLimits

AUDIO_FORMATS = ["FLAC", "WAV", "OGG"] + (["MP3"] if "MP3" in sf.available_formats() else [])
BAD_REASONS = {
    "corrupt_audio": 1,
    "empty_audio": 1,
    "corrupt_image": 1,
    "too_large_image": 1,
    "missing_file": 1,
    "bad_json": 2,
    "placeholder_mismatch": 1,
}


class Corpus:
    """A manifest of 20 good lines (audio, image, text-only, two audio items, a graph) and 8 bad ones."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lines: list[str] = []
        self.good: list[dict[str, Any]] = []  # key, meta, messages, members {ext: bytes}

    def file(self, name: str, data: bytes) -> str:
        (self.root / name).parent.mkdir(parents=True, exist_ok=True)
        (self.root / name).write_bytes(data)
        return name

    def add(self, record: dict[str, Any], good: dict[str, Any] | None = None) -> None:
        self.lines.append(json.dumps(record))
        if good is not None:
            text_and_media = ("key", "audio", "image", "graph", "messages", "prompt", "response")
            meta = {k: v for k, v in record.items() if k not in text_and_media}
            self.good.append({"key": record["key"], "meta": meta, **good})

    def write(self) -> Path:
        manifest = self.root / "train.jsonl"
        manifest.write_text("\n".join(self.lines) + "\n\n")
        return manifest


OK_TURN = '{"role": "assistant", "content": "ok"}'


def asr_turns(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": DEFAULT_PROMPTS["asr"]}, {"role": "assistant", "content": text}]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    c = Corpus(tmp_path_factory.mktemp("corpus"))
    for i in range(8):
        fmt = AUDIO_FORMATS[i % len(AUDIO_FORMATS)]
        data = audio_bytes(0.2 + 0.05 * i, (8000, 22050, 44100, 48000)[i % 4], 1 + i % 2, 300 + 40 * i, fmt)
        name = c.file(f"audio/utt-{i}.{fmt.lower()}", data)
        record = {"key": f"utt-{i}", "audio": name, "task": "asr", "lang": "en", "response": f"words {i}"}
        c.add(record, {"messages": asr_turns(f"words {i}"), "members": {fmt.lower(): data}})
    for i, fmt in enumerate(["JPEG", "PNG", "WEBP", "JPEG", "PNG", "WEBP"]):
        ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[fmt]
        data = image_bytes((16 + i, 12), fmt, seed=i)
        name = c.file(f"img/{i}.{ext}", data)
        messages = [{"role": "user", "content": "Describe the image: <image>"}, {"role": "assistant", "content": "A"}]
        c.add(
            {"key": f"img_{i}", "image": name, "task": "caption", "response": "A"},
            {"messages": messages, "members": {ext: data}},
        )
    for i in range(4):
        messages = [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": f"{i}, ünïcode"}]
        c.add({"key": f"text-{i}", "messages": messages, "source": "synthetic"}, {"messages": messages, "members": {}})
    two = [audio_bytes(0.3, 16000, fmt="FLAC"), audio_bytes(0.2, 44100, 2, 880, "WAV")]
    names = [c.file("audio/pair-0.flac", two[0]), c.file("audio/pair-1.wav", two[1])]
    messages = [{"role": "user", "content": "Same speaker? <audio> <audio>"}, {"role": "assistant", "content": "No."}]
    c.add(
        {"key": "pair", "audio": names, "messages": messages},
        {"messages": messages, "members": {"0.flac": two[0], "1.wav": two[1]}},
    )
    graph = graph_bytes(**good_graph())
    messages = [{"role": "user", "content": "<graph> How many nodes?"}, {"role": "assistant", "content": "3"}]
    record = {"key": "mol", "graph": c.file("g/mol.graph.npz", graph), "messages": messages}
    c.add(record, {"messages": messages, "members": {"graph.npz": graph}})

    flac = audio_bytes(1.0, 16000)
    noise = np.random.default_rng(0).bytes(3000)
    transcribe = [{"role": "user", "content": "Transcribe."}, {"role": "assistant", "content": "x"}]
    bad = [
        {"key": "cut", "audio": c.file("bad/cut.flac", flac[: len(flac) // 2]), "task": "asr", "response": "x"},
        {"key": "empty", "audio": c.file("bad/empty.wav", audio_bytes(0.0, fmt="WAV")), "task": "asr", "response": "x"},
        {"key": "noise", "image": c.file("bad/noise.jpg", noise), "task": "caption", "response": "x"},
        {"key": "bomb", "image": c.file("bad/bomb.png", png_header(30000, 30000)), "task": "caption", "response": "x"},
        {"key": "gone", "audio": "audio/never-written.flac", "task": "asr", "response": "x"},
        {"key": "nohole", "audio": c.file("bad/ok.flac", flac), "messages": transcribe},
    ]
    for i, record in enumerate(bad):  # spread between the good lines
        c.lines.insert(3 * i + 1, json.dumps(record))
    c.lines.insert(10, '{"key": "broken", "task": "asr"')
    # JSON parses the escape of a lone surrogate, but it is not Unicode: no shard member can hold it
    c.lines.insert(14, '{"key": "lone", "messages": [{"role": "user", "content": "Hi \\udcff"}, ' + OK_TURN + "]}")
    return c


def read_tars(paths: list[Path]) -> list[tuple[str, dict[str, bytes]]]:
    """Samples in tar order with plain tarfile: (key, {extension: bytes})."""
    samples: list[tuple[str, dict[str, bytes]]] = []
    for path in paths:
        with tarfile.open(path) as tar:
            for member in tar:
                key, ext = member.name.split(".", 1)
                if not samples or samples[-1][0] != key:
                    samples.append((key, {}))
                samples[-1][1][ext] = tar.extractfile(member).read()  # type: ignore[union-attr]
    return samples


def test_acceptance_bad_lines_counted_good_ones_intact(corpus: Corpus, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    stats = write_shards(corpus.write(), out, max_count=6)
    assert stats == json.loads((out / "stats.json").read_text())
    assert stats["written"] == 20
    assert stats["skipped"] == BAD_REASONS
    assert [s["samples"] for s in stats["shards"]] == [6, 6, 6, 2]
    paths = [out / s["path"] for s in stats["shards"]]
    assert [p.name for p in paths] == [f"shard-{i:06d}.tar" for i in range(4)]
    assert [s["bytes"] for s in stats["shards"]] == [p.stat().st_size for p in paths]
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in paths] + ["stats.json"]  # no temp files

    samples = read_tars(paths)
    assert [key for key, _ in samples] == [g["key"] for g in corpus.good]  # manifest order
    for (key, members), good in zip(samples, corpus.good, strict=True):
        meta = json.loads(members.pop("json"))
        assert meta.pop("messages") == good["messages"], key
        assert meta == good["meta"], key  # task, lang, free metadata
        assert members == good["members"], key  # original media bytes, KEY.<ext> / KEY.<i>.<ext>


def test_shards_decode_through_webdataset(corpus: Corpus, tmp_path: Path) -> None:
    stats = write_shards(corpus.write(), tmp_path, max_count=100)
    urls = [str(tmp_path / s["path"]) for s in stats["shards"]]
    decoded = [decode_sample(raw) for raw in wds.WebDataset(urls, shardshuffle=False)]
    assert len(decoded) == 20
    pair = next(s for s in decoded if s["key"] == "pair")
    assert [w.shape for w in pair["audio"]] == [(4800,), (3200,)]
    assert next(s for s in decoded if s["key"] == "mol")["graph"][0]["x"].shape == (3, 4)
    assert next(s for s in decoded if s["key"] == "img_2")["image"][0].size == (18, 12)


def test_two_workers_write_the_same_shards(corpus: Corpus, tmp_path: Path) -> None:
    manifest = corpus.write()
    one = write_shards(manifest, tmp_path / "w1", max_count=7, workers=1)
    two = write_shards(manifest, tmp_path / "w2", max_count=7, workers=2)
    assert one == two
    for shard in one["shards"]:
        assert (tmp_path / "w1" / shard["path"]).read_bytes() == (tmp_path / "w2" / shard["path"]).read_bytes()


def test_duplicates_refusal_overwrite_and_size_limit(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a" * 300}]
    lines = [{"key": key, "messages": messages} for key in ("a", "b", "a", "c")]
    manifest.write_text("\n".join(json.dumps(line) for line in lines))
    stats = write_shards(manifest, tmp_path / "out", max_size=500)
    assert stats["written"] == 3 and stats["skipped"] == {"bad_json": 1}
    assert [s["samples"] for s in stats["shards"]] == [2, 1]  # closed once 500 bytes were reached
    with pytest.raises(ValueError, match="already holds shards"):
        write_shards(manifest, tmp_path / "out")
    assert write_shards(manifest, tmp_path / "out", max_count=10, overwrite=True)["shards"][0]["samples"] == 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["shard-000000.tar", "stats.json"]


def test_cli_pair(corpus: Corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([str(corpus.write()), str(tmp_path / "o"), "--max-count", "50", "--workers", "1"])
    assert run(args) == 0
    assert "wrote 20 samples to 1 shard(s)" in capsys.readouterr().out
    empty = tmp_path / "empty.jsonl"
    empty.write_text("not json\n")
    assert run(parser.parse_args([str(empty), str(tmp_path / "e")])) == 1
    assert json.loads((tmp_path / "e" / "stats.json").read_text()) == {
        "written": 0,
        "skipped": {"bad_json": 1},
        "shards": [],
    }


def test_a_media_error_names_the_manifest_line_and_the_file(tmp_path: Path) -> None:
    (tmp_path / "noise.jpg").write_bytes(np.random.default_rng(0).bytes(300))
    line = json.dumps({"key": "k", "image": "noise.jpg", "task": "caption", "response": "x"})
    with pytest.raises(BadSample) as info:
        prepare_sample(line, tmp_path, "m.jsonl:7")
    assert (info.value.key, info.value.reason, info.value.source) == (
        "k",
        "corrupt_image",
        f"m.jsonl:7, {tmp_path}/noise.jpg",
    )
    assert "BytesIO" not in str(info.value)  # the decoder's in-memory buffer is no name for a file


def test_shard_cli_into_a_file_prints_one_error_line(corpus: Corpus, tmp_path: Path, capsys) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a directory")
    assert main(["shard", str(corpus.write()), str(taken)]) == 2
    assert capsys.readouterr().err == f"mmadapter shard: error: output {taken} is a file, not a directory\n"


def test_a_bug_stops_the_run_without_leaving_a_partial_shard(
    corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmadapter.data.writer as writer

    real, calls = writer.prepare_sample, []

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("a bug, not bad data")
        return real(*args, **kwargs)

    monkeypatch.setattr(writer, "prepare_sample", failing)
    with pytest.raises(RuntimeError, match="a bug"):
        write_shards(corpus.write(), tmp_path, max_count=1)
    # utt-0 filled shard 0; shard 1 (utt-1, still open) is dropped; no stats.json marks the run unfinished.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-000000.tar"]
    assert [key for key, _ in read_tars([tmp_path / "shard-000000.tar"])] == ["utt-0"]


def graph_manifest(folder: Path, graphs: dict[str, dict[str, np.ndarray]]) -> Path:
    """``KEY.graph.npz`` per graph in ``folder`` and a manifest with one question about each."""
    lines = []
    for key, arrays in graphs.items():
        (folder / f"{key}.graph.npz").write_bytes(graph_bytes(**arrays))
        lines.append({"key": key, "graph": f"{key}.graph.npz", "prompt": "Class of <graph>?", "response": "a"})
    manifest = folder / "graphs.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


def test_shard_cli_counts_bad_graphs_under_their_own_reasons(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mmadapter.cli import main

    graphs = {
        "good": good_graph(),
        "out_of_range": {"edge_index": np.array([[0, 1], [1, 5]]), "x": np.zeros((3, 2), np.float32)},
        "no_nodes": {"edge_index": np.zeros((2, 0), np.int64), "x": np.zeros((0, 2), np.float32)},
        "broken": {"edge_index": np.zeros((2, 1), np.float32), "x": np.zeros((2, 2), np.float32)},
    }
    manifest = graph_manifest(tmp_path, graphs)
    assert main(["shard", str(manifest), str(tmp_path / "out")]) == 0
    expected = {"bad_graph": 1, "graph_no_nodes": 1, "graph_edge_out_of_range": 1}
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["written"] == 1 and stats["skipped"] == expected
    printed = capsys.readouterr().out
    assert "wrote 1 samples" in printed
    assert "bad_graph 1, graph_no_nodes 1, graph_edge_out_of_range 1" in printed
    [(key, members)] = read_tars([tmp_path / "out" / stats["shards"][0]["path"]])
    assert key == "good" and members["graph.npz"] == (tmp_path / "good.graph.npz").read_bytes()


def test_shard_cli_counts_graphs_over_the_node_and_edge_limits(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mmadapter.cli import main

    ring = np.array([[0, 1, 2], [1, 2, 0]])
    graphs = {
        "good": good_graph(),  # 3 nodes, 3 edges
        "many_nodes": {"edge_index": ring, "x": np.zeros((5, 2), np.float32)},
        "many_edges": {"edge_index": np.concatenate([ring, ring], 1), "x": np.zeros((3, 2), np.float32)},
    }
    manifest = graph_manifest(tmp_path, graphs)
    argv = ["shard", str(manifest), str(tmp_path / "out"), "--max-graph-nodes", "4", "--max-graph-edges", "4"]
    assert main(argv) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["written"] == 1 and stats["skipped"] == {"too_large_graph": 2}
    printed = capsys.readouterr()
    assert "wrote 1 samples" in printed.out and "skipped: too_large_graph 2" in printed.out
    [(key, members)] = read_tars([tmp_path / "out" / stats["shards"][0]["path"]])
    assert key == "good" and members["graph.npz"] == (tmp_path / "good.graph.npz").read_bytes()
    assert main(["shard", str(manifest), str(tmp_path / "all"), "--max-graph-nodes", "5"]) == 0
    assert json.loads((tmp_path / "all" / "stats.json").read_text())["written"] == 3


@pytest.mark.parametrize("flag", ["--max-graph-edges", "--max-graph-nodes", "--max-pixels", "--max-audio-seconds"])
def test_media_limits_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture, flag: str) -> None:
    from mmadapter.cli import main

    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    with pytest.raises(SystemExit):
        main(["shard", str(manifest), str(tmp_path / "o"), flag, "0"])
    assert f"argument {flag}: must be above 0, got 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        write_shards(manifest, tmp_path / "o", workers=0, limits=MediaLimits(max_graph_edges=1))
