"""``mmadapter summary`` counts parameters exactly, on the meta device, for any size."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import TINY_RECIPE, tiny_recipe

from mmadapter.cli import main
from mmadapter.model import MultimodalLM
from mmadapter.summary import build_on_meta, count_parameters

LLAMA_8B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
}


def llama_params(c: dict) -> int:
    d, f, v, L = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["num_hidden_layers"]
    kv = d // c["num_attention_heads"] * c["num_key_value_heads"]
    layer = d * d * 2 + d * kv * 2 + 3 * d * f + 2 * d
    return v * d * (1 if c["tie_word_embeddings"] else 2) + L * layer + d


def test_summary_json_matches_the_built_model(capsys) -> None:
    assert main(["summary", str(TINY_RECIPE), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    model = MultimodalLM.from_recipe(tiny_recipe())
    params = dict(model.named_parameters())  # tied weights once
    trainable = sum(p.numel() for p in params.values() if p.requires_grad)
    frozen = sum(p.numel() for p in params.values() if not p.requires_grad)
    assert (report["total_trainable"], report["total_frozen"]) == (trainable, frozen)
    for kind in ("llm", "encoders", "projectors"):
        sub = {n: p for n, p in params.items() if n.startswith(kind + ".")}
        got = report["components"][kind]
        assert got["trainable"] == sum(p.numel() for p in sub.values() if p.requires_grad), kind
        assert got["frozen"] == sum(p.numel() for p in sub.values() if not p.requires_grad), kind
    assert report["groups"]["projectors.audio"]["trainable"] == sum(
        p.numel() for n, p in params.items() if n.startswith("projectors.audio.")
    )
    assert report["components"]["llm"]["trainable"] == llama_params(
        {**model.llm.config.to_dict(), "tie_word_embeddings": True}
    )


def test_8b_llm_is_counted_exactly_without_allocating() -> None:
    recipe = tiny_recipe(f"model.llm.config={json.dumps(LLAMA_8B)}", 'train.stages.0.trainable=["projectors"]')
    model = build_on_meta(recipe)
    assert all(p.device.type == "meta" for p in model.parameters())
    counts = count_parameters(model)
    assert counts["components"]["llm"] == {"trainable": 0, "frozen": llama_params(LLAMA_8B)}
    assert counts["components"]["llm"]["frozen"] == 8_030_261_248


def test_cli_list_shows_every_registry() -> None:
    out = subprocess.run([sys.executable, "-m", "mmadapter.cli", "list"], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    for expected in ("encoders:", "projectors:", "llms:", "  whisper", "  whisper_test", "  stack", "  causal_lm"):
        assert expected in lines
