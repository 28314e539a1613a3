"""Synthetic text-attributed graphs with planted communities (stochastic block models), for the demo and tests.

Shape letters: N nodes, E directed edges (each undirected edge twice), T topics.

Every community has a topic (:data:`TOPICS`); each node's text is a short phrase of that topic's words mixed
with noise words (``"quantum photon of energy"``), and its numeric ``x`` is the one-hot topic (over all T
topics) plus Gaussian noise. Nodes link inside their community with probability ``p_in`` and across with
``p_out``, and each community holds a ring so that it is connected.

- :func:`community_graph`: one graph (any size) as the arrays of a text-attributed graph file
  (:mod:`mmadapter.data.ego_subgraphs`): class = the node's topic. Tests cut ego-subgraphs from it.
- :func:`synthesize_graphs`: many small graphs of two or three communities, one question each, written as
  ``KEY.graph.npz`` files, a manifest per split and shards. Questions: ``topic`` — "Which topic is the target
  node's community about?" (answer: the topic word; the graph's ``target`` names the node), ``count`` — "How
  many communities does this graph have?" (answer ``two`` / ``three``).

Layout of ``out_dir``::

    graphs/<key>.graph.npz, graphs_<split>.jsonl, shards/graphs/<split>/shard-000000.tar (+ stats.json, by ``shard``)

Everything is drawn from one seed, so the same seed gives byte-identical files and shards.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from mmadapter.data.synthetic import Sharder, write_one_shard

__all__ = [
    "COUNT_WORDS",
    "QUESTIONS",
    "TOPICS",
    "SyntheticGraphs",
    "community_graph",
    "random_graph",
    "synthesize_graphs",
]

TOPICS: dict[str, tuple[str, ...]] = {
    "physics": ("quantum", "photon", "energy", "particle", "laser"),
    "biology": ("cell", "gene", "protein", "enzyme", "tissue"),
    "music": ("melody", "rhythm", "guitar", "chord", "piano"),
    "sports": ("football", "goal", "team", "match", "coach"),
    "cooking": ("recipe", "oven", "flavour", "spice", "bread"),
}
NOISE_WORDS = ("of", "the", "new", "study", "notes", "on", "a", "basic", "review", "with")
QUESTIONS: dict[str, str] = {
    "topic": "Which topic is the target node's community about? <graph>",
    "count": "How many communities does this graph have? <graph>",
}
COUNT_WORDS = {2: "two", 3: "three"}
Question = Literal["topic", "count"]
Features = Literal["text", "x", "both"]


def community_graph(
    sizes: Sequence[int],
    topics: Sequence[str],
    rng: np.random.Generator,
    p_in: float = 0.3,
    p_out: float = 0.02,
    words: int = 4,
    noise: float = 0.3,
    x_noise: float = 0.3,
    topical: float = 1.0,
) -> dict[str, np.ndarray]:
    """A stochastic block model graph with one topic per block.

    Args:
        sizes: Nodes of each community.
        topics: The topic of each community (keys of :data:`TOPICS`).
        rng: The random generator everything is drawn from.
        p_in: Edge probability inside a community (each also holds a ring).
        p_out: Edge probability across communities.
        words: Words per node text.
        noise: Probability that a word is a noise word instead of a topic word.
        x_noise: Standard deviation of the noise added to the one-hot topic features.
        topical: Probability that a node's text is about its topic at all; the others are noise words only, so
            that only the neighbourhood tells their class (below 1, one more draw per node).

    Returns:
        ``edge_index`` int64 (2, E) (both directions), ``node_text`` (N,), ``x`` float32 (N, T), ``y`` int64
        (N,) (the community), ``class_names`` (the community topics, as given).
    """
    if not 0 <= topical <= 1:
        raise ValueError(f"topical is a probability, got {topical}")
    if len(sizes) != len(topics) or min(sizes) < 1 or not set(topics) <= set(TOPICS):
        raise ValueError(f"one size ≥ 1 per topic, topics from {sorted(TOPICS)}; got {list(sizes)}, {list(topics)}")
    y = np.repeat(np.arange(len(sizes)), sizes)
    n = int(y.size)
    same = y[:, None] == y[None, :]
    upper = np.triu(rng.random((n, n)) < np.where(same, p_in, p_out), 1)
    start = 0
    for size in sizes:  # a ring per community keeps it connected
        for i in range(size if size > 2 else size - 1):
            a, b = start + i, start + (i + 1) % size
            upper[min(a, b), max(a, b)] = True
        start += size
    src, dst = np.nonzero(upper)
    edge_index = np.stack([np.concatenate([src, dst]), np.concatenate([dst, src])]).astype(np.int64)
    names = list(TOPICS)
    texts = []
    for community in y:
        vocab = TOPICS[topics[community]]
        p_noise = noise if topical == 1 or rng.random() < topical else 1.0  # the default draws as before
        picks = [rng.choice(NOISE_WORDS) if rng.random() < p_noise else rng.choice(vocab) for _ in range(words)]
        texts.append(" ".join(picks))
    onehot = np.eye(len(names), dtype=np.float32)[[names.index(topics[c]) for c in y]]
    x = (onehot + x_noise * rng.standard_normal(onehot.shape)).astype(np.float32)
    return {"edge_index": edge_index, "node_text": np.array(texts), "x": x, "y": y.astype(np.int64),
            "class_names": np.array(list(topics))}  # fmt: skip


def _split_sizes(n: int, k: int, rng: np.random.Generator, least: int = 3) -> list[int]:
    cuts = np.sort(rng.choice(np.arange(1, n - k * least + k), k - 1, replace=False)) if k > 1 else np.array([])
    parts = np.diff(np.concatenate([[0], cuts, [n - k * least + k]])).astype(int)
    return [int(p) + least - 1 for p in parts]


def random_graph(rng: np.random.Generator, nodes: tuple[int, int] = (9, 15)) -> dict[str, np.ndarray]:
    """A :func:`community_graph` of two or three communities with distinct random topics and ``nodes[0]`` to
    ``nodes[1]`` nodes (at least 3 per community), as :func:`synthesize_graphs` draws them. Community 0 holds
    node 0."""
    k = int(rng.choice([2, 3]))
    topics = [str(t) for t in rng.choice(list(TOPICS), k, replace=False)]
    return community_graph(_split_sizes(int(rng.integers(nodes[0], nodes[1] + 1)), k, rng), topics, rng)


@dataclass
class SyntheticGraphs:
    """Where the graph data went: a manifest and a shard directory per split."""

    root: Path
    manifests: dict[str, Path] = field(default_factory=dict)
    shards: dict[str, Path] = field(default_factory=dict)

    def shard_pattern(self, split: str) -> str:
        """The shard path of a split, for a recipe's ``data.train[].shards``."""
        return str(self.shards[split] / "shard-000000.tar")


def synthesize_graphs(
    out_dir: Path | str,
    train: int = 400,
    test: int = 100,
    seed: int = 0,
    questions: Sequence[Question] = ("topic", "count"),
    features: Features = "both",
    nodes: tuple[int, int] = (9, 15),
    shard: Sharder = write_one_shard,
) -> SyntheticGraphs:
    """Write ``train + test`` small community graphs with one question each, their manifests and shards.

    Args:
        out_dir: Where everything goes (created if needed; existing files are overwritten).
        train: Training samples.
        test: Held-out samples (other graphs, drawn from the same distribution).
        seed: Draws every graph, text and question.
        questions: The question kinds, drawn uniformly per sample.
        features: Node arrays to store: ``node_text``, ``x`` (T = 5 features) or both.
        nodes: Smallest and largest node count of a graph (two or three communities of at least 3 nodes).
        shard: Turns each manifest into its shard (the demo runs the ``mmadapter shard`` command).

    Returns:
        The manifests and shard directories by split (``train``, ``test``).
    """
    if train < 1 or test < 1 or not set(questions) <= set(QUESTIONS) or not questions or nodes[0] < 9:
        raise ValueError(f"need train, test ≥ 1, questions from {list(QUESTIONS)}, nodes ≥ 9; got {train}, {test}")
    root = Path(out_dir)
    (root / "graphs").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    keep = {"text": ("node_text",), "x": ("x",), "both": ("node_text", "x")}[features]
    data = SyntheticGraphs(root)
    for split, count in (("train", train), ("test", test)):
        lines = []
        for i in range(count):
            graph = random_graph(rng, nodes)
            topics, k = [str(t) for t in graph["class_names"]], len(graph["class_names"])
            question = str(questions[int(rng.integers(len(questions)))])
            arrays = {"edge_index": graph["edge_index"], **{name: graph[name] for name in keep}}
            if question == "topic":
                target = int(rng.integers(graph["y"].size))
                arrays |= {"target": np.int64(target), "y": np.int64(graph["y"][target])}
                answer = topics[graph["y"][target]]
            else:
                arrays["y"] = np.int64(k)
                answer = COUNT_WORDS[k]
            key = f"graph-{split}-{i:05d}"
            buf = io.BytesIO()
            np.savez_compressed(buf, **arrays)
            (root / "graphs" / f"{key}.graph.npz").write_bytes(buf.getvalue())
            lines.append({"key": key, "graph": f"graphs/{key}.graph.npz", "prompt": QUESTIONS[question],
                          "response": answer, "task": f"graph_{question}", "lang": "en", "topics": topics})  # fmt: skip
        manifest = root / f"graphs_{split}.jsonl"
        tmp = manifest.with_name(manifest.name + ".tmp")
        tmp.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
        tmp.replace(manifest)
        shard_dir = root / "shards" / "graphs" / split
        stats = shard(manifest, shard_dir)
        if stats["written"] != count:
            raise RuntimeError(f"{manifest}: wrote {stats['written']} of {count} samples: {stats}")
        data.manifests[split], data.shards[split] = manifest, shard_dir
    return data
