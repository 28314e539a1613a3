"""How demo step 1 batches its data: the audio encoder's clip-length curriculum, the vision encoder's pixels,
the LLM's packed rows and the held-out texts it is scored on."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import torch
from transformers import CLIPImageProcessor, CLIPVisionModel

from mmadapter.config import LLMSpec
from mmadapter.data.synthetic import SLOT_S, SLOTS, plan_images, render_image
from mmadapter.demo.audio_encoder import _prefix, curriculum_slots
from mmadapter.demo.language_model import (
    LlmPretrainSettings,
    _messages,
    _packed_batch,
    _test_examples,
    text_example,
)
from mmadapter.demo.vision_encoder import PREPROCESS_BATCH, VisionPretrainSettings, _tensors
from mmadapter.encoders.hf_vision import HfVisionEncoder
from mmadapter.llm.causal_lm import causal_lm
from mmadapter.llm.chat import IGNORE_INDEX, encode_chat


def test_the_curriculum_grows_by_one_slot_in_equal_phases_up_to_whole_clips() -> None:
    steps = 300
    slots = [curriculum_slots(step, steps, first=2) for step in range(steps)]
    assert slots[0] == 2 and slots[-1] == SLOTS
    assert all(b - a in (0, 1) for a, b in itertools.pairwise(slots))
    phases = [slots.count(n) for n in range(2, SLOTS + 1)]
    assert phases == [steps // len(phases)] * len(phases)


def test_a_prefix_keeps_whole_slots_of_features_and_the_digits_spoken_in_them() -> None:
    frames_per_slot = round(SLOT_S * 100)  # Whisper's log-mel: 100 frames a second
    clips = [torch.randn(80, SLOTS * frames_per_slot) for _ in range(2)]
    targets = [torch.tensor([3, 1, 4, 1, 5]), torch.tensor([9, 2, 6])]
    cut, digits = _prefix(clips, targets, slots=4)
    assert [c.shape[-1] for c in cut] == [4 * frames_per_slot] * 2
    assert torch.equal(cut[0], clips[0][:, : 4 * frames_per_slot])
    assert [d.tolist() for d in digits] == [[3, 1, 4, 1], [9, 2, 6]]


def test_packed_llm_rows_give_the_loss_of_a_right_padded_batch() -> None:
    settings = LlmPretrainSettings(hidden=32, layers=2, heads=2, kv_heads=1, intermediate=64)
    torch.manual_seed(0)
    config = settings.llm_config() | {"initializer_range": 0.5}  # weights large enough for context to matter
    model, tokenizer = causal_lm(LLMSpec(config=config, dtype="float32"))
    rng = random.Random(0)
    examples = [text_example(rng, 0.4, 0.5, 0.15) for _ in range(8)]

    chats = [encode_chat(tokenizer, _messages(prompt, answer)) for _, prompt, answer in examples]
    width = max(len(c) for c in chats)
    assert min(len(c) for c in chats) < width  # the padded batch does pad
    ids = torch.full((len(chats), width), tokenizer.pad_token_id)
    labels = torch.full((len(chats), width), IGNORE_INDEX)
    mask = torch.zeros((len(chats), width), dtype=torch.long)
    for row, chat in enumerate(chats):
        ids[row, : len(chat)] = torch.tensor(chat.input_ids)
        labels[row, : len(chat)] = torch.tensor(chat.labels)
        mask[row, : len(chat)] = 1

    packed = _packed_batch(tokenizer, examples)
    assert packed["input_ids"].shape == (1, sum(len(c) for c in chats))
    with torch.no_grad():
        padded_loss = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
        packed_loss = model(**packed, use_cache=False).loss
        # The same row read as one sequence (each sample sees the ones before it): another loss.
        one_sequence = model(input_ids=packed["input_ids"], labels=packed["labels"], use_cache=False).loss
    torch.testing.assert_close(packed_loss, padded_loss, rtol=1e-5, atol=1e-5)
    assert abs(one_sequence.item() - padded_loss.item()) > 1e-2


def test_vision_pixels_in_batches_equal_the_encoders_own_transform_one_image_at_a_time() -> None:
    settings = VisionPretrainSettings(hidden=32, layers=1, heads=2, mlp=64)
    size = settings.clip_config().image_size
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    encoder = HfVisionEncoder(CLIPVisionModel(settings.clip_config()), processor, layer=-1, cls_token=True)
    n = PREPROCESS_BATCH + 3  # a whole batch and a part one
    items = [(render_image(plan), list(plan.objects)) for plan in plan_images(n, seed=3)]
    batched = _tensors(processor, items, settings.patch)
    assert batched.pixels.shape == (n, 3, size, size)
    assert torch.equal(batched.pixels, torch.stack([encoder.transform(image) for image, _ in items]))


def test_the_llm_is_scored_on_at_most_so_many_held_out_texts_per_task_and_manifest(tmp_path: Path) -> None:
    speech = [{"task": "asr", "response": f"{i} 1 2", "audio": f"{i}.flac"} for i in range(5)]
    instruct = [{"task": "asr", "response": "4 4 4", "audio": "x.flac", "prompt": "Write down <audio>"}] * 3
    for name, records in (("speech", speech), ("instruct", instruct)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    examples = _test_examples([tmp_path / "speech.jsonl", tmp_path / "instruct.jsonl"], per_task=2)
    assert [answer for _, _, answer in examples] == ["0 1 2", "1 1 2", "4 4 4", "4 4 4"]
    assert examples[2][1].startswith("Write down 4 4 4 ")  # the rendition stands where the audio will
