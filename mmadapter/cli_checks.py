"""Checks of ``mmadapter infer`` / ``eval`` arguments made before the model is loaded, so that a mistake costs
no model load, and no finished work is lost to an output path that cannot be written."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from mmadapter.artefact import rename_target

__all__ = ["check_device", "check_output", "check_text"]


def check_device(spec: str | None) -> None:
    """``--device``: a torch device this machine has (``None``: the default, always there).

    Raises:
        ValueError: not a device name, or a CUDA device that is not here.
    """
    if spec is None:
        return
    try:
        device = torch.device(spec)
    except RuntimeError as e:
        raise ValueError(f"--device {spec!r} is not a torch device (e.g. cpu, cuda, cuda:1): {e}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {spec!r}: this machine has no CUDA device; use cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(f"--device {spec!r}: this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})")


def check_text(text: str | None, what: str) -> None:
    """Text from the command line is Unicode: bytes that are not UTF-8 arrive as lone surrogates.

    Raises:
        ValueError: ``text`` holds one.
    """
    if text is None:
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} is not valid UTF-8 text (byte {e.object[e.start : e.end]!r} at {e.start})") from None


def check_output(path: Path | None, what: str, inputs: Sequence[str | Path] = ()) -> None:
    """An output file that can be written once the work is done: not a directory, under directories, and
    none of the inputs.

    Raises:
        ValueError: naming the problem.
    """
    if path is None:
        return
    path = rename_target(path) or path  # a symbolic link is written through: check where it points
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory; name a file in it, e.g. {path / 'out.jsonl'}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{what} {path}: {parent} is a file, not a directory")
            break
    if not path.exists():
        return
    for source in inputs:
        if Path(source).is_file() and os.path.samefile(source, path):
            raise ValueError(f"{what} {path} is also an input ({source}): writing it would destroy the input")
