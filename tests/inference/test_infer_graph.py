"""``mmadapter infer --graph FILE``: one graph answered, a bad graph file an error exit that names the file."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import infer_cli as infer
from conftest import nudged_artefact, random_graph

from mmadapter import inference
from mmadapter.data import decode_graph

GRAPH_MODEL = ('model.encoders.graph={"name": "gnn_test"}', 'model.projectors.graph={"name": "graph", "mode": "pool"}')
PROMPT = "Which community is <graph> in?"


def graph_file(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture(scope="module")
def artefact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a random ``gnn_test`` encoder and ``graph`` projector, its trainable weights moved off
    their init (0 training steps) so that greedy answers are not empty."""
    return nudged_artefact(tmp_path_factory.mktemp("artefact"), *GRAPH_MODEL)


def test_single_graph_prints_the_answer(artefact: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = graph_file(tmp_path / "ring.graph.npz", random_graph(0, nodes=7, features=16))
    assert infer(artefact, "--graph", path, "--prompt", PROMPT) == 0
    printed = capsys.readouterr().out
    model = inference.load_model(artefact, "cpu")
    graph = decode_graph(path.read_bytes(), str(path))
    messages = [{"role": "user", "content": PROMPT}]
    want = model.generate(
        [model.prepare("input", messages, {"graph": [graph]}, add_generation_prompt=True)], max_new_tokens=4
    )
    assert want[0]
    assert printed == want[0] + "\n"


def test_a_graph_with_an_out_of_range_edge_is_an_error_exit_naming_the_file(
    artefact: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = {"edge_index": np.array([[0, 1], [1, 9]]), "x": np.zeros((3, 16), np.float32)}
    path = graph_file(tmp_path / "broken.graph.npz", bad)
    assert infer(artefact, "--graph", path, "--prompt", PROMPT) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"mmadapter infer: error: sample 'input' ({path}): graph_edge_out_of_range: "
        "edge_index values span [0, 9], outside [0, 3)\n"
    )


def test_a_graph_the_encoder_refuses_is_an_error_exit_naming_the_file(
    artefact: Path, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    path = graph_file(tmp_path / "narrow.graph.npz", random_graph(0, nodes=5, features=3))
    assert infer(artefact, "--graph", path, "--prompt", PROMPT) == 1
    assert capsys.readouterr().err == (
        f"mmadapter infer: error: sample 'input' ({path}): bad_graph: "
        "node features x must be (N, 16) for this encoder, got (5, 3)\n"
    )
    assert not caplog.records  # said once, by the error line (no warning log of the same failure)


def test_a_manifest_graph_the_encoder_refuses_fails_alone_naming_its_line(
    artefact: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    graph_file(tmp_path / "ring.graph.npz", random_graph(0, nodes=7, features=16))
    graph_file(tmp_path / "narrow.graph.npz", random_graph(0, nodes=5, features=3))
    lines = [{"key": key, "graph": f"{key}.graph.npz", "prompt": PROMPT} for key in ("ring", "narrow")]
    manifest = tmp_path / "graphs.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "pred.jsonl"
    assert infer(artefact, "--input", manifest, "--output", out) == 0
    assert [r.message for r in caplog.records] == [
        f"item 'narrow' failed: {json.loads(out.read_text().splitlines()[1])['error']}"
    ]
    ring, narrow = (json.loads(line) for line in out.read_text().splitlines())
    assert ring["key"] == "ring" and ring["output"]
    assert narrow == {"key": "narrow", "error": narrow["error"]}
    assert narrow["error"].startswith(f"sample 'narrow' ({manifest}:2): bad_graph: node features x must be (N, 16)")
