"""JSONL manifests: one sample a line, validated into a :class:`ManifestRecord` (DESIGN.md §5).

A line::

    {"key": "utt-001", "audio": "wav/utt-001.flac", "task": "asr", "lang": "en", "response": "hello"}
    {"key": "img_7", "image": ["a.jpg", "b.png"], "messages": [
        {"role": "user", "content": "<image> and <image>: what differs?"},
        {"role": "assistant", "content": "The colour."}]}

``key``: letters, digits, ``_`` and ``-`` (webdataset splits member names at the first dot). ``audio`` /
``image`` / ``graph``: a path relative to the manifest, or a list of them, in placeholder order. Text:
``messages`` (chat turns; placeholders only in user turns, one per item, in item order) or the short
form ``prompt`` + ``response``, where a missing ``prompt`` is the task's entry in :data:`DEFAULT_PROMPTS`.
Every other field (``task``, ``lang``, free metadata) is kept as metadata.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmadapter.config import MODALITIES
from mmadapter.data.audio import AUDIO_EXTENSIONS
from mmadapter.data.graph import GRAPH_EXTENSION
from mmadapter.data.image import IMAGE_EXTENSIONS
from mmadapter.data.skips import BadSample

__all__ = [
    "DEFAULT_PROMPTS",
    "MEDIA_EXTENSIONS",
    "MODALITY_PLACEHOLDERS",
    "ManifestRecord",
    "check_placeholders",
    "check_unicode",
    "count_placeholders",
    "iter_manifest_lines",
    "media_extension",
    "normalise",
    "parse_record",
    "read_media",
]

MODALITY_PLACEHOLDERS = {modality: f"<{modality}>" for modality in MODALITIES}
MEDIA_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "audio": AUDIO_EXTENSIONS,
    "image": IMAGE_EXTENSIONS,
    "graph": (GRAPH_EXTENSION,),
}
# The prompt of a short-form line that has none, by task.
DEFAULT_PROMPTS: dict[str, str] = {
    "asr": "Transcribe the audio: <audio>",
    "audio_caption": "Describe the audio: <audio>",
    "caption": "Describe the image: <image>",
    "graph_caption": "Describe the graph: <graph>",
}
ROLES = ("system", "user", "assistant")
_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TEXT_FIELDS = ("messages", "prompt", "response")


@dataclass(frozen=True)
class ManifestRecord:
    """One validated manifest line.

    Attributes:
        key: The sample key.
        messages: Chat turns in normalised form.
        media: Per modality (only those present), the item paths in placeholder order.
        meta: ``task``, ``lang`` and free metadata: everything but key, media and text.
        source: ``MANIFEST:LINE``, for errors.
    """

    key: str
    messages: list[dict[str, str]]
    media: dict[str, list[Path]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    def item_counts(self) -> dict[str, int]:
        return {modality: len(self.media.get(modality, ())) for modality in MODALITIES}


def count_placeholders(messages: Sequence[Mapping[str, str]]) -> dict[str, int]:
    """Placeholders per modality in the user turns."""
    text = "".join(m["content"] for m in messages if m["role"] == "user")
    return {modality: text.count(holder) for modality, holder in MODALITY_PLACEHOLDERS.items()}


def check_placeholders(
    messages: Sequence[Mapping[str, str]], items: Mapping[str, int], key: str | None, source: str | None = None
) -> None:
    """Check that each modality has exactly one user-turn placeholder per item and none elsewhere.

    Raises:
        BadSample: ``placeholder_mismatch`` naming the modality and both counts.
    """
    for m in messages:
        if m["role"] != "user" and any(holder in m["content"] for holder in MODALITY_PLACEHOLDERS.values()):
            raise BadSample("placeholder_mismatch", key, f"a {m['role']} turn holds a placeholder", source)
    found = count_placeholders(messages)
    for modality in MODALITIES:
        if found[modality] != items.get(modality, 0):
            raise BadSample(
                "placeholder_mismatch",
                key,
                f"{found[modality]} {MODALITY_PLACEHOLDERS[modality]} placeholder(s) for {items.get(modality, 0)} "
                f"{modality} item(s)",
                source,
            )


def _messages(value: Any, key: str | None, source: str | None, require_response: bool) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise BadSample("bad_json", key, "messages must be a non-empty list of {role, content} turns", source)
    turns = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict) or turn.get("role") not in ROLES or not isinstance(turn.get("content"), str):
            raise BadSample(
                "bad_json", key, f"messages[{i}] must be {{role: {'|'.join(ROLES)}, content: str}}: {turn!r}", source
            )
        turns.append({"role": turn["role"], "content": turn["content"]})
    if require_response and not any(t["role"] == "assistant" for t in turns):
        raise BadSample("bad_json", key, "messages have no assistant turn to learn from", source)
    return turns


def normalise(
    record: Mapping[str, Any], key: str | None = None, source: str | None = None, require_response: bool = True
) -> list[dict[str, str]]:
    """The chat turns of a manifest line or shard ``.json``, short form expanded.

    Args:
        record: The parsed line: ``messages``, or ``response`` with an optional ``prompt`` (default: the
            ``task``'s entry in :data:`DEFAULT_PROMPTS`).
        key: The sample key, for errors.
        source: Where the record came from, for errors.
        require_response: Demand an answer (training); inference manifests may carry only a prompt.

    Returns:
        ``[{"role", "content"}, ...]``.

    Raises:
        BadSample: ``bad_json`` for missing or mistyped text.
    """
    if "messages" in record:
        if "prompt" in record or "response" in record:
            raise BadSample("bad_json", key, "give either messages or prompt + response, not both", source)
        return _messages(record["messages"], key, source, require_response)
    prompt = record.get("prompt")
    if prompt is None:
        task = record.get("task")
        if task not in DEFAULT_PROMPTS:
            raise BadSample(
                "bad_json",
                key,
                f"no messages and no prompt, and task {task!r} has no default prompt "
                f"(defaults exist for {', '.join(DEFAULT_PROMPTS)})",
                source,
            )
        prompt = DEFAULT_PROMPTS[task]
    if not isinstance(prompt, str):
        raise BadSample("bad_json", key, f"prompt must be a string, not {type(prompt).__name__}", source)
    response = record.get("response")
    if response is None and require_response:
        raise BadSample("bad_json", key, "no messages and no response", source)
    if response is not None and not isinstance(response, str):
        raise BadSample("bad_json", key, f"response must be a string, not {type(response).__name__}", source)
    turns = [{"role": "user", "content": prompt}]
    if response is not None:
        turns.append({"role": "assistant", "content": response})
    return turns


def check_unicode(record: Any, key: str | None, source: str | None = None) -> None:
    """Refuse parsed JSON whose strings hold a lone surrogate: JSON's ``\\udcff`` escapes parse, but the text
    is not Unicode, and encoding it (a shard member, a tokenizer) would fail later, far from the line.

    Raises:
        BadSample: ``bad_json`` naming the character.
    """
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        bad = e.object[e.start : e.end]
        raise BadSample("bad_json", key, f"text holds {bad!r}, a lone surrogate: not valid Unicode", source) from e


def media_extension(path: Path | str, modality: str) -> str | None:
    """The member extension a media file is stored under (``flac``, ``graph.npz``), or ``None`` if not allowed."""
    name = Path(path).name.lower()
    return next((ext for ext in MEDIA_EXTENSIONS[modality] if name.endswith("." + ext)), None)


def _paths(value: Any, modality: str, root: Path, key: str, source: str | None) -> list[Path]:
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) and v for v in values):
        raise BadSample("bad_json", key, f"{modality} must be a path or a list of paths: {value!r}", source)
    for v in values:
        if media_extension(v, modality) is None:
            allowed = ", ".join("." + ext for ext in MEDIA_EXTENSIONS[modality])
            raise BadSample("bad_json", key, f"{modality} file {v!r} is not one of {allowed}", source)
    return [root / v for v in values]


def parse_record(
    line: str | bytes, root: Path | str, source: str | None = None, require_response: bool = True
) -> ManifestRecord:
    """Validate one manifest line (the file system is not touched; see :func:`read_media`).

    Args:
        line: The JSON text of the line.
        root: The manifest's directory: media paths are relative to it.
        source: ``MANIFEST:LINE``, for errors.
        require_response: Demand an answer (training, shards); inference manifests may carry only a prompt.

    Raises:
        BadSample: ``bad_json`` (not UTF-8 JSON, not an object, bad key, bad media field, missing or
            mistyped text, text that is not valid Unicode), ``placeholder_mismatch`` (placeholder counts
            differ from item counts).
    """
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadSample("bad_json", None, f"not JSON: {e}", source) from e
    if not isinstance(record, dict):
        raise BadSample("bad_json", None, f"a line must be a JSON object, not {type(record).__name__}", source)
    key = record.get("key")
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise BadSample("bad_json", None, f"key {key!r} must be letters, digits, '_' and '-' only", source)
    check_unicode(record, key, source)
    media = {m: _paths(record[m], m, Path(root), key, source) for m in MODALITIES if record.get(m) not in (None, [])}
    messages = normalise(record, key, source, require_response)
    check_placeholders(messages, {m: len(paths) for m, paths in media.items()}, key, source)
    meta = {k: v for k, v in record.items() if k not in ("key", *MODALITIES, *_TEXT_FIELDS)}
    for name in ("task", "lang"):
        if name in meta and not isinstance(meta[name], str):
            raise BadSample("bad_json", key, f"{name} must be a string: {meta[name]!r}", source)
    return ManifestRecord(key, messages, media, meta, source)


def read_media(record: ManifestRecord) -> dict[str, list[bytes]]:
    """The bytes of every media file of a record, per modality in item order.

    Raises:
        BadSample: ``missing_file`` naming the path when one cannot be read.
    """
    out: dict[str, list[bytes]] = {}
    for modality, paths in record.media.items():
        out[modality] = []
        for path in paths:
            try:
                out[modality].append(path.read_bytes())
            except OSError as e:  # missing, a directory, unreadable
                detail = f"{modality} file {path}: {e.strerror or e}"
                raise BadSample("missing_file", record.key, detail, record.source) from e
    return out


def iter_manifest_lines(path: Path | str) -> Iterator[tuple[str, bytes]]:
    """``(source, line)`` for every non-blank line, as bytes so that a bad encoding fails only its line."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                yield f"{path}:{number}", line
