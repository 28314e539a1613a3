"""Our own decode stage for webdataset samples: member bytes to waveforms, images and graphs, by extension.

webdataset's default decoders are never used: they unpickle ``.pyd``/``.pkl`` and ``torch.load`` ``.pth``
members. Here such members (and ``.npy``/``.npz`` holding object arrays) make the whole sample
``unsafe_member`` before anything is decoded, and their bytes are never parsed.

Members: ``KEY.json`` (required: the chat turns in ``messages`` or the short form, and metadata), media
items ``KEY.<ext>`` when a modality has one item or ``KEY.0.<ext>``, ``KEY.1.<ext>``, … when it has several
(:func:`item_extension`; extensions from :data:`~mmadapter.data.manifest.MEDIA_EXTENSIONS`). Members with any
other extension (``.txt``, ``.cls``, …) are ignored, so third-party shards with extra members stay usable;
a media item under an unknown extension thus goes missing, which the placeholder check then reports.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Mapping
from typing import Any, TypedDict

import numpy as np
from PIL import Image

from mmadapter.config import MODALITIES
from mmadapter.data.audio import SAMPLE_RATE, decode_audio
from mmadapter.data.graph import decode_graph
from mmadapter.data.image import decode_image
from mmadapter.data.manifest import MEDIA_EXTENSIONS, check_placeholders, check_unicode, normalise
from mmadapter.data.skips import BadSample
from mmadapter.limits import DEFAULT_LIMITS, MediaLimits

__all__ = ["UNSAFE_EXTENSIONS", "DecodedSample", "decode_item", "decode_sample", "item_extension", "split_members"]

# Pickles and torch checkpoints (pickles inside a zip), whatever they are said to hold.
UNSAFE_EXTENSIONS: frozenset[str] = frozenset({"pyd", "pkl", "pickle", "pth", "pt", "ckpt", "joblib", "dill"})
_NUMPY_EXTENSIONS = ("npy", "npz")
_ITEM = re.compile(r"(?:(\d+)\.)?(.+)")
_EXTENSION_MODALITY = {ext: modality for modality, exts in MEDIA_EXTENSIONS.items() for ext in exts}


class DecodedSample(TypedDict):
    """One decoded sample; media lists are in item (= placeholder) order."""

    key: str
    url: str | None
    meta: dict[str, Any]
    messages: list[dict[str, str]]
    audio: list[np.ndarray]  # (t,) float32 at 16 kHz each
    image: list[Image.Image]  # RGB
    graph: list[dict[str, np.ndarray]]  # see mmadapter.data.graph


def item_extension(ext: str, index: int, count: int) -> str:
    """The member extension of item ``index`` of ``count`` of one modality: ``flac`` or ``1.flac``."""
    return ext if count == 1 else f"{index}.{ext}"


def _npy_holds_objects(stream: Any) -> bool:
    try:
        version = np.lib.format.read_magic(stream)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        _, _, dtype = read_header[version](stream)
    except Exception:  # an unreadable header cannot be shown to be pickle-free
        return True
    return bool(dtype.hasobject)


def _numpy_holds_pickle(data: bytes, ext: str) -> bool:
    if ext.endswith("npy"):
        return _npy_holds_objects(io.BytesIO(data))
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return any(_npy_holds_objects(archive.open(info)) for info in archive.infolist())
    except zipfile.BadZipFile:
        return True


def _unsafe(raw: Mapping[str, Any], key: str, source: str | None) -> None:
    for ext, data in raw.items():
        if ext.startswith("__"):
            continue
        last = ext.lower().rsplit(".", 1)[-1]
        if last in UNSAFE_EXTENSIONS:
            raise BadSample("unsafe_member", key, f"member {key}.{ext} may hold a pickle; it is never loaded", source)
        if last in _NUMPY_EXTENSIONS and not ext.lower().endswith("graph.npz") and _numpy_holds_pickle(data, last):
            raise BadSample("unsafe_member", key, f"member {key}.{ext} holds object (pickled) arrays", source)


def split_members(raw: Mapping[str, Any], key: str, source: str | None = None) -> dict[str, list[tuple[str, bytes]]]:
    """Group a raw sample's media members by modality, in item order.

    Args:
        raw: ``{extension: bytes}`` (``__key__`` and other ``__*__`` fields are skipped).
        key: The sample key, for errors.
        source: The shard URL, for errors.

    Returns:
        Per modality present, ``[(extension, bytes), ...]`` in item order.

    Raises:
        BadSample: ``placeholder_mismatch`` when a modality's items are not numbered ``0 .. n-1`` (or one
            unnumbered item).
    """
    found: dict[str, dict[int | None, tuple[str, bytes]]] = {}
    for ext, data in raw.items():
        match = _ITEM.fullmatch(ext.lower())
        if ext.startswith("__") or match is None or match.group(2) not in _EXTENSION_MODALITY:
            continue
        modality = _EXTENSION_MODALITY[match.group(2)]
        index = None if match.group(1) is None else int(match.group(1))
        items = found.setdefault(modality, {})
        if index in items:
            raise BadSample("placeholder_mismatch", key, f"two {modality} items numbered {index}", source)
        items[index] = (ext, data)
    out = {}
    for modality, items in found.items():
        order = [None] if len(items) == 1 and None in items else list(range(len(items)))
        if set(items) != set(order):
            numbers = sorted(items, key=lambda i: -1 if i is None else i)
            raise BadSample(
                "placeholder_mismatch", key, f"{modality} items numbered {numbers}, not 0..{len(items) - 1}", source
            )
        out[modality] = [items[i] for i in order]
    return out


def _meta(raw: Mapping[str, Any], key: str, source: str | None) -> dict[str, Any]:
    if "json" not in raw:
        raise BadSample("bad_json", key, f"no {key}.json member", source)
    try:
        meta = json.loads(raw["json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadSample("bad_json", key, f"{key}.json is not JSON: {e}", source) from e
    if not isinstance(meta, dict):
        raise BadSample("bad_json", key, f"{key}.json must hold an object, not {type(meta).__name__}", source)
    check_unicode(meta, key, source)
    return meta


def decode_item(
    modality: str, data: bytes, name: str, limits: MediaLimits, sample_rate: int | None = SAMPLE_RATE
) -> Any:
    """Decode one media item of ``modality`` within ``limits``: a waveform (at ``sample_rate``; ``None``: as
    stored), an RGB image or a graph's arrays."""
    if modality == "audio":
        return decode_audio(data, name, sample_rate, limits.max_audio_seconds)
    if modality == "image":
        return decode_image(data, name, limits.max_pixels)
    if modality != "graph":
        raise ValueError(f"{name}: unknown modality {modality!r}; known: {', '.join(MODALITIES)}")
    return decode_graph(data, name, max_nodes=limits.max_graph_nodes, max_edges=limits.max_graph_edges)


def decode_sample(
    raw: Mapping[str, Any],
    *,
    sample_rate: int = SAMPLE_RATE,
    limits: MediaLimits = DEFAULT_LIMITS,
    require_response: bool = True,
) -> DecodedSample:
    """Decode one raw webdataset sample.

    Unsafe members are looked for first, then the JSON and the placeholder counts are checked, and only
    then is media decoded.

    Args:
        raw: webdataset's ``{"__key__", "__url__", extension: bytes}``, extensions as in the tar.
        sample_rate: Audio output rate in Hz.
        limits: Media size limits (a recipe's ``data.limits``).
        require_response: Demand an assistant turn (training).

    Raises:
        BadSample: ``unsafe_member``, ``bad_json``, ``placeholder_mismatch`` or a decoder's reason
            (``too_long``, ``too_large_image`` and ``too_large_graph`` among them), with the sample key and
            shard URL.
    """
    key = str(raw.get("__key__"))
    url = raw.get("__url__")
    source = None if url is None else str(url)
    _unsafe(raw, key, source)
    meta = _meta(raw, key, source)
    messages = normalise(meta, key, source, require_response)
    items = split_members(raw, key, source)
    check_placeholders(messages, {m: len(items.get(m, ())) for m in MODALITIES}, key, source)

    def name(ext: str) -> str:
        return f"{key}.{ext}" if source is None else f"{source}:{key}.{ext}"

    sample = DecodedSample(key=key, url=source, meta=meta, messages=messages, audio=[], image=[], graph=[])
    try:
        for modality in MODALITIES:
            for ext, data in items.get(modality, ()):
                sample[modality].append(decode_item(modality, data, name(ext), limits, sample_rate))
    except BadSample as e:
        e.with_key(key)
        raise
    return sample
