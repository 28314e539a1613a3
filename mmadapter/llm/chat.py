"""Conversations to token ids, with placeholder slots for modality items and labels on assistant turns.

Labels come from the chat template itself: for each assistant turn the conversation is rendered up to that
turn with a generation prompt and up to its end; the characters in between are that turn's answer. This
works with every template, with or without ``{% generation %}`` markers. Placeholders (``<audio>``,
``<image>``, ``<graph>``) in the rendered text become ``n`` slots each (the item's projected length) whose
ids are the pad id and whose ``token_modality`` names the modality that fills them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from transformers import PreTrainedTokenizerBase

__all__ = ["IGNORE_INDEX", "MODALITY_IDS", "PLACEHOLDERS", "EncodedChat", "PlaceholderMismatch", "encode_chat"]

IGNORE_INDEX = -100
MODALITY_IDS = {"text": 0, "audio": 1, "image": 2, "graph": 3}
PLACEHOLDERS = {"<audio>": "audio", "<image>": "image", "<graph>": "graph"}
_PLACEHOLDER_RE = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))


class PlaceholderMismatch(ValueError):
    """The placeholders of a conversation do not match its items (skip reason ``placeholder_mismatch``)."""


@dataclass
class EncodedChat:
    """One tokenized conversation: equal-length lists of ids, labels and token modalities."""

    input_ids: list[int]
    labels: list[int]
    token_modality: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Mapping[str, Any]],
    item_lengths: Mapping[str, Sequence[int]] | None = None,
    *,
    add_generation_prompt: bool = False,
) -> EncodedChat:
    """Tokenize a conversation, expanding placeholders and labelling exactly the assistant turns.

    Args:
        tokenizer: A tokenizer with a chat template.
        messages: Chat turns ``{"role", "content"}``; user content holds placeholders in item order.
        item_lengths: Per modality, the number of slots of each item in order (its ``output_length``).
        add_generation_prompt: Append the assistant prefix (inference); no labels are produced then.

    Raises:
        PlaceholderMismatch: a modality has a different number of placeholders than items.
        ValueError: the template is not prefix-stable, so assistant spans cannot be found.
    """
    item_lengths = item_lengths or {}
    msgs = [dict(m) for m in messages]
    full = _render(tokenizer, msgs, add_generation_prompt)
    spans = [] if add_generation_prompt else _assistant_spans(tokenizer, msgs, full)

    # Cut the text at every span edge and around every placeholder; tokenize the pieces separately so that
    # label boundaries fall on token boundaries.
    cuts = {0, len(full)} | {c for span in spans for c in span}
    holders = list(_PLACEHOLDER_RE.finditer(full))
    for m in holders:
        cuts |= {m.start(), m.end()}
    bounds = sorted(cuts)
    holder_at = {m.start(): PLACEHOLDERS[m.group()] for m in holders}
    used = {modality: 0 for modality in PLACEHOLDERS.values()}
    for modality, lengths in item_lengths.items():
        found = sum(1 for m in holders if PLACEHOLDERS[m.group()] == modality)
        if found != len(lengths):
            raise PlaceholderMismatch(f"{found} <{modality}> placeholder(s) for {len(lengths)} {modality} item(s)")
    for modality in set(holder_at.values()) - set(item_lengths):
        raise PlaceholderMismatch(f"<{modality}> placeholder(s) but no {modality} item")

    out = EncodedChat([], [], [])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for start, end in pairwise(bounds):
        if start == end:
            continue
        if start in holder_at:
            modality = holder_at[start]
            n = item_lengths[modality][used[modality]]
            used[modality] += 1
            out.input_ids += [pad_id] * n
            out.labels += [IGNORE_INDEX] * n
            out.token_modality += [MODALITY_IDS[modality]] * n
            continue
        ids = tokenizer(full[start:end], add_special_tokens=False)["input_ids"]
        labelled = any(s <= start and end <= e for s, e in spans)
        out.input_ids += ids
        out.labels += ids if labelled else [IGNORE_INDEX] * len(ids)
        out.token_modality += [MODALITY_IDS["text"]] * len(ids)
    return out


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _assistant_spans(
    tokenizer: PreTrainedTokenizerBase, msgs: list[dict[str, Any]], full: str
) -> list[tuple[int, int]]:
    spans = []
    for i, msg in enumerate(msgs):
        if msg["role"] != "assistant":
            continue
        before = _render(tokenizer, msgs[:i], True) if i else _render(tokenizer, [], True)
        upto = _render(tokenizer, msgs[: i + 1], False)
        if not (full.startswith(upto) and upto.startswith(before)):
            raise ValueError(
                f"the chat template is not prefix-stable at turn {i}: rendering the conversation up to an "
                "assistant turn does not extend the rendering before it, so the answer cannot be labelled"
            )
        spans.append((len(before), len(upto)))
    return spans
