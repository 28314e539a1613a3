"""Images for the offline demo: one or two coloured shapes on a plain light background, with their caption.

PNG, 64×64. The caption names the shapes left to right: ``"a red circle and a blue square"``. Shapes never
overlap horizontally, so the order is unambiguous. Planned from a seed before anything is drawn.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "COLOURS",
    "IMAGE_SIZE",
    "SHAPES",
    "ImagePlan",
    "ShapeItem",
    "caption",
    "plan_images",
    "render_image",
    "shape_mask",
    "write_image",
]

IMAGE_SIZE = 64
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 200, 20),
    "purple": (140, 40, 180),
}
BACKGROUNDS: tuple[tuple[int, int, int], ...] = ((255, 255, 255), (236, 236, 236), (247, 241, 226), (228, 236, 246))
SHAPE_SIZE = (18, 28)  # bounding-box side in pixels
TWO_SHAPES = 0.7  # fraction of images with two shapes
_SUPERSAMPLE = 4  # draw at 4× and downsample: anti-aliased edges


@dataclass(frozen=True)
class ShapeItem:
    """One shape: kind, colour name, centre (x, y) and bounding-box side, in pixels of the final image."""

    shape: str
    colour: str
    x: int
    y: int
    size: int


@dataclass(frozen=True)
class ImagePlan:
    """One planned image: its shapes left to right and its background colour."""

    key: str
    objects: tuple[ShapeItem, ...]
    background: tuple[int, int, int]

    @property
    def caption(self) -> str:
        return caption(self.objects)


def caption(objects: Iterable[ShapeItem]) -> str:
    """``"a red circle and a blue square"``: the shapes named from left to right (by centre x)."""
    ordered = sorted(objects, key=lambda o: o.x)
    return " and ".join(f"a {o.colour} {o.shape}" for o in ordered)


def plan_images(count: int, seed: int) -> list[ImagePlan]:
    """``count`` images of one or two shapes, drawn from a generator seeded by ``seed``."""
    rng = np.random.default_rng([seed, 1000])
    colours = list(COLOURS)
    out = []
    for i in range(count):
        n = 2 if rng.random() < TWO_SHAPES else 1
        while True:  # two shapes must not overlap horizontally, so that left and right are clear
            objects = []
            for _ in range(n):
                size = int(rng.integers(SHAPE_SIZE[0], SHAPE_SIZE[1] + 1))
                lo, hi = size // 2 + 2, IMAGE_SIZE - size // 2 - 2
                objects.append(
                    ShapeItem(
                        shape=str(rng.choice(SHAPES)),
                        colour=colours[int(rng.integers(len(colours)))],
                        x=int(rng.integers(lo, hi + 1)),
                        y=int(rng.integers(lo, hi + 1)),
                        size=size,
                    )
                )
            if n == 1 or abs(objects[0].x - objects[1].x) >= (objects[0].size + objects[1].size) // 2 + 3:
                break
        background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
        out.append(ImagePlan(f"img-{i:05d}", tuple(sorted(objects, key=lambda o: o.x)), background))
    return out


def _outline(item: ShapeItem) -> tuple[str, list[tuple[float, float]]]:
    """How PIL draws ``item`` at the supersampled scale: ``("ellipse" | "polygon", points)``."""
    s = _SUPERSAMPLE
    cx, cy, r = item.x * s, item.y * s, item.size * s / 2
    if item.shape == "circle":
        return "ellipse", [(cx - r, cy - r), (cx + r, cy + r)]
    if item.shape == "square":
        return "polygon", [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if item.shape == "triangle":
        return "polygon", [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if item.shape == "diamond":
        return "polygon", [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    raise ValueError(f"unknown shape {item.shape!r}; known: {', '.join(SHAPES)}")


def render_image(plan: ImagePlan) -> Image.Image:
    """The RGB image of ``plan``, ``IMAGE_SIZE`` pixels square."""
    big = Image.new("RGB", (IMAGE_SIZE * _SUPERSAMPLE,) * 2, plan.background)
    draw = ImageDraw.Draw(big)
    for item in plan.objects:
        kind, points = _outline(item)
        if kind == "ellipse":
            draw.ellipse(points, fill=COLOURS[item.colour])
        else:
            draw.polygon(points, fill=COLOURS[item.colour])
    return big.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)


def shape_mask(item: ShapeItem) -> np.ndarray:
    """``(IMAGE_SIZE, IMAGE_SIZE)`` float coverage in [0, 1] of each pixel by ``item`` alone."""
    big = Image.new("L", (IMAGE_SIZE * _SUPERSAMPLE,) * 2, 0)
    kind, points = _outline(item)
    draw = ImageDraw.Draw(big)
    if kind == "ellipse":
        draw.ellipse(points, fill=255)
    else:
        draw.polygon(points, fill=255)
    return np.asarray(big.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX), dtype=np.float32) / 255.0


def write_image(plan: ImagePlan, path: Path | str) -> None:
    render_image(plan).save(path, format="PNG", optimize=False)
