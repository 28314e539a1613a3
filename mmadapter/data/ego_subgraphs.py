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
[0, n), nearer hops first when ``max_nodes`` caps it; ``data/make_ego_subgraphs.py`` writes one ``KEY.graph.npz``
(``edge_index``, ``node_text`` / ``x``, ``target`` = the centre's new index, ``y``) and one manifest line per node.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.utils import k_hop_subgraph, subgraph, to_undirected

__all__ = [
    "SPLITS",
    "TEXT_GRAPH_ARRAYS",
    "ego_subgraph",
    "load_text_graph",
    "save_text_graph",
    "split_nodes",
    "undirected",
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


def save_text_graph(path: Path | str, **arrays: Any) -> Path:
    """Check and write a text-attributed graph file (compressed ``.npz``); returns its path."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    arrays["edge_index"] = arrays["edge_index"].astype(np.int64)
    arrays["y"] = arrays["y"].astype(np.int64)
    if "x" in arrays:
        arrays["x"] = arrays["x"].astype(np.float32)
    _check(arrays, str(path))
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
