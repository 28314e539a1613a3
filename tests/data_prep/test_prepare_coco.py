from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_prep_helpers import assert_shards_accept, load_script, read_manifest, resolve, write_image

prep = load_script("prepare_coco")

IMAGES = [  # id, file name, on disk
    (391895, "000000391895.jpg", True),
    (9, "000000000009.jpg", True),
    (77, "000000000077.jpg", False),  # missing file
    (5, "000000000005.jpg", True),  # no caption
]
ANNOTATIONS = [  # annotation id, image id, caption
    (770337, 391895, "A man with a red helmet on a small moped."),
    (11, 9, "  Closeup of\nbento boxes.  "),  # whitespace collapsed
    (788, 391895, "Man riding a motor bike on a dirt road."),
    (12, 9, "A meal in two boxes."),
    (13, 77, "Nobody sees this."),
]


def make_coco(root: Path, split: str = "train") -> None:
    images = [{"id": i, "file_name": f, "width": 24, "height": 16} for i, f, _ in IMAGES]
    annotations = [{"id": a, "image_id": i, "caption": c} for a, i, c in ANNOTATIONS]
    (root / "annotations").mkdir(parents=True)
    captions = {"info": {}, "images": images, "annotations": annotations}
    (root / "annotations" / f"captions_{split}2017.json").write_text(json.dumps(captions))
    for seed, (_, file, on_disk) in enumerate(IMAGES):
        if on_disk:
            write_image(root / f"{split}2017" / file, seed)


def line(key: str, file: str, caption: str, split: str = "train") -> dict[str, str]:
    return {"key": key, "image": f"../coco/{split}2017/{file}", "response": caption, "task": "caption", "lang": "en"}


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    make_coco(tmp_path / "coco")
    return tmp_path / "coco"


def test_every_caption(coco: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "manifests" / "coco.jsonl"
    assert prep.main([str(coco), "--out", str(manifest)]) == 0
    lines = read_manifest(manifest)
    assert lines == [  # by image id, captions in annotation order
        line("coco-000000000009-11", "000000000009.jpg", "Closeup of bento boxes."),
        line("coco-000000000009-12", "000000000009.jpg", "A meal in two boxes."),
        line("coco-000000391895-770337", "000000391895.jpg", "A man with a red helmet on a small moped."),
        line("coco-000000391895-788", "000000391895.jpg", "Man riding a motor bike on a dirt road."),
    ]
    for record in lines:
        assert resolve(manifest, record["image"]) == (coco / "train2017" / Path(record["image"]).name).resolve()
        assert resolve(manifest, record["image"]).is_file()
    out = capsys.readouterr().out
    assert "wrote 4 samples" in out
    assert "skipped 2: missing_image 1" in out and "000000000077.jpg" in out
    assert "no_caption 1" in out and "000000000005.jpg" in out
    assert_shards_accept(manifest, tmp_path / "shards", 4)


def test_one_caption_per_image_val_absolute(tmp_path: Path) -> None:
    make_coco(tmp_path / "coco", "val")
    manifest = tmp_path / "val.jsonl"
    argv = [str(tmp_path / "coco"), "--out", str(manifest), "--split", "val", "--one-caption-per-image", "--absolute"]
    assert prep.main(argv) == 0
    val = (tmp_path / "coco" / "val2017").absolute()
    assert read_manifest(manifest) == [
        {
            "key": "coco-000000000009",
            "image": str(val / "000000000009.jpg"),
            "response": "Closeup of bento boxes.",
            "task": "caption",
            "lang": "en",
        },
        {
            "key": "coco-000000391895",
            "image": str(val / "000000391895.jpg"),
            "response": "A man with a red helmet on a small moped.",
            "task": "caption",
            "lang": "en",
        },
    ]
    assert_shards_accept(manifest, tmp_path / "shards", 2)


def test_layout_errors(coco: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "m.jsonl")
    assert prep.main([str(coco), "--out", out, "--split", "val"]) == 2
    err = capsys.readouterr().err
    assert str(coco / "annotations" / "captions_val2017.json") in err and "ROOT/val2017/*.jpg" in err

    (coco / "train2017").rename(coco / "images")
    assert prep.main([str(coco), "--out", out]) == 2
    assert f"image folder {coco / 'train2017'} not found" in capsys.readouterr().err

    (coco / "images").rename(coco / "train2017")
    (coco / "annotations" / "captions_train2017.json").write_text('{"images": []}')
    assert prep.main([str(coco), "--out", out]) == 2
    assert "is not a COCO captions file" in capsys.readouterr().err
    assert not Path(out).exists()
