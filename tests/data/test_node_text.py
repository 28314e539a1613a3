"""Node features from node texts: the mean of the LLM's input embedding rows (or of a text encoder's last hidden
state), computed once per graph (memory and disk cache), and graphs with only node texts through the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_recipe

from mmadapter.batch import MultimodalBatch
from mmadapter.config import RecipeError
from mmadapter.data.node_text import (
    LLMEmbeddingMean,
    NodeFeatureCache,
    NodeTextFeatures,
    NodeTextSpec,
    build_node_text_features,
)
from mmadapter.data.skips import BadSample
from mmadapter.llm.tokenizer import byte_tokenizer
from mmadapter.model import MultimodalLM

TEXTS = np.array(["quantum physics", "cell biology", "", "jazz"])


def text_graph(texts: np.ndarray = TEXTS) -> dict[str, np.ndarray]:
    n = len(texts)
    ring = np.stack([np.arange(n), (np.arange(n) + 1) % n]).astype(np.int64)
    return {"edge_index": np.concatenate([ring, ring[::-1]], 1), "node_text": texts}


def text_graph_model(*overrides: str) -> MultimodalLM:
    encoder = {"name": "gnn_test", "in_dim": 64, "node_text": "llm_embeddings"}
    return MultimodalLM.from_recipe(
        tiny_recipe(
            f"model.encoders.graph={json.dumps(encoder)}", 'model.projectors.graph={"name": "graph"}', *overrides
        )
    )


def test_llm_embedding_features_are_the_mean_of_the_token_rows() -> None:
    table = torch.randn(300, 8)
    features = NodeTextFeatures(LLMEmbeddingMean(table, byte_tokenizer(), 128), NodeFeatureCache(16))
    x = features(TEXTS)
    assert x.dtype == np.float32 and x.shape == (4, 8)
    for text, row in zip(TEXTS, x, strict=True):
        ids = list(text.encode())  # the byte tokenizer: token id == byte value
        want = table[ids].mean(0) if ids else torch.zeros(8)
        np.testing.assert_allclose(row, want.numpy(), rtol=1e-6, atol=1e-6)
    truncated = NodeTextFeatures(LLMEmbeddingMean(table, byte_tokenizer(), 3), NodeFeatureCache(16))(TEXTS[:1])
    np.testing.assert_allclose(truncated[0], table[list(b"qua")].mean(0).numpy(), rtol=1e-6, atol=1e-6)


def test_each_graph_is_embedded_once_in_memory_and_on_disk(tmp_path: Path) -> None:
    table = torch.randn(300, 8)
    calls = []

    class Counting(LLMEmbeddingMean):
        def embed(self, texts):
            calls.append(list(texts))
            return super().embed(texts)

    first = NodeTextFeatures(Counting(table, byte_tokenizer(), 128), NodeFeatureCache(16, tmp_path))
    a = first(TEXTS)
    a[:] = 0  # the caller's copy; the cache keeps its own
    b = first(TEXTS)
    assert len(calls) == 1 and first.computed == 1 and np.abs(b).sum() > 0
    first(TEXTS[:2])
    assert len(calls) == 2
    files = sorted(p.suffix for p in tmp_path.rglob("*") if p.is_file())
    assert files == [".safetensors", ".safetensors"]
    # A new process (another loader worker, the next run) finds them on disk.
    again = NodeTextFeatures(Counting(table, byte_tokenizer(), 128), NodeFeatureCache(16, tmp_path))
    np.testing.assert_array_equal(again(TEXTS), b)
    assert len(calls) == 2 and again.computed == 0
    # Other weights are another embedder: never served the old features.
    other = NodeTextFeatures(Counting(table + 1, byte_tokenizer(), 128), NodeFeatureCache(16, tmp_path))
    other(TEXTS)
    assert len(calls) == 3


def test_memory_cache_is_bounded() -> None:
    cache = NodeFeatureCache(2)
    for key in "abc":
        cache.put(key, torch.zeros(1))
    assert len(cache) == 2 and cache.get("a") is None and cache.get("c") is not None


def test_a_graph_with_only_node_texts_trains_a_step() -> None:
    torch.manual_seed(0)
    model = text_graph_model().train()
    table = model.llm.get_input_embeddings().weight
    samples = [
        model.prepare(f"s{i}", [{"role": "user", "content": "Topic? <graph>"}, {"role": "assistant", "content": a}],
                      {"graph": [text_graph(TEXTS[i:] if i else TEXTS)]})
        for i, a in enumerate(["physics", "biology"])
    ]  # fmt: skip
    x = samples[0].items["graph"][0].x
    torch.testing.assert_close(x[0], table[list(b"quantum physics")].mean(0).detach())
    out = model(MultimodalBatch.pack(samples))
    assert torch.isfinite(out.loss) and out.num_labels > 0
    out.loss.backward()
    grads = [p.grad for p in model.projectors["graph"].parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert model.encoders["graph"].node_features.computed == 2


def test_node_text_errors() -> None:
    with pytest.raises(RecipeError, match=r"model.encoders.graph.in_dim: is 16, but node_text features have 64"):
        text_graph_model("model.encoders.graph.in_dim=16")
    with pytest.raises(RecipeError, match="node_text must be 'llm_embeddings' or a mapping"):
        text_graph_model('model.encoders.graph.node_text="llm"')
    model = text_graph_model()
    numeric = {"edge_index": np.zeros((2, 0), np.int64), "x": np.zeros((2, 64), np.float32)}
    with pytest.raises(BadSample, match="embeds node texts"):
        model.encoders["graph"].transform(numeric)
    plain = MultimodalLM.from_recipe(
        tiny_recipe('model.encoders.graph={"name": "gnn_test"}', 'model.projectors.graph={"name": "graph"}')
    )
    with pytest.raises(BadSample, match=r"set model\.encoders\.graph\.node_text"):
        plain.encoders["graph"].transform(text_graph())


def test_a_text_encoder_named_in_the_recipe(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    tokenizer = byte_tokenizer()
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=12, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=24, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    BertModel(config).save_pretrained(tmp_path / "enc")
    tokenizer.save_pretrained(tmp_path / "enc")
    spec = NodeTextSpec(encoder=str(tmp_path / "enc"), batch_size=3)
    features = build_node_text_features(spec, llm=None, tokenizer=None)
    assert features.embedder.dim == 12
    x = features(TEXTS)
    bert = BertModel.from_pretrained(tmp_path / "enc").eval()
    for text, row in zip(TEXTS, x, strict=True):
        ids = tokenizer(str(text), add_special_tokens=False)["input_ids"]
        if ids:  # a lone text: every token is real, so the masked mean is the plain mean
            with torch.no_grad():
                want = bert(torch.tensor([ids])).last_hidden_state[0].mean(0)
            np.testing.assert_allclose(row, want.numpy(), rtol=1e-4, atol=1e-5)
        else:
            assert not row.any()
    encoder = {"name": "gnn_test", "in_dim": 8, "node_text": {"encoder": str(tmp_path / "enc")}}
    with pytest.raises(RecipeError, match=r"in_dim: is 8, but node_text features have 12 \(the width of"):
        text_graph_model(f"model.encoders.graph={json.dumps(encoder)}")
