from __future__ import annotations

from pathlib import Path

import pytest
from data_prep_helpers import assert_shards_accept, load_script, read_manifest, resolve, write_audio

prep = load_script("prepare_fleurs")

# FLEURS: id, file name, raw transcription, normalized transcription, then more columns (ignored)
FLEURS_FR = [
    ("1001", "100.wav", "Bonjour, Paris !", "bonjour paris", "2400", "FEMALE"),
    ("1001", "101.wav", "Bonjour, Paris !", "bonjour paris", "2400", "MALE"),  # same sentence, another speaker
    ("1002", "x y.wav", "Un chat.", "un chat", "2400", "MALE"),  # key sanitised: fr_fr-x-y
    ("1003", "x-y.wav", "Deux chats.", "deux chats", "2400", "MALE"),  # fr_fr-x-y again → fr_fr-x-y-2
    ("1004", "102.wav", "Perdu.", "perdu", "2400", "MALE"),  # audio missing
]
FLEURS_DE = [("2001", "200.wav", "Guten Tag.", "guten tag", "2400", "FEMALE")]


def make_fleurs(root: Path) -> None:
    for lang, rows in (("fr_fr", FLEURS_FR), ("de_de", FLEURS_DE)):
        (root / lang).mkdir(parents=True)
        (root / lang / "train.tsv").write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")
        for seed, row in enumerate(rows):
            if row[1] != "102.wav":
                write_audio(root / lang / "audio" / "train" / row[1], "WAV", seed)


def asr_line(lang: str, key: str, file: str, text: str, split: str = "train") -> dict[str, str]:
    return {
        "key": key,
        "audio": f"../fleurs/{lang}/audio/{split}/{file}",
        "response": text,
        "task": "asr",
        "lang": lang,
    }


@pytest.fixture
def fleurs(tmp_path: Path) -> Path:
    make_fleurs(tmp_path / "fleurs")
    return tmp_path / "fleurs"


def test_fleurs_asr_all_languages(fleurs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "out" / "fleurs.jsonl"
    assert prep.main([str(fleurs), "--out", str(manifest)]) == 0
    lines = read_manifest(manifest)
    assert lines == [
        asr_line("de_de", "de_de-200", "200.wav", "Guten Tag."),
        asr_line("fr_fr", "fr_fr-100", "100.wav", "Bonjour, Paris !"),
        asr_line("fr_fr", "fr_fr-101", "101.wav", "Bonjour, Paris !"),
        asr_line("fr_fr", "fr_fr-x-y", "x y.wav", "Un chat."),
        asr_line("fr_fr", "fr_fr-x-y-2", "x-y.wav", "Deux chats."),
    ]
    for line in lines:
        assert resolve(manifest, line["audio"]) == (fleurs / line["audio"].removeprefix("../fleurs/")).resolve()
        assert resolve(manifest, line["audio"]).is_file()
    out = capsys.readouterr().out
    assert "wrote 5 samples" in out
    assert "skipped 1: missing_audio 1" in out and "102.wav" in out
    assert_shards_accept(manifest, tmp_path / "shards", 5)


def test_fleurs_normalized_text_one_language_at_most_n(fleurs: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "fr.jsonl"
    argv = [str(fleurs), "--out", str(manifest), "--langs", "fr_fr", "--text", "normalized", "--max-per-lang", "2"]
    assert prep.main(argv) == 0
    assert [(line["key"], line["response"]) for line in read_manifest(manifest)] == [
        ("fr_fr-100", "bonjour paris"),
        ("fr_fr-101", "bonjour paris"),
    ]


def test_fleurs_random_subset_is_seeded(fleurs: Path, tmp_path: Path) -> None:
    keys = []
    for run in range(2):
        manifest = tmp_path / f"sub{run}.jsonl"
        argv = [str(fleurs), "--out", str(manifest), "--langs", "fr_fr", "--max-per-lang", "3", "--seed", "7"]
        assert prep.main(argv) == 0
        keys.append([line["key"] for line in read_manifest(manifest)])
    assert keys[0] == keys[1]
    assert len(keys[0]) == 3
    assert set(keys[0]) <= {"fr_fr-100", "fr_fr-101", "fr_fr-x-y", "fr_fr-x-y-2"}


def test_fleurs_ast_with_translations(fleurs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    translations = tmp_path / "en.tsv"
    translations.write_text("id\ttranslation\n1001\tHello, Paris!\n1002\tA cat.\n1004\tLost.\n", encoding="utf-8")
    manifest = tmp_path / "ast.jsonl"
    argv = [str(fleurs), "--out", str(manifest), "--langs", "fr_fr", "--task", "ast"]
    assert prep.main([*argv, "--translations", str(translations), "--target-lang", "English"]) == 0

    def line(key: str, file: str, text: str) -> dict[str, str]:
        return {
            "key": key,
            "audio": f"fleurs/fr_fr/audio/train/{file}",
            "prompt": "Translate the audio into English: <audio>",
            "response": text,
            "task": "ast",
            "lang": "fr_fr",
            "target_lang": "English",
        }

    assert read_manifest(manifest) == [
        line("fr_fr-100", "100.wav", "Hello, Paris!"),
        line("fr_fr-101", "101.wav", "Hello, Paris!"),
        line("fr_fr-x-y", "x y.wav", "A cat."),
    ]
    out = capsys.readouterr().out
    assert "wrote 3 samples" in out
    assert "skipped 2: missing_audio 1" in out and "no_translation 1" in out and "'1003'" in out
    assert_shards_accept(manifest, tmp_path / "shards", 3)


def make_commonvoice(root: Path) -> None:
    header = "client_id\tpath\tsentence\tup_votes\tdown_votes\n"
    rows = [
        ("c1", "common_voice_fr_1.mp3", '"Oui", a-t-il dit.'),  # a quote: the tsv is read without quoting
        ("c2", "common_voice_fr_2.mp3", "Bonsoir."),
        ("c3", "common_voice_fr_3.mp3", "Absent."),  # clip missing
        ("c4", "common_voice_fr_4.mp3", ""),  # empty sentence
    ]
    (root / "fr" / "clips").mkdir(parents=True)
    body = "".join(f"{c}\t{p}\t{s}\t2\t0\n" for c, p, s in rows)
    (root / "fr" / "dev.tsv").write_text(header + body, encoding="utf-8")
    for seed, (_, path, _) in enumerate(rows):
        if path != "common_voice_fr_3.mp3":
            write_audio(root / "fr" / "clips" / path, "MP3", seed, seconds=0.5)


def test_commonvoice_asr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "cv"
    make_commonvoice(root)
    manifest = tmp_path / "cv.jsonl"
    assert prep.main([str(root), "--out", str(manifest), "--format", "commonvoice", "--split", "dev"]) == 0
    assert read_manifest(manifest) == [
        {
            "key": "fr-common_voice_fr_1",
            "audio": "cv/fr/clips/common_voice_fr_1.mp3",
            "response": '"Oui", a-t-il dit.',
            "task": "asr",
            "lang": "fr",
        },
        {
            "key": "fr-common_voice_fr_2",
            "audio": "cv/fr/clips/common_voice_fr_2.mp3",
            "response": "Bonsoir.",
            "task": "asr",
            "lang": "fr",
        },
    ]
    out = capsys.readouterr().out
    assert "wrote 2 samples" in out
    assert "skipped 2: empty_text 1" in out and "missing_audio 1" in out and "common_voice_fr_3.mp3" in out
    assert_shards_accept(manifest, tmp_path / "shards", 2)


def test_layout_errors(fleurs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "m.jsonl")
    assert prep.main([str(fleurs), "--out", out, "--langs", "es_419"]) == 2
    err = capsys.readouterr().err
    assert str(fleurs / "es_419") in err and "ROOT/<lang>/<split>.tsv" in err

    assert prep.main([str(fleurs), "--out", out, "--langs", "fr_fr", "--split", "dev"]) == 2
    err = capsys.readouterr().err
    assert str(fleurs / "fr_fr" / "dev.tsv") in err and "tsv files there: train.tsv" in err

    (fleurs / "de_de" / "dev.tsv").write_text("2001\t200.wav\tx\tx\n")
    assert prep.main([str(fleurs), "--out", out, "--split", "dev"]) == 2
    assert str(fleurs / "de_de" / "audio" / "dev") in capsys.readouterr().err

    (fleurs / "de_de" / "clips").mkdir()
    assert prep.main([str(fleurs), "--out", out, "--format", "commonvoice", "--split", "dev"]) == 2
    assert "lacks path or sentence" in capsys.readouterr().err
    assert not Path(out).exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--task", "ast"], "--task ast needs --translations"),
        (["--translations", "t.tsv"], "only for --task ast"),
        (["--prompt", "Transcribe."], "exactly one <audio>"),
        (["--format", "commonvoice", "--text", "normalized"], "--text normalized is for FLEURS"),
    ],
)
def test_bad_options(extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        prep.main([str(tmp_path), "--out", str(tmp_path / "m.jsonl"), *extra])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
