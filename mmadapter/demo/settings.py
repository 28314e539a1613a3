"""The demo's own settings, read from ``recipes/demo/demo.yaml``: how much data it makes, step 1's four
trainings, and the overrides it gives the two ``mmadapter train`` recipes (steps 2 and 4).

The file's top level is the full demo; its ``quick`` mapping is merged over it for ``mmadapter demo --quick``
(mappings merge key by key, anything else is replaced). Each step-1 component (``step1.audio``, ``vision``,
``llm``, ``graph``) takes the fields of its settings class, whose defaults — with what was measured to choose
them — are documented in :mod:`mmadapter.demo.audio_encoder`, :mod:`~mmadapter.demo.vision_encoder`,
:mod:`~mmadapter.demo.language_model` and :mod:`~mmadapter.demo.graph_encoder`; a field left out keeps its
default. A key that is not a setting is an error naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmadapter.data.synthetic import DataSizes
from mmadapter.demo.audio_encoder import AudioPretrainSettings
from mmadapter.demo.graph_encoder import GraphPretrainSettings
from mmadapter.demo.language_model import LlmPretrainSettings
from mmadapter.demo.vision_encoder import VisionPretrainSettings

__all__ = ["DEMO_RECIPE", "DemoSettings", "PretrainSettings", "load_demo_settings"]

DEMO_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "demo" / "demo.yaml"


@dataclass(frozen=True)
class PretrainSettings:
    """The settings of the four step-1 trainings."""

    audio: AudioPretrainSettings = field(default_factory=AudioPretrainSettings)
    vision: VisionPretrainSettings = field(default_factory=VisionPretrainSettings)
    llm: LlmPretrainSettings = field(default_factory=LlmPretrainSettings)
    graph: GraphPretrainSettings = field(default_factory=GraphPretrainSettings)


COMPONENTS: dict[str, type] = {
    "audio": AudioPretrainSettings,
    "vision": VisionPretrainSettings,
    "llm": LlmPretrainSettings,
    "graph": GraphPretrainSettings,
}


@dataclass(frozen=True)
class DemoSettings:
    """Everything the demo makes and trains besides what its two ``mmadapter train`` recipes say.

    Attributes:
        sizes: Utterances per language, images, and which sets get an instruction set.
        graphs: ``(train, test)`` community graphs.
        step1: The four step-1 trainings.
        multimodal: Overrides (``dotted.key=value``) of ``recipes/demo/speech_vision_graph.yaml`` (step 2).
        new_language: Overrides of ``recipes/language/new_language_projector.yaml`` (step 4).
    """

    sizes: DataSizes
    graphs: tuple[int, int]
    step1: PretrainSettings
    multimodal: tuple[str, ...] = ()
    new_language: tuple[str, ...] = ()


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
        )
    return out


def _section(raw: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: {key} must be a mapping, got {type(value).__name__}")
    return value


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """``cls(**values)``, with an unknown field reported by its recipe key."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}.{unknown[0]} is not a setting of {cls.__name__}; known: {', '.join(sorted(known))}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from e


def _overrides(raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = raw.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
        raise ValueError(f"{where}: {key} must be a list of dotted.key=value overrides")
    return tuple(value)


def load_demo_settings(path: Path | str = DEMO_RECIPE, quick: bool = False) -> DemoSettings:
    """The demo's settings from ``path``, with its ``quick`` mapping merged over them when ``quick``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a key is not a setting, or a value has the wrong kind (the message names the key).
    """
    path = Path(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: the top level must be a mapping")
    unknown = sorted(set(raw) - {"data", "step1", "multimodal", "new_language", "quick"})
    if unknown:
        raise ValueError(f"{path}: {unknown[0]} is not a demo setting (data, step1, multimodal, new_language, quick)")
    if quick:
        raw = _merge(raw, _section(raw, "quick", str(path)))
    data = dict(_section(raw, "data", str(path)))
    graphs = data.pop("graphs", None)
    if not (isinstance(graphs, Mapping) and set(graphs) == {"train", "test"}):
        raise ValueError(f"{path}: data.graphs must be {{train: N, test: M}}, got {graphs!r}")
    data["instruct"] = tuple(data.get("instruct", ()))
    step1 = _section(raw, "step1", str(path))
    unknown = sorted(set(step1) - set(COMPONENTS))
    if unknown:
        raise ValueError(f"{path}: step1.{unknown[0]} is not a step-1 component ({', '.join(COMPONENTS)})")
    components = {
        name: _build(cls, _section(step1, name, f"{path}: step1"), f"{path}: step1.{name}")
        for name, cls in COMPONENTS.items()
    }
    return DemoSettings(
        sizes=_build(DataSizes, data, f"{path}: data"),
        graphs=(int(graphs["train"]), int(graphs["test"])),
        step1=PretrainSettings(**components),
        multimodal=_overrides(raw, "multimodal", str(path)),
        new_language=_overrides(raw, "new_language", str(path)),
    )
