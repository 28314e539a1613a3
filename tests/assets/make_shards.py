"""Regenerate the checked-in test shards: ``python tests/assets/make_shards.py``.

Two small shards of audio, image and text samples with learnable content: each tone frequency stands for
a digit string, each colour for a caption. ``tests/assets/media/`` keeps one audio file and one image for
the inference tests.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from mmadapter.data.writer import write_shards

HERE = Path(__file__).parent
TONES = {"en": [(300, "1 2 3"), (500, "4 5"), (700, "6 7 8"), (900, "9 0")], "de": [(400, "2 4"), (800, "3 1 3")]}
COLOURS = [((220, 30, 30), "a red square"), ((30, 200, 30), "a green square"), ((30, 30, 220), "a blue square")]
TEXT = [("Say hello.", "hello"), ("Count to three.", "1 2 3")]


def tone(freq: float, seconds: float = 0.4, rate: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp)
        lines = []
        for lang, tones in TONES.items():
            for i, (freq, text) in enumerate(tones):
                sf.write(src / f"{lang}{i}.flac", tone(freq), 8000)
                lines.append(
                    {
                        "key": f"tone-{lang}-{i}",
                        "audio": f"{lang}{i}.flac",
                        "response": text,
                        "task": "asr",
                        "lang": lang,
                    }
                )
        for i, (rgb, caption) in enumerate(COLOURS):
            Image.new("RGB", (32, 32), rgb).save(src / f"c{i}.png")
            lines.append(
                {"key": f"colour-{i}", "image": f"c{i}.png", "response": caption, "task": "caption", "lang": "en"}
            )
        for i, (prompt, answer) in enumerate(TEXT):
            lines.append({"key": f"text-{i}", "prompt": prompt, "response": answer, "task": "chat", "lang": "en"})
        manifest = src / "manifest.jsonl"
        manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
        out = HERE / "shards"
        shutil.rmtree(out, ignore_errors=True)
        stats = write_shards(manifest, out, max_count=6)
        media = HERE / "media"
        media.mkdir(exist_ok=True)
        shutil.copy(src / "en0.flac", media / "tone.flac")
        shutil.copy(src / "c0.png", media / "red.png")
    print(json.dumps(stats))
    return 0 if stats["written"] == len(lines) else 1


if __name__ == "__main__":
    sys.exit(main())
