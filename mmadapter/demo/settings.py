"""The demo's own settings, read from ``recipes/demo/demo.yaml``: how much data it makes, step 1's four
trainings, and the overrides it gives the two ``mmadapter train`` recipes (steps 2 and 4).

The file's top level is the full demo; its ``quick`` mapping is merged over it for ``mmadapter demo --quick``
(mappings merge key by key, anything else is replaced). Each step-1 component (``step1.audio``, ``vision``,
``llm``, ``graph``) takes the fields of its settings class, whose defaults — with what was measured to choose
them — are documented in :mod:`mmadapter.demo.audio_encoder`, :mod:`~mmadapter.demo.vision_encoder`,
:mod:`~mmadapter.demo.language_model` and :mod:`~mmadapter.demo.graph_encoder`; a field left out keeps its
default. The file is validated with pydantic (:class:`DemoFile`): every key that is not a setting and every
value of the wrong kind is reported at once, by its dotted key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, StringConstraints, ValidationError, model_validator

from mmadapter.data.synthetic import DataSizes
from mmadapter.demo.audio_encoder import AudioPretrainSettings
from mmadapter.demo.graph_encoder import GraphPretrainSettings
from mmadapter.demo.language_model import LlmPretrainSettings
from mmadapter.demo.vision_encoder import VisionPretrainSettings
from mmadapter.recipe_errors import RecipeError, describe_error
from mmadapter.recipe_from import merge_mappings

__all__ = ["DEMO_RECIPE", "DemoFile", "DemoSettings", "PretrainSettings", "load_demo_settings"]

DEMO_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "demo" / "demo.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PretrainSettings(_Strict):
    """The settings of the four step-1 trainings (each a settings dataclass of its module), and whether two of them
    run side by side.

    Attributes:
        side_by_side: The vision encoder, and the LLM followed by the graph encoder, train at the same time in two
            processes of one thread each, then the audio encoder on the components' own thread count. Tiny
            models keep a second thread of one process busy only part of the time: on the 2-core machine, two
            one-thread trainings went 1.7 times as fast as the same two one after the other on two threads
            each (2026-12-02). ``false``: all four one after the other, each on its own thread count.
    """

    side_by_side: bool = True
    audio: AudioPretrainSettings = Field(default_factory=AudioPretrainSettings)
    vision: VisionPretrainSettings = Field(default_factory=VisionPretrainSettings)
    llm: LlmPretrainSettings = Field(default_factory=LlmPretrainSettings)
    graph: GraphPretrainSettings = Field(default_factory=GraphPretrainSettings)


class GraphCounts(_Strict):
    train: PositiveInt
    test: PositiveInt


class DataSection(_Strict):
    """``data``: the fields of :class:`~mmadapter.data.synthetic.DataSizes`, and how many graphs."""

    speech: dict[str, PositiveInt]
    speech_test: dict[str, PositiveInt]
    images: PositiveInt
    images_test: PositiveInt
    instruct: tuple[str, ...] = ()
    graphs: GraphCounts

    @model_validator(mode="after")
    def _sizes_fit(self) -> DataSection:
        self.sizes()  # DataSizes checks that each held-out set is smaller than its set
        return self

    def sizes(self) -> DataSizes:
        return DataSizes(dict(self.speech), dict(self.speech_test), self.images, self.images_test, self.instruct)


Override = Annotated[str, StringConstraints(pattern=r"^[^=\s]+=")]
"""A ``dotted.key=value`` recipe override."""


class DemoFile(_Strict):
    """``recipes/demo/demo.yaml`` as written: the full demo, and ``quick`` to merge over it."""

    data: DataSection
    step1: PretrainSettings = Field(default_factory=PretrainSettings)
    multimodal: list[Override] = []
    new_language: list[Override] = []
    quick: dict[str, Any] = {}


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


def _validate(raw: Mapping[str, Any]) -> tuple[DemoFile | None, list[tuple[str, str]]]:
    """``raw`` validated, or its problems as ``(dotted key, message)``."""
    try:
        return DemoFile.model_validate(raw), []
    except ValidationError as e:
        return None, [describe_error(DemoFile, err) for err in e.errors()]


def _sets(mapping: Mapping[str, Any], key: str) -> bool:
    """Whether ``mapping`` sets the dotted ``key`` (or a list or value above it)."""
    node: Any = mapping
    for part in key.split("."):
        if not isinstance(node, Mapping):
            return True
        if part not in node:
            return False
        node = node[part]
    return True


def load_demo_settings(path: Path | str = DEMO_RECIPE, quick: bool = False) -> DemoSettings:
    """The demo's settings from ``path``, with its ``quick`` mapping merged over them when ``quick``.

    Both the full settings and the quick ones are checked either way, so a typo in ``quick`` shows before
    the long run that does not use it.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        RecipeError: keys that are not settings and values of the wrong kind, all of them, each named by its
            dotted key (a ``ValueError``).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise RecipeError([("<yaml>", str(e))], str(path)) from e
    if not isinstance(raw, Mapping):
        raise RecipeError([("<root>", f"expected a mapping, got {type(raw).__name__}")], str(path))
    full, problems = _validate(raw)
    overlay = raw.get("quick") if isinstance(raw.get("quick"), Mapping) else {}
    fast, quick_problems = _validate(merge_mappings(raw, overlay) | {"quick": {}})
    for key, message in quick_problems:  # what quick alone gets wrong, under quick's own key
        if (key, message) not in problems:
            problems.append((f"quick.{key}" if _sets(overlay, key) else f"{key} (with quick)", message))
    if problems:
        raise RecipeError(problems, str(path))
    chosen = fast if quick else full
    assert chosen is not None
    return DemoSettings(
        sizes=chosen.data.sizes(),
        graphs=(chosen.data.graphs.train, chosen.data.graphs.test),
        step1=chosen.step1,
        multimodal=tuple(chosen.multimodal),
        new_language=tuple(chosen.new_language),
    )
