"""Node-level samples from one large graph: k-hop ego-subgraphs around labelled nodes (GraphGPT / LLaGA style).

Shape letters: N nodes of the large graph, E its edges, F node features, C classes, n nodes of one subgraph.

The input is a *text-attributed graph file* (``.npz``, no pickles), which ``data/prepare_text_graph.py`` writes
from Cora, PubMed or ogbn-arxiv and a test can write directly (:func:`save_text_graph`):

- ``edge_index`` int64 (2, E), node indices in [0, N);
- ``y`` int64 (N,): each node's class index in [0, C), -1 for an unlabelled node;
- ``class_names`` str (C,): the answer for each class;
- ``node_text`` str (N,) and/or ``x`` float32 (N, F): at least one;
- ``split`` str (N,), optional: ``train``, ``val``, ``test`` or ``""`` (the dataset's own split).

:func:`ego_subgraph` cuts the subgraph around one node with torch_geometric's ``k_hop_subgraph``, relabelled to
[0, n), nearer hops first when ``max_nodes`` caps it; :func:`write_ego_samples` writes one ``KEY.graph.npz``
(``edge_index``, ``node_text`` / ``x``, ``target`` = the centre's new index, ``y``) and one manifest line per node,
as ``data/make_ego_subgraphs.py`` (from a graph file) and ``data/prepare_text_graph.py --manifest-out`` (straight
from a dataset download) do, with the options of :class:`EgoOptions` (:func:`add_ego_arguments` on the command line).
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch_geometric.utils import k_hop_subgraph, subgraph, to_undirected

from mmadapter.data.manifest_writer import run_prepare, sanitize_key

__all__ = [
    "SPLITS",
    "TEXT_GRAPH_ARRAYS",
    "EgoOptions",
    "add_ego_arguments",
    "ego_options",
    "ego_subgraph",
    "load_text_graph",
    "save_text_graph",
    "split_nodes",
    "text_graph",
    "undirected",
    "write_ego_samples",
]

TEXT_GRAPH_ARRAYS = ("edge_index", "y", "class_names", "node_text", "x", "split")
SPLITS = ("train", "val", "test")


def _check(arrays: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    def bad(detail: str) -> ValueError:
        return ValueError(f"{where}: {detail} (a text-attributed graph holds {', '.join(TEXT_GRAPH_ARRAYS)})")

    unknown = sorted(set(arrays) - set(TEXT_GRAPH_ARRAYS))
    missing = [name for name in ("edge_index", "y", "class_names") if name not in arrays]
    if unknown or missing:
        raise bad(f"unknown arrays {unknown}, missing arrays {missing}")
    if "node_text" not in arrays and "x" not in arrays:
        raise bad("neither node_text nor x")
    y = np.asarray(arrays["y"])
    n, classes = y.shape[0], len(arrays["class_names"])
    if y.ndim != 1 or y.dtype.kind not in "iu" or (y.size and (y.min() < -1 or y.max() >= classes)):
        raise bad(f"y must be (N,) integers in [-1, {classes})")
    for name, kind in (("node_text", "U"), ("x", "f"), ("split", "U")):
        if name in arrays and (arrays[name].shape[0] != n or arrays[name].dtype.kind != kind):
            raise bad(
                f"{name} must have {n} rows of dtype kind {kind!r}, got {arrays[name].dtype} {arrays[name].shape}"
            )
    if "split" in arrays and not set(np.unique(arrays["split"]).tolist()) <= {*SPLITS, ""}:
        raise bad(f"split values must be {SPLITS} or ''")
    edges = np.asarray(arrays["edge_index"])
    if edges.ndim != 2 or edges.shape[0] != 2 or edges.dtype.kind not in "iu" or (edges.size and edges.max() >= n):
        raise bad(f"edge_index must be (2, E) integers in [0, {n})")
    if arrays["class_names"].dtype.kind != "U":
        raise bad("class_names must be strings")
    return arrays


def text_graph(where: str, **arrays: Any) -> dict[str, np.ndarray]:
    """The arrays of a text-attributed graph as it is stored (int64 indices, float32 ``x``), checked.

    Raises:
        ValueError: missing, unknown or misshapen arrays, named with ``where``.
    """
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    for name, dtype in (("edge_index", np.int64), ("y", np.int64), ("x", np.float32)):
        if name in arrays:
            arrays[name] = arrays[name].astype(dtype)
    return _check(arrays, where)


def save_text_graph(path: Path | str, **arrays: Any) -> Path:
    """Check and write a text-attributed graph file (compressed ``.npz``); returns its path."""
    arrays = text_graph(str(path), **arrays)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


def load_text_graph(path: Path | str) -> dict[str, np.ndarray]:
    """Read and check a text-attributed graph file (never unpickling).

    Raises:
        FileNotFoundError: no such file.
        ValueError: missing, unknown or misshapen arrays, named with the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text-attributed graph file {path} not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except ValueError as e:
        raise ValueError(f"{path}: holds object arrays, which are never unpickled: {e}") from e
    return _check(arrays, str(path))


def split_nodes(
    y: np.ndarray, split: np.ndarray | None, fractions: Sequence[float], seed: int
) -> dict[str, np.ndarray]:
    """The labelled nodes of each split: the file's own ``split`` when it has one, else a seeded shuffle cut by
    ``fractions`` (train, val, test; normalised to sum 1). Each list is sorted."""
    labelled = np.flatnonzero(y >= 0)
    if split is not None:
        return {name: labelled[split[labelled] == name] for name in SPLITS}
    if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
        raise ValueError(f"fractions must be three non-negative numbers (train, val, test), got {list(fractions)}")
    order = np.random.default_rng(seed).permutation(labelled)
    cuts = np.round(np.cumsum(fractions)[:2] / sum(fractions) * len(order)).astype(int)
    return {name: np.sort(part) for name, part in zip(SPLITS, np.split(order, cuts), strict=True)}


def undirected(edge_index: np.ndarray, num_nodes: int) -> torch.Tensor:
    """Both directions of every edge, duplicates removed (citation links read both ways)."""
    return to_undirected(torch.as_tensor(edge_index, dtype=torch.long), num_nodes=num_nodes)


def ego_subgraph(
    node: int, edge_index: torch.Tensor, num_nodes: int, hops: int, max_nodes: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, int]:
    """The ``hops``-hop neighbourhood of ``node``, as an induced subgraph relabelled to [0, n).

    With ``max_nodes``, whole hops are kept from the nearest out while they fit, and the first hop that does not
    fit is sampled (seeded by ``rng``) to fill up; the centre always stays.

    Returns:
        The kept nodes' original indices ``(n,)`` (sorted), the subgraph's ``edge_index`` ``(2, e)`` over
        [0, n), and the centre's new index.
    """
    subset, _, _, _ = k_hop_subgraph(node, hops, edge_index, relabel_nodes=False, num_nodes=num_nodes)
    if max_nodes is not None and subset.numel() > max_nodes:
        kept = torch.tensor([node])
        for hop in range(1, hops + 1):
            ring, _, _, _ = k_hop_subgraph(node, hop, edge_index, relabel_nodes=False, num_nodes=num_nodes)
            new = ring[~torch.isin(ring, kept)]
            room = max_nodes - kept.numel()
            if new.numel() > room:
                new = new[torch.as_tensor(np.sort(rng.choice(new.numel(), room, replace=False)))]
            kept = torch.cat([kept, new])
            if kept.numel() >= max_nodes:
                break
        subset = kept.sort().values
    sub_edges, _ = subgraph(subset, edge_index, relabel_nodes=True, num_nodes=num_nodes)
    target = int(torch.searchsorted(subset, torch.tensor(node)))
    return subset.numpy(), sub_edges.numpy(), target


DEFAULT_PROMPT = "<graph>\nWhich class does the target node belong to?"
FEATURE_ARRAYS = {"text": ("node_text",), "x": ("x",), "both": ("node_text", "x")}


@dataclass(frozen=True)
class EgoOptions:
    """How :func:`write_ego_samples` turns labelled nodes into node-classification samples.

    Attributes:
        hops: Neighbourhood radius k.
        max_nodes: Nodes per subgraph at most (nearer hops first), or ``None`` for the whole k-hop neighbourhood.
        features: Node arrays to keep; ``auto``: every one the graph has.
        fractions: Train, val and test shares of the seeded split, when the graph has no ``split`` of its own.
        max_per_split: A seeded random sample of this many nodes per split at most.
        prompt: The question, holding exactly one ``<graph>``.
        list_classes: Append "Answer with one of: …" naming every class to the prompt.
        directed: Follow edges only in their direction (else both ways, as citations are read).
        seed: Seeds the split shuffle, ``max_per_split`` and the sampling of capped hops.
    """

    hops: int = 2
    max_nodes: int | None = 32
    features: Literal["auto", "text", "x", "both"] = "auto"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    max_per_split: int | None = None
    prompt: str = DEFAULT_PROMPT
    list_classes: bool = False
    directed: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.prompt.count("<graph>") != 1:
            raise ValueError(f"the prompt must hold exactly one <graph>: {self.prompt!r}")
        if self.hops < 1 or (self.max_nodes is not None and self.max_nodes < 1):
            raise ValueError(f"hops and max_nodes must be at least 1, got {self.hops} and {self.max_nodes}")


def add_ego_arguments(
    parser: argparse.ArgumentParser, title: str = "ego-subgraphs", name_default: str = "the graph file's name"
) -> None:
    """The command-line options of :class:`EgoOptions` (``--hops``, ``--max-nodes``, …) plus ``--name``, the key
    prefix (``name_default`` says what it defaults to), as one argument group; pair with :func:`ego_options`."""
    d = EgoOptions()
    fractions = " ".join(map(str, d.fractions))
    g = parser.add_argument_group(title)
    g.add_argument("--name", help=f"key prefix of the samples (default: {name_default})")
    g.add_argument("--hops", type=int, default=d.hops, help=f"neighbourhood radius k (default: {d.hops})")
    g.add_argument(
        "--max-nodes", type=int, default=d.max_nodes, help=f"nodes per subgraph at most (default: {d.max_nodes})"
    )
    g.add_argument(
        "--features", choices=["auto", "text", "x", "both"], default=d.features, help="node arrays to keep (auto: all)"
    )
    g.add_argument(
        "--fractions",
        type=float,
        nargs=3,
        default=list(d.fractions),
        metavar=("TRAIN", "VAL", "TEST"),
        help=f"shares of the seeded split, when the graph has no split of its own (default: {fractions})",
    )
    g.add_argument("--max-per-split", type=int, metavar="N", help="a seeded random N nodes per split at most")
    g.add_argument("--prompt", default=d.prompt, help="the question, holding one <graph>")
    g.add_argument("--list-classes", action="store_true", help="append the class names to the prompt")
    g.add_argument("--directed", action="store_true", help="follow edges only in their direction")
    g.add_argument("--seed", type=int, default=d.seed, help="seed of the split shuffle and of capped hops")


def ego_options(args: argparse.Namespace) -> EgoOptions:
    """The :class:`EgoOptions` of parsed arguments (see :func:`add_ego_arguments`).

    Raises:
        ValueError: a prompt without exactly one ``<graph>``, or ``--hops`` / ``--max-nodes`` below 1.
    """
    return EgoOptions(
        hops=args.hops,
        max_nodes=args.max_nodes,
        features=args.features,
        fractions=tuple(args.fractions),
        max_per_split=args.max_per_split,
        prompt=args.prompt,
        list_classes=args.list_classes,
        directed=args.directed,
        seed=args.seed,
    )


def _node_samples(
    graph: dict[str, np.ndarray],
    edges: torch.Tensor,
    nodes: np.ndarray,
    split: str,
    options: EgoOptions,
    name: str,
    out: Path,
) -> Iterator[dict[str, Any]]:
    """The records of one split's nodes, writing each node's ``.graph.npz`` on the way."""
    n = graph["y"].shape[0]
    rng = np.random.default_rng([options.seed, SPLITS.index(split)])
    if options.max_per_split is not None and len(nodes) > options.max_per_split:
        nodes = np.sort(rng.choice(nodes, options.max_per_split, replace=False))
    prompt = options.prompt
    if options.list_classes:
        prompt += " Answer with one of: " + ", ".join(graph["class_names"].tolist()) + "."
    for node in nodes.tolist():
        subset, sub_edges, target = ego_subgraph(node, edges, n, options.hops, options.max_nodes, rng)
        arrays = {"edge_index": sub_edges, **{a: graph[a][subset] for a in FEATURE_ARRAYS[options.features]}}
        arrays |= {"target": np.int64(target), "y": np.int64(graph["y"][node])}
        key = f"{name}-{node:06d}"
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        (out / "graphs" / f"{key}.graph.npz").write_bytes(buf.getvalue())
        yield {
            "key": key,
            "graph": f"graphs/{key}.graph.npz",
            "prompt": prompt,
            "response": str(graph["class_names"][graph["y"][node]]),
            "task": "node_classification",
            "lang": "en",
            "node": node,
            "split": split,
        }


def write_ego_samples(graph: dict[str, np.ndarray], out: Path, options: EgoOptions, name: str, prog: str) -> int:
    """One k-hop ego-subgraph sample per labelled node of ``graph`` (the arrays of :func:`load_text_graph` or
    :func:`text_graph`): ``out/graphs/<name>-<node>.graph.npz`` and ``out/{train,val,test}.jsonl``, one
    node-classification line per node answered by its class name; each manifest's summary is printed as ``prog``.

    Returns:
        0 when every split got a sample, 1 when one got none.

    Raises:
        ValueError: the graph lacks an array that ``options.features`` asks for.
    """
    features = options.features
    if features == "auto":
        features = "both" if {"node_text", "x"} <= graph.keys() else "text" if "node_text" in graph else "x"
    missing = [a for a in FEATURE_ARRAYS[features] if a not in graph]
    if missing:
        raise ValueError(f"the graph has no {missing[0]} for --features {features}")
    options, name = replace(options, features=features), sanitize_key(name)
    n = graph["y"].shape[0]
    edges = torch.as_tensor(graph["edge_index"]) if options.directed else undirected(graph["edge_index"], n)
    splits = split_nodes(graph["y"], graph.get("split"), options.fractions, options.seed)
    (out / "graphs").mkdir(parents=True, exist_ok=True)
    status = 0
    for split in SPLITS:
        samples = _node_samples(graph, edges, splits[split], split, options, name, out)
        status = max(status, run_prepare(prog, out / f"{split}.jsonl", lambda samples=samples: samples))
    return status
