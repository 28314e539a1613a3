"""MultimodalLM with graphs: every registered GNN family × arch (with and without edge features) × graph projector
mode in a packed batch that mixes audio, image and graph samples; packed equals padded; save → load; graph tokens
through ``cross`` gated attention, in the sequence and out of it."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
import torch
from adapter_helpers import ADAPTERS, one_thread, wake
from conftest import random_audio, random_graph, random_image, tiny_recipe

from mmadapter.batch import MultimodalBatch, Sample
from mmadapter.config import Recipe
from mmadapter.encoders import ENCODERS
from mmadapter.encoders.gnn import EDGE_ARCHS, Arch, GnnSpec
from mmadapter.llm import MODALITY_IDS
from mmadapter.model import MultimodalLM
from mmadapter.projectors.graph import Mode

FAMILIES = [name for name in ENCODERS if issubclass(ENCODERS.spec(name), GnnSpec)]
ARCHS: list[str] = list(get_args(Arch))
MODES: list[str] = list(get_args(Mode))
MODE_OPTIONS: dict[str, dict[str, Any]] = {  # a mode not listed here runs with its defaults
    "nodes": {"max_nodes": 6},  # caps the 9- and 8-node graphs
    "pool": {"pooling": "attention", "k": 2},
    "target": {"pooling": "max"},
}
EDGE_DIM = 3
NODES = (9, 3, 8)  # of sample "g"'s graph and of sample "d"'s two graphs
GRAPH_ID = MODALITY_IDS["graph"]
GRAPH = 'model.encoders.graph={"name": "gnn_test"}'
CROSS = {"in_sequence": ADAPTERS["cross"], "out_of_sequence": ADAPTERS["cross_out_of_sequence"]}
ENCODER_CASES = [
    pytest.param(family, arch, edge_dim, id=f"{family}-{arch}" + (f"-edge{edge_dim}" if edge_dim else ""))
    for family in FAMILIES
    for arch in ARCHS
    for edge_dim in (None, EDGE_DIM)
    if edge_dim is None or arch in EDGE_ARCHS
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


def test_the_cases_cover_every_registered_gnn_family_arch_and_mode() -> None:
    assert {"gnn", "gnn_test"} <= set(FAMILIES) and set(MODE_OPTIONS) <= set(MODES)
    assert {(p.values[0], p.values[1]) for p in ENCODER_CASES} == set(itertools.product(FAMILIES, ARCHS))
    assert {p.values[1] for p in ENCODER_CASES if p.values[2]} == set(EDGE_ARCHS)


def gnn_options(family: str, arch: str, edge_dim: int | None = None) -> dict[str, Any]:
    """``*_test`` with its own tiny shape; a full family with a small explicit one and random weights."""
    shape = {} if family.endswith("_test") else {"config": {}, "hidden": 8, "layers": 2, "heads": 2}
    return {"name": family, "arch": arch, "edge_dim": edge_dim, **shape}


def projector_options(mode: str) -> dict[str, Any]:
    return {"name": "graph", "mode": mode, **MODE_OPTIONS.get(mode, {})}


def override(key: str, options: dict[str, Any]) -> str:
    """A ``model.<key>={...}`` recipe override."""
    return f"model.{key}={json.dumps(options)}"


def graph_projector(**options: Any) -> str:
    return override("projectors.graph", {"name": "graph", **options})


def chat(prompt: str, answer: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "user", "content": prompt}]
    return msgs + ([{"role": "assistant", "content": answer}] if answer is not None else [])


def mixed_samples(
    model: MultimodalLM, seeds: tuple[int, int, int] = (0, 1, 2), edge_dim: int | None = None
) -> list[Sample]:
    """Audio, image, one-graph (with a target node), text-only and audio + image + two-graph samples; ``seeds``
    draw the graphs of ``NODES``, so changing one seed changes one graph and not its size."""

    def graph(i: int, target: int | None = None) -> dict[str, Any]:
        return random_graph(seeds[i], NODES[i], 16, edge_dim=edge_dim, target=target)

    return [
        model.prepare("a", chat("Say <audio>", "1 2 3"), {"audio": [random_audio(1.0, 1)]}),
        model.prepare("b", chat("Describe <image>", "a red circle"), {"image": [random_image(2)]}),
        model.prepare("g", chat("Which community is the node in? <graph>", "two"), {"graph": [graph(0, target=4)]}),
        model.prepare("c", chat("Hello there", "hi")),
        model.prepare(
            "d",
            chat("<audio> <graph> <image> and <graph>", "all"),
            {"audio": [random_audio(0.7, 3)], "image": [random_image(4)], "graph": [graph(1), graph(2)]},
        ),
    ]


def graph_slots(model: MultimodalLM, in_sequence: bool = True) -> list[int]:
    """Graph slots per sample of :func:`mixed_samples`: the projector's tokens, or none out of the sequence."""
    tokens = [model.token_count("graph", n) for n in NODES]
    assert all(t > 0 for t in tokens)
    return [0, 0, tokens[0], 0, tokens[1] + tokens[2]] if in_sequence else [0] * 5


def graph_recipe(encoder: dict[str, Any], projector: dict[str, Any]) -> Recipe:
    return Recipe.from_dict(
        {
            "model": {
                "llm": {"name": "causal_lm_test"},
                "encoders": {"audio": {"name": "whisper_test"}, "image": {"name": "open_clip_test"}, "graph": encoder},
                "projectors": {"audio": {"name": "stack"}, "image": {"name": "mlp"}, "graph": projector},
            },
            "train": {"stages": [{"name": "align", "trainable": ["projectors", "encoders.graph"]}]},
        }
    )


def sample_logits(batch: MultimodalBatch, logits: torch.Tensor) -> list[torch.Tensor]:
    """Per-sample logits of a packed batch's one row."""
    assert batch.cu_seqlens is not None
    return [logits[0, lo:hi] for lo, hi in itertools.pairwise(batch.cu_seqlens.tolist())]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("family", "arch", "edge_dim"), ENCODER_CASES)
def test_every_gnn_and_graph_mode_trains_in_a_mixed_packed_batch(
    family: str, arch: str, edge_dim: int | None, mode: str
) -> None:
    model = MultimodalLM.from_recipe(graph_recipe(gnn_options(family, arch, edge_dim), projector_options(mode)))
    model.train()
    samples = mixed_samples(model, edge_dim=edge_dim)
    assert [s.chat.token_modality.count(GRAPH_ID) for s in samples] == graph_slots(model)
    batch = MultimodalBatch.pack(samples)
    assert set(batch.items) == {"audio", "image", "graph"}
    graphs = batch.items["graph"].inputs
    assert graphs.num_graphs == 3 and batch.items["graph"].lengths.tolist() == list(NODES)
    assert batch.items["graph"].sample.tolist() == [2, 4, 4]
    edge_attr = getattr(graphs, "edge_attr", None)
    if edge_dim is None:
        assert edge_attr is None
    else:
        assert edge_attr.shape == (graphs.edge_index.shape[1], edge_dim)
        edge_attr.requires_grad_(True)  # the edge features must reach the loss, not only be carried along
    out = model(batch)
    assert torch.isfinite(out.loss) and out.num_labels > 0
    out.loss.backward()
    groups = model.groups()
    trained = {*groups["projectors"], *groups["encoders.graph"]}
    for name, p in model.named_parameters():
        assert (p.grad is not None) == (name in trained), name
    for part in ("encoders.graph", "projectors.graph"):
        for name, p in groups[part].items():
            assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    if edge_dim is not None:
        assert edge_attr.grad is not None and edge_attr.grad.abs().sum() > 0


def test_graph_items_change_only_their_own_sample_and_packed_equals_padded() -> None:
    torch.manual_seed(0)
    model = MultimodalLM.from_recipe(tiny_recipe(GRAPH, graph_projector(mode="nodes")))
    first, second = mixed_samples(model, (0, 1, 2)), mixed_samples(model, (10, 11, 12))
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
    assert sample.chat.token_modality.count(GRAPH_ID) == model.token_count("graph", 5) == 2
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


def projector_grads(model: MultimodalLM) -> dict[str, float]:
    return {
        n: 0.0 if p.grad is None else float(p.grad.abs().sum()) for n, p in model.groups()["projectors.graph"].items()
    }


@pytest.mark.parametrize("placement", list(CROSS))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", ARCHS)
def test_graph_tokens_reach_the_llm_through_cross_attention(arch: str, mode: str, placement: str) -> None:
    in_sequence = placement == "in_sequence"
    torch.manual_seed(0)
    overrides = (
        override("encoders.graph", gnn_options("gnn_test", arch)),
        override("projectors.graph", projector_options(mode)),
        CROSS[placement],
        'train.stages.0.trainable=["projectors", "gated_attention"]',
    )
    model = MultimodalLM.from_recipe(tiny_recipe(*overrides))
    assert model.adapters.in_sequence is in_sequence
    assert model.item_length("graph", 5) == (model.token_count("graph", 5) if in_sequence else 0)
    samples = mixed_samples(model)
    assert [s.chat.token_modality.count(GRAPH_ID) for s in samples] == graph_slots(model, in_sequence)
    batch = MultimodalBatch.pack(samples)
    assert int((batch.token_modality == GRAPH_ID).sum()) == sum(graph_slots(model, in_sequence))

    # Zero-init gates: out of the sequence the graph tokens cannot reach the loss yet; in it they do.
    model(batch).loss.backward()
    assert all((g > 0) == in_sequence for g in projector_grads(model).values()), projector_grads(model)
    model.zero_grad(set_to_none=True)
    wake(model)
    out = model(batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(g > 0 for g in projector_grads(model).values()), projector_grads(model)
    assert all(torch.isfinite(p.grad).all() for p in model.groups()["gated_attention"].values())

    other = MultimodalBatch.pack(mixed_samples(model, seeds=(7, 1, 2)))  # sample "g"'s graph only
    with torch.no_grad():
        a = sample_logits(batch, model(batch, return_logits=True).logits)
        b = sample_logits(other, model(other, return_logits=True).logits)
        packed = model(batch).sample_loss
        padded = model(MultimodalBatch.pad(samples, model.tokenizer.pad_token_id)).sample_loss
    assert [x.shape for x in a] == [x.shape for x in b] and all(torch.isfinite(x).all() for x in a)
    assert [not torch.equal(x, y) for x, y in zip(a, b, strict=True)] == [False, False, True, False, False]
    assert (a[2] - b[2]).abs().max() > 1e-4
    torch.testing.assert_close(padded, packed, rtol=0, atol=1e-5)
