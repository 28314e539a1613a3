"""LibriSpeech → an mmadapter ASR manifest (JSONL, DESIGN.md §5).

Expects the layout of the extracted OpenSLR archives::

    ROOT/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   # "<utterance id> <TRANSCRIPT>" a line
    ROOT/<split>/<speaker>/<chapter>/<utterance id>.flac

and writes one line per transcribed utterance::

    {"key": "103-1240-0000", "audio": "../LibriSpeech/train-clean-100/103/1240/103-1240-0000.flac",
     "response": "CHAPTER ONE", "task": "asr", "lang": "en", "speaker": "103", "chapter": "1240"}

(short form: the default ``asr`` prompt applies). Next step: ``mmadapter shard manifest.jsonl shards/``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmadapter.data.manifest_writer import LayoutError, Skip, media_ref, run_prepare

PROG = "prepare_librispeech"
LAYOUT = "ROOT/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt next to <utterance id>.flac files"


def _natural(path: Path) -> tuple[int, int | str]:
    """Sort numeric folder names by number (LibriSpeech speaker and chapter ids), others by name."""
    return (0, int(path.name)) if path.name.isdigit() else (1, path.name)


def split_dirs(root: Path, splits: list[str]) -> list[Path]:
    """The split folders, checked to exist and to hold transcripts."""
    if not root.is_dir():
        raise LayoutError(f"{root} is not a folder; expected {LAYOUT}")
    dirs = []
    for split in splits:
        path = root / split
        if not path.is_dir():
            found = ", ".join(sorted(p.name for p in root.iterdir() if p.is_dir())) or "none"
            raise LayoutError(f"split folder {path} not found (folders in {root}: {found}); expected {LAYOUT}")
        if next(path.glob("*/*/*.trans.txt"), None) is None:
            raise LayoutError(f"no <speaker>/<chapter>/*.trans.txt under {path}; expected {LAYOUT}")
        dirs.append(path)
    return dirs


def read_transcripts(path: Path) -> Iterator[tuple[str, str]]:
    """``(utterance id, transcript)`` for every non-blank line of a ``.trans.txt`` file."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            utt, _, text = line.strip().partition(" ")
            yield utt, text.strip()


def chapter_samples(
    chapter: Path, manifest_dir: Path, absolute: bool, lowercase: bool, audio_ext: str
) -> Iterator[dict[str, Any] | Skip]:
    """The records (and skips) of one ``<speaker>/<chapter>`` folder."""
    speaker = chapter.parent.name
    transcript = chapter / f"{speaker}-{chapter.name}.trans.txt"
    if not transcript.is_file():
        for audio in sorted(chapter.glob(f"*.{audio_ext}")):
            yield Skip("no_transcript", str(audio))
        return
    for utt, text in read_transcripts(transcript):
        audio = chapter / f"{utt}.{audio_ext}"
        if not text:
            yield Skip("empty_transcript", f"{transcript}: {utt}")
        elif not audio.is_file():
            yield Skip("missing_audio", str(audio))
        else:
            yield {
                "key": utt,
                "audio": media_ref(audio, manifest_dir, absolute),
                "response": text.lower() if lowercase else text,
                "task": "asr",
                "lang": "en",
                "speaker": speaker,
                "chapter": chapter.name,
            }


def iter_samples(
    splits: list[Path], manifest_dir: Path, absolute: bool, lowercase: bool, audio_ext: str
) -> Iterator[dict[str, Any] | Skip]:
    """All records of the split folders, in split, speaker, chapter and transcript order."""
    for split in splits:
        for speaker in sorted((p for p in split.iterdir() if p.is_dir()), key=_natural):
            for chapter in sorted((p for p in speaker.iterdir() if p.is_dir()), key=_natural):
                yield from chapter_samples(chapter, manifest_dir, absolute, lowercase, audio_ext)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write an mmadapter ASR manifest (JSONL) for LibriSpeech. Expects " + LAYOUT + ".",
        epilog="Next step: mmadapter shard MANIFEST OUT_DIR",
    )
    parser.add_argument("root", type=Path, help="the LibriSpeech folder holding the split folders")
    parser.add_argument("--out", type=Path, required=True, help="the manifest to write (JSONL)")
    parser.add_argument(
        "--splits", nargs="+", required=True, metavar="SPLIT", help="split folders, e.g. train-clean-100 dev-clean"
    )
    parser.add_argument("--lowercase", action="store_true", help="lowercase the transcripts (default: as given)")
    parser.add_argument("--audio-ext", default="flac", help="audio file extension (default: flac)")
    parser.add_argument(
        "--absolute", action="store_true", help="write absolute audio paths (default: relative to the manifest)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Write the manifest; 0 when at least one sample was written, 1 when none, 2 on a layout error."""
    args = build_parser().parse_args(argv)

    def load() -> Iterator[dict[str, Any] | Skip]:
        splits = split_dirs(args.root, args.splits)
        return iter_samples(splits, args.out.parent, args.absolute, args.lowercase, args.audio_ext)

    return run_prepare(PROG, args.out, load)


if __name__ == "__main__":
    sys.exit(main())
