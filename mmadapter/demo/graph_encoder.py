"""Demo step 1, graphs: a tiny GraphSAGE learns what the topic of a node is and which topics a graph holds.

Real graph adapters start from a GNN that already knows its graphs (pretrained on the graph, or with a
graph-text objective as in GraphGPT). Here the GNN (our ``gnn`` family) learns on graphs of its own, fresh
planted-community graphs from the same generator as the demo's graph task
(:func:`mmadapter.data.synthetic_graphs.random_graph`), over node features taken from the step-1 LLM's input
embeddings of each node's text (``node_text: llm_embeddings``, exactly as the demo model computes them). Two
heads teach it:

- per node, its community's topic (5 classes), so the target node's embedding names its topic;
- per graph, from the element-wise maximum over its nodes, whether it has two or three communities: the
  maximum of topic-like node embeddings shows which topics occur, the sum of which is a linear read-out of
  the count — what the demo's ``graph`` projector (``target`` mode, ``max`` pooling) hands the LLM.

Saved as a safetensors state dict; ``{name: gnn, name_or_path: FILE, **GraphPretrainSettings.encoder_options}``
loads it. Shape letters: n graphs, s nodes of the largest graph, d ``hidden``, T topics.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.nn import functional as F
from torch_geometric.data import Batch, Data

from mmadapter.config import LLMSpec
from mmadapter.data.synthetic_graphs import TOPICS, random_graph
from mmadapter.demo.steps import PretrainResult, epochs, fit, pretraining
from mmadapter.encoders.gnn import GnnEncoder, GnnSpec
from mmadapter.llm.causal_lm import causal_lm

__all__ = ["GraphPretrainSettings", "pretrain_graph_encoder"]

COUNTS = (2, 3)


@dataclass(frozen=True)
class GraphPretrainSettings:
    """Network options (as the demo recipe's ``model.encoders.graph`` gives them) and training schedule."""

    arch: str = "sage"
    hidden: int = 128
    layers: int = 2
    graphs: int = 1500
    test_graphs: int = 300
    steps: int = 150
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 10
    threads: int | None = 2
    log_every: int = 50

    def encoder_options(self, in_dim: int) -> dict[str, Any]:
        """The ``gnn`` options of this network over node texts embedded in an LLM of width ``in_dim``."""
        return {
            "arch": self.arch,
            "in_dim": in_dim,
            "hidden": self.hidden,
            "layers": self.layers,
            "norm": "layer",
            "residual": True,
            "node_text": "llm_embeddings",
        }


class GraphHeads(nn.Module):
    """Node topic logits ``(N, T)`` from node embeddings and count logits ``(n, 2)`` from their maximum."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.topic = nn.Linear(dim, len(TOPICS))
        self.count = nn.Linear(dim, len(COUNTS))

    def forward(self, nodes: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """``nodes`` ``(n, s, d)`` padded per graph, ``valid`` ``(n, s)``."""
        pooled = nodes.masked_fill(~valid[..., None], float("-inf")).amax(1)  # (n, d)
        return self.topic(nodes[valid]), self.count(pooled)


@dataclass
class _Graphs:
    data: list[Data]
    topics: list[Tensor]  # per graph (N,): each node's topic index in TOPICS
    counts: Tensor  # (n,): index in COUNTS


def _draw(encoder: GnnEncoder, count: int, rng: np.random.Generator) -> _Graphs:
    names = list(TOPICS)
    out = _Graphs([], [], torch.empty(count, dtype=torch.long))
    for i in range(count):
        graph = random_graph(rng)
        out.data.append(encoder.transform({"edge_index": graph["edge_index"], "node_text": graph["node_text"]}))
        out.topics.append(torch.tensor([names.index(str(graph["class_names"][c])) for c in graph["y"]]))
        out.counts[i] = COUNTS.index(len(graph["class_names"]))
    return out


def _forward(encoder: GnnEncoder, heads: GraphHeads, graphs: _Graphs, idx: Sequence[int]) -> tuple[Tensor, ...]:
    batch = Batch.from_data_list([graphs.data[i] for i in idx])
    lengths = torch.tensor([graphs.data[i].num_nodes for i in idx])
    nodes, counts = encoder(batch, lengths)
    valid = torch.arange(nodes.shape[1])[None] < counts[:, None]
    topic_logits, count_logits = heads(nodes, valid)
    return topic_logits, torch.cat([graphs.topics[i] for i in idx]), count_logits, graphs.counts[list(idx)]


@torch.no_grad()
def evaluate_graphs(encoder: GnnEncoder, heads: GraphHeads, graphs: _Graphs) -> dict[str, float]:
    """``node_accuracy`` (each node's topic) and ``count_accuracy`` (each graph's number of communities)."""
    encoder.eval()
    topic_logits, topics, count_logits, counts = _forward(encoder, heads, graphs, range(len(graphs.data)))
    return {
        "node_accuracy": (topic_logits.argmax(-1) == topics).float().mean().item(),
        "count_accuracy": (count_logits.argmax(-1) == counts).float().mean().item(),
    }


def pretrain_graph_encoder(
    llm_dir: Path | str, out_file: Path | str, settings: GraphPretrainSettings | None = None, seed: int = 0
) -> PretrainResult:
    """Train the GNN on fresh community graphs whose node texts the LLM in ``llm_dir`` embeds; save its weights.

    Args:
        llm_dir: The step-1 LLM checkpoint (its input embeddings give the node features).
        out_file: The ``.safetensors`` file to write.
        settings: Network and schedule.
        seed: Initialisation, graphs and batch order.

    Returns:
        The file, held-out ``node_accuracy`` and ``count_accuracy`` on other fresh graphs, the loss per step and
        the time taken.
    """
    settings = settings or GraphPretrainSettings()
    out = Path(out_file)
    label = "stage 1: graph encoder learns node topics and how many communities a graph has"
    with pretraining(label, out, settings.threads, seed) as result:
        llm, tokenizer = causal_lm(LLMSpec(name_or_path=str(llm_dir), dtype="float32"))
        width = llm.get_input_embeddings().embedding_dim
        encoder = GnnEncoder(GnnSpec(name="gnn", config={}, **settings.encoder_options(width)))
        encoder.bind_llm(llm, tokenizer)
        heads = GraphHeads(settings.hidden)
        rng = np.random.default_rng([seed, 7])
        train, test = _draw(encoder, settings.graphs, rng), _draw(encoder, settings.test_graphs, rng)
        result.losses = _fit(encoder, heads, train, settings, seed)
        result.metrics = evaluate_graphs(encoder, heads, test) | {"train_graphs": settings.graphs}
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(out))
    m = result.metrics
    print(f"[demo]   held-out: node topics {m['node_accuracy']:.1%}, community counts {m['count_accuracy']:.1%}")
    return result


def _fit(encoder: GnnEncoder, heads: GraphHeads, data: _Graphs, s: GraphPretrainSettings, seed: int) -> list[float]:
    def losses() -> Iterator[Tensor]:
        for idx in epochs(len(data.data), s.batch_size, random.Random(seed)):
            topic_logits, topics, count_logits, counts = _forward(encoder, heads, data, idx)
            yield F.cross_entropy(topic_logits, topics) + F.cross_entropy(count_logits, counts)

    encoder.train()
    params = [*encoder.parameters(), *heads.parameters()]
    out = fit(params, losses(), s.steps, s.lr, s.warmup_steps, weight_decay=0.01, log_every=s.log_every)
    encoder.eval()
    return out
