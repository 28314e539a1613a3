"""``data/prepare_text_graph.py`` on fake Cora, PubMed and ogbn-arxiv layouts written by the tests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from data_prep_helpers import load_script

from mmadapter.data.ego_subgraphs import load_text_graph

prep = load_script("prepare_text_graph")


def write_cora(root: Path) -> None:
    root.mkdir()
    rows = [
        ("31336", [0, 1, 0], "Neural_Networks"),
        ("1061127", [1, 0, 0], "Rule_Learning"),
        ("7", [0, 0, 1], "Theory"),
    ]
    (root / "cora.content").write_text("".join(f"{i}\t" + "\t".join(map(str, w)) + f"\t{c}\n" for i, w, c in rows))
    (root / "cora.cites").write_text("31336\t1061127\n7\t31336\n99\t7\n")
    (root / "texts.tsv").write_text("paper id\ttitle\tabstract\n31336\tNeural nets\tWe  study\tnets.\n7\tA theory\t\n")


def test_cora(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_cora(tmp_path / "cora")
    assert prep.main([str(tmp_path / "cora"), "--format", "cora", "--out", str(tmp_path / "cora.npz")]) == 0
    assert "3 nodes, 2 edges (1 dropped" in capsys.readouterr().out
    g = load_text_graph(tmp_path / "cora.npz")
    assert g["class_names"].tolist() == ["Neural_Networks", "Rule_Learning", "Theory"]
    assert g["y"].tolist() == [0, 1, 2] and g["x"].tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 1]]
    assert g["edge_index"].tolist() == [[1, 0], [0, 2]]  # citing → cited
    assert g["node_text"].tolist() == ["Neural nets: We study", "", "A theory"]


def test_pubmed(tmp_path: Path) -> None:
    root = tmp_path / "pubmed"
    root.mkdir()
    (root / "Pubmed-Diabetes.NODE.paper.tab").write_text(
        "NODE\tpaper\ncat=1,2,3:label\tnumeric:w-rat:0.0\tnumeric:w-insulin:0.0\tsummary:w-rat\n"
        "12187484\tlabel=1\tw-rat=0.5\tsummary=w-rat\n2344352\tlabel=3\tw-insulin=0.25\tsummary=w-insulin\n"
    )
    (root / "Pubmed-Diabetes.DIRECTED.cites.tab").write_text(
        "DIRECTED\tcites\nNO_FEATURES\n1\tpaper:2344352\t|\tpaper:12187484\n"
    )
    (root / "pubmed.json").write_text(json.dumps([{"PMID": 2344352, "TI": "Insulin", "AB": "In type 2."}]))
    assert prep.main([str(root), "--format", "pubmed", "--out", str(tmp_path / "p.npz"), "--text", "title"]) == 0
    g = load_text_graph(tmp_path / "p.npz")
    assert g["y"].tolist() == [0, 2] and g["class_names"][2] == "Diabetes Mellitus Type 2"
    assert g["x"].tolist() == [[0.5, 0.0], [0.0, 0.25]] and g["edge_index"].tolist() == [[1], [0]]
    assert g["node_text"].tolist() == ["", "Insulin"]


def gz(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        f.write(text)


def test_ogbn_arxiv_with_titles_only(tmp_path: Path) -> None:
    root = tmp_path / "ogbn_arxiv"
    gz(root / "raw" / "edge.csv.gz", "0,1\n2,1\n")
    gz(root / "raw" / "node-label.csv.gz", "4\n16\n4\n")
    gz(root / "mapping" / "labelidx2arxivcategeory.csv.gz", "label idx,arxiv category\n4,arxiv cs ai\n16,arxiv cs lg\n"
       + "".join(f"{i},arxiv cs x{i}\n" for i in range(40) if i not in (4, 16)))  # fmt: skip
    gz(root / "mapping" / "nodeidx2paperid.csv.gz", "node idx,paper id\n0,9657784\n1,39886162\n2,116214155\n")
    for name, nodes in (("train", "0\n"), ("valid", "1\n"), ("test", "2\n")):
        gz(root / "split" / "time" / f"{name}.csv.gz", nodes)
    (root / "titleabs.tsv").write_text("9657784\tevasion attacks\tabstract one\n116214155\tgraph nets\tabs\n")
    out = tmp_path / "arxiv.npz"
    assert prep.main([str(root), "--format", "ogbn-arxiv", "--out", str(out)]) == 0
    g = load_text_graph(out)
    assert len(g["class_names"]) == 40 and g["class_names"][4] == "cs.AI" and g["class_names"][16] == "cs.LG"
    assert g["y"].tolist() == [4, 16, 4] and g["split"].tolist() == ["train", "val", "test"] and "x" not in g
    assert g["node_text"].tolist() == ["evasion attacks: abstract one", "", "graph nets: abs"]


def test_layout_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert prep.main([str(tmp_path / "nowhere"), "--format", "cora", "--out", str(tmp_path / "o.npz")]) == 2
    (tmp_path / "empty").mkdir()
    assert prep.main([str(tmp_path / "empty"), "--format", "cora", "--out", str(tmp_path / "o.npz")]) == 2
    assert "cora.content not found; expected" in capsys.readouterr().err
    write_cora(tmp_path / "cora")
    (tmp_path / "cora" / "texts.tsv").unlink()
    assert prep.main([str(tmp_path / "cora"), "--format", "cora", "--no-x", "--out", str(tmp_path / "o.npz")]) == 2
    assert not (tmp_path / "o.npz").exists()
