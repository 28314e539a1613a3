"""Instruction data for the offline demo: the synthetic speech and images asked about in many ways.

The demo's instruction-tuning stage trains on these lines: the same audio and image files as the plain sets
(:mod:`mmadapter.data.synthetic`), each asked with one of several phrasings of its task, and for images also
a question about the picture (how many shapes, the colour or the kind of the left one; task ``vqa``). One
line in four keeps the task's default prompt, so that what alignment taught is kept. Every choice is drawn
from a generator seeded by the seed and the line's key, so the lines do not depend on their order.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

__all__ = ["ASR_PROMPTS", "CAPTION_PROMPTS", "QUESTIONS", "instruct_lines"]

ASR_PROMPTS: tuple[str, ...] = (
    "<audio> Write down the digits you hear.",
    "Which digits are spoken? <audio>",
    "Listen and type the number: <audio>",
)
CAPTION_PROMPTS: tuple[str, ...] = (
    "<image> What is in this picture?",
    "Caption this image: <image>",
    "Name the shapes you see, from left to right: <image>",
)
NUMBERS = ("zero", "one", "two")
# A question about the picture and how its answer follows from the shapes, left to right.
QUESTIONS: tuple[tuple[str, Any], ...] = (
    ("How many shapes are in the image? <image>", lambda objects: NUMBERS[len(objects)]),
    ("What colour is the shape on the left? <image>", lambda objects: objects[0]["colour"]),
    ("Which shape is on the left? <image>", lambda objects: objects[0]["shape"]),
)
KEEP_DEFAULT = 0.25


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def instruct_lines(lines: Iterable[Mapping[str, Any]], seed: int) -> Iterator[dict[str, Any]]:
    """One instruction line per manifest line of a plain set (task ``asr`` or ``caption``).

    Raises:
        ValueError: a line of another task (the message names its key).
    """
    for line in lines:
        rng = _rng(seed, line["key"])
        out = {k: v for k, v in line.items() if k != "prompt"}
        if rng.random() < KEEP_DEFAULT:
            yield out
        elif line["task"] == "asr":
            yield out | {"prompt": ASR_PROMPTS[int(rng.integers(len(ASR_PROMPTS)))]}
        elif line["task"] == "caption":
            kind = int(rng.integers(len(CAPTION_PROMPTS) + len(QUESTIONS)))
            if kind < len(CAPTION_PROMPTS):
                yield out | {"prompt": CAPTION_PROMPTS[kind]}
            else:
                question, answer = QUESTIONS[kind - len(CAPTION_PROMPTS)]
                yield out | {"task": "vqa", "prompt": question, "response": answer(line["objects"])}
        else:
            raise ValueError(f"{line['key']}: no instruction phrasings for task {line['task']!r}")
