"""MultimodalLM with graphs: every GNN arch × graph projector mode in a packed batch that mixes audio, image and
graph samples; packed equals padded; save → load; graph tokens through out-of-sequence cross attention."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from adapter_helpers import ADAPTERS, wake
from conftest import random_audio, random_graph, random_image, tiny_recipe

from mmadapter.batch import MultimodalBatch, Sample
from mmadapter.config import Recipe
from mmadapter.model import MultimodalLM

ARCHS = ["gcn", "sage", "gat", "gin"]
MODES: dict[str, dict[str, Any]] = {
    "nodes": {"mode": "nodes", "max_nodes": 6},
    "pool": {"mode": "pool", "pooling": "attention", "k": 2},
    "target": {"mode": "target", "pooling": "max"},
}
GRAPH = 'model.encoders.graph={"name": "gnn_test"}'


def graph_projector(**options: Any) -> str:
    return f"model.projectors.graph={json.dumps({'name': 'graph', **options})}"


def chat(prompt: str, answer: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "user", "content": prompt}]
    return msgs + ([{"role": "assistant", "content": answer}] if answer is not None else [])


def mixed_samples(model: MultimodalLM, graph_seed: int = 0) -> list[Sample]:
    """Audio, image, one-graph (with a target node), text-only and audio + image + two-graph samples."""
    g = graph_seed
    return [
        model.prepare("a", chat("Say <audio>", "1 2 3"), {"audio": [random_audio(1.0, 1)]}),
        model.prepare("b", chat("Describe <image>", "a red circle"), {"image": [random_image(2)]}),
        model.prepare(
            "g", chat("Which community is the node in? <graph>", "two"), {"graph": [random_graph(g, 9, 16, target=4)]}
        ),
        model.prepare("c", chat("Hello there", "hi")),
        model.prepare(
            "d",
            chat("<audio> <graph> <image> and <graph>", "all"),
            {
                "audio": [random_audio(0.7, 3)],
                "image": [random_image(4)],
                "graph": [random_graph(g + 1, 3, 16), random_graph(g + 2, 8, 16)],
            },
        ),
    ]


def graph_recipe(arch: str, projector: dict[str, Any]) -> Recipe:
    return Recipe.from_dict(
        {
            "model": {
                "llm": {"name": "causal_lm_test"},
                "encoders": {
                    "audio": {"name": "whisper_test"},
                    "image": {"name": "open_clip_test"},
                    "graph": {"name": "gnn_test", "arch": arch},
                },
                "projectors": {
                    "audio": {"name": "stack"},
                    "image": {"name": "mlp"},
                    "graph": {"name": "graph", **projector},
                },
            },
            "train": {"stages": [{"name": "align", "trainable": ["projectors"]}]},
        }
    )


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("arch", ARCHS)
def test_every_gnn_and_graph_mode_trains_in_a_mixed_packed_batch(arch: str, mode: str) -> None:
    model = MultimodalLM.from_recipe(graph_recipe(arch, MODES[mode])).train()
    samples = mixed_samples(model)
    batch = MultimodalBatch.pack(samples)
    graphs = batch.items["graph"]
    assert (
        graphs.inputs.num_graphs == 3 and graphs.lengths.tolist() == [9, 3, 8] and graphs.sample.tolist() == [2, 4, 4]
    )
    slots = [s.chat.token_modality.count(3) for s in samples]
    want = [model.token_count("graph", n) for n in (9, 3, 8)]
    assert slots == [0, 0, want[0], 0, want[1] + want[2]]
    out = model(batch)
    assert torch.isfinite(out.loss) and out.num_labels > 0
    out.loss.backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == name.startswith("projectors."), name
    assert all(p.grad.abs().sum() > 0 for p in model.projectors["graph"].parameters())


def test_graph_items_change_only_their_own_sample_and_packed_equals_padded() -> None:
    torch.manual_seed(0)
    model = MultimodalLM.from_recipe(tiny_recipe(GRAPH, graph_projector(mode="nodes")))
    first, second = mixed_samples(model, 0), mixed_samples(model, 10)
    with torch.no_grad():
        a = model(MultimodalBatch.pack(first)).sample_loss
        b = model(MultimodalBatch.pack(second)).sample_loss
        padded = model(MultimodalBatch.pad(first, model.tokenizer.pad_token_id)).sample_loss
    torch.testing.assert_close(padded, a, rtol=0, atol=1e-5)
    changed = (a - b).abs() > 1e-6
    assert changed.tolist() == [False, False, True, False, True]


def test_decoded_graphs_and_device_moves() -> None:
    model = MultimodalLM.from_recipe(tiny_recipe(GRAPH, graph_projector(mode="target")))
    decoded = {
        "key": "k",
        "messages": chat("<graph>", "7"),
        "audio": [],
        "image": [],
        "graph": [random_graph(1, 5, 16)],
    }
    sample = model.prepare_decoded(decoded)
    assert sample.chat.token_modality.count(3) == model.token_count("graph", 5) == 2
    batch = MultimodalBatch.pack([sample]).to("cpu")
    assert batch.items["graph"].inputs.x.shape == (5, 16)
    assert torch.isfinite(model(batch).loss)


def test_reload_gives_identical_logits(tmp_path: Path) -> None:
    model = MultimodalLM.from_recipe(tiny_recipe(GRAPH, graph_projector(mode="nodes")))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    model.save(tmp_path)
    again = MultimodalLM.load(tmp_path)
    batch = MultimodalBatch.pack(mixed_samples(model))
    with torch.no_grad():
        assert torch.equal(model(batch, return_logits=True).logits, again(batch, return_logits=True).logits)


def test_graph_tokens_reach_the_llm_through_out_of_sequence_cross_attention() -> None:
    torch.manual_seed(0)
    model = wake(MultimodalLM.from_recipe(tiny_recipe(GRAPH, graph_projector(), ADAPTERS["cross_out_of_sequence"])))
    assert model.item_length("graph", 5) == 0 and model.token_count("graph", 5) == 1
    one, two = ([model.prepare("x", chat("<graph>", "1"), {"graph": [random_graph(s, 5, 16)]})] for s in (1, 2))
    assert one[0].chat.token_modality.count(3) == 0
    with torch.no_grad():
        a = model(MultimodalBatch.pack(one), return_logits=True).logits
        b = model(MultimodalBatch.pack(two), return_logits=True).logits
    assert a.shape == b.shape and not torch.allclose(a, b, atol=1e-5)
    assert np.isfinite(a.numpy()).all()
