"""A large text-attributed graph → node-classification samples: one k-hop ego-subgraph per labelled node.

Reads a text-attributed graph file (``.npz`` with ``edge_index``, ``y``, ``class_names``, ``node_text`` and/or
``x``, optional ``split``; see :mod:`mmadapter.data.ego_subgraphs` and ``data/prepare_text_graph.py``) and writes::

    OUT/graphs/<key>.graph.npz       # edge_index, node_text and/or x, target (the centre's index), y
    OUT/{train,val,test}.jsonl       # one manifest per split

one line per labelled node, e.g. ``{"key": "cora-000042", "graph": "graphs/cora-000042.graph.npz",
"prompt": "<graph>\\nWhich class does the target node belong to?", "response": "Neural_Networks",
"task": "node_classification", "lang": "en", "node": 42, "split": "train"}``; the answer is the class name.
Splits come from the file's ``split`` array, else a seeded shuffle of the labelled nodes (``--fractions``).
Edges are read in both directions unless ``--directed``. The cutting lives in
:func:`mmadapter.data.ego_subgraphs.write_ego_samples`, which ``data/prepare_text_graph.py --manifest-out DIR``
also runs, straight from a dataset download and with the same options. Next step, per split:
``mmadapter shard OUT/train.jsonl shards/train``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmadapter.data.ego_subgraphs import add_ego_arguments, ego_options, load_text_graph, write_ego_samples

PROG = "make_ego_subgraphs"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write node-classification samples (k-hop ego-subgraphs + one manifest per split) from a "
        "text-attributed graph .npz (edge_index, y, class_names, node_text and/or x, optional split).",
        epilog="Next step: mmadapter shard OUT/train.jsonl shards/train (and val, test)",
    )
    parser.add_argument("graph", type=Path, help="the text-attributed graph file (.npz)")
    parser.add_argument("--out", type=Path, required=True, help="folder for graphs/ and the split manifests")
    add_ego_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Write the subgraphs and manifests; 0 when every split got a sample, 1 when one got none, 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        options = ego_options(args)
        graph = load_text_graph(args.graph)
        return write_ego_samples(graph, args.out, options, args.name or args.graph.name.split(".")[0], PROG)
    except (FileNotFoundError, ValueError) as e:
        print(f"{PROG}: error: {args.graph}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
