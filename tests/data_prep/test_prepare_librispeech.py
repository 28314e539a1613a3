from __future__ import annotations

from pathlib import Path

import pytest
from data_prep_helpers import assert_shards_accept, load_script, read_manifest, resolve, write_audio

prep = load_script("prepare_librispeech")

# split → speaker → chapter → [(utterance number, transcript, has audio)]
CORPUS = {
    "dev-clean": {
        "103": {
            "1240": [("0000", "CHAPTER ONE", True), ("0001", "MISSUS RACHEL LYNDE", True), ("0002", "GONE", False)]
        },
        "19": {"198": [("0000", "NORTHANGER ABBEY", True), ("0001", "NO ONE WHO HAD EVER SEEN", True)]},
    },
    "train-clean-100": {"5": {"10": [("0000", "HELLO WORLD", True)]}},
}


def make_librispeech(root: Path) -> None:
    seed = 0
    for split, speakers in CORPUS.items():
        for speaker, chapters in speakers.items():
            for chapter, utts in chapters.items():
                folder = root / split / speaker / chapter
                folder.mkdir(parents=True)
                lines = []
                for number, text, has_audio in utts:
                    utt = f"{speaker}-{chapter}-{number}"
                    lines.append(f"{utt} {text}\n")
                    if has_audio:
                        write_audio(folder / f"{utt}.flac", "FLAC", seed)
                        seed += 1
                (folder / f"{speaker}-{chapter}.trans.txt").write_text("".join(lines))
    # a chapter whose transcript file is missing: its audio is counted as skipped
    write_audio(root / "dev-clean" / "19" / "227" / "19-227-0000.flac")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    make_librispeech(tmp_path / "LibriSpeech")
    return tmp_path / "LibriSpeech"


def test_manifest_lines_skips_and_shards(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "manifests" / "librispeech.jsonl"
    assert prep.main([str(root), "--out", str(manifest), "--splits", "dev-clean", "train-clean-100"]) == 0

    lines = read_manifest(manifest)
    expected = [  # split order as given; speakers and chapters in numeric order; transcript order
        ("dev-clean", "19", "198", "0000", "NORTHANGER ABBEY"),
        ("dev-clean", "19", "198", "0001", "NO ONE WHO HAD EVER SEEN"),
        ("dev-clean", "103", "1240", "0000", "CHAPTER ONE"),
        ("dev-clean", "103", "1240", "0001", "MISSUS RACHEL LYNDE"),
        ("train-clean-100", "5", "10", "0000", "HELLO WORLD"),
    ]
    assert lines == [
        {
            "key": f"{spk}-{ch}-{n}",
            "audio": f"../LibriSpeech/{split}/{spk}/{ch}/{spk}-{ch}-{n}.flac",
            "response": text,
            "task": "asr",
            "lang": "en",
            "speaker": spk,
            "chapter": ch,
        }
        for split, spk, ch, n, text in expected
    ]
    for line, (split, spk, ch, n, _) in zip(lines, expected, strict=True):
        assert resolve(manifest, line["audio"]) == (root / split / spk / ch / f"{spk}-{ch}-{n}.flac").resolve()
        assert resolve(manifest, line["audio"]).is_file()

    out = capsys.readouterr().out
    assert "wrote 5 samples" in out
    assert "skipped 2: missing_audio 1" in out
    assert "103-1240-0002.flac" in out
    assert "no_transcript 1" in out and "19-227-0000.flac" in out
    assert not manifest.with_name(manifest.name + ".tmp").exists()

    assert_shards_accept(manifest, tmp_path / "shards", 5)


def test_lowercase_and_absolute(root: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "ls.jsonl"
    assert (
        prep.main([str(root), "--out", str(manifest), "--splits", "train-clean-100", "--lowercase", "--absolute"]) == 0
    )
    assert read_manifest(manifest) == [
        {
            "key": "5-10-0000",
            "audio": str((root / "train-clean-100" / "5" / "10" / "5-10-0000.flac").absolute()),
            "response": "hello world",
            "task": "asr",
            "lang": "en",
            "speaker": "5",
            "chapter": "10",
        }
    ]


def test_missing_split_names_the_path_and_layout(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "ls.jsonl"
    assert prep.main([str(root), "--out", str(manifest), "--splits", "train-other-500"]) == 2
    err = capsys.readouterr().err
    assert str(root / "train-other-500") in err
    assert "dev-clean, train-clean-100" in err
    assert "<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt" in err
    assert not manifest.exists()


def test_split_without_transcripts_is_a_layout_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "root" / "dev-clean" / "1").mkdir(parents=True)
    assert prep.main([str(tmp_path / "root"), "--out", str(tmp_path / "m.jsonl"), "--splits", "dev-clean"]) == 2
    assert "no <speaker>/<chapter>/*.trans.txt under" in capsys.readouterr().err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        prep.main(["--help"])
    assert info.value.code == 0
    assert "--splits" in capsys.readouterr().out
