"""Demo step 1: the tiny components acquire their own knowledge, because no pretrained weights can be downloaded.

What real pretrained components bring, learnt here in a few minutes on 2 CPU cores from the synthetic data
(:mod:`mmadapter.data.synthetic`):

- the audio encoder (a Whisper encoder, our ``whisper`` family) recognises spoken digits in all five
  languages (CTC on each language's words; :mod:`mmadapter.demo.audio_encoder`);
- the vision encoder (a CLIP vision tower, our ``hf_vision`` family) knows shapes, colours and which is
  left (:mod:`mmadapter.demo.vision_encoder`);
- the LLM (a Llama, our ``causal_lm`` family) writes digit strings, captions and the answers to the demo's
  questions, from text (:mod:`mmadapter.demo.language_model`);
- the graph encoder (a GraphSAGE, our ``gnn`` family) knows the topic of each node and which topics a graph
  holds, over node features from that LLM's input embeddings (:mod:`mmadapter.demo.graph_encoder`).

Each is saved as an ordinary checkpoint under ``OUT/pretrained/`` (directories ``audio_encoder``,
``vision_encoder``, ``llm``; the file ``graph_encoder.safetensors``) that ``recipes/demo/*.yaml`` load by
``name_or_path``. From the repository root::

    python -m mmadapter.demo.pretrain --out runs/demo [--quick]
    mmadapter train recipes/demo/speech_vision_graph.yaml --run runs/demo/speech_vision_graph
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from mmadapter.data.synthetic import LANGUAGES, SyntheticData
from mmadapter.demo.audio_encoder import pretrain_audio_encoder
from mmadapter.demo.data import make_demo_data
from mmadapter.demo.graph_encoder import GraphPretrainSettings, pretrain_graph_encoder
from mmadapter.demo.language_model import LlmPretrainSettings, pretrain_llm
from mmadapter.demo.settings import DEMO_RECIPE, PretrainSettings, load_demo_settings
from mmadapter.demo.steps import PretrainResult, side_by_side
from mmadapter.demo.vision_encoder import pretrain_vision_encoder

__all__ = [
    "main",
    "pretrain_all",
    "pretrain_audio_encoder",
    "pretrain_graph_encoder",
    "pretrain_llm",
    "pretrain_vision_encoder",
]


def pretrain_all(
    data: SyntheticData, out_dir: Path | str, settings: PretrainSettings | None = None, seed: int = 0
) -> dict[str, PretrainResult]:
    """Run the four step-1 trainings on ``data`` into ``out_dir/{audio_encoder,vision_encoder,llm}`` and
    ``out_dir/graph_encoder.safetensors`` (the graph encoder reads node texts through the LLM: it follows it).

    With ``settings.side_by_side`` the vision encoder, and the LLM then the graph encoder, train at once in two
    processes of one thread each (their printed output, kept in ``out_dir/<name>.log``, is shown as each ends),
    then the audio encoder; otherwise all four one after the other.

    Args:
        settings: The four trainings' settings (``recipes/demo/demo.yaml``'s ``step1``); default: the defaults.

    Returns:
        Results by component (``audio_encoder``, ``vision_encoder``, ``llm``, ``graph_encoder``).
    """
    settings = settings or PretrainSettings()
    out = Path(out_dir)
    speech = [f"speech_{lang}" for lang in LANGUAGES if f"speech_{lang}" in data.manifests]
    texts = ["speech_en", "images", "speech_en_instruct", "images_instruct", "graphs"]
    audio = ([data.manifests[s]["train"] for s in speech], [data.manifests[s]["test"] for s in speech])
    images = ([data.manifests["images"]["train"]], [data.manifests["images"]["test"]])
    llm_tests = [data.manifests[s]["test"] for s in texts if s in data.manifests]
    print("[demo] step 1: the tiny components learn what pretrained ones would already know")
    if settings.side_by_side:
        vision, llm, graph = (replace(s, threads=1) for s in (settings.vision, settings.llm, settings.graph))
        print("[demo] the vision encoder, and the LLM then the graph encoder, side by side (one core each)")
        results = side_by_side(
            {
                "vision_encoder": (pretrain_vision_encoder, (*images, out / "vision_encoder", vision, seed)),
                "llm": (_llm_then_graph, (llm_tests, out, llm, graph, seed)),
            },
            out,
        )
        results |= results.pop("llm")
    else:
        results = {
            "vision_encoder": pretrain_vision_encoder(*images, out / "vision_encoder", settings.vision, seed),
            **_llm_then_graph(llm_tests, out, settings.llm, settings.graph, seed),
        }
    results["audio_encoder"] = pretrain_audio_encoder(*audio, out / "audio_encoder", settings.audio, seed)
    return {name: results[name] for name in ("audio_encoder", "vision_encoder", "llm", "graph_encoder")}


def _llm_then_graph(
    tests: list[Path], out: Path, llm: LlmPretrainSettings, graph: GraphPretrainSettings, seed: int
) -> dict[str, PretrainResult]:
    """The LLM, then the graph encoder over node features from its input embeddings."""
    return {
        "llm": pretrain_llm(tests, out / "llm", llm, seed),
        "graph_encoder": pretrain_graph_encoder(out / "llm", out / "graph_encoder.safetensors", graph, seed),
    }


def summary(results: dict[str, PretrainResult]) -> dict[str, dict[str, object]]:
    """Per component: its path, metrics, time and first and last loss (JSON-ready)."""
    return {
        name: {
            "path": str(r.path),
            "seconds": round(r.seconds, 1),
            "metrics": r.metrics,
            "loss_first_last": [r.losses[0], r.losses[-1]] if r.losses else [],
        }
        for name, r in results.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mmadapter.demo.pretrain``: synthesise the data, then run step 1."""
    parser = argparse.ArgumentParser(prog="python -m mmadapter.demo.pretrain", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory (default runs/demo)")
    parser.add_argument("--quick", action="store_true", help="small data and models: a smoke test in about a minute")
    parser.add_argument("--recipe", type=Path, default=DEMO_RECIPE, help="the demo's settings (recipes/demo/demo.yaml)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        settings = load_demo_settings(args.recipe, quick=args.quick)
        data = make_demo_data(args.out / "data", settings, seed=args.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    results = pretrain_all(data, args.out / "pretrained", settings.step1, seed=args.seed)
    total = time.perf_counter() - start
    report = summary(results)
    (args.out / "pretrained" / "step1.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"[demo] step 1 done in {total:.0f} s: {args.out / 'pretrained'} (metrics in step1.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
