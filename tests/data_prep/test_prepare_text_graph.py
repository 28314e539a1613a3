"""``data/prepare_text_graph.py`` on fake Cora, PubMed and ogbn-arxiv layouts written by the tests: the graph file,
and with ``--manifest-out`` the ego-subgraph samples in the same run (as ``data/make_ego_subgraphs.py`` cuts them)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from data_prep_helpers import assert_shards_accept, load_script, read_manifest

from mmadapter.data.ego_subgraphs import load_text_graph
from mmadapter.data.graph import decode_graph

prep = load_script("prepare_text_graph")
make = load_script("make_ego_subgraphs")


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


def write_pubmed(root: Path) -> None:
    root.mkdir()
    (root / "Pubmed-Diabetes.NODE.paper.tab").write_text(
        "NODE\tpaper\ncat=1,2,3:label\tnumeric:w-rat:0.0\tnumeric:w-insulin:0.0\tsummary:w-rat\n"
        "12187484\tlabel=1\tw-rat=0.5\tsummary=w-rat\n2344352\tlabel=3\tw-insulin=0.25\tsummary=w-insulin\n"
    )
    (root / "Pubmed-Diabetes.DIRECTED.cites.tab").write_text(
        "DIRECTED\tcites\nNO_FEATURES\n1\tpaper:2344352\t|\tpaper:12187484\n"
    )
    (root / "pubmed.json").write_text(json.dumps([{"PMID": 2344352, "TI": "Insulin", "AB": "In type 2."}]))


def test_pubmed(tmp_path: Path) -> None:
    root = tmp_path / "pubmed"
    write_pubmed(root)
    assert prep.main([str(root), "--format", "pubmed", "--out", str(tmp_path / "p.npz"), "--text", "title"]) == 0
    g = load_text_graph(tmp_path / "p.npz")
    assert g["y"].tolist() == [0, 2] and g["class_names"][2] == "Diabetes Mellitus Type 2"
    assert g["x"].tolist() == [[0.5, 0.0], [0.0, 0.25]] and g["edge_index"].tolist() == [[1], [0]]
    assert g["node_text"].tolist() == ["", "Insulin"]


def gz(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        f.write(text)


def write_ogbn_arxiv(root: Path) -> None:
    gz(root / "raw" / "edge.csv.gz", "0,1\n2,1\n")
    gz(root / "raw" / "node-label.csv.gz", "4\n16\n4\n")
    gz(root / "mapping" / "labelidx2arxivcategeory.csv.gz", "label idx,arxiv category\n4,arxiv cs ai\n16,arxiv cs lg\n"
       + "".join(f"{i},arxiv cs x{i}\n" for i in range(40) if i not in (4, 16)))  # fmt: skip
    gz(root / "mapping" / "nodeidx2paperid.csv.gz", "node idx,paper id\n0,9657784\n1,39886162\n2,116214155\n")
    for name, nodes in (("train", "0\n"), ("valid", "1\n"), ("test", "2\n")):
        gz(root / "split" / "time" / f"{name}.csv.gz", nodes)
    (root / "titleabs.tsv").write_text("9657784\tevasion attacks\tabstract one\n116214155\tgraph nets\tabs\n")


def test_ogbn_arxiv_with_titles_only(tmp_path: Path) -> None:
    root = tmp_path / "ogbn_arxiv"
    write_ogbn_arxiv(root)
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


def test_manifest_out_equals_the_two_step_route(tmp_path: Path) -> None:
    write_cora(tmp_path / "cora")
    ego = ["--hops", "1", "--fractions", "1", "1", "1", "--list-classes"]
    graph, one_go, two_step = tmp_path / "cora.npz", tmp_path / "one_go", tmp_path / "two_step"
    base = [str(tmp_path / "cora"), "--format", "cora", "--out", str(graph)]
    assert prep.main([*base, "--manifest-out", str(one_go), *ego]) == 0
    assert make.main([str(graph), "--out", str(two_step), *ego]) == 0
    for split in ("train", "val", "test"):
        assert (one_go / f"{split}.jsonl").read_bytes() == (two_step / f"{split}.jsonl").read_bytes()
    files = sorted(p.name for p in (one_go / "graphs").iterdir())
    assert files == [f"cora-00000{i}.graph.npz" for i in range(3)]  # keys named after --out's file
    assert all((one_go / "graphs" / f).read_bytes() == (two_step / "graphs" / f).read_bytes() for f in files)


def test_manifest_out_on_pubmed_without_a_graph_file(tmp_path: Path) -> None:
    write_pubmed(tmp_path / "pubmed")
    out = tmp_path / "ego"
    args = ["--format", "pubmed", "--manifest-out", str(out), "--fractions", "1", "0", "1", "--features", "text"]
    assert prep.main([str(tmp_path / "pubmed"), *args, "--prompt", "<graph> Which diabetes type?"]) == 1  # val: none
    assert not list(tmp_path.glob("*.npz"))
    lines = [line for split in ("train", "test") for line in read_manifest(out / f"{split}.jsonl")]
    assert sorted((line["node"], line["response"]) for line in lines) == [
        (0, "Diabetes Mellitus, Experimental"),
        (1, "Diabetes Mellitus Type 2"),
    ]
    line = next(line for line in lines if line["node"] == 1)
    assert line["key"] == "pubmed-000001" and line["prompt"] == "<graph> Which diabetes type?"
    sample = decode_graph((out / line["graph"]).read_bytes(), line["graph"])
    assert sample["node_text"].tolist() == ["", "Insulin: In type 2."] and int(sample["target"]) == 1
    assert sample["edge_index"].tolist() == [[0, 1], [1, 0]] and "x" not in sample  # the citation read both ways
    assert_shards_accept(out / f"{line['split']}.jsonl", tmp_path / "shards", 1)


def test_manifest_out_keeps_the_ogbn_arxiv_split(tmp_path: Path) -> None:
    write_ogbn_arxiv(tmp_path / "ogbn_arxiv")
    out = tmp_path / "ego"
    argv = [str(tmp_path / "ogbn_arxiv"), "--format", "ogbn-arxiv", "--manifest-out", str(out), "--name", "arxiv"]
    assert prep.main(argv) == 0
    lines = {split: read_manifest(out / f"{split}.jsonl") for split in ("train", "val", "test")}
    assert {split: [line["node"] for line in ls] for split, ls in lines.items()} == {
        "train": [0],
        "val": [1],
        "test": [2],
    }
    test = lines["test"][0]
    assert test["key"] == "arxiv-000002" and test["response"] == "cs.AI" and test["split"] == "test"
    sample = decode_graph((out / test["graph"]).read_bytes(), test["graph"])
    assert sample["node_text"][int(sample["target"])] == "graph nets: abs" and int(sample["y"]) == 4
    assert sorted(sample["node_text"].tolist()) == ["", "evasion attacks: abstract one", "graph nets: abs"]


def test_manifest_out_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_cora(tmp_path / "cora")
    with pytest.raises(SystemExit):
        prep.main([str(tmp_path / "cora"), "--format", "cora"])
    assert "give --out GRAPH.npz, --manifest-out DIR or both" in capsys.readouterr().err
    base = [str(tmp_path / "cora"), "--format", "cora", "--out", str(tmp_path / "o.npz"), "--manifest-out"]
    assert prep.main([*base, str(tmp_path / "ego"), "--prompt", "no placeholder"]) == 2
    assert "exactly one <graph>" in capsys.readouterr().err and not (tmp_path / "o.npz").exists()
    (tmp_path / "cora" / "texts.tsv").unlink()
    assert prep.main([*base, str(tmp_path / "ego"), "--features", "text"]) == 2
    assert "has no node_text for --features text" in capsys.readouterr().err and not (tmp_path / "o.npz").exists()
