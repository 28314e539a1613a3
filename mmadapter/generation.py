"""Decoding settings of ``mmadapter infer`` and ``mmadapter eval`` (and of a training run's ``val_metric``):
:class:`GenerationOptions`, checked when made, and the command-line arguments that set them."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any

from mmadapter.limits import positive

__all__ = ["GenerationOptions", "add_generation_arguments", "generation_options"]


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding settings; greedy by default, sampling when ``temperature > 0``.

    Attributes:
        max_new_tokens: Tokens generated at most per answer.
        temperature: Softmax temperature; 0 means greedy (or beam) search.
        top_p: Nucleus sampling mass (only when sampling).
        num_beams: Beam search width (1: no beam search).
        repetition_penalty: Hugging Face's repetition penalty (1: none).
        seed: Batch ``i`` samples from torch's generators seeded with ``seed + i`` in a forked RNG state, so
            answers are reproducible for a given batch size and the caller's RNG (e.g. a trainer's) is untouched.
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    num_beams: int = 1
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be ≥ 1, not {self.max_new_tokens}")
        if not 0 <= self.temperature < math.inf:
            problems.append(f"temperature must be ≥ 0 and finite, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], not {self.top_p}")
        if self.num_beams < 1:
            problems.append(f"num_beams must be ≥ 1, not {self.num_beams}")
        if not 0 < self.repetition_penalty < math.inf:
            problems.append(f"repetition_penalty must be > 0 and finite, not {self.repetition_penalty}")
        if problems:
            raise ValueError("bad generation options: " + "; ".join(problems))

    def generate_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`MultimodalLM.generate` (Hugging Face ``generate``)."""
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "repetition_penalty": self.repetition_penalty,
            "do_sample": self.temperature > 0,
        }
        if self.temperature > 0:
            kwargs |= {"temperature": self.temperature, "top_p": self.top_p}
        return kwargs


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by ``mmadapter infer`` and ``mmadapter eval``: batching, device, recipe overrides
    and decoding."""
    defaults = GenerationOptions()
    parser.add_argument("--batch-size", type=positive(int), default=8, help="items generated together (default: 8)")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a change to the artefact's recipe at load time, e.g. model.llm.name_or_path=/new/place (repeatable)",
    )
    g = parser.add_argument_group("generation")
    g.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens, help="tokens per answer at most")
    g.add_argument("--temperature", type=float, default=defaults.temperature, help="> 0 samples; 0 is greedy")
    g.add_argument("--top-p", type=float, default=defaults.top_p, help="nucleus mass when sampling")
    g.add_argument("--num-beams", type=int, default=defaults.num_beams, help="beam search width")
    g.add_argument("--repetition-penalty", type=float, default=defaults.repetition_penalty, help="1 is none")
    g.add_argument("--seed", type=int, default=None, help="seed for sampling")


def generation_options(args: argparse.Namespace) -> GenerationOptions:
    """The :class:`GenerationOptions` of parsed arguments (see :func:`add_generation_arguments`)."""
    return GenerationOptions(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        num_beams=args.num_beams,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )
