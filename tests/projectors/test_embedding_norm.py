"""``model.token_norm: embedding_rms``: projected tokens get the RMS of the LLM's own input embeddings."""

from __future__ import annotations

import pytest
import torch
from conftest import random_audio, tiny_recipe
from torch import nn

from mmadapter.batch import MultimodalBatch
from mmadapter.config import RecipeError
from mmadapter.model import MultimodalLM
from mmadapter.projectors.embedding_norm import EmbeddingRmsNorm


def rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean(-1).sqrt()


def test_every_token_gets_the_mean_rms_of_the_embedding_table() -> None:
    table = nn.Embedding(50, 16)
    norm = EmbeddingRmsNorm(table)
    tokens = torch.randn(3, 5, 16) * torch.tensor([0.01, 1.0, 300.0])[:, None, None]
    out = norm(tokens)
    want = rms(table.weight).mean()
    assert torch.allclose(rms(out), want.expand(3, 5), rtol=1e-5)
    assert torch.allclose(out / rms(out)[..., None], tokens / rms(tokens)[..., None], atol=1e-5)  # direction kept
    assert torch.equal(norm(torch.zeros(2, 16)), torch.zeros(2, 16))


def test_the_target_follows_the_table_when_it_changes() -> None:
    table = nn.Embedding(50, 16)
    norm = EmbeddingRmsNorm(table)
    before = norm.target().clone()
    with torch.no_grad():
        table.weight.mul_(3.0)
    assert torch.allclose(norm.target(), 3 * before)


def test_gradients_reach_the_projector_through_the_norm() -> None:
    table = nn.Embedding(50, 16)
    proj = nn.Linear(8, 16)
    EmbeddingRmsNorm(table)(proj(torch.randn(4, 8))).sum().backward()
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    assert table.weight.grad is None


def test_the_model_scales_projected_tokens_only_when_asked() -> None:
    audio = torch.as_tensor(random_audio(1.0))
    plain = MultimodalLM.from_recipe(tiny_recipe())
    normed = MultimodalLM.from_recipe(tiny_recipe("model.token_norm=embedding_rms"))
    normed.load_state_dict(plain.state_dict())
    messages = [{"role": "user", "content": "Transcribe: <audio>"}, {"role": "assistant", "content": "3 7"}]
    batch = MultimodalBatch.pack([plain.prepare("a", messages, {"audio": [audio.numpy()]})])
    with torch.no_grad():
        raw, lengths = plain.encode_items("audio", batch.items["audio"])
        scaled, _ = normed.encode_items("audio", batch.items["audio"])
    target = rms(normed.llm.get_input_embeddings().weight).mean()
    valid = scaled[0, : lengths[0]]
    assert torch.allclose(rms(valid), target.expand(valid.shape[0]), rtol=1e-4)
    assert not torch.allclose(rms(raw[0, : lengths[0]]), target.expand(valid.shape[0]), rtol=1e-2)
    assert len(normed.state_dict()) == len(plain.state_dict())  # no parameters or buffers of its own


def test_an_unknown_token_norm_is_a_recipe_error() -> None:
    with pytest.raises(RecipeError, match="token_norm"):
        tiny_recipe("model.token_norm=layer")
