"""LLaVA-Instruct → an mmadapter instruction-tuning manifest (JSONL, DESIGN.md §5).

Expects the LLaVA conversation file (a JSON list, or JSONL, of records) and the image folder its
``image`` names are relative to (``--images``, e.g. COCO ``train2017``)::

    [{"id": "000000033471", "image": "000000033471.jpg",
      "conversations": [{"from": "human", "value": "<image>\\nWhat colour is the bus?"},
                        {"from": "gpt", "value": "Blue."}, ...]}, ...]

and writes one line per record::

    {"key": "000000033471", "image": "../coco/train2017/000000033471.jpg",
     "messages": [{"role": "user", "content": "<image>\\nWhat colour is the bus?"},
                  {"role": "assistant", "content": "Blue."}], "task": "instruct", "lang": "en"}

Roles ``human`` → ``user``, ``gpt`` → ``assistant`` (``user``, ``assistant``, ``system`` kept). LLaVA's
``<image>`` is mmadapter's image placeholder: a first user turn holding exactly one keeps it where it is;
otherwise (none, several, or one in a later turn) every ``<image>`` is removed and ``<image>\\n`` put at
the start of the first user turn, as LLaVA's own preprocessing does. Records without ``image`` are kept
as text-only samples (any ``<image>`` removed). Records whose image file is missing are skipped and
counted. Keys are the ids, other characters than letters, digits, ``_`` and ``-`` replaced by ``-``,
made unique with ``-2``, ``-3``, … (LLaVA-Instruct-150K repeats ids: one image, several conversations).
Next step: ``mmadapter shard manifest.jsonl shards/``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmadapter.data.manifest_writer import LayoutError, Skip, media_ref, run_prepare, sanitize_key, unique_key

PROG = "prepare_llava_instruct"
LAYOUT = (
    'a JSON list (or JSONL) of {"id", "image": "<file relative to --images>", '
    '"conversations": [{"from": "human"|"gpt", "value": "..."}, ...]} records'
)
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
IMAGE = "<image>"


def load_records(path: Path) -> list[Any]:
    """The records of a LLaVA JSON list, or of a JSONL file (``.jsonl``)."""
    if not path.is_file():
        raise LayoutError(f"conversation file {path} not found; expected {LAYOUT}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        records = json.loads(text)
    except json.JSONDecodeError as e:
        raise LayoutError(f"{path} is not valid JSON ({e}); expected {LAYOUT}") from e
    if not isinstance(records, list):
        raise LayoutError(f"{path} holds a JSON {type(records).__name__}, not a list; expected {LAYOUT}")
    return records


def drop_images(text: str) -> str:
    """``text`` without any ``<image>`` (and the newline that went with each)."""
    return text.replace(IMAGE + "\n", "").replace("\n" + IMAGE, "").replace(IMAGE, "").strip()


def to_messages(conversations: Any, has_image: bool) -> list[dict[str, str]]:
    """LLaVA turns as chat messages, with exactly one ``<image>`` (in the first user turn) iff ``has_image``.

    Raises:
        ValueError: Not a list of ``{"from", "value"}`` turns with known roles, or no user turn for the image.
    """
    if not isinstance(conversations, list) or not conversations:
        raise ValueError("conversations must be a non-empty list")
    messages = []
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict) or turn.get("from") not in ROLES or not isinstance(turn.get("value"), str):
            raise ValueError(f"turn {i} is not {{from: {'|'.join(ROLES)}, value: str}}: {turn!r}")
        messages.append({"role": ROLES[turn["from"]], "content": turn["value"]})
    first_user = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
    if has_image and first_user is None:
        raise ValueError("no user turn to hold the <image> placeholder")
    placed = has_image and messages[first_user]["content"].count(IMAGE) == 1
    for i, m in enumerate(messages):
        if placed and i == first_user:
            continue
        if IMAGE in m["content"]:
            m["content"] = drop_images(m["content"])
        if has_image and not placed and i == first_user:
            m["content"] = f"{IMAGE}\n{m['content']}"
    return messages


def iter_samples(
    records: list[Any], image_dir: Path | None, manifest_dir: Path, absolute: bool
) -> Iterator[dict[str, Any] | Skip]:
    """The records (and skips), in file order."""
    seen: set[str] = set()
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            yield Skip("bad_record", f"record {index}: not an object")
            continue
        name = str(record.get("id", index))
        image = record.get("image")
        if image is not None and (not isinstance(image, str) or not image):
            yield Skip("bad_record", f"{name}: image must be one file name, got {image!r}")
            continue
        try:
            messages = to_messages(record.get("conversations"), image is not None)
        except ValueError as e:
            yield Skip("bad_conversation", f"{name}: {e}")
            continue
        path = None if image is None or image_dir is None else image_dir / image
        if path is not None and not path.is_file():
            yield Skip("missing_image", str(path))
            continue
        sample: dict[str, Any] = {"key": unique_key(sanitize_key(name), seen)}
        if path is not None:
            sample["image"] = media_ref(path, manifest_dir, absolute)
        yield sample | {"messages": messages, "task": "instruct", "lang": "en"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write an mmadapter instruction manifest (JSONL) for LLaVA-Instruct. Expects " + LAYOUT + ".",
        epilog="Next step: mmadapter shard MANIFEST OUT_DIR",
    )
    parser.add_argument("conversations", type=Path, help="the LLaVA JSON file, e.g. llava_instruct_150k.json")
    parser.add_argument("--images", type=Path, help="the folder image names are relative to, e.g. ROOT/train2017")
    parser.add_argument("--out", type=Path, required=True, help="the manifest to write (JSONL)")
    parser.add_argument(
        "--absolute", action="store_true", help="write absolute image paths (default: relative to the manifest)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Write the manifest; 0 when at least one sample was written, 1 when none, 2 on a layout error."""
    args = build_parser().parse_args(argv)

    def load() -> Iterator[dict[str, Any] | Skip]:
        records = load_records(args.conversations)
        if args.images is None and any(isinstance(r, dict) and r.get("image") is not None for r in records):
            raise LayoutError(f"{args.conversations} has records with images: give their folder with --images")
        if args.images is not None and not args.images.is_dir():
            raise LayoutError(f"image folder {args.images} not found; expected the folder {LAYOUT} name files in")
        return iter_samples(records, args.images, args.out.parent, args.absolute)

    return run_prepare(PROG, args.out, load)


if __name__ == "__main__":
    sys.exit(main())
