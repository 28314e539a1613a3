"""``mmadapter bench model``: one training workload through mmadapter and through a plain Hugging Face
transformers + PEFT baseline, in one process (DESIGN.md §7).

mmadapter packs each step's samples into one row (``MultimodalBatch.pack``, at most ``data.max_tokens``), runs
the recipe's attention backend and adapters and takes the loss on labelled positions only (plus MoLoRA's
balance loss with ``topk`` routing). The baseline (:mod:`mmadapter.bench.baseline`) pads the same samples, runs
SDPA with PEFT LoRA and takes its loss from the model's ``labels=``. Both arms start from the same random
weights (fresh copies), train the stage's groups with AdamW and are timed on forward + backward + optimizer
step. They alternate step by step, each going first every other step, so that machine noise hits both alike;
warm-up steps are not timed. With ``train.activation_checkpointing`` both arms recompute their LLM layers in
backward. Batches are built and moved to the device before timing: the data pipeline is what
``mmadapter bench data`` measures.

The workload is a seeded mix of samples with one media item (random audio of 0.5–3 s, or a random image when
the recipe has no audio encoder) and text-only chats of 1–6 words each way, so rows differ in length.

Peak memory (CUDA only, ``null`` on CPU) is an arm's own resident tensors (weights, buffers, optimizer state)
plus the most ``torch.cuda.max_memory_allocated`` rose above the allocation at the start of one of its steps:
the other arm's tensors share the GPU and are not counted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mmadapter.batch import MultimodalBatch, Sample
from mmadapter.bench.arm import Arm
from mmadapter.bench.baseline import baseline_arm, check_comparable
from mmadapter.bench.data import TINY
from mmadapter.config import Recipe, StageConfig, load_recipe
from mmadapter.encoders.log_mel import SAMPLE_RATE
from mmadapter.llm.attention import apply_backend, choose_backend
from mmadapter.llm.causal_lm import checkpoint_activations
from mmadapter.model import MultimodalLM

__all__ = ["DEFAULT_OVERRIDES", "add_arguments", "bench_model", "make_samples", "run"]

DEFAULT_OVERRIDES: tuple[str, ...] = (
    'model.molora={"experts": ["text", "audio", "image"], "targets": ["q_proj", "k_proj", "v_proj", "o_proj"]}',
    'train.stages=[{"name": "bench", "trainable": ["projectors", "molora"]}]',
)
"""What the default workload adds to the tiny recipe: MoLoRA experts in the attention projections and a
stage that trains them with the projectors (the LLM frozen, as in the real recipes)."""

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett", "kilo")


def make_samples(model: MultimodalLM, count: int, seed: int) -> list[Sample]:
    """``count`` training samples, each with its answer, about half with a media item (see the module docs)."""
    rng = np.random.default_rng(seed)
    media = next((m for m in ("audio", "image") if m in model.encoders), None)
    samples = []
    for i in range(count):
        words = " ".join(rng.choice(WORDS, rng.integers(1, 7)))
        if media is not None and rng.random() < 0.5:
            item: Any
            if media == "audio":
                t = np.arange(int(rng.uniform(0.5, 3.0) * SAMPLE_RATE)) / SAMPLE_RATE
                tone = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 400) * t)
                item = (tone + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
            else:
                item = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
            prompt = f"Transcribe <{media}>" if media == "audio" else f"Describe <{media}>"
            items = {media: [item]}
        else:
            prompt, items = f"Repeat: {words}", {}
        chat = [{"role": "user", "content": prompt}, {"role": "assistant", "content": words}]
        samples.append(model.prepare(f"bench{i:05d}", chat, items))
    return samples


def bench_model(
    recipe: Recipe,
    *,
    stage: str | None = None,
    steps: int = 10,
    warmup: int = 2,
    samples_per_step: int = 8,
    device: str = "auto",
    seed: int | None = None,
) -> dict[str, Any]:
    """Run both arms for ``warmup + steps`` steps of ``samples_per_step`` samples; returns the report.

    Raises:
        ValueError: an unknown stage or device, a step that does not fit in ``data.max_tokens``, adapters the
            baseline has no counterpart for, or ``train.precision: 16-mixed``.
        ImportError: the recipe has MoLoRA and peft is not installed.
    """
    if steps < 1 or warmup < 0 or samples_per_step < 1:
        raise ValueError(
            f"need steps >= 1, warmup >= 0 and samples_per_step >= 1; got {steps}, {warmup} and {samples_per_step}"
        )
    where = _device(device)
    chosen = _stage(recipe, stage)
    autocast_dtype, precision = _precision(recipe, where)
    check_comparable(recipe)
    seed = recipe.train.seed if seed is None else seed
    torch.manual_seed(seed)
    model = MultimodalLM.from_recipe(recipe)
    if recipe.train.activation_checkpointing:
        checkpoint_activations(model.llm)
    samples = make_samples(model, (warmup + steps) * samples_per_step, seed)
    groups = [samples[i : i + samples_per_step] for i in range(0, len(samples), samples_per_step)]
    packed = [MultimodalBatch.pack(g) for g in groups]
    limit = recipe.data.max_tokens
    for i, batch in enumerate(packed):
        if batch.num_tokens() > limit:
            raise ValueError(
                f"step {i}: its {samples_per_step} samples hold {batch.num_tokens()} tokens, more than "
                f"data.max_tokens={limit} (one packed row); lower --samples-per-step or raise data.max_tokens"
            )
    padded = [MultimodalBatch.pad(g, model.tokenizer.pad_token_id) for g in groups]
    arms = [_mmadapter_arm(model, recipe, chosen, where, packed), baseline_arm(recipe, chosen, seed, where, padded)]
    for i in range(warmup + steps):
        for arm in arms if i % 2 == 0 else arms[::-1]:
            arm.step(i, autocast_dtype)
    mine, base = (arm.report(warmup) for arm in arms)
    return {
        "stage": chosen.name,
        "trainable": list(chosen.trainable),
        "device": str(where),
        "precision": precision,
        "steps": steps,
        "warmup": warmup,
        "samples_per_step": samples_per_step,
        "activation_checkpointing": recipe.train.activation_checkpointing,
        "seed": seed,
        "torch_threads": torch.get_num_threads(),
        "mmadapter": mine,
        "baseline": base,
        "ratios": _ratios(mine, base),
    }


def _mmadapter_arm(
    model: MultimodalLM, recipe: Recipe, stage: StageConfig, device: torch.device, batches: list[MultimodalBatch]
) -> Arm:
    model.set_trainable(stage.trainable)
    backend = choose_backend(recipe.model.llm.attn, device)
    if backend != model.attn_backend:  # the model chose for the default device; --device named another
        apply_backend(model.llm, backend)
        model.attn_backend = backend
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.train.lr, weight_decay=recipe.train.weight_decay)
    molora = recipe.model.molora
    adapters = "none"
    if molora is not None:
        targets = molora.targets if isinstance(molora.targets, str) else ",".join(molora.targets)
        adapters = f"MoLoRA rank {molora.rank} x {len(molora.experts)} experts ({molora.routing}) on {targets}"
    facts = {"layout": "packed", "attention": backend.name, "adapters": adapters}
    return Arm("mmadapter", lambda batch: model(batch).loss, model, optimizer, [b.to(device) for b in batches], facts)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available here; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: expected auto, cpu or cuda")
    return torch.device(name)


def _stage(recipe: Recipe, name: str | None) -> StageConfig:
    stages = {s.name: s for s in recipe.train.stages}
    if name is None:
        return recipe.train.stages[0]
    if name not in stages:
        raise ValueError(f"--stage {name!r}: the recipe's stages are {list(stages)}")
    return stages[name]


def _precision(recipe: Recipe, device: torch.device) -> tuple[torch.dtype | None, str]:
    """The autocast dtype of both arms (``None``: none) and the precision's name, as training resolves it."""
    name = recipe.train.precision
    if name == "auto":
        name = "bf16-mixed" if device.type == "cuda" else "32-true"
    if name == "16-mixed":
        raise ValueError(
            "train.precision=16-mixed needs a gradient scaler, which bench model does not run; "
            "override train.precision=bf16-mixed or 32-true"
        )
    return (torch.bfloat16 if name == "bf16-mixed" else None), name


def _ratios(mine: dict[str, Any], base: dict[str, Any]) -> dict[str, float | None]:
    """mmadapter / baseline of each figure (``None`` where a figure is missing)."""
    keys = ("tokens_per_s", "step_time_s", "peak_memory_mib")
    return {k: mine[k] / base[k] if mine[k] is not None and base[k] else None for k in keys}


def format_report(result: dict[str, Any]) -> str:
    """The report as a small table: one row per arm, then the ratios."""
    tokens = result["mmadapter"]["real_tokens_per_step"]
    lines = [
        f"bench model: stage {result['stage']} (trains {', '.join(result['trainable'])}) on {result['device']}, "
        f"{result['precision']}{', activation checkpointing' if result['activation_checkpointing'] else ''}, "
        f"{result['steps']} steps after {result['warmup']} warm-up, "
        f"{result['samples_per_step']} samples/step (~{sum(tokens) / len(tokens):.0f} real tokens), "
        f"{result['torch_threads']} torch threads",
        f"{'':20}{'tokens/s':>12}{'step ms':>10}{'peak MiB':>10}{'padded':>8}{'loss@0':>9}{'trainable':>11}  what",
    ]
    for key, label in (("mmadapter", "mmadapter"), ("baseline", "HF + PEFT")):
        a = result[key]
        lines.append(
            f"{label:20}{a['tokens_per_s']:>12,.0f}{a['step_time_s'] * 1e3:>10.1f}{_mib(a['peak_memory_mib']):>10}"
            f"{a['padded_fraction']:>8.1%}{a['losses'][0]:>9.4f}{a['trainable_parameters']:>11,}  "
            f"{a['layout']}, {a['attention']}, {a['adapters']}"
        )
    r = result["ratios"]
    peak = "-" if r["peak_memory_mib"] is None else f"{r['peak_memory_mib']:.2f}x"
    lines.append(f"{'mmadapter / HF':20}{r['tokens_per_s']:>11.2f}x{r['step_time_s']:>9.2f}x{peak:>10}")
    return "\n".join(lines)


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", help="dotted.key=value recipe overrides")
    parser.add_argument(
        "--recipe",
        type=Path,
        help=f"recipe YAML (default: {TINY.relative_to(TINY.parents[2])} with MoLoRA experts and a stage that "
        "trains projectors + molora; a recipe given here is run as it is)",
    )
    parser.add_argument("--stage", help="the stage whose trainable groups train (default: the first)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per arm")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per arm before them")
    parser.add_argument("--samples-per-step", type=int, default=8, help="samples in each step's batch")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--seed", type=int, help="weights and workload seed (default: train.seed)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    overrides = [*(DEFAULT_OVERRIDES if args.recipe is None else ()), *args.overrides]
    recipe = load_recipe(args.recipe or TINY, overrides)
    try:
        result = bench_model(
            recipe,
            stage=args.stage,
            steps=args.steps,
            warmup=args.warmup,
            samples_per_step=args.samples_per_step,
            device=args.device,
            seed=args.seed,
        )
    except ImportError as e:
        print(f"mmadapter bench model: error: {e}", file=sys.stderr)
        return 2
    result = {"recipe": str(args.recipe or TINY), "overrides": overrides, **result}
    print(json.dumps(result) if args.json else format_report(result))
    return 0
