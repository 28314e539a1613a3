"""MultimodalLM: encoders → projectors → a frozen causal LM, with the loss taken on labelled positions only.

Shape letters: b rows, t tokens per row, n items, s tokens per item, d LLM width, m labelled positions,
v vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from mmadapter.adapter_context import BatchTokens
from mmadapter.adapters import LLMAdapters
from mmadapter.batch import ModalityItems, MultimodalBatch, Sample
from mmadapter.config import Recipe, load_recipe
from mmadapter.data.skips import BadSample
from mmadapter.encoders import ENCODERS, Encoder
from mmadapter.llm import IGNORE_INDEX, LLMS, MODALITY_IDS, encode_chat
from mmadapter.llm.attention import choose_backend, default_device, packed_kwargs
from mmadapter.llm.causal_lm import frozen_mode
from mmadapter.llm.reference_decoding import greedy_without_cache
from mmadapter.projectors import PROJECTORS, Projector
from mmadapter.projectors.embedding_norm import token_norm

__all__ = ["ModelOutput", "MultimodalLM"]


@dataclass
class ModelOutput:
    """What :meth:`MultimodalLM.forward` returns.

    Attributes:
        loss: Mean cross-entropy over all labelled positions of the batch (0 when there are none).
        sample_loss: ``(S,)`` mean cross-entropy of each sample (0 for a sample with no labels).
        num_labels: Labelled positions the loss was taken over.
        logits: ``(b, t, v)`` full logits, only when asked for (never in training).
        aux: Auxiliary losses and statistics from adapters: ``balance_loss``, the MoLoRA load-balancing loss
            averaged over layers (1 for a uniform router), which ``loss`` includes times ``balance_weight``.
    """

    loss: Tensor
    sample_loss: Tensor
    num_labels: int
    logits: Tensor | None = None
    aux: dict[str, Tensor] = field(default_factory=dict)


class MultimodalLM(nn.Module):
    """Pretrained encoders and a frozen LLM joined by trainable projectors, plus the adapters the recipe puts
    inside the LLM (:mod:`mmadapter.adapters`: MoLoRA experts, gated attention, bias/norm tuning).

    Build with :meth:`from_recipe`; persist with :meth:`save` / :meth:`load` (see :mod:`mmadapter.artefact`).
    """

    def __init__(
        self,
        recipe: Recipe,
        llm: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        encoders: Mapping[str, Encoder],
        projectors: Mapping[str, Projector],
    ) -> None:
        super().__init__()
        self.recipe = recipe
        self.llm = llm
        self.tokenizer = tokenizer
        self.attn_backend = choose_backend(recipe.model.llm.attn, default_device())
        self.encoders = nn.ModuleDict(dict(encoders))
        self.projectors = nn.ModuleDict(dict(projectors))
        self.adapters = LLMAdapters(llm, recipe.model)
        self.token_norm = token_norm(recipe.model.token_norm, llm.get_input_embeddings())
        self.gated_attention = self.adapters.gated_attention
        self.bias_norm = self.adapters.bias_norm
        self.trained: set[str] = set()  # every parameter trainable in any stage, or loaded as trained: saved
        self.set_trainable(recipe.train.stages[0].trainable)

    @classmethod
    def from_recipe(cls, recipe: Recipe | str | Path) -> MultimodalLM:
        """Build every component a recipe names (a :class:`Recipe` or a path to its YAML)."""
        if not isinstance(recipe, Recipe):
            recipe = load_recipe(recipe)
        m = recipe.model
        llm, tokenizer = LLMS.get(m.llm.name, "model.llm.name")(m.llm)
        width = llm.get_input_embeddings().embedding_dim
        encoders = {mod: ENCODERS.get(s.name, f"model.encoders.{mod}.name")(s) for mod, s in m.encoders.items()}
        for encoder in encoders.values():
            encoder.bind_llm(llm, tokenizer)
        projectors = {
            mod: PROJECTORS.get(s.name, f"model.projectors.{mod}.name")(s, encoders[mod].embed_dim, width)
            for mod, s in m.projectors.items()
        }
        return cls(recipe, llm, tokenizer, encoders, projectors)

    # --- trainable groups ---------------------------------------------------------------------------------

    def group_modules(self) -> dict[str, list[nn.Module]]:
        """Every trainable group (DESIGN.md §6) → the modules it trains."""
        out: dict[str, list[nn.Module]] = {"llm": [self.llm], "projectors": list(self.projectors.values())}
        out |= {f"projectors.{m}": [p] for m, p in self.projectors.items()}
        out |= {f"encoders.{m}": [e] for m, e in self.encoders.items()}
        return out | self.adapters.group_modules()

    def groups(self) -> dict[str, dict[str, nn.Parameter]]:
        """Every trainable group → its parameters by full name. Tied weights appear once. Group ``llm`` holds
        the pretrained weights only, never the adapters' parameters that sit inside the LLM."""
        names = {id(p): n for n, p in self.named_parameters()}
        new = {id(p) for p in self.adapters.new_parameters()}
        return {
            group: {
                names[id(p)]: p for module in modules for p in module.parameters() if group != "llm" or id(p) not in new
            }
            for group, modules in sorted(self.group_modules().items())
        }

    def set_trainable(self, groups: Sequence[str]) -> list[str]:
        """Make exactly ``groups`` trainable (and :attr:`trained`); returns the names of the trainable parameters."""
        known = self.groups()
        unknown = [g for g in groups if g not in known]
        if unknown:
            raise KeyError(f"unknown trainable group(s) {unknown}; available: {sorted(known)}")
        self.requires_grad_(False)
        for g in groups:
            for p in known[g].values():
                p.requires_grad_(True)
        self.train(self.training)
        names = [n for n, p in self.named_parameters() if p.requires_grad]
        self.trained.update(names)
        return names

    def train(self, mode: bool = True) -> MultimodalLM:
        """Frozen encoders and a frozen LLM stay in eval mode (no dropout, fixed norms); MoLoRA experts inside a
        frozen LLM follow ``mode``."""
        super().train(mode)
        for module in self.encoders.values():
            if not _trains(module):
                module.eval()
        new = {id(p) for p in self.adapters.new_parameters()}
        if not any(p.requires_grad for p in self.llm.parameters() if id(p) not in new):
            frozen_mode(self.llm, mode)
            for layer in self.adapters.molora:
                layer.train(mode)
        return self

    # --- forward ------------------------------------------------------------------------------------------

    def item_length(self, modality: str, input_length: int) -> int:
        """Slots one item of ``modality`` takes in the LLM sequence: 0 when gated attention takes the modality
        tokens out of the sequence (``model.gated_attention.in_sequence: false``)."""
        if not self.adapters.in_sequence:
            return 0
        return self.token_count(modality, input_length)

    def token_count(self, modality: str, input_length: int) -> int:
        """Tokens the encoder and projector make of one item (in the sequence or not)."""
        return self.projectors[modality].output_length(self.encoders[modality].output_length(input_length))

    def encode_items(self, modality: str, items: ModalityItems) -> tuple[Tensor, Tensor]:
        """Encoder, projector, ``model.token_norm``: tokens ``(n, s, d)`` and ``(n,)`` valid lengths."""
        encoder = self.encoders[modality]
        inputs, lengths = items.inputs, items.lengths
        if items.raw:  # data.audio_features: gpu — the waveforms' features are computed here, on the device
            inputs, lengths = encoder.featurize(inputs, lengths)
        with torch.set_grad_enabled(torch.is_grad_enabled() and _trains(encoder)):
            feats, lengths = encoder(inputs, lengths)
        tokens, lengths = self.projectors[modality](feats, lengths)
        return (tokens if self.token_norm is None else self.token_norm(tokens)), lengths

    def embed(self, batch: MultimodalBatch) -> Tensor:
        """Text embeddings ``(b, t, d)`` with every modality slot replaced by its projected item tokens."""
        return self._embed(batch)[0]

    def _embed(self, batch: MultimodalBatch) -> tuple[Tensor, BatchTokens | None]:
        """Embeddings and what the adapters need to know of the batch (its samples' modality tokens)."""
        embeds = self.llm.get_input_embeddings()(batch.input_ids)
        token_sample = batch.token_sample()
        memory = []
        for modality, items in batch.items.items():
            tokens, lengths = self.encode_items(modality, items)
            slots = batch.token_modality == MODALITY_IDS[modality]
            expected = lengths if self.adapters.in_sequence else torch.zeros_like(lengths)
            self._check_slots(batch, modality, slots, token_sample, items, expected)
            valid = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lengths[:, None]
            flat = tokens[valid].to(embeds.dtype)
            if self.adapters.in_sequence:
                embeds = embeds.masked_scatter(slots[..., None], flat)
            memory.append((flat, items.sample.repeat_interleave(lengths)))
        info = self.adapters.batch_tokens(batch.token_modality, token_sample, batch.num_samples, memory, batch.langs)
        return embeds, info

    def _check_slots(
        self,
        batch: MultimodalBatch,
        modality: str,
        slots: Tensor,
        token_sample: Tensor,
        items: ModalityItems,
        lengths: Tensor,
    ) -> None:
        count = batch.num_samples
        have = torch.bincount(token_sample[slots], minlength=count)
        want = torch.zeros(count, dtype=torch.long, device=lengths.device).index_add_(0, items.sample, lengths)
        bad = (have != want.to(have.device)).nonzero().flatten().tolist()
        if bad:
            s = bad[0]
            raise ValueError(
                f"sample {batch.keys[s]!r}: the text has {int(have[s])} <{modality}> slot(s) but its {modality} "
                f"item(s) produce {int(want[s])} feature(s) (encoder + projector output_length); "
                f"{len(bad)} sample(s) in this batch disagree"
            )

    def hidden_states(self, batch: MultimodalBatch) -> Tensor:
        """Final hidden states ``(b, t, d)`` of the LLM (after its last norm)."""
        return self._decode(batch)[0]

    def _decode(self, batch: MultimodalBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """Final hidden states and the adapters' auxiliary losses (each averaged over layers)."""
        decoder = self.llm.get_decoder()
        embeds, info = self._embed(batch)
        # Packed rows: no mask and no cache, plus cu_seqlens for our packed kernels on CUDA; sdpa/eager split the
        # row at its restarting position_ids (DESIGN.md §4).
        kwargs = {"attention_mask": batch.attention_mask} | packed_kwargs(batch, self.attn_backend)
        with self.adapters.context.bind(info) as aux:
            out = decoder(inputs_embeds=embeds, position_ids=batch.position_ids, use_cache=False, **kwargs)
        return out.last_hidden_state, {name: torch.stack(v).mean() for name, v in aux.items()}

    def forward(self, batch: MultimodalBatch, return_logits: bool = False) -> ModelOutput:
        """Loss over labelled positions, computed in chunks from the selected hidden states."""
        hidden, aux = self._decode(batch)
        targets = self._shifted_labels(batch)
        picked = targets != IGNORE_INDEX  # (b, t)
        owner = batch.token_sample()[picked]
        h = hidden[picked]  # (m, d)
        y = targets[picked]
        head = self.llm.get_output_embeddings()
        chunk = self.recipe.model.loss_chunk
        losses = [
            F.cross_entropy(self._logits(head, h[i : i + chunk]), y[i : i + chunk], reduction="none")
            for i in range(0, h.shape[0], chunk)
        ]
        token_loss = torch.cat(losses) if losses else hidden.new_zeros(0)
        count = token_loss.numel()
        loss = token_loss.sum() / count if count else hidden.sum() * 0.0
        n = batch.num_samples
        sums = torch.zeros(n, device=hidden.device, dtype=token_loss.dtype).index_add(0, owner, token_loss)
        per = torch.bincount(owner, minlength=n).clamp(min=1).to(sums.dtype)
        logits = self._logits(head, hidden) if return_logits else None
        if "balance_loss" in aux:
            loss = loss + self.adapters.balance_weight * aux["balance_loss"]
        return ModelOutput(loss=loss, sample_loss=sums / per, num_labels=count, logits=logits, aux=aux)

    def _logits(self, head: nn.Module, h: Tensor) -> Tensor:
        logits = head(h).float()
        cap = getattr(self.llm.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    @staticmethod
    def _shifted_labels(batch: MultimodalBatch) -> Tensor:
        """``targets[t] = labels[t + 1]``, never across a sample boundary of a packed row."""
        targets = torch.full_like(batch.labels, IGNORE_INDEX)
        targets[:, :-1] = batch.labels[:, 1:]
        if batch.cu_seqlens is not None:
            ends = batch.cu_seqlens[1:].long() - 1  # last token of each sample predicts nothing
            targets[0, ends] = IGNORE_INDEX
        return targets

    # --- inference ----------------------------------------------------------------------------------------

    def prepare(
        self,
        key: str,
        messages: Sequence[Mapping[str, Any]],
        items: Mapping[str, Sequence[Any]] | None = None,
        *,
        add_generation_prompt: bool = False,
        lang: str | None = None,
    ) -> Sample:
        """Transform raw items (waveforms, PIL images, decoded graph arrays) and tokenize a conversation into a
        :class:`Sample` (in language ``lang``, which MoLoRA's language experts route by)."""
        inputs: dict[str, list[Any]] = {}
        lengths: dict[str, list[int]] = {}
        raw = set()
        for m, xs in (items or {}).items():
            encoder = self.encoders[m]
            if m == "audio" and self.recipe.data.audio_features == "gpu":
                raw.add(m)  # waveforms travel to the model, which computes their features on its device
                inputs[m] = [torch.as_tensor(x, dtype=torch.float32) for x in xs]
                lengths[m] = [self.item_length(m, encoder.input_length_of_raw(x.shape[-1])) for x in inputs[m]]
            else:
                inputs[m] = [encoder.transform(x) for x in xs]
                lengths[m] = [self.item_length(m, encoder.input_length(x)) for x in inputs[m]]
        chat = encode_chat(self.tokenizer, messages, lengths, add_generation_prompt=add_generation_prompt)
        return Sample(key, chat, inputs, raw=raw, lang=lang)

    def prepare_decoded(self, decoded: Mapping[str, Any], *, add_generation_prompt: bool = False) -> Sample:
        """A decoded shard sample (:class:`mmadapter.data.members.DecodedSample`) → :class:`Sample`.

        Raises:
            BadSample: the sample has items of a modality this model has no encoder for.
        """
        items = {m: decoded[m] for m in ("audio", "image", "graph") if decoded.get(m)}
        for m in items:
            if m not in self.encoders:
                detail = f"has {m} items but the model has no {m} encoder"
                raise BadSample("placeholder_mismatch", decoded["key"], detail)
        lang = _text_or_none((decoded.get("meta") or {}).get("lang"))
        messages = decoded["messages"]
        return self.prepare(decoded["key"], messages, items, add_generation_prompt=add_generation_prompt, lang=lang)

    @torch.no_grad()
    def generate(self, samples: Sequence[Sample], **options: Any) -> list[str]:
        """Answer each sample's prompt (built with ``add_generation_prompt=True``), batched with left padding.

        ``options`` go to Hugging Face ``generate`` (``max_new_tokens``, ``do_sample``, ``temperature``,
        ``top_p``, ``num_beams``, ``repetition_penalty``); greedy decoding by default. ``use_cache=False``
        (greedy only) re-runs the whole sequence at every step instead of using a KV cache: slow, a reference.
        """
        batch = MultimodalBatch.pad(samples, self.tokenizer.pad_token_id, side="left").to(self.device)
        options = {"max_new_tokens": 64, "do_sample": False} | options
        eos = self.llm.generation_config.eos_token_id
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        embeds, info = self._embed(batch)
        with self.adapters.context.bind(info):
            if options.pop("use_cache", True):
                out = self.llm.generate(
                    inputs_embeds=embeds,
                    attention_mask=batch.attention_mask,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=eos,
                    **options,
                )
            else:
                out = greedy_without_cache(
                    self.llm, embeds, batch.attention_mask, eos, self.tokenizer.pad_token_id, **options
                )
        return [s.strip() for s in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    def merged_llm(self, expert: str = "text", lang: str | None = None) -> PreTrainedModel:
        """A plain copy of the LLM for serving one modality (in one language) with zero overhead: the MoLoRA
        ``expert``, ``lang``'s language expert and the bias/norm biases folded into its weights (see
        :meth:`mmadapter.adapters.LLMAdapters.merged_llm`)."""
        return self.adapters.merged_llm(expert, lang)

    @property
    def device(self) -> torch.device:
        return next(self.llm.parameters()).device

    # --- persistence --------------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write the artefact of DESIGN.md §6 to ``directory`` (see :func:`mmadapter.artefact.save_artefact`)."""
        from mmadapter.artefact import save_artefact

        return save_artefact(self, directory)

    @classmethod
    def load(cls, directory: str | Path, overrides: Sequence[str] = ()) -> MultimodalLM:
        """Rebuild a model from an artefact directory; only safetensors, YAML and JSON are read."""
        from mmadapter.artefact import load_artefact

        return load_artefact(directory, overrides)

    def named_components(self) -> Iterator[tuple[str, nn.Module]]:
        """``("llm", …)``, ``("encoders.audio", …)``, ``("projectors.audio", …)``, …"""
        yield "llm", self.llm
        for m, enc in self.encoders.items():
            yield f"encoders.{m}", enc
        for m, proj in self.projectors.items():
            yield f"projectors.{m}", proj

    def component_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by component kind, each once: ``llm`` (pretrained weights only), ``encoders``,
        ``projectors``, and ``molora``, ``gated_attention``, ``bias_norm`` (its new biases) when present."""
        groups = self.groups()
        out = {"llm": list(groups["llm"].values())}
        for name, parts in (("encoders", self.encoders), ("projectors", self.projectors)):
            if parts:
                out[name] = [p for m in parts.values() for p in m.parameters()]
        if "molora" in groups:
            out["molora"] = list(groups["molora"].values())
        for name in ("gated_attention", "bias_norm"):
            module = getattr(self, name)
            if module is not None:
                out[name] = list(module.parameters())
        return out


def _trains(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
