"""Recipes: YAML files that map 1:1 onto the pydantic models below.

``load_recipe(path, overrides)`` reads the YAML, applies ``a.b.c=value`` overrides (JSON values, list
indices), validates the whole tree and each component's family-specific options, and reports every
problem at once with its dotted path and, for unknown keys, the closest known key.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from mmadapter.adapter_config import BiasNormConfig, GatedAttentionConfig, MoLoRAConfig
from mmadapter.limits import MediaLimits
from mmadapter.recipe_errors import RecipeError, describe_error
from mmadapter.recipe_from import resolve_model_from
from mmadapter.recipe_overrides import apply_overrides
from mmadapter.registry import ComponentSpec, Registry

__all__ = [
    "MODALITIES",
    "AttentionBackendName",
    "BiasNormConfig",
    "DataConfig",
    "GatedAttentionConfig",
    "LLMSpec",
    "MediaLimits",
    "MoLoRAConfig",
    "ModelConfig",
    "Recipe",
    "RecipeError",
    "ShardSet",
    "StageConfig",
    "TrainConfig",
    "apply_overrides",
    "load_recipe",
    "trainable_group_names",
]

Modality = Literal["audio", "image", "graph"]
MODALITIES: tuple[str, ...] = ("audio", "image", "graph")
_STAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


AttentionBackendName = Literal["flash_attn", "varlen", "flex", "sdpa_varlen", "sdpa", "eager"]
"""The attention backends ``model.llm.attn`` may name besides ``auto`` (:mod:`mmadapter.llm.attention`)."""


class LLMSpec(ComponentSpec):
    """The frozen causal LM: ``name_or_path`` (hub id or directory) or a random model from ``config``."""

    name: str = "causal_lm"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    attn: Literal["auto", AttentionBackendName] = "auto"
    trust_remote_code: bool = False
    chat_template: str | None = None


class _AnyComponent(ComponentSpec):
    """Structural pass only: family options are checked against the registered spec afterwards."""

    model_config = ConfigDict(extra="allow")


class ModelConfig(_Section):
    llm: SerializeAsAny[LLMSpec] = Field(default_factory=LLMSpec)
    encoders: dict[Modality, SerializeAsAny[_AnyComponent]] = Field(default_factory=dict)
    projectors: dict[Modality, SerializeAsAny[_AnyComponent]] = Field(default_factory=dict)
    loss_chunk: int = Field(1024, gt=0, description="labelled positions per LM-head chunk in the loss")
    token_norm: Literal["none", "embedding_rms"] = Field(
        "none",
        description="embedding_rms: every projected token is rescaled to the mean RMS of the LLM's input "
        "embeddings (mmadapter.projectors.embedding_norm); none: projector outputs are used as they come",
    )
    molora: MoLoRAConfig | None = None
    gated_attention: GatedAttentionConfig | None = None
    bias_norm: BiasNormConfig | None = None

    @model_validator(mode="after")
    def _pairs(self) -> ModelConfig:
        for m in self.encoders:
            if m not in self.projectors:
                raise ValueError(f"encoder {m!r} has no projector: add model.projectors.{m}")
        for m in self.projectors:
            if m not in self.encoders:
                raise ValueError(f"projector {m!r} has no encoder: add model.encoders.{m}")
        return self

    @model_validator(mode="after")
    def _adapters(self) -> ModelConfig:
        if self.molora is not None and self.molora.routing == "modality":
            expert_of = self.molora.expert_of()
            missing = [m for m in ("text", *self.encoders) if m not in expert_of]
            if missing:
                raise ValueError(
                    f"molora: modality routing has no expert for {missing}; add model.molora.modality_map."
                    f"{missing[0]} (one of {self.molora.experts}) or an expert named {missing[0]!r}"
                )
        ga = self.gated_attention
        if ga is not None and not self.encoders and (ga.mode == "cross" or ga.conditioned):
            raise ValueError(f"gated_attention: mode {ga.mode!r} attends to modality tokens but there is no encoder")
        return self


class ShardSet(_Section):
    shards: str | list[str]
    weight: float = Field(1.0, gt=0)
    max_samples: int | None = Field(
        None, gt=0, description="only the set's first N samples, in the order its shards are listed (local shards)"
    )


class DataConfig(_Section):
    train: list[ShardSet] = Field(default_factory=list)
    val: list[ShardSet] = Field(default_factory=list)
    max_tokens: int = Field(4096, gt=0)
    max_bad_fraction: float = Field(0.05, ge=0, le=1)
    layout: Literal["packed", "padded"] = "packed"
    audio_features: Literal["cpu", "gpu"] = "cpu"
    num_workers: int = Field(2, ge=0)
    shuffle_buffer: int = Field(1000, ge=0)
    limits: MediaLimits = Field(
        default_factory=MediaLimits, description="media size limits while reading shards; bigger samples are skipped"
    )

    def with_overrides(self, overrides: dict[str, Any]) -> DataConfig:
        """This section with a stage's ``data`` overrides; ``limits`` key by key, so that a stage setting one
        limit keeps the others. Raises pydantic's ``ValidationError``."""
        merged = self.model_dump() | overrides
        if isinstance(overrides.get("limits"), dict):
            merged["limits"] = self.limits.model_dump() | overrides["limits"]
        return DataConfig.model_validate(merged)


class StageConfig(_Section):
    name: str
    trainable: list[str]
    max_steps: int | None = Field(None, gt=0)
    lr: float | dict[str, float] | None = None
    data: dict[str, Any] | None = None
    init_from: str | None = None

    @field_validator("name")
    @classmethod
    def _a_directory_name(cls, name: str) -> str:
        if not _STAGE_NAME.fullmatch(name):
            raise ValueError("a stage name is a directory name (RUN/stages/NAME): letters, digits, '_', '.', '-'")
        return name


TASK_METRICS = Literal["wer", "cer", "bleu", "chrf", "accuracy"]
HIGHER_IS_BETTER = ("bleu", "chrf", "accuracy")
"""The task metrics (``train.val_metric``) for which a higher score is better."""


class TrainConfig(_Section):
    seed: int = 0
    max_steps: int = Field(1000, gt=0, description="steps per stage unless the stage sets its own")
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decay floor, as a fraction of the peak lr")
    grad_clip: float | None = Field(1.0, gt=0)
    accumulate: int = Field(1, gt=0)
    precision: Literal["auto", "bf16-mixed", "16-mixed", "32-true"] = "auto"
    strategy: Literal["auto", "ddp", "fsdp", "deepspeed"] = "auto"
    devices: int | Literal["auto"] = "auto"
    num_nodes: int = Field(1, gt=0)
    activation_checkpointing: bool = False
    log_every: int = Field(10, gt=0)
    checkpoint_every: int = Field(100, gt=0)
    val_every: int | None = Field(None, gt=0)
    val_batches: int | None = Field(None, gt=0, description="validation batches per evaluation (None: one pass)")
    val_metric: TASK_METRICS | None = Field(
        None, description="task metric computed by generating on data.val at each validation (logged val_<metric>)"
    )
    best_metric: str = "val_loss"
    best_mode: Literal["min", "max"] = "min"
    early_stopping_patience: int | None = Field(None, gt=0, description="validations without improvement")
    max_nonfinite: int = Field(20, gt=0, description="consecutive non-finite steps before the run stops")
    log_sample_keys: bool = Field(False, description="write each rank's batches' sample keys to RUN/sample_keys/")
    stages: list[StageConfig] = Field(
        default_factory=lambda: [StageConfig(name="align", trainable=["projectors"])], min_length=1
    )

    @model_validator(mode="after")
    def _unique_stage_names(self) -> TrainConfig:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        return self


class Recipe(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> Recipe:
        """Validate a recipe mapping, components included, ``model: {from: RUN}`` taken from that artefact
        (:mod:`mmadapter.recipe_from`); raises :class:`RecipeError` with every problem."""
        data = dict(data)
        resolve_model_from(data, source)
        problems: list[tuple[str, str]] = []
        try:
            recipe = cls.model_validate(data)
        except ValidationError as e:
            problems += [describe_error(cls, err) for err in e.errors()]
            recipe = None
        problems += _check_components(data)
        problems += _check_groups(data)
        problems += _check_stage_data(data)
        if problems:
            raise RecipeError(problems, source)
        assert recipe is not None
        return _with_family_specs(recipe)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_defaults=False), sort_keys=False)


def trainable_group_names(model: ModelConfig) -> set[str]:
    """Every trainable group this model has (DESIGN.md §6)."""
    names = {"projectors", "llm"}
    names |= {f"projectors.{m}" for m in model.projectors}
    names |= {f"encoders.{m}" for m in model.encoders}
    if model.molora is not None:
        names |= {"molora"} | {f"molora.{e}" for e in model.molora.experts}
    if model.gated_attention is not None:
        names.add("gated_attention")
    if model.bias_norm is not None:
        names.add("llm.bias_norm")
    return names


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a YAML recipe, apply ``a.b.c=value`` overrides and validate it.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        RecipeError: the YAML, an override or the validated recipe has problems (all listed).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError([("<yaml>", str(e))], str(path)) from e
    if not isinstance(data, dict):
        raise RecipeError([("<root>", f"expected a mapping, got {type(data).__name__}")], str(path))
    apply_overrides(data, overrides, source=str(path))
    return Recipe.from_dict(data, source=str(path))


# --- validation helpers -------------------------------------------------------------------------------


def _component_registries() -> dict[str, Registry[Any]]:
    # Imported here: the component packages import this module's neighbours, not the other way round.
    from mmadapter.encoders import ENCODERS
    from mmadapter.llm import LLMS
    from mmadapter.projectors import PROJECTORS

    return {"encoders": ENCODERS, "projectors": PROJECTORS, "llm": LLMS}


def _component_entries(data: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(dotted key, registry section, raw mapping)`` of every component in a raw recipe."""
    model = data.get("model")
    if not isinstance(model, dict):
        return []
    out = []
    llm = model.get("llm", {})
    if isinstance(llm, dict):
        out.append(("model.llm", "llm", llm))
    for section in ("encoders", "projectors"):
        comps = model.get(section)
        if isinstance(comps, dict):
            out += [(f"model.{section}.{m}", section, c) for m, c in comps.items() if isinstance(c, dict)]
    return out


def _check_components(data: dict[str, Any]) -> list[tuple[str, str]]:
    problems = []
    registries = _component_registries()
    for key, section, raw in _component_entries(data):
        name = raw.get("name", "causal_lm" if section == "llm" else None)
        if not isinstance(name, str):
            continue  # reported by the structural pass
        try:
            spec = registries[section].spec(name, f"{key}.name")
        except KeyError as e:
            problems.append((f"{key}.name", e.args[0]))
            continue
        try:
            spec.model_validate(raw)
        except ValidationError as e:
            problems += [describe_error(spec, err, prefix=key) for err in e.errors()]
    return problems


def _with_family_specs(recipe: Recipe) -> Recipe:
    """Replace each generic component spec by its family's spec model (already validated)."""
    registries = _component_registries()
    m = recipe.model
    m.llm = registries["llm"].spec(m.llm.name).model_validate(m.llm.model_dump(exclude_unset=True))
    for section in ("encoders", "projectors"):
        comps = getattr(m, section)
        for modality, spec in comps.items():
            family = registries[section].spec(spec.name)
            comps[modality] = family.model_validate(spec.model_dump(exclude_unset=True))
    return recipe


def _check_stage_data(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Each stage's ``data`` overrides of the raw recipe, validated now rather than when the stage starts,
    on top of the recipe's ``data`` (or of the defaults where that has problems of its own)."""
    try:
        base = DataConfig.model_validate(data.get("data", {}))
    except ValidationError:
        base = DataConfig()  # reported by the recipe's own validation; the stages are judged on their own
    problems = []
    for i, stage in enumerate(_raw_stages(data)):
        overrides = stage.get("data")
        if not isinstance(overrides, dict):
            continue  # absent, or a wrong type that StageConfig reports
        try:
            base.with_overrides(overrides)
        except ValidationError as e:
            problems += [describe_error(DataConfig, err, f"train.stages.{i}.data") for err in e.errors()]
    return problems


def _raw_stages(data: dict[str, Any]) -> list[dict[str, Any]]:
    """``train.stages`` of a raw recipe, each one a mapping or an empty one where it is not."""
    stages = data.get("train", {}).get("stages") if isinstance(data.get("train"), dict) else None
    return [stage if isinstance(stage, dict) else {} for stage in (stages if isinstance(stages, list) else [])]


def _check_groups(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Stage groups against the modalities the raw recipe declares (runs even when other checks failed)."""
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    sections = {k: v for k, v in model.items() if k in ("encoders", "projectors") and isinstance(v, dict)}
    molora = model.get("molora")
    if isinstance(molora, dict):  # unvalidated here: only the expert names matter
        experts = molora.get("experts") if isinstance(molora.get("experts"), list) else []
        sections["molora"] = MoLoRAConfig.model_construct(experts=[e for e in experts if isinstance(e, str)])
    for key, section in (("gated_attention", GatedAttentionConfig), ("bias_norm", BiasNormConfig)):
        if isinstance(model.get(key), dict):
            sections[key] = section.model_construct()
    known = trainable_group_names(ModelConfig.model_construct(**sections))
    problems = []
    for i, stage in enumerate(_raw_stages(data)):
        trainable = stage.get("trainable") if isinstance(stage.get("trainable"), list) else []
        for j, group in enumerate(trainable):
            if isinstance(group, str) and group not in known:
                close = difflib.get_close_matches(group, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(
                    (f"train.stages.{i}.trainable.{j}", f"unknown group {group!r}{hint} Known: {sorted(known)}")
                )
        lr = stage.get("lr")
        for group in lr if isinstance(lr, dict) else {}:
            if group not in trainable:
                problems.append((f"train.stages.{i}.lr.{group}", "learning rate for a group the stage does not train"))
    return problems
