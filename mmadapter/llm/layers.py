"""Finding the decoder layers of a causal LM and the linear layers inside them, by module name."""

from __future__ import annotations

import logging
from typing import Literal

from torch import nn
from transformers import PreTrainedModel

__all__ = ["decoder_layers", "named_linears", "select_layers"]

logger = logging.getLogger(__name__)


def decoder_layers(llm: PreTrainedModel) -> nn.ModuleList:
    """The decoder's transformer blocks (``get_decoder().layers``: Llama, Qwen, Mistral, Gemma, …).

    Raises:
        ValueError: the model's decoder has no ``layers`` list.
    """
    layers = getattr(llm.get_decoder(), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(llm).__name__}: its decoder has no `layers` ModuleList, so adapters cannot find it")
    return layers


def named_linears(
    layer: nn.Module, targets: list[str] | Literal["all-linear"], key: str, kinds: tuple[type, ...] = (nn.Linear,)
) -> dict[str, nn.Module]:
    """Modules of ``layer`` (relative dotted path → module) of a type in ``kinds`` whose last name component
    is in ``targets`` (``all-linear``: all of them); outermost match wins, children of a match are skipped.

    Raises:
        ValueError: a target matches nothing (the message names the recipe ``key`` and what is available).
    """
    found: dict[str, nn.Module] = {}
    for path, module in layer.named_modules():
        if not path or not isinstance(module, kinds) or any(path.startswith(f"{p}.") for p in found):
            continue
        if targets == "all-linear" or path.rsplit(".", 1)[-1] in targets:
            found[path] = module
    wanted = [] if targets == "all-linear" else targets
    available = sorted({p.rsplit(".", 1)[-1] for p, m in layer.named_modules() if isinstance(m, kinds)})
    missing = [t for t in wanted if not any(p.rsplit(".", 1)[-1] == t for p in found)]
    if missing or not found:
        raise ValueError(
            f"{key}: {missing or targets} match(es) no linear layer of the decoder layers; available: {available}"
        )
    return found


def select_layers(layers: int | list[int] | None, depth: int, key: str) -> list[int]:
    """Indices chosen by a recipe: all (``None``), the top ``L`` (an int; all of them when the model has fewer,
    e.g. a recipe for a 32-layer LLM run on a tiny test LLM) or explicit indices.

    Raises:
        ValueError: an index outside ``[0, depth)``.
    """
    if layers is None:
        return list(range(depth))
    if isinstance(layers, int):
        if layers > depth:
            logger.warning("%s=%d but the LLM has %d decoder layers: using all of them", key, layers, depth)
        return list(range(max(0, depth - layers), depth))
    bad = [i for i in layers if not 0 <= i < depth]
    if bad:
        raise ValueError(f"{key}: indices {bad} are outside the model's decoder layers 0..{depth - 1}")
    return sorted(layers)
