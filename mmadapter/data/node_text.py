"""Node features from node texts, computed once per graph and cached (GraphAdapter / LLaGA style).

Shape letters: N nodes, F feature width, V vocabulary, L tokens of one text.

A graph whose nodes carry only ``node_text`` (N,) strings gets numeric features ``x`` (N, F) from one of two
embedders, named by the graph encoder's ``node_text`` option (:class:`NodeTextSpec`):

- ``llm_embeddings`` (:class:`LLMEmbeddingMean`): each text tokenized with the LLM's tokenizer (no special
  tokens, at most ``max_length`` tokens) and its tokens' rows of the frozen LLM's input embedding table
  averaged; F is the LLM width. GraphAdapter (https://arxiv.org/abs/2402.12984) and LLaGA
  (https://arxiv.org/abs/2402.08170) feed a GNN such features of the LLM itself.
- ``{encoder: <hub id or path>}`` (:class:`TextEncoderMean`): a Hugging Face text encoder (e.g. a
  sentence-transformers model), its last hidden state mean-pooled over the attention mask; F is its width.

:class:`NodeTextFeatures` puts a :class:`NodeFeatureCache` in front of the embedder: an in-memory LRU per
process (each data-loader worker has its own) and, with ``cache_dir``, one safetensors file per graph shared by
workers and runs. Entries are keyed by a digest of the embedder's identity (its kind, options, tokenizer and a
fingerprint of its weights) and of the graph's texts, so each shard sample is embedded once, a sample that
changes under the same key is never served stale features, and nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, PositiveInt, model_validator
from safetensors.torch import load_file, save_file
from torch import Tensor

__all__ = [
    "LLM_EMBEDDINGS",
    "LLMEmbeddingMean",
    "NodeFeatureCache",
    "NodeTextEmbedder",
    "NodeTextFeatures",
    "NodeTextSpec",
    "TextEncoderMean",
    "build_node_text_features",
]

LLM_EMBEDDINGS = "llm_embeddings"
_PROBE = "The quick brown fox: 12 ÿ 中文"  # tokenized into the identity, so another tokenizer is another cache


class NodeTextSpec(BaseModel):
    """The graph encoder's ``node_text`` option: ``llm_embeddings`` (short form) or a mapping.

    Attributes:
        encoder: A Hugging Face text encoder (hub id or directory) to mean-pool; ``None``: the frozen LLM's input
            embeddings (what ``llm_embeddings`` means).
        max_length: Tokens of one node text at most; longer texts are truncated.
        batch_size: Node texts encoded together by ``encoder``.
        cache_size: Graphs whose features each process keeps in memory.
        cache_dir: Directory of the on-disk cache (one safetensors file per graph); ``None``: memory only.
    """

    model_config = ConfigDict(extra="forbid")

    encoder: str | None = None
    max_length: PositiveInt = 128
    batch_size: PositiveInt = 64
    cache_size: PositiveInt = 4096
    cache_dir: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if isinstance(data, str):
            if data != LLM_EMBEDDINGS:
                raise ValueError(f"node_text must be {LLM_EMBEDDINGS!r} or a mapping {{encoder: <text encoder>}}")
            return {}
        return data


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _fingerprint(weight: Tensor, rows: int = 64) -> str:
    """A digest of ``rows`` evenly spaced rows of a weight (with its shape and dtype): two tables differ in it
    unless they are equal, without hashing gigabytes."""
    step = max(1, weight.shape[0] // rows)
    sample = weight.detach()[::step][:rows].to("cpu", torch.float32).contiguous()
    return hashlib.sha256(sample.numpy().tobytes()).hexdigest() + f":{tuple(weight.shape)}:{weight.dtype}"


class NodeTextEmbedder(ABC):
    """Node texts → features ``(N, F)`` float32 on the CPU; ``identity`` says which features they are."""

    dim: int | None
    """F, when known before the first call (``None``: only after loading the encoder)."""

    @property
    @abstractmethod
    def identity(self) -> str:
        """A digest that changes with anything that changes the features (kind, options, tokenizer, weights)."""

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> Tensor:
        """Features ``(N, F)`` float32 of ``texts``; a text with no token gets zeros."""


class LLMEmbeddingMean(NodeTextEmbedder):
    """The mean of the frozen LLM's input embedding rows of each text's tokens.

    Args:
        table: The input embedding weight ``(V, F)``. On the CPU it is shared, not copied; a table on another
            device is copied to the CPU on first use (which a forked data-loader worker cannot do for CUDA, so
            build the model on the CPU first, as :meth:`MultimodalLM.from_recipe` does).
        tokenizer: The LLM's tokenizer.
        max_length: Tokens per text at most.
    """

    def __init__(self, table: Tensor, tokenizer: Any, max_length: int) -> None:
        self.table = table.detach()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.dim = int(table.shape[1])
        self._identity: str | None = None

    @property
    def identity(self) -> str:
        if self._identity is None:
            probe = self.tokenizer(_PROBE, add_special_tokens=False)["input_ids"]
            tok = (type(self.tokenizer).__name__, getattr(self.tokenizer, "name_or_path", ""), len(self.tokenizer))
            self._identity = _digest(LLM_EMBEDDINGS, self.max_length, tok, probe, _fingerprint(self._cpu_table()))
        return self._identity

    def _cpu_table(self) -> Tensor:
        if self.table.device.type != "cpu":
            self.table = self.table.to("cpu")
        return self.table

    def embed(self, texts: Sequence[str]) -> Tensor:
        table = self._cpu_table()
        ids = self.tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=self.max_length)
        ids = ids["input_ids"]
        counts = torch.tensor([len(t) for t in ids], dtype=torch.long)
        flat = torch.tensor([i for t in ids for i in t], dtype=torch.long)
        owner = torch.repeat_interleave(torch.arange(len(ids)), counts)
        rows = table[flat].to(torch.float32)  # (sum L, F)
        sums = torch.zeros(len(ids), table.shape[1]).index_add_(0, owner, rows)
        return sums / counts.clamp(min=1)[:, None].to(torch.float32)


class TextEncoderMean(NodeTextEmbedder):
    """A Hugging Face text encoder's last hidden state, mean-pooled over each text's tokens (loaded on first use,
    on the CPU, in eval mode, without gradients).

    Args:
        name_or_path: Hub id or directory of an ``AutoModel`` with an ``AutoTokenizer``.
        max_length: Tokens per text at most.
        batch_size: Texts encoded together.
        dim: The encoder's width, when known from its config (checked against the loaded model).
    """

    def __init__(self, name_or_path: str, max_length: int, batch_size: int, dim: int | None = None) -> None:
        self.name_or_path = name_or_path
        self.max_length = max_length
        self.batch_size = batch_size
        self.dim = dim
        self._model: Any = None
        self._tokenizer: Any = None
        self._identity: str | None = None

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.name_or_path)
        self._model = AutoModel.from_pretrained(self.name_or_path, dtype=torch.float32).eval().requires_grad_(False)
        self.dim = int(self._model.get_input_embeddings().embedding_dim if self.dim is None else self.dim)

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._load()
            probe = self._tokenizer(_PROBE, add_special_tokens=False)["input_ids"]
            weights = _fingerprint(self._model.get_input_embeddings().weight)
            last = _fingerprint(next(reversed(list(self._model.parameters()))).reshape(-1, 1))
            self._identity = _digest("encoder", self.name_or_path, self.max_length, probe, weights, last)
        return self._identity

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> Tensor:
        self._load()
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self._tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            hidden = self._model(**batch).last_hidden_state.to(torch.float32)  # (n, L, F)
            mask = batch["attention_mask"][..., None].to(torch.float32)
            out.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))
        if out and out[0].shape[1] != self.dim:
            raise ValueError(f"text encoder {self.name_or_path} makes {out[0].shape[1]} features, not {self.dim}")
        return torch.cat(out) if out else torch.zeros(0, self.dim or 0)


class NodeFeatureCache:
    """Features by key: an in-memory LRU of ``capacity`` entries, backed by ``directory`` when given.

    Disk entries are ``DIRECTORY/<key[:2]>/<key>.safetensors`` holding one tensor ``x``, written to a temporary
    file and renamed, so concurrent workers never read half a file.
    """

    def __init__(self, capacity: int, directory: Path | str | None = None) -> None:
        self.capacity = capacity
        self.directory = None if directory is None else Path(directory)
        self._memory: OrderedDict[str, Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Tensor | None:
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        x = load_file(path)["x"]
        self._remember(key, x)
        return x

    def put(self, key: str, x: Tensor) -> None:
        self._remember(key, x)
        path = self._path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        os.close(fd)
        try:
            save_file({"x": x.contiguous()}, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __len__(self) -> int:
        return len(self._memory)

    def _remember(self, key: str, x: Tensor) -> None:
        with self._lock:
            self._memory[key] = x
            self._memory.move_to_end(key)
            while len(self._memory) > self.capacity:
                self._memory.popitem(last=False)

    def _path(self, key: str) -> Path | None:
        return None if self.directory is None else self.directory / key[:2] / f"{key}.safetensors"


class NodeTextFeatures:
    """Cached node features of a graph's texts: ``features(node_text) -> x`` float32 ``(N, F)``.

    Attributes:
        embedder: What computes features on a cache miss.
        cache: Where they are kept.
        computed: Graphs embedded by this process (cache misses), for logs and tests.
    """

    def __init__(self, embedder: NodeTextEmbedder, cache: NodeFeatureCache) -> None:
        self.embedder = embedder
        self.cache = cache
        self.computed = 0

    def __call__(self, node_text: np.ndarray | Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in np.asarray(node_text).reshape(-1).tolist()]
        key = _digest(self.embedder.identity, texts)
        x = self.cache.get(key)
        if x is None:
            x = self.embedder.embed(texts).to(torch.float32).contiguous()
            self.computed += 1
            self.cache.put(key, x)
        return x.numpy().copy()  # the cached tensor stays as computed whatever the caller does


def build_node_text_features(spec: NodeTextSpec, llm: Any, tokenizer: Any) -> NodeTextFeatures:
    """The features a ``node_text`` option asks for: of ``llm``'s input embeddings, or of ``spec.encoder``
    (whose config is read now to learn its width; its weights load on first use)."""
    embedder: NodeTextEmbedder
    if spec.encoder is None:
        embedder = LLMEmbeddingMean(llm.get_input_embeddings().weight, tokenizer, spec.max_length)
    else:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(spec.encoder)
        width = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
        embedder = TextEncoderMean(spec.encoder, spec.max_length, spec.batch_size, width)
    return NodeTextFeatures(embedder, NodeFeatureCache(spec.cache_size, spec.cache_dir))
