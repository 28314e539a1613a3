"""COCO captions → an mmadapter image-captioning manifest (JSONL, DESIGN.md §5).

Expects the layout of the COCO 2017 downloads::

    ROOT/annotations/captions_{train,val}2017.json
    ROOT/{train,val}2017/<file_name>.jpg

and writes one line per (image, caption), or per image with ``--one-caption-per-image`` (its first
non-empty caption in annotation order)::

    {"key": "coco-000000391895-770337", "image": "../coco/train2017/000000391895.jpg",
     "response": "A man riding a bike.", "task": "caption", "lang": "en"}

(short form: the default ``caption`` prompt applies; caption whitespace is collapsed). Keys are
``coco-<file stem>-<annotation id>``, or ``coco-<file stem>`` with one caption per image.
Next step: ``mmadapter shard manifest.jsonl shards/``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmadapter.data.manifest_writer import LayoutError, Skip, media_ref, run_prepare

PROG = "prepare_coco"
LAYOUT = "ROOT/annotations/captions_<split><year>.json and ROOT/<split><year>/*.jpg"


def find_split(root: Path, split: str, year: str) -> tuple[Path, Path]:
    """The captions file and the image folder of a split, checked to exist."""
    layout = LAYOUT.replace("<split>", split).replace("<year>", year)
    if not root.is_dir():
        raise LayoutError(f"{root} is not a folder; expected {layout}")
    captions = root / "annotations" / f"captions_{split}{year}.json"
    images = root / f"{split}{year}"
    if not captions.is_file():
        raise LayoutError(f"captions file {captions} not found; expected {layout}")
    if not images.is_dir():
        raise LayoutError(f"image folder {images} not found; expected {layout}")
    return captions, images


def load_captions(path: Path) -> tuple[dict[int, str], dict[int, list[tuple[int, str]]]]:
    """``image id → file name`` and ``image id → [(annotation id, caption), ...]`` (annotation order)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = {int(im["id"]): str(im["file_name"]) for im in data["images"]}
        captions: dict[int, list[tuple[int, str]]] = {}
        for ann in data["annotations"]:
            captions.setdefault(int(ann["image_id"]), []).append((int(ann["id"]), str(ann["caption"])))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise LayoutError(
            f"{path} is not a COCO captions file ({type(e).__name__}: {e}); expected "
            '{"images": [{"id", "file_name"}, ...], "annotations": [{"id", "image_id", "caption"}, ...]}'
        ) from e
    return files, captions


def iter_samples(
    files: dict[int, str],
    captions: dict[int, list[tuple[int, str]]],
    image_dir: Path,
    manifest_dir: Path,
    absolute: bool,
    one_per_image: bool,
) -> Iterator[dict[str, Any] | Skip]:
    """The records (and skips), by image id, captions in annotation order."""
    for image_id in sorted(captions.keys() - files.keys()):
        for ann_id, _ in captions[image_id]:
            yield Skip("unknown_image_id", f"annotation {ann_id}: image id {image_id} is not in images")
    for image_id in sorted(files):
        path = image_dir / files[image_id]
        stem = re.sub(r"[^A-Za-z0-9_-]", "-", Path(files[image_id]).stem)
        anns = captions.get(image_id, [])
        if not anns:
            yield Skip("no_caption", str(path))
            continue
        anns = [(a, " ".join(c.split())) for a, c in anns]
        if one_per_image:
            anns = [next(((a, c) for a, c in anns if c), anns[0])]
        for ann_id, caption in anns:
            key = f"coco-{stem}" if one_per_image else f"coco-{stem}-{ann_id}"
            if not caption:
                yield Skip("empty_caption", f"annotation {ann_id} of {path}")
            elif not path.is_file():
                yield Skip("missing_image", str(path))
            else:
                image = media_ref(path, manifest_dir, absolute)
                yield {"key": key, "image": image, "response": caption, "task": "caption", "lang": "en"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write an mmadapter captioning manifest (JSONL) for COCO captions. Expects " + LAYOUT + ".",
        epilog="Next step: mmadapter shard MANIFEST OUT_DIR",
    )
    parser.add_argument("root", type=Path, help="the COCO folder holding annotations/ and the image folders")
    parser.add_argument("--out", type=Path, required=True, help="the manifest to write (JSONL)")
    parser.add_argument("--split", choices=["train", "val"], default="train", help="which split (default: train)")
    parser.add_argument("--year", default="2017", help="the release year in the file names (default: 2017)")
    parser.add_argument(
        "--one-caption-per-image", action="store_true", help="only each image's first caption (default: all)"
    )
    parser.add_argument(
        "--absolute", action="store_true", help="write absolute image paths (default: relative to the manifest)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Write the manifest; 0 when at least one sample was written, 1 when none, 2 on a layout error."""
    args = build_parser().parse_args(argv)

    def load() -> Iterator[dict[str, Any] | Skip]:
        captions_file, image_dir = find_split(args.root, args.split, args.year)
        files, captions = load_captions(captions_file)
        return iter_samples(files, captions, image_dir, args.out.parent, args.absolute, args.one_caption_per_image)

    return run_prepare(PROG, args.out, load)


if __name__ == "__main__":
    sys.exit(main())
