"""FLEURS or Common Voice → an mmadapter ASR or speech-translation manifest (JSONL, DESIGN.md §5).

FLEURS (``--format fleurs``)::

    ROOT/<lang>/{train,dev,test}.tsv        # no header; columns: id, file name, raw text, normalized text, ...
    ROOT/<lang>/audio/<split>/<file name>   # .wav

Common Voice (``--format commonvoice``)::

    ROOT/<lang>/{train,dev,test,validated}.tsv   # header: client_id, path, sentence, ...
    ROOT/<lang>/clips/<path>                     # .mp3

One line per utterance, e.g. ``{"key": "fr_fr-10004", "audio": "fleurs/fr_fr/audio/train/10004.wav",
"response": "Bonjour.", "task": "asr", "lang": "fr_fr"}`` (default asr prompt unless ``--prompt``).
``--task ast`` takes the response from ``--translations`` (``id<TAB>target text`` lines; the id is column 0
for FLEURS, the clip ``path`` for Common Voice as in CoVoST 2) and adds a ``prompt`` and ``target_lang``.
Keys: ``<lang>-<audio file stem>``, characters other than letters, digits, ``_``, ``-`` replaced by ``-``,
made unique with ``-2``, ``-3``, … Next step: ``mmadapter shard manifest.jsonl shards/``.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmadapter.data.manifest_writer import LayoutError, Skip, media_ref, run_prepare, sanitize_key, unique_key

PROG = "prepare_fleurs"
LAYOUTS = {
    "fleurs": "ROOT/<lang>/<split>.tsv (no header; columns id, file name, raw transcription, normalized "
    "transcription, ...) and ROOT/<lang>/audio/<split>/<file name>",
    "commonvoice": "ROOT/<lang>/<split>.tsv (a header naming at least path and sentence) and ROOT/<lang>/clips/<path>",
}
AUDIO_DIRS = {"fleurs": "audio/{split}", "commonvoice": "clips"}
DEFAULT_AST_PROMPT = "Translate the audio into {target_lang}: <audio>"
Row = tuple[str, str, str]  # one tsv utterance: the id translations are looked up by, audio file name, transcript


@dataclass(frozen=True)
class Language:
    """One language folder: its code, the split's tsv and the audio folder."""

    code: str
    tsv: Path
    audio_dir: Path


def find_languages(root: Path, fmt: str, split: str, langs: list[str] | None) -> list[Language]:
    """The language folders (given, or every one holding ``<split>.tsv``), checked against the layout."""
    layout = LAYOUTS[fmt]
    if not root.is_dir():
        raise LayoutError(f"{root} is not a folder; expected {layout}")
    if langs is None:
        langs = sorted(p.parent.name for p in root.glob(f"*/{split}.tsv"))
        if not langs:
            raise LayoutError(f"no language folder in {root} holds {split}.tsv; expected {layout}")
    found = []
    for code in langs:
        folder = root / code
        tsv = folder / f"{split}.tsv"
        audio_dir = folder / AUDIO_DIRS[fmt].format(split=split)
        if not folder.is_dir():
            raise LayoutError(f"language folder {folder} not found; expected {layout}")
        if not tsv.is_file():
            have = ", ".join(sorted(p.name for p in folder.glob("*.tsv"))) or "none"
            raise LayoutError(f"{tsv} not found (tsv files there: {have}); expected {layout}")
        if not audio_dir.is_dir():
            raise LayoutError(f"audio folder {audio_dir} not found; expected {layout}")
        found.append(Language(code, tsv, audio_dir))
    return found


def _tsv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    with open(path, encoding="utf-8", newline="") as f:
        for number, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if any(cell.strip() for cell in row):
                yield number, row


def read_rows(tsv: Path, fmt: str, column: int) -> list[Row | Skip]:
    """``(id, file, text)`` rows: FLEURS has no header, columns 0, 1 and ``column`` (2 raw, 3 normalized text);
    Common Voice has a header, and its clip ``path`` is both id and file, ``sentence`` the text."""
    rows: list[Row | Skip] = []
    cols = (0, 1, column) if fmt == "fleurs" else None
    for number, row in _tsv_rows(tsv):
        if cols is None:
            if "path" not in row or "sentence" not in row:
                raise LayoutError(f"{tsv}: header {row} lacks path or sentence; expected {LAYOUTS['commonvoice']}")
            cols = (row.index("path"), row.index("path"), row.index("sentence"))
        elif len(row) <= max(cols):
            rows.append(Skip("bad_row", f"{tsv}:{number}: {len(row)} columns, expected at least {max(cols) + 1}"))
        else:
            rows.append((row[cols[0]].strip(), row[cols[1]].strip(), row[cols[2]].strip()))
    return rows


def read_translations(path: Path) -> dict[str, str]:
    """``id → target text`` from ``id<TAB>text`` lines (a header line starting ``id`` or ``path`` is skipped)."""
    if not path.is_file():
        raise LayoutError(f"translations file {path} not found; expected id<TAB>target text lines")
    table: dict[str, str] = {}
    for number, row in _tsv_rows(path):
        if number == 1 and row[0].strip() in ("id", "path"):
            continue
        if len(row) < 2:
            raise LayoutError(f"{path}:{number}: expected id<TAB>target text, got {row!r}")
        table.setdefault(row[0].strip(), row[1].strip())
    return table


def language_samples(
    lang: Language, rows: list[Row | Skip], args: argparse.Namespace, translations: dict[str, str], seen: set[str]
) -> Iterator[dict[str, Any] | Skip]:
    """The records (and skips) of one language, at most ``args.max_per_lang`` records."""
    if args.seed is not None:
        rows = rows.copy()
        random.Random(args.seed).shuffle(rows)
    count, prompt = 0, args.prompt and args.prompt.replace("{target_lang}", args.target_lang or "")
    for row in rows:
        if args.max_per_lang is not None and count >= args.max_per_lang:
            return
        if isinstance(row, Skip):
            yield row
            continue
        row_id, file, text = row
        audio = lang.audio_dir / file
        response = translations.get(row_id) if args.task == "ast" else text
        if not file:
            yield Skip("bad_row", f"{lang.tsv}: id {row_id!r} has no file name")
        elif response is None:
            yield Skip("no_translation", f"{lang.tsv}: id {row_id!r}")
        elif not response:
            yield Skip("empty_text", f"{args.translations if args.task == 'ast' else lang.tsv}: id {row_id!r}")
        elif not audio.is_file():
            yield Skip("missing_audio", str(audio))
        else:
            count += 1
            key = unique_key(sanitize_key(f"{lang.code}-{Path(file).stem}"), seen)
            record: dict[str, Any] = {"key": key, "audio": media_ref(audio, args.out.parent, args.absolute)}
            if prompt is not None:
                record["prompt"] = prompt.replace("{lang}", lang.code)
            record.update(response=response, task=args.task, lang=lang.code)
            if args.task == "ast":
                record["target_lang"] = args.target_lang
            yield record


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write an mmadapter ASR or speech-translation manifest (JSONL) for FLEURS or Common Voice. "
        f"Expects, for fleurs: {LAYOUTS['fleurs']}; for commonvoice: {LAYOUTS['commonvoice']}.",
        epilog="Next step: mmadapter shard MANIFEST OUT_DIR",
    )
    parser.add_argument("root", type=Path, help="the folder holding one folder per language")
    parser.add_argument("--out", type=Path, required=True, help="the manifest to write (JSONL)")
    parser.add_argument("--format", choices=sorted(LAYOUTS), default="fleurs", help="dataset layout (default: fleurs)")
    parser.add_argument("--langs", nargs="+", metavar="LANG", help="language folders (default: all holding the split)")
    parser.add_argument("--split", default="train", help="tsv name: train, dev, test, validated, … (default: train)")
    parser.add_argument("--max-per-lang", type=int, metavar="N", help="write at most N samples per language")
    parser.add_argument("--seed", type=int, help="with --max-per-lang: a random subset (default: the first N rows)")
    parser.add_argument("--text", choices=["raw", "normalized"], default="raw", help="FLEURS text column (default raw)")
    parser.add_argument("--task", choices=["asr", "ast"], default="asr", help="asr (transcript) or ast (translation)")
    parser.add_argument("--translations", type=Path, metavar="FILE.tsv", help="ast: id<TAB>target text lines")
    parser.add_argument("--target-lang", help="ast: the target language, written as metadata target_lang")
    parser.add_argument(
        "--prompt",
        help="user prompt holding one <audio>; {target_lang} and {lang} are filled in "
        f"(default: asr: the default asr prompt; ast: {DEFAULT_AST_PROMPT!r})",
    )
    parser.add_argument("--absolute", action="store_true", help="absolute audio paths (default: relative to --out)")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.task == "ast":
        if args.translations is None or args.target_lang is None:
            parser.error("--task ast needs --translations FILE.tsv and --target-lang")
        if args.prompt is None:
            args.prompt = DEFAULT_AST_PROMPT
    elif args.translations is not None:
        parser.error("--translations is only for --task ast")
    if args.prompt is not None and args.prompt.count("<audio>") != 1:
        parser.error(f"--prompt must hold exactly one <audio>: {args.prompt!r}")
    if args.text == "normalized" and args.format == "commonvoice":
        parser.error("--text normalized is for FLEURS; Common Voice has one sentence column")
    if args.max_per_lang is not None and args.max_per_lang < 1:
        parser.error(f"--max-per-lang must be at least 1, got {args.max_per_lang}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Write the manifest; 0 when at least one sample was written, 1 when none, 2 on a layout error."""
    args = parse_args(argv)

    def load() -> Iterator[dict[str, Any] | Skip]:
        langs = find_languages(args.root, args.format, args.split, args.langs)
        tables = [read_rows(g.tsv, args.format, 2 if args.text == "raw" else 3) for g in langs]
        translations = read_translations(args.translations) if args.task == "ast" else {}
        seen: set[str] = set()
        pairs = zip(langs, tables, strict=True)
        return (item for g, rows in pairs for item in language_samples(g, rows, args, translations, seen))

    return run_prepare(PROG, args.out, load)


if __name__ == "__main__":
    sys.exit(main())
