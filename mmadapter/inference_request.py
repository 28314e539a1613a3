"""The unit of inference: a :class:`Request` (one item to answer, or why it cannot be), and the prompt and
reference rules every input reader applies (see :mod:`mmadapter.inference_inputs`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmadapter.config import MODALITIES
from mmadapter.data.manifest import DEFAULT_PROMPTS, MODALITY_PLACEHOLDERS
from mmadapter.data.skips import BadSample

__all__ = ["MODALITY_TASKS", "Request", "build_prompt", "expand_default", "split_reference"]

# The task whose default prompt an item of each modality gets when no prompt is given.
MODALITY_TASKS: dict[str, str] = {"audio": "asr", "image": "caption", "graph": "graph_caption"}


@dataclass
class Request:
    """One item to answer, or the reason it cannot be.

    Attributes:
        key: The item key (``None`` only for a failure that has none, e.g. an unparsable manifest line).
        messages: The prompt turns (the reference turn removed).
        items: Per modality, decoded items in placeholder order: ``(t,)`` float32 16 kHz waveforms, RGB PIL
            images, graph array mappings.
        reference: The expected answer, when the input has one.
        lang: The sample's ``lang``, when known.
        task: The sample's ``task``, when known.
        error: Why the item cannot be answered; when set, only ``key``, ``lang`` and ``task`` may be filled.
        source: Where the items came from, for errors found only once the model transforms them (a graph of
            the wrong feature width): the media files, ``MANIFEST:LINE`` or the shard.
        file: A folder item's file, named in its output line (its key is only derived from the name).
    """

    key: str | None
    messages: list[dict[str, str]] = field(default_factory=list)
    items: dict[str, list[Any]] = field(default_factory=dict)
    reference: str | None = None
    lang: str | None = None
    task: str | None = None
    error: str | None = None
    source: str | None = None
    file: str | None = None

    @classmethod
    def failed(
        cls, key: str | None, error: BaseException | str, lang: str | None = None, task: str | None = None
    ) -> Request:
        """A request that only reports ``error`` (a :class:`BadSample` reads ``sample 'k' (where): reason: …``)."""
        if isinstance(error, BaseException) and not isinstance(error, BadSample):
            error = f"{type(error).__name__}: {error}"
        return cls(key=key, lang=lang, task=task, error=str(error))


def build_prompt(prompt: str | None, counts: Mapping[str, int]) -> str:
    """The user prompt for items counted per modality (see the module docstring for the rules).

    Raises:
        ValueError: neither a prompt nor any item.
    """
    present = [m for m in MODALITIES if counts.get(m, 0) > 0]
    if prompt is None:
        if not present:
            raise ValueError("nothing to answer: give a prompt or at least one audio, image or graph item")
        return " ".join(expand_default(DEFAULT_PROMPTS[MODALITY_TASKS[m]], counts) for m in present)
    missing = [
        MODALITY_PLACEHOLDERS[m] for m in present if MODALITY_PLACEHOLDERS[m] not in prompt for _ in range(counts[m])
    ]
    return f"{' '.join(missing)}\n{prompt}" if missing else prompt


def expand_default(prompt: str, counts: Mapping[str, int]) -> str:
    """A default prompt with its one placeholder of a modality repeated once per item of that modality."""
    for modality, holder in MODALITY_PLACEHOLDERS.items():
        if prompt.count(holder) == 1 and counts.get(modality, 0) > 1:
            prompt = prompt.replace(holder, " ".join([holder] * counts[modality]))
    return prompt


def split_reference(
    messages: Sequence[Mapping[str, str]], key: str | None = None, source: str | None = None
) -> tuple[list[dict[str, str]], str | None]:
    """``(prompt turns, reference)``: a final assistant turn is the reference (``None`` without one).

    Raises:
        BadSample: ``bad_json`` when no user turn is left to answer.
    """
    turns = [dict(m) for m in messages]
    reference = turns.pop()["content"] if turns and turns[-1]["role"] == "assistant" else None
    if not any(t["role"] == "user" for t in turns):
        raise BadSample("bad_json", key, "no user turn before the answer: nothing to prompt with", source)
    return turns, reference
