"""A locally downloaded text-attributed graph (Cora, PubMed, ogbn-arxiv) → a graph file and/or node samples.

``--out GRAPH.npz`` writes the text-attributed graph file that ``data/make_ego_subgraphs.py`` reads
(``edge_index``, ``y``, ``class_names``, ``x``, ``node_text`` when the texts are there, ``split`` when the dataset
has one; :mod:`mmadapter.data.ego_subgraphs`). ``--manifest-out DIR`` goes on in the same run to what
``make_ego_subgraphs.py`` would write from that file: ``DIR/graphs/<key>.graph.npz`` (the k-hop ego-subgraph of
each labelled node) and ``DIR/{train,val,test}.jsonl``, cut by the same code and options (``--hops``,
``--max-nodes``, ``--features``, ``--fractions``, ``--list-classes``, …; keys ``<name>-<node>``, the name
defaulting to ``--out``'s file name, else the format). Give either or both::

    python data/prepare_text_graph.py /data/cora --format cora --manifest-out cora_ego --hops 2 --list-classes

Nothing is downloaded; the expected layouts:

``--format cora`` (the LINQS release; texts as exported from TAPE's ``cora_orig``)::

    ROOT/cora.content    # paper_id <TAB> 1433 binary word features <TAB> class label (e.g. Neural_Networks)
    ROOT/cora.cites      # cited paper_id <TAB> citing paper_id
    ROOT/texts.tsv       # optional: paper_id <TAB> title <TAB> abstract

``--format pubmed`` (Pubmed-Diabetes, as in TAPE's ``PubMed_orig/data``)::

    ROOT/Pubmed-Diabetes.NODE.paper.tab       # 2 header lines, then PMID <TAB> label=K <TAB> word=tfidf ... summary=...
    ROOT/Pubmed-Diabetes.DIRECTED.cites.tab   # 2 header lines, then id <TAB> paper:PMID <TAB> | <TAB> paper:PMID
    ROOT/pubmed.json                          # optional: [{"PMID": ..., "TI": title, "AB": abstract}, ...]

``--format ogbn-arxiv`` (OGB's ``ogbn_arxiv`` folder plus its ``titleabs.tsv``)::

    ROOT/raw/edge.csv.gz, ROOT/raw/node-label.csv.gz, ROOT/raw/node-feat.csv.gz (optional)
    ROOT/mapping/nodeidx2paperid.csv.gz, ROOT/mapping/labelidx2arxivcategeory.csv.gz
    ROOT/split/time/{train,valid,test}.csv.gz
    ROOT/titleabs.tsv[.gz]   # optional: paper id <TAB> title <TAB> abstract

Node text: ``title: abstract`` (``--text title``: the title alone); a node without one gets ``""``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mmadapter.data.ego_subgraphs import add_ego_arguments, ego_options, save_text_graph, text_graph, write_ego_samples
from mmadapter.data.manifest_writer import LayoutError

PROG = "prepare_text_graph"
PUBMED_CLASSES = ("Diabetes Mellitus, Experimental", "Diabetes Mellitus Type 1", "Diabetes Mellitus Type 2")
csv.field_size_limit(1 << 30)


def need(path: Path, layout: str) -> Path:
    """``path`` (or ``path.gz``), checked to exist."""
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            return candidate
    raise LayoutError(f"{path} not found; expected {layout}")


def rows(path: Path, delimiter: str = "\t") -> Iterator[list[str]]:
    """The non-blank rows of a (possibly gzipped) text table."""
    with gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8") as f:
        for row in csv.reader(f, delimiter=delimiter, quoting=csv.QUOTE_NONE):
            if row and any(cell.strip() for cell in row):
                yield row


def node_text(title: str, abstract: str, mode: str) -> str:
    title, abstract = " ".join(title.split()), " ".join(abstract.split())
    return title if mode == "title" or not abstract else f"{title}: {abstract}"


def texts_by_id(table: dict[str, tuple[str, str]], ids: list[str], mode: str) -> np.ndarray | None:
    if not table:
        return None
    return np.array([node_text(*table[i], mode) if i in table else "" for i in ids])


def tsv_texts(path: Path | None) -> dict[str, tuple[str, str]]:
    """``id → (title, abstract)`` from ``id <TAB> title <TAB> abstract`` lines (a header line is skipped)."""
    if path is None:
        return {}
    return {
        r[0].strip(): (r[1], r[2] if len(r) > 2 else "") for r in rows(path) if len(r) > 1 and r[0].strip().isdigit()
    }


def optional(path: Path) -> Path | None:
    try:
        return need(path, "")
    except LayoutError:
        return None


def edges_of(pairs: list[tuple[str, str]], index: dict[str, int]) -> tuple[np.ndarray, int]:
    """Edges between known ids (source → target) and the number of pairs naming an unknown id."""
    known = [(index[a], index[b]) for a, b in pairs if a in index and b in index]
    edge_index = np.array(known, dtype=np.int64).T.reshape(2, -1)
    return edge_index, len(pairs) - len(known)


def read_cora(root: Path, mode: str) -> tuple[dict[str, Any], int]:
    layout = "ROOT/cora.content and ROOT/cora.cites (LINQS), optional ROOT/texts.tsv"
    content = [r for r in rows(need(root / "cora.content", layout))]
    ids = [r[0] for r in content]
    labels = [r[-1] for r in content]
    class_names = sorted(set(labels))
    x = np.array([[float(v) for v in r[1:-1]] for r in content], dtype=np.float32)
    index = {pid: i for i, pid in enumerate(ids)}
    edge_index, dropped = edges_of([(r[1], r[0]) for r in rows(need(root / "cora.cites", layout))], index)
    arrays = {"edge_index": edge_index, "x": x, "class_names": np.array(class_names)}
    arrays["y"] = np.array([class_names.index(label) for label in labels])
    text = texts_by_id(tsv_texts(optional(root / "texts.tsv")), ids, mode)
    return arrays | ({"node_text": text} if text is not None else {}), dropped


def read_pubmed(root: Path, mode: str) -> tuple[dict[str, Any], int]:
    layout = "ROOT/Pubmed-Diabetes.NODE.paper.tab and ROOT/Pubmed-Diabetes.DIRECTED.cites.tab, optional pubmed.json"
    table = list(rows(need(root / "Pubmed-Diabetes.NODE.paper.tab", layout)))
    if len(table) < 3 or not table[1][0].startswith("cat="):
        raise LayoutError(f"{root / 'Pubmed-Diabetes.NODE.paper.tab'} lacks its two header lines; expected {layout}")
    words = [cell.split(":")[1] for cell in table[1][1:] if cell.startswith("numeric:")]
    column = {w: j for j, w in enumerate(words)}
    ids, y, x = [], [], np.zeros((len(table) - 2, len(words)), np.float32)
    for i, r in enumerate(table[2:]):
        ids.append(r[0].strip())
        cells = dict(cell.split("=", 1) for cell in r[1:] if "=" in cell)
        y.append(int(cells.pop("label")) - 1)
        for word, value in cells.items():
            if word in column:
                x[i, column[word]] = float(value)
    index = {pid: i for i, pid in enumerate(ids)}
    cites = [r for r in rows(need(root / "Pubmed-Diabetes.DIRECTED.cites.tab", layout)) if len(r) >= 4]
    pairs = [(r[1].removeprefix("paper:"), r[3].removeprefix("paper:")) for r in cites]
    edge_index, dropped = edges_of(pairs, index)
    arrays = {"edge_index": edge_index, "x": x, "y": np.array(y), "class_names": np.array(PUBMED_CLASSES)}
    source = optional(root / "pubmed.json")
    if source is not None:
        records = json.loads(source.read_text(encoding="utf-8"))
        table_of = {str(r.get("PMID")): (str(r.get("TI") or ""), str(r.get("AB") or "")) for r in records}
        arrays["node_text"] = texts_by_id(table_of, ids, mode)
    return arrays, dropped


def arxiv_category(name: str) -> str:
    """OGB's ``arxiv cs na`` → ``cs.NA``."""
    parts = name.split()
    return f"{parts[1]}.{parts[2].upper()}" if len(parts) == 3 and parts[0] == "arxiv" else name


def read_ogbn_arxiv(root: Path, mode: str) -> tuple[dict[str, Any], int]:
    layout = "OGB's ogbn_arxiv folder (raw/, mapping/, split/time/) plus an optional titleabs.tsv"
    edges = [(int(r[0]), int(r[1])) for r in rows(need(root / "raw" / "edge.csv", layout), ",")]
    y = np.array([int(r[0]) for r in rows(need(root / "raw" / "node-label.csv", layout), ",")])
    categories = [r for r in rows(need(root / "mapping" / "labelidx2arxivcategeory.csv", layout), ",")][1:]
    class_names = np.array([arxiv_category(r[1]) for r in sorted(categories, key=lambda r: int(r[0]))])
    papers = [r for r in rows(need(root / "mapping" / "nodeidx2paperid.csv", layout), ",")][1:]
    paper_of = {int(r[0]): r[1].strip() for r in papers}
    split = np.full(len(y), "", dtype="<U5")
    for name, file in (("train", "train"), ("val", "valid"), ("test", "test")):
        nodes = [int(r[0]) for r in rows(need(root / "split" / "time" / f"{file}.csv", layout), ",")]
        split[nodes] = name
    arrays = {"edge_index": np.array(edges, dtype=np.int64).T.reshape(2, -1), "y": y, "class_names": class_names}
    arrays["split"] = split
    features = optional(root / "raw" / "node-feat.csv")
    if features is not None:
        arrays["x"] = np.array([[float(v) for v in r] for r in rows(features, ",")], dtype=np.float32)
    texts = tsv_texts(optional(root / "titleabs.tsv"))
    text = texts_by_id(texts, [paper_of.get(i, "") for i in range(len(y))], mode)
    if text is not None:
        arrays["node_text"] = text
    if "x" not in arrays and "node_text" not in arrays:
        raise LayoutError(f"{root} has neither raw/node-feat.csv.gz nor titleabs.tsv: no node features")
    return arrays, 0


READERS = {"cora": read_cora, "pubmed": read_pubmed, "ogbn-arxiv": read_ogbn_arxiv}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write a text-attributed graph .npz (--out) and/or its node-classification samples, one k-hop "
        "ego-subgraph per labelled node plus one manifest per split (--manifest-out), from a local Cora, PubMed or "
        "ogbn-arxiv download (layouts: see this script's docstring).",
        epilog="Next step: python data/make_ego_subgraphs.py GRAPH.npz --out DIR (or, after --manifest-out DIR: "
        "mmadapter shard DIR/train.jsonl shards/train, and val, test)",
    )
    parser.add_argument("root", type=Path, help="the dataset folder")
    parser.add_argument("--format", choices=sorted(READERS), required=True, help="which dataset layout")
    parser.add_argument("--out", type=Path, help="the text-attributed graph .npz to write")
    parser.add_argument(
        "--manifest-out",
        type=Path,
        metavar="DIR",
        help="also cut the ego-subgraph samples: DIR/graphs/ and DIR/{train,val,test}.jsonl, as make_ego_subgraphs.py",
    )
    parser.add_argument("--text", choices=["title", "title_abstract"], default="title_abstract", help="node text")
    parser.add_argument("--no-x", action="store_true", help="drop the numeric features (keep node texts only)")
    title = "ego-subgraph samples (with --manifest-out; as in make_ego_subgraphs.py)"
    add_ego_arguments(parser, title, name_default="--out's file name, else the format")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Write the graph file and/or the samples; 0 on success, 1 when a split got no sample, 2 on bad input (a
    folder not laid out as expected, bad ego-subgraph options)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out is None and args.manifest_out is None:
        parser.error("give --out GRAPH.npz, --manifest-out DIR or both")
    try:
        options = ego_options(args)
        if not args.root.is_dir():
            raise LayoutError(f"{args.root} is not a folder")
        arrays, dropped = READERS[args.format](args.root, args.text)
        if args.no_x:
            if "node_text" not in arrays:
                raise LayoutError(f"--no-x needs node texts, and {args.root} has none")
            arrays.pop("x", None)
        graph = text_graph(str(args.root), **arrays)
        n, e = len(graph["y"]), graph["edge_index"].shape[1]
        texts = int((graph["node_text"] != "").sum()) if "node_text" in graph else 0
        print(
            f"{PROG}: read {args.root}: {n} nodes, {e} edges ({dropped} dropped: unknown ids), "
            f"{len(graph['class_names'])} classes, {int((graph['y'] >= 0).sum())} labelled, {texts} with text"
        )
        status = 0
        if args.manifest_out is not None:  # first: bad --features fails before any file is written
            name = args.name or (args.out.name.split(".")[0] if args.out else args.format)
            status = write_ego_samples(graph, args.manifest_out, options, name, PROG)
        if args.out is not None:
            save_text_graph(args.out, **graph)
            print(f"{PROG}: wrote {args.out}")
        return status
    except (LayoutError, ValueError, KeyError, IndexError) as e:
        print(f"{PROG}: error: {args.root} ({args.format}): {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
