"""Demo step 1, language: a tiny Llama learns the demo's target texts and to answer its prompts from text.

A real instruction-tuned LLM already writes digit strings and short captions, and answers "Transcribe …",
"Describe …" or "How many shapes …" from whatever the prompt holds. This step gives a tiny random Llama (our
``causal_lm`` family with a ``config`` mapping and the local byte-level tokenizer) that knowledge from text
alone, in the ChatML format the demo uses, with the demo's prompts: the default ones
(:data:`~mmadapter.data.manifest.DEFAULT_PROMPTS`) and the instruction set's phrasings and questions
(:mod:`mmadapter.data.synthetic_instruct`). Where the audio or the image will stand, the text has the shape
the projectors will give those:

- ``Transcribe the audio: 3 7 1 9 . . `` → ``3 7 1 9``: one character and a space per time slot of the
  steadily paced speech (:data:`~mmadapter.data.synthetic.SLOTS` slots, two projector tokens each; ``.`` for
  a silent slot);
- ``Describe the image: rcbs`` → ``a red circle and a blue square``: four slots, the colour and the shape of
  the left, then of the right shape, by their initials (``rc..`` for a single shape) — as many tokens as
  the demo's ``prefix`` image projector makes from the class token. ``How many shapes are in the image?
  rcbs`` → ``two``.

It never sees audio or images: where these texts stand, the projectors later put encoder features, and the
alignment teaches them to say what the text said. Texts are drawn fresh for every batch from a seeded
generator and packed into one row (no padding to compute on); held-out quality is exact match on the demo's test
targets, per task.

Saved with ``save_pretrained`` plus its tokenizer: ``{name: causal_lm, name_or_path: DIR}`` loads it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from mmadapter.config import LLMSpec
from mmadapter.data.manifest import DEFAULT_PROMPTS
from mmadapter.data.synthetic import COLOURS, DIGITS, SHAPES, SLOTS, ShapeItem, caption
from mmadapter.data.synthetic_graphs import COUNT_WORDS, TOPICS
from mmadapter.data.synthetic_graphs import QUESTIONS as GRAPH_QUESTIONS
from mmadapter.data.synthetic_instruct import ASR_PROMPTS, CAPTION_PROMPTS, QUESTIONS
from mmadapter.demo.steps import PretrainResult, fit, pretraining
from mmadapter.llm.causal_lm import causal_lm
from mmadapter.llm.chat import encode_chat

__all__ = [
    "LlmPretrainSettings",
    "caption_rendition",
    "digit_rendition",
    "graph_rendition",
    "pretrain_llm",
    "text_example",
]

TEXT_SLOT = {"asr": "<audio>", "caption": "<image>", "vqa": "<image>"}
IMAGE_SLOTS = 4  # colour and shape of two shapes: the tokens of the demo's image projector


@dataclass(frozen=True)
class LlmPretrainSettings:
    """Model shape (Llama config fields) and training schedule."""

    hidden: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 256
    """384 reached the same held-out exact match from text, 10% slower."""
    steps: int = 700
    """The instruction phrasings put the slots at other distances from the answer: measured from text, captions
    asked in all the phrasings were right 34% of the time after 350 steps, 93% after 700."""
    batch_size: int = 32
    lr: float = 2e-3
    """Copying from a fixed distance (what reading the slots needs) forms suddenly, after 150–250 steps at
    2e-3; at 3e-3 and above some seeds never find it."""
    warmup_steps: int = 20
    weight_decay: float = 0.0
    caption_fraction: float = 0.4
    instruct_fraction: float = 0.5
    """Examples phrased like the instruction set (another phrasing of the task, or a question about the
    picture) rather than with the default prompt; without them the demo's instruct stage has to teach the
    frozen LLM new questions through its LoRA experts, and loses caption accuracy doing so."""
    graph_fraction: float = 0.15
    """Examples about a graph (the rest, 1 - caption_fraction - graph_fraction, are digit strings)."""
    test_per_task: int = 50
    """Held-out examples scored per task and manifest (the first ones): greedy decoding of all of
    them took a seventh of this step."""
    threads: int | None = 2

    def llm_config(self) -> dict[str, Any]:
        return {
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "max_position_embeddings": 1024,
            "tie_word_embeddings": True,
        }


def digit_rendition(digits: Sequence[int]) -> str:
    """A spoken digit string as text: per slot its digit (``.`` when silent) and a space, ``"3 7 1 9 . . "``."""
    return "".join(f"{d} " for d in digits) + ". " * (SLOTS - len(digits))


def caption_rendition(objects: Sequence[ShapeItem]) -> str:
    """A picture of shapes (left to right) as text: colour and shape initials per slot, ``"rcbs"`` or ``"rc.."``."""
    codes = "".join(o.colour[0] + o.shape[0] for o in objects)
    return codes + "." * (IMAGE_SLOTS - len(codes))


def _random_objects(rng: random.Random) -> list[ShapeItem]:
    n = 2 if rng.random() < 0.7 else 1
    return [ShapeItem(rng.choice(SHAPES), rng.choice(list(COLOURS)), x=i, y=0, size=0) for i in range(n)]


def graph_rendition(first_topic: str, communities: int) -> str:
    """A community graph as text: the topic initial of node 0 (the target node, when there is one) and the
    number of communities, ``"p3"`` — the two tokens of the demo's ``graph`` projector (``target`` mode)."""
    return f"{first_topic[0]}{communities}"


def _graph_example(rng: random.Random) -> tuple[str, str, str, str]:
    k = rng.choice(list(COUNT_WORDS))
    topics = rng.sample(list(TOPICS), k)
    question = rng.choice(list(GRAPH_QUESTIONS))
    answer = topics[0] if question == "topic" else COUNT_WORDS[k]
    return f"graph_{question}", GRAPH_QUESTIONS[question], answer, graph_rendition(topics[0], k)


def text_example(
    rng: random.Random, caption_fraction: float = 0.4, instruct_fraction: float = 0.0, graph_fraction: float = 0.0
) -> tuple[str, str, str]:
    """One ``(task, prompt, answer)`` drawn at random: a question about a graph (``graph_fraction``), a caption
    (``caption_fraction``) or a digit string; a caption or a digit string is phrased like the instruction set
    (another phrasing, or for pictures a question, task ``vqa``) with probability ``instruct_fraction``."""
    draw = rng.random()
    if draw < graph_fraction:
        task, prompt, answer, rendition = _graph_example(rng)
        return task, prompt.replace("<graph>", rendition), answer
    if draw < graph_fraction + caption_fraction:
        objects = _random_objects(rng)
        rendition, answer, task = caption_rendition(objects), caption(objects), "caption"
        prompts: Sequence[str] = CAPTION_PROMPTS
    else:
        digits = [rng.randrange(10) for _ in range(rng.randint(*DIGITS))]
        rendition, answer, task = digit_rendition(digits), " ".join(map(str, digits)), "asr"
        prompts = ASR_PROMPTS
    prompt = DEFAULT_PROMPTS[task]
    if rng.random() < instruct_fraction:
        kind = rng.randrange(len(prompts) + (len(QUESTIONS) if task == "caption" else 0))
        if kind < len(prompts):
            prompt = prompts[kind]
        else:
            prompt, answer_of = QUESTIONS[kind - len(prompts)]
            answer, task = answer_of([asdict(o) for o in objects]), "vqa"
    return task, prompt.replace(TEXT_SLOT[task], rendition), answer


def _messages(prompt: str, answer: str | None = None) -> list[dict[str, str]]:
    turns = [{"role": "user", "content": prompt}]
    return [*turns, {"role": "assistant", "content": answer}] if answer is not None else turns


def _packed_batch(tokenizer: PreTrainedTokenizerBase, examples: Sequence[tuple[str, str, str]]) -> dict[str, Any]:
    """``(task, prompt, answer)`` examples packed into one row: ids, labels (the answers only), positions
    restarting per example and the sequence offsets the packed attention reads (no padding to compute on;
    the loss, a mean over answer tokens, is the same as over a right-padded batch)."""
    chats = [encode_chat(tokenizer, _messages(prompt, answer)) for _, prompt, answer in examples]
    lengths = torch.tensor([len(c) for c in chats])
    offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]).to(torch.int32)
    longest = int(lengths.max())
    return {
        "input_ids": torch.tensor([t for c in chats for t in c.input_ids])[None],
        "labels": torch.tensor([t for c in chats for t in c.labels])[None],
        "position_ids": torch.cat([torch.arange(n) for n in lengths.tolist()])[None],
        "cu_seq_lens_q": offsets,
        "cu_seq_lens_k": offsets,
        "max_length_q": longest,
        "max_length_k": longest,
    }


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], batch_size: int = 64
) -> list[str]:
    """Greedy answers to user prompts (left-padded batches)."""
    model.eval()
    tokenizer.padding_side = "left"
    answers = []
    for start in range(0, len(prompts), batch_size):
        texts = [
            tokenizer.apply_chat_template(_messages(p), tokenize=False, add_generation_prompt=True)
            for p in prompts[start : start + batch_size]
        ]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(
            **enc, max_new_tokens=48, do_sample=False, pad_token_id=tokenizer.pad_token_id, use_cache=True
        )
        new = out[:, enc["input_ids"].shape[1] :]
        answers += [a.strip() for a in tokenizer.batch_decode(new, skip_special_tokens=True)]
    tokenizer.padding_side = "right"
    return answers


def _test_examples(manifests: Sequence[Path | str], per_task: int) -> list[tuple[str, str, str]]:
    """The demo's held-out targets (plain and instruction sets), at most ``per_task`` of each task in each
    manifest, rendered as text prompts the way training renders them."""
    out = []
    for manifest in manifests:
        counts: dict[str, int] = {}
        for line in Path(manifest).read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            task, answer = record["task"], record["response"]
            counts[task] = counts.get(task, 0) + 1
            if counts[task] > per_task:
                continue
            if "audio" in record:
                rendition = digit_rendition([int(d) for d in answer.split()])
            elif "graph" in record:  # node 0 is the target, or else in community 0
                rendition = graph_rendition(
                    answer if task == "graph_topic" else record["topics"][0], len(record["topics"])
                )
            else:
                objects = [ShapeItem(o["shape"], o["colour"], o["x"], o["y"], o["size"]) for o in record["objects"]]
                rendition = caption_rendition(objects)
            prompt = record["prompt"] if "prompt" in record else DEFAULT_PROMPTS[task]
            out.append((task, prompt.replace(TEXT_SLOT.get(task, "<graph>"), rendition), answer))
    return out


def pretrain_llm(
    test_manifests: Sequence[Path | str],
    out_dir: Path | str,
    settings: LlmPretrainSettings | None = None,
    seed: int = 0,
) -> PretrainResult:
    """Train the tiny Llama on text versions of the demo's tasks; save it with its tokenizer.

    Args:
        test_manifests: Held-out manifests (speech and images) whose targets score the model (``accuracy_<task>``:
            exact match of greedy answers to text prompts).
        out_dir: The checkpoint directory (``config.json``, ``model.safetensors``, tokenizer files).
        settings: Shape and schedule.
        seed: Initialisation and the texts drawn.

    Returns:
        The directory, held-out exact match per task, the loss per step and the time taken.
    """
    settings = settings or LlmPretrainSettings()
    out = Path(out_dir)
    label = "stage 1: LLM learns the target texts and to answer the demo prompts from text"
    with pretraining(label, out, settings.threads, seed) as result:
        model, tokenizer = causal_lm(LLMSpec(config=settings.llm_config(), dtype="float32"))
        result.losses = _fit(model, tokenizer, settings, seed)
        test = _test_examples(test_manifests, settings.test_per_task)
        answers = generate_answers(model, tokenizer, [prompt for _, prompt, _ in test])
        for task in sorted({t for t, _, _ in test}):
            pairs = [(a, ex[2]) for a, ex in zip(answers, test, strict=True) if ex[0] == task]
            result.metrics[f"accuracy_{task}"] = sum(a == b for a, b in pairs) / len(pairs)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    scores = ", ".join(f"{k[9:]} {v:.1%}" for k, v in result.metrics.items())
    print(f"[demo]   held-out exact match from text prompts: {scores}")
    return result


def _fit(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, s: LlmPretrainSettings, seed: int) -> list[float]:
    rng = random.Random(seed)

    def losses() -> Iterator[Tensor]:
        while True:
            examples = [
                text_example(rng, s.caption_fraction, s.instruct_fraction, s.graph_fraction)
                for _ in range(s.batch_size)
            ]
            yield model(**_packed_batch(tokenizer, examples), use_cache=False).loss

    model.train()
    out = fit(model.parameters(), losses(), s.steps, s.lr, s.warmup_steps, s.weight_decay)
    model.eval()
    return out
