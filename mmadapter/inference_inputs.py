"""What inference reads: single files, folders, JSONL manifests and webdataset shards, as :class:`Request` s.

Every source yields one :class:`Request` per item, lazily and in input order, so that only one batch of
decoded media is held at a time. An item that cannot be read (missing file, corrupt audio or image, bad
JSON line, placeholder mismatch, media above the size limits) becomes a request that carries its ``error``
instead of raising, so one bad item never stops the others. A truncated shard yields one failed request
with no key. The limits are :data:`~mmadapter.limits.DEFAULT_LIMITS` unless a reader is given others.

Prompts (folders, single files and manifest lines in the short form): with no prompt, each modality's
default from :data:`~mmadapter.data.manifest.DEFAULT_PROMPTS` (``asr`` for audio, ``caption`` for images,
``graph_caption`` for graphs); a prompt without a placeholder for a modality that has items gets one
placeholder per item prepended (``"<image>\\nWhat colour is it?"``, LLaVA's layout). A manifest line's
``messages`` are never changed.

References: when a conversation ends with an assistant turn, that turn is the reference and the turns
before it are the prompt (so multi-turn chats are answered at their last assistant turn); a conversation
ending with a user turn is all prompt and has no reference.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import webdataset as wds

from mmadapter.config import MODALITIES
from mmadapter.data.manifest import (
    DEFAULT_PROMPTS,
    MEDIA_EXTENSIONS,
    check_placeholders,
    iter_manifest_lines,
    media_extension,
    parse_record,
    read_media,
)
from mmadapter.data.members import decode_item, decode_sample
from mmadapter.data.pipeline import expand_shards
from mmadapter.data.skips import BadSample, as_bad_sample
from mmadapter.data.tar_cuts import at_the_cut, marking_the_cut_end, truncated_tail
from mmadapter.inference_request import MODALITY_TASKS, Request, build_prompt, expand_default, split_reference
from mmadapter.limits import DEFAULT_LIMITS, MediaLimits

__all__ = [
    "MODALITY_TASKS",
    "Request",
    "build_prompt",
    "file_request",
    "first_requests",
    "folder_requests",
    "manifest_requests",
    "open_requests",
    "shard_requests",
    "split_reference",
]

_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_-]+")


def _read(path: Path, modality: str, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:  # missing, a directory, unreadable
        raise BadSample("missing_file", key, f"{modality} file {path}: {e.strerror or e}") from e


def _decode(media: Mapping[str, Sequence[tuple[str, bytes]]], limits: MediaLimits) -> dict[str, list[Any]]:
    return {m: [decode_item(m, data, name, limits) for name, data in pairs] for m, pairs in media.items() if pairs}


def file_request(
    key: str,
    media: Mapping[str, Sequence[Path | str]],
    prompt: str | None = None,
    limits: MediaLimits = DEFAULT_LIMITS,
) -> Request:
    """One request from media files on disk (single mode, folders).

    Args:
        key: The item key.
        media: Per modality, the file paths in placeholder order.
        prompt: The user prompt; ``None`` for the modality defaults. Placeholders are added where missing.
        limits: Media size limits; an item above one fails (``too_long``, ``too_large_image``, …).

    Returns:
        The request, or a failed one (missing file, undecodable media, placeholder mismatch).
    """
    counts = {m: len(paths) for m, paths in media.items()}
    try:
        messages = [{"role": "user", "content": build_prompt(prompt, counts)}]
        check_placeholders(messages, counts, key)
        data = {m: [(str(p), _read(Path(p), m, key)) for p in paths] for m, paths in media.items()}
        files = ", ".join(name for pairs in data.values() for name, _ in pairs)
        return Request(key, messages, _decode(data, limits), source=files or None)
    except BadSample as e:
        return Request.failed(key, e.with_key(key))
    except ValueError as e:
        return Request.failed(key, e)


def _media_kind(path: Path) -> tuple[str, str] | None:
    """``(modality, extension)`` of a media file name, or ``None`` for any other file."""
    return next(((m, ext) for m in MODALITIES if (ext := media_extension(path, m)) is not None), None)


def _unique_key(stem: str, seen: set[str]) -> str:
    base = _UNSAFE_KEY.sub("_", stem).strip("_") or "item"
    key, n = base, 1
    while key in seen:
        n += 1
        key = f"{base}-{n}"
    seen.add(key)
    return key


def folder_requests(
    folder: Path | str, prompt: str | None = None, limits: MediaLimits = DEFAULT_LIMITS
) -> Iterator[Request]:
    """One request per audio, image or graph file directly in ``folder``, sorted by file name.

    Keys are file stems with characters other than letters, digits, ``_`` and ``-`` replaced by ``_``
    (``-2``, ``-3``, … appended on collisions, e.g. ``a.flac`` and ``a.png``); each request's ``file`` names
    its file. Other files are ignored.

    Raises:
        ValueError: the folder holds no media file.
    """
    files = sorted((p for p in Path(folder).iterdir() if p.is_file() and _media_kind(p)), key=lambda p: p.name)
    if not files:
        known = ", ".join("." + ext for m in MODALITIES for ext in MEDIA_EXTENSIONS[m])
        raise ValueError(f"folder {folder} holds no audio, image or graph file ({known})")
    return _folder_requests(files, prompt, limits)


def _folder_requests(files: list[Path], prompt: str | None, limits: MediaLimits) -> Iterator[Request]:
    seen: set[str] = set()
    for path in files:
        kind = _media_kind(path)
        assert kind is not None
        modality, ext = kind
        key = _unique_key(path.name[: -len(ext) - 1], seen)
        request = file_request(key, {modality: [path]}, prompt, limits)
        request.file = str(path)
        yield request


def _with_prompt(line: bytes, prompt: str | None) -> bytes:
    """A short-form line's prompt completed: the line's own (or its task's default, or ``prompt``, or the
    modality defaults) with missing placeholders prepended. Other lines are returned unchanged."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return line  # parse_record reports it
    if not isinstance(record, dict) or "messages" in record:
        return line
    counts = {m: len(v) if isinstance(v, list) else int(bool(v)) for m in MODALITIES if (v := record.get(m))}
    task = record.get("task")
    default = DEFAULT_PROMPTS.get(task) if isinstance(task, str) else None
    own = record.get("prompt", None if default is None else expand_default(default, counts))
    if own is not None and not isinstance(own, str):
        return line
    try:
        record["prompt"] = build_prompt(own if own is not None else prompt, counts)
    except ValueError:
        return line
    return json.dumps(record).encode()


def manifest_requests(
    path: Path | str, prompt: str | None = None, limits: MediaLimits = DEFAULT_LIMITS
) -> Iterator[Request]:
    """One request per non-blank line of a JSONL manifest (DESIGN.md §5), in line order.

    Media paths are relative to the manifest. A line may hold ``messages`` (any number of turns and items)
    or the short form; its final assistant turn (or ``response``) is the reference, and ``lang`` and
    ``task`` are kept. ``prompt`` serves short-form lines that have neither a prompt nor a task default.

    Raises:
        FileNotFoundError: the manifest does not exist (bad lines become failed requests instead).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    return _manifest_requests(path, prompt, limits)


def _manifest_requests(path: Path, prompt: str | None, limits: MediaLimits) -> Iterator[Request]:
    for source, line in iter_manifest_lines(path):
        key = lang = task = None
        try:
            record = parse_record(_with_prompt(line, prompt), path.parent, source, require_response=False)
            key, lang, task = record.key, record.meta.get("lang"), record.meta.get("task")
            messages, reference = split_reference(record.messages, key, source)
            media = read_media(record)
            pairs = {m: list(zip(map(str, record.media[m]), datas, strict=True)) for m, datas in media.items()}
            items = _decode(pairs, limits)
        except BadSample as e:
            yield Request.failed(key or e.key, e.with_key(key, source), lang, task)
            continue
        yield Request(key, messages, items, reference, lang, task, source=source)


def shard_requests(spec: str | Sequence[str], limits: MediaLimits = DEFAULT_LIMITS) -> Iterator[Request]:
    """One request per sample of webdataset shards, read with our decoder (never webdataset's).

    Args:
        spec: A brace pattern (``shards/shard-{000000..000009}.tar``), a ``.tar`` path, or a list of them.
        limits: Media size limits; a sample above one becomes a failed request.

    Raises:
        FileNotFoundError: a local shard does not exist (a truncated one becomes a failed request).
    """
    return _shard_requests(expand_shards(spec), limits)


def _shard_requests(urls: list[str], limits: MediaLimits) -> Iterator[Request]:
    for url in urls:  # one read at a time, so that every read error belongs to the shard being read
        errors = _ReadErrors(url)
        cut = truncated_tail(url)
        if cut is not None:
            errors.handler(cut)
        samples = errors.noting(wds.tarfile_to_samples(handler=errors.handler)(iter([{"url": url}])))
        for raw in marking_the_cut_end(samples, errors.is_cut):  # one sample ahead, to know the last one
            if raw.pop(_AFTER_ERRORS):
                yield from errors.failed()
            yield _shard_request(raw, limits)
        yield from errors.failed()


_AFTER_ERRORS = "__after_errors__"


class _ReadErrors:
    """What went wrong reading one shard, as one failed request however many errors told it (webdataset
    reports a read error up to twice, and the tail check may have found the cut first)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.errors: list[BaseException] = []
        self.reported = False
        self.cut = False  # the tar is cut short (its last sample may have lost members)

    def handler(self, exc: BaseException) -> bool:
        self.errors.append(exc)
        bad = as_bad_sample(exc)
        self.cut |= bad is not None and bad.reason == "truncated_tar"
        return True

    def is_cut(self) -> bool:
        return self.cut

    def noting(self, samples: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """``samples``, each marked with whether an error came before it (so that reading ahead does not
        report an error before the samples read ahead of it)."""
        for raw in samples:
            raw[_AFTER_ERRORS] = bool(self.errors)
            yield raw

    def failed(self) -> Iterator[Request]:
        errors, self.errors = self.errors, []
        if errors and not self.reported:
            self.reported = True
            bad = as_bad_sample(errors[0], source=self.url)
            yield Request.failed(None, bad if bad is not None else errors[0])


def _shard_request(raw: Mapping[str, Any], limits: MediaLimits) -> Request:
    key = str(raw.get("__key__"))
    try:
        decoded = decode_sample(raw, limits=limits, require_response=False)
        messages, reference = split_reference(decoded["messages"], key, decoded["url"])
    except BadSample as e:
        return Request.failed(key, at_the_cut(raw, e))
    meta = decoded["meta"]
    items = {m: list(decoded[m]) for m in MODALITIES if decoded[m]}  # type: ignore[literal-required]
    lang, task = (value if isinstance(value, str) else None for value in (meta.get("lang"), meta.get("task")))
    return Request(key, messages, items, reference, lang, task, source=decoded["url"])


def open_requests(
    inputs: str | Path | Sequence[str | Path], prompt: str | None = None, limits: MediaLimits = DEFAULT_LIMITS
) -> Iterator[Request]:
    """The requests of ``--input``: a folder, a ``.jsonl`` manifest, or shards (``.tar`` paths, brace patterns).

    Args:
        inputs: One folder or manifest, or one or more shard specs.
        prompt: The prompt for folder items and short-form manifest lines without one (not for shards,
            whose samples carry their own).
        limits: Media size limits (``--max-pixels`` …); an item above one becomes a failed request.

    Raises:
        FileNotFoundError: the folder, manifest or a shard does not exist.
        ValueError: the input is none of the kinds above.
    """
    specs = [str(inputs)] if isinstance(inputs, str | Path) else [str(s) for s in inputs]
    if len(specs) == 1 and Path(specs[0]).is_dir():
        return folder_requests(specs[0], prompt, limits)
    if len(specs) == 1 and specs[0].endswith(".jsonl"):
        return _unique_keys(manifest_requests(specs[0], prompt, limits))
    if specs and all(s.endswith(".tar") or "{" in s for s in specs):
        return _unique_keys(shard_requests(specs, limits))
    raise ValueError(
        f"input {' '.join(specs)!r} is not a folder, a .jsonl manifest, or webdataset shards "
        "(.tar paths or a brace pattern such as shards/shard-{000000..000009}.tar)"
    )


def _unique_keys(requests: Iterable[Request]) -> Iterator[Request]:
    """Requests with a key seen before fail as ``bad_json`` (as ``mmadapter shard`` refuses them): their
    answers could not be told apart, and an evaluation would score the sample twice."""
    first: dict[str, str] = {}
    for request in requests:
        if request.key is not None and request.key in first:
            where = request.source or "a later item"
            bad = BadSample("bad_json", request.key, f"duplicate key, first at {first[request.key]}", where)
            yield Request.failed(request.key, bad, request.lang, request.task)
            continue
        if request.key is not None and request.error is None:  # a failed first item leaves the key free
            first[request.key] = request.source or "an earlier item"
        yield request


def first_requests(requests: Iterable[Request], n: int | None) -> Iterator[Request]:
    """The first ``n`` items of ``requests`` (all of them for ``None``), counted as a shard set's
    ``max_samples`` counts samples: an item that fails still takes its place, a failure that belongs to no
    item (a truncated shard, an unparsable manifest line) passes through without one. Reading stops at the
    ``n``-th item.

    Raises:
        ValueError: ``n`` is not positive.
    """
    if n is not None and n < 1:
        raise ValueError(f"max_samples must be positive, got {n}")
    return iter(requests) if n is None else _first(requests, n)


def _first(requests: Iterable[Request], n: int) -> Iterator[Request]:
    taken = 0
    for request in requests:
        yield request
        taken += request.key is not None
        if taken == n:
            return
