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

from mmadapter.batch import ModalityItems, MultimodalBatch, Sample
from mmadapter.config import Recipe, load_recipe
from mmadapter.data.skips import BadSample
from mmadapter.encoders import ENCODERS, Encoder
from mmadapter.llm import IGNORE_INDEX, LLMS, MODALITY_IDS, encode_chat
from mmadapter.projectors import PROJECTORS, Projector

__all__ = ["ModelOutput", "MultimodalLM"]


@dataclass
class ModelOutput:
    """What :meth:`MultimodalLM.forward` returns.

    Attributes:
        loss: Mean cross-entropy over all labelled positions of the batch (0 when there are none).
        sample_loss: ``(S,)`` mean cross-entropy of each sample (0 for a sample with no labels).
        num_labels: Labelled positions the loss was taken over.
        logits: ``(b, t, v)`` full logits, only when asked for (never in training).
        aux: Auxiliary losses and statistics from adapters (e.g. load balancing).
    """

    loss: Tensor
    sample_loss: Tensor
    num_labels: int
    logits: Tensor | None = None
    aux: dict[str, Tensor] = field(default_factory=dict)


class MultimodalLM(nn.Module):
    """Pretrained encoders and a frozen LLM joined by trainable projectors.

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
        self.encoders = nn.ModuleDict(dict(encoders))
        self.projectors = nn.ModuleDict(dict(projectors))
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
        return out

    def groups(self) -> dict[str, dict[str, nn.Parameter]]:
        """Every trainable group → its parameters by full name. Tied weights appear once."""
        names = {id(p): n for n, p in self.named_parameters()}
        return {
            group: {names[id(p)]: p for module in modules for p in module.parameters()}
            for group, modules in sorted(self.group_modules().items())
        }

    def set_trainable(self, groups: Sequence[str]) -> list[str]:
        """Make exactly ``groups`` trainable; returns the names of the trainable parameters."""
        known = self.groups()
        unknown = [g for g in groups if g not in known]
        if unknown:
            raise KeyError(f"unknown trainable group(s) {unknown}; available: {sorted(known)}")
        self.requires_grad_(False)
        for g in groups:
            for p in known[g].values():
                p.requires_grad_(True)
        self.train(self.training)
        return [n for n, p in self.named_parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> MultimodalLM:
        """Frozen encoders and a frozen LLM stay in eval mode (no dropout, fixed norms)."""
        super().train(mode)
        for module in [*self.encoders.values(), self.llm]:
            if not any(p.requires_grad for p in module.parameters()):
                module.eval()
        return self

    # --- forward ------------------------------------------------------------------------------------------

    def item_length(self, modality: str, input_length: int) -> int:
        """Slots one item of ``modality`` takes in the LLM sequence."""
        return self.projectors[modality].output_length(self.encoders[modality].output_length(input_length))

    def encode_items(self, modality: str, items: ModalityItems) -> tuple[Tensor, Tensor]:
        """Run encoder and projector; returns tokens ``(n, s, d)`` and ``(n,)`` valid lengths."""
        encoder = self.encoders[modality]
        with torch.set_grad_enabled(torch.is_grad_enabled() and _trains(encoder)):
            feats, lengths = encoder(items.inputs, items.lengths)
        return self.projectors[modality](feats, lengths)

    def embed(self, batch: MultimodalBatch) -> Tensor:
        """Text embeddings ``(b, t, d)`` with every modality slot replaced by its projected item tokens."""
        embeds = self.llm.get_input_embeddings()(batch.input_ids)
        token_sample = batch.token_sample()
        for modality, items in batch.items.items():
            tokens, lengths = self.encode_items(modality, items)
            slots = batch.token_modality == MODALITY_IDS[modality]
            self._check_slots(batch, modality, slots, token_sample, items, lengths)
            valid = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lengths[:, None]
            embeds = embeds.masked_scatter(slots[..., None], tokens[valid].to(embeds.dtype))
        return embeds

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
        decoder = self.llm.get_decoder()
        # Packed rows: no mask and no cache, so transformers treats restarting position_ids as separate
        # sequences (DESIGN.md §4).
        out = decoder(
            inputs_embeds=self.embed(batch),
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
        )
        return out.last_hidden_state

    def forward(self, batch: MultimodalBatch, return_logits: bool = False) -> ModelOutput:
        """Loss over labelled positions, computed in chunks from the selected hidden states."""
        hidden = self.hidden_states(batch)
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
        return ModelOutput(loss=loss, sample_loss=sums / per, num_labels=count, logits=logits)

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
    ) -> Sample:
        """Transform raw items (waveforms, PIL images) and tokenize a conversation into a :class:`Sample`."""
        inputs = {m: [self.encoders[m].transform(x) for x in xs] for m, xs in (items or {}).items()}
        lengths = {m: [self.item_length(m, self.encoders[m].input_length(x)) for x in xs] for m, xs in inputs.items()}
        chat = encode_chat(self.tokenizer, messages, lengths, add_generation_prompt=add_generation_prompt)
        return Sample(key, chat, inputs)

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
        return self.prepare(decoded["key"], decoded["messages"], items, add_generation_prompt=add_generation_prompt)

    @torch.no_grad()
    def generate(self, samples: Sequence[Sample], **options: Any) -> list[str]:
        """Answer each sample's prompt (built with ``add_generation_prompt=True``), batched with left padding.

        ``options`` go to Hugging Face ``generate`` (``max_new_tokens``, ``do_sample``, ``temperature``,
        ``top_p``, ``num_beams``, ``repetition_penalty``); greedy decoding by default.
        """
        batch = MultimodalBatch.pad(samples, self.tokenizer.pad_token_id, side="left").to(self.device)
        options = {"max_new_tokens": 64, "do_sample": False} | options
        eos = self.llm.generation_config.eos_token_id
        out = self.llm.generate(
            inputs_embeds=self.embed(batch),
            attention_mask=batch.attention_mask,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=eos if eos is not None else self.tokenizer.eos_token_id,
            **options,
        )
        return [s.strip() for s in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

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


def _trains(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())
