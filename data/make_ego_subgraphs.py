"""A large text-attributed graph → node-classification samples: one k-hop ego-subgraph per labelled node.

Reads a text-attributed graph file (``.npz`` with ``edge_index``, ``y``, ``class_names``, ``node_text`` and/or
``x``, optional ``split``; see :mod:`mmadapter.data.ego_subgraphs` and ``data/prepare_text_graph.py``) and writes::

    OUT/graphs/<key>.graph.npz       # edge_index, node_text and/or x, target (the centre's index), y
    OUT/{train,val,test}.jsonl       # one manifest per split

one line per labelled node, e.g. ``{"key": "cora-000042", "graph": "graphs/cora-000042.graph.npz",
"prompt": "<graph>\\nWhich class does the target node belong to?", "response": "Neural_Networks",
"task": "node_classification", "lang": "en", "node": 42, "split": "train"}``; the answer is the class name.
Splits come from the file's ``split`` array, else a seeded shuffle of the labelled nodes (``--fractions``).
Edges are read in both directions unless ``--directed``. Next step, per split:
``mmadapter shard OUT/train.jsonl shards/train``.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmadapter.data.ego_subgraphs import SPLITS, ego_subgraph, load_text_graph, split_nodes, undirected
from mmadapter.data.manifest_writer import LayoutError, Skip, run_prepare, sanitize_key

PROG = "make_ego_subgraphs"
DEFAULT_PROMPT = "<graph>\nWhich class does the target node belong to?"


def graph_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def node_samples(
    graph: dict[str, np.ndarray], nodes: np.ndarray, split: str, args: argparse.Namespace, edges: torch.Tensor
) -> Iterator[dict[str, Any] | Skip]:
    """The records of one split's nodes, writing each node's ``.graph.npz`` on the way."""
    n = graph["y"].shape[0]
    rng = np.random.default_rng([args.seed, SPLITS.index(split)])
    if args.max_per_split is not None and len(nodes) > args.max_per_split:
        nodes = np.sort(rng.choice(nodes, args.max_per_split, replace=False))
    prompt = args.prompt
    if args.list_classes:
        prompt += " Answer with one of: " + ", ".join(graph["class_names"].tolist()) + "."
    features = {"text": ("node_text",), "x": ("x",), "both": ("node_text", "x")}[args.features]
    for node in nodes.tolist():
        subset, sub_edges, target = ego_subgraph(node, edges, n, args.hops, args.max_nodes, rng)
        arrays = {"edge_index": sub_edges, **{name: graph[name][subset] for name in features}}
        arrays |= {"target": np.int64(target), "y": np.int64(graph["y"][node])}
        key = f"{args.name}-{node:06d}"
        path = args.out / "graphs" / f"{key}.graph.npz"
        path.write_bytes(graph_bytes(arrays))
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write node-classification samples (k-hop ego-subgraphs + one manifest per split) from a "
        "text-attributed graph .npz (edge_index, y, class_names, node_text and/or x, optional split).",
        epilog="Next step: mmadapter shard OUT/train.jsonl shards/train (and val, test)",
    )
    parser.add_argument("graph", type=Path, help="the text-attributed graph file (.npz)")
    parser.add_argument("--out", type=Path, required=True, help="folder for graphs/ and the split manifests")
    parser.add_argument("--name", help="key prefix (default: the graph file's name)")
    parser.add_argument("--hops", type=int, default=2, help="neighbourhood radius k (default: 2)")
    parser.add_argument("--max-nodes", type=int, default=32, help="nodes per subgraph at most (default: 32)")
    parser.add_argument(
        "--features", choices=["auto", "text", "x", "both"], default="auto", help="node arrays to keep (auto: all)"
    )
    parser.add_argument("--fractions", type=float, nargs=3, default=[0.8, 0.1, 0.1], metavar=("TRAIN", "VAL", "TEST"))
    parser.add_argument("--max-per-split", type=int, metavar="N", help="a seeded random N nodes per split at most")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the question, holding one <graph>")
    parser.add_argument("--list-classes", action="store_true", help="append the class names to the prompt")
    parser.add_argument("--directed", action="store_true", help="follow edges only in their direction")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split shuffle and of capped hops")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Write the subgraphs and manifests; 0 when every split got a sample, 1 when one got none, 2 on bad input."""
    args = build_parser().parse_args(argv)
    if args.prompt.count("<graph>") != 1:
        print(f"{PROG}: error: --prompt must hold exactly one <graph>: {args.prompt!r}", file=sys.stderr)
        return 2
    if args.hops < 1 or (args.max_nodes is not None and args.max_nodes < 1):
        print(f"{PROG}: error: --hops and --max-nodes must be at least 1", file=sys.stderr)
        return 2
    try:
        graph = load_text_graph(args.graph)
    except (FileNotFoundError, ValueError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    args.name = sanitize_key(args.name or args.graph.name.split(".")[0])
    if args.features == "auto":
        args.features = "both" if {"node_text", "x"} <= graph.keys() else "text" if "node_text" in graph else "x"
    (args.out / "graphs").mkdir(parents=True, exist_ok=True)
    n = graph["y"].shape[0]
    edges = torch.as_tensor(graph["edge_index"]) if args.directed else undirected(graph["edge_index"], n)
    splits = split_nodes(graph["y"], graph.get("split"), args.fractions, args.seed)
    status = 0
    for split in SPLITS:

        def load(split: str = split) -> Iterator[dict[str, Any] | Skip]:
            names = {"text": ("node_text",), "x": ("x",), "both": ("node_text", "x")}[args.features]
            missing = [name for name in names if name not in graph]
            if missing:
                raise LayoutError(f"{args.graph} has no {missing[0]} for --features {args.features}")
            return node_samples(graph, splits[split], split, args, edges)

        status = max(status, run_prepare(PROG, args.out / f"{split}.jsonl", load))
    return status


if __name__ == "__main__":
    sys.exit(main())
