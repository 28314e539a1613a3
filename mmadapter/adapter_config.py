"""Recipe sections of the adapters inside the frozen LLM: ``model.molora``, ``model.gated_attention`` and
``model.bias_norm`` (DESIGN.md §3). Each is ``None`` (absent) by default; :mod:`mmadapter.config` checks
them against the rest of the model section.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mmadapter.languages import language_tag

__all__ = ["TOKEN_MODALITIES", "BiasNormConfig", "GatedAttentionConfig", "MoLoRAConfig"]

TokenModality = Literal["text", "audio", "image", "graph"]
TOKEN_MODALITIES: tuple[str, ...] = ("text", "audio", "image", "graph")
"""What a token of the LLM sequence can be (``token_modality`` ids 0–3, in this order)."""

_EXPERT_NAME = re.compile(r"[a-z][a-z0-9_]*")
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*")


class _AdapterSection(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MoLoRAConfig(_AdapterSection):
    """Mixture-of-LoRA experts on chosen linear layers of every decoder layer (``mmadapter.lora.molora``)."""

    experts: list[str] = Field(min_length=1, description="expert names, e.g. [text, audio, image]")
    modality_map: dict[TokenModality, str] = Field(
        default_factory=dict,
        description="modality → expert for `modality` routing; default: the expert of the same name, graph → text",
    )
    language_experts: dict[str, str] = Field(
        default_factory=dict,
        description="language → expert that every token of a sample in that language uses besides its modality's "
        "expert (`modality` routing), e.g. {de: de}: a LoRA for one language that leaves the others as they were",
    )
    routing: Literal["modality", "soft", "topk"] = "modality"
    top_k: int = Field(1, gt=0, description="experts kept per token with `topk` routing")
    balance_weight: float = Field(0.01, ge=0, description="weight of the load-balancing loss (`topk` routing)")
    rank: int = Field(8, gt=0)
    alpha: float = Field(16.0, gt=0, description="LoRA scaling is alpha / rank")
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        description="names of the linear layers inside each decoder layer, or every one of them (never lm_head)",
    )

    @field_validator("experts")
    @classmethod
    def _names(cls, experts: list[str]) -> list[str]:
        bad = [e for e in experts if not _EXPERT_NAME.fullmatch(e)]
        if bad:
            raise ValueError(f"expert names must be lowercase identifiers ([a-z][a-z0-9_]*), got {bad}")
        if len(set(experts)) != len(experts):
            raise ValueError(f"expert names must be unique, got {experts}")
        return experts

    @field_validator("language_experts")
    @classmethod
    def _languages(cls, languages: dict[str, str]) -> dict[str, str]:
        tags = {lang: language_tag(lang) for lang in languages}
        if not all(_LANGUAGE_TAG.fullmatch(lang.strip()) for lang in languages):
            raise ValueError(f"language_experts keys must be language tags (e.g. de, pt-BR), got {list(languages)}")
        if len(set(tags.values())) != len(tags):
            raise ValueError(f"language_experts names one language twice: {list(languages)}")
        return {tags[lang]: expert for lang, expert in languages.items()}  # type: ignore[misc]

    @model_validator(mode="after")
    def _cross_fields(self) -> MoLoRAConfig:
        unknown = {m: e for m, e in self.modality_map.items() if e not in self.experts}
        if unknown:
            raise ValueError(f"modality_map names experts that do not exist: {unknown}; experts: {self.experts}")
        if self.language_experts:
            self._check_language_experts()
        if self.routing == "topk" and self.top_k > len(self.experts):
            raise ValueError(f"top_k={self.top_k} exceeds the {len(self.experts)} expert(s)")
        if self.routing != "topk" and self.top_k != 1:
            raise ValueError(f"top_k only applies to routing 'topk' (routing is {self.routing!r})")
        if isinstance(self.targets, list) and not self.targets:
            raise ValueError("targets must name at least one linear layer, or be 'all-linear'")
        return self

    def _check_language_experts(self) -> None:
        unknown = {lang: e for lang, e in self.language_experts.items() if e not in self.experts}
        if unknown:
            raise ValueError(f"language_experts names experts that do not exist: {unknown}; experts: {self.experts}")
        if self.routing != "modality":
            raise ValueError(f"language_experts need routing 'modality' (routing is {self.routing!r})")
        shared = sorted(set(self.language_experts.values()) & set(self.expert_of().values()))
        if shared:
            raise ValueError(f"expert(s) {shared} serve a modality and a language; give the language its own expert")

    def language_expert(self, lang: str | None) -> str | None:
        """The language expert of a sample's ``lang``: that of its tag or of the longest prefix of it that has
        one (``zh-Hant-TW``, then ``zh-Hant``, then ``zh``), else ``None``."""
        tag = language_tag(lang)
        while tag:
            if tag in self.language_experts:
                return self.language_experts[tag]
            tag = tag.rpartition("-")[0]
        return None

    def expert_of(self) -> dict[str, str]:
        """Token modality → expert name under ``modality`` routing; modalities without one are left out."""
        out = {m: m for m in TOKEN_MODALITIES if m in self.experts}
        if "graph" not in out and "text" in self.experts:
            out["graph"] = "text"
        return out | dict(self.modality_map)


class GatedAttentionConfig(_AdapterSection):
    """Zero-init gated attention (``mmadapter.fusion.gated_attention``).

    ``prompt`` (LLaMA-Adapter): ``prompt_len`` learned prompts in each chosen layer (``layers``: the top L
    layers, or explicit indices; default all), attended in a separate softmax branch gated per query head.
    ``cross`` (Flamingo): a gated cross-attention block to the sample's modality tokens before every
    ``every``-th layer (layers ``every - 1``, ``2 * every - 1``, …, as OpenFlamingo).
    ``in_sequence: false`` removes the modality tokens from the LLM sequence (placeholders get zero slots):
    they then reach the LLM only through the cross-attention, or through ``conditioned`` prompts.
    """

    mode: Literal["prompt", "cross"]
    layers: int | list[int] | None = Field(None, description="prompt: top L layers (int) or indices; default all")
    prompt_len: int = Field(10, gt=0)
    conditioned: bool = Field(False, description="prompt: add a projection of the sample's pooled modality tokens")
    every: int = Field(4, gt=0, description="cross: a block before every `every`-th decoder layer")
    ffn_mult: int = Field(4, gt=0, description="cross: hidden width of the gated FFN, in multiples of d")
    in_sequence: bool = True

    @model_validator(mode="after")
    def _cross_fields(self) -> GatedAttentionConfig:
        only = {"prompt": ("layers", "prompt_len", "conditioned"), "cross": ("every", "ffn_mult")}
        other = "cross" if self.mode == "prompt" else "prompt"
        fields = type(self).model_fields
        misplaced = [f for f in only[other] if getattr(self, f) != fields[f].default]  # resolved recipes list all
        if misplaced:
            raise ValueError(f"{misplaced} only apply to mode {other!r} (mode is {self.mode!r})")
        _check_layers(self.layers)
        if not self.in_sequence and self.mode == "prompt" and not self.conditioned:
            raise ValueError(
                "in_sequence: false with mode 'prompt' needs conditioned: true, or the LLM never sees "
                "the modality tokens"
            )
        return self


class BiasNormConfig(_AdapterSection):
    """LLaMA-Adapter V2 bias/norm tuning (``mmadapter.fusion.bias_norm``), trainable group ``llm.bias_norm``.

    Zero-initialised biases are added to the ``targets`` linear layers of the chosen ``layers`` (default all;
    an int picks the top L), and the norms of those layers (every module in them whose parameters are all
    vectors, e.g. RMSNorm scales) plus the final norm (``final_norm``) are unfrozen.
    """

    layers: int | list[int] | None = None
    targets: list[str] = Field(default_factory=lambda: ["q_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    norms: bool = True
    final_norm: bool = True

    @model_validator(mode="after")
    def _layers(self) -> BiasNormConfig:
        _check_layers(self.layers)
        return self


def _check_layers(layers: int | list[int] | None) -> None:
    if isinstance(layers, int) and layers <= 0:
        raise ValueError(f"layers={layers}: the number of top layers must be positive")
    if isinstance(layers, list) and (not layers or len(set(layers)) != len(layers)):
        raise ValueError(f"layers={layers}: give distinct layer indices")
