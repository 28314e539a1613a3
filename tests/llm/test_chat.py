import re

import pytest

from mmadapter.llm import IGNORE_INDEX, MODALITY_IDS, PlaceholderMismatch, byte_tokenizer, encode_chat

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Transcribe <audio> then describe <image>."},
    {"role": "assistant", "content": "3 7 1"},
    {"role": "user", "content": "And again?"},
    {"role": "assistant", "content": "a red circle"},
]


def test_labels_cover_exactly_the_assistant_turns() -> None:
    tok = byte_tokenizer()
    enc = encode_chat(tok, CHAT, {"audio": [5], "image": [3]})
    assert len(enc.input_ids) == len(enc.labels) == len(enc.token_modality)
    labelled = tok.decode([i for i, lab in zip(enc.input_ids, enc.labels, strict=True) if lab != IGNORE_INDEX])
    assert labelled == "3 7 1<|im_end|>\na red circle<|im_end|>\n"
    assert all(lab in (IGNORE_INDEX, i) for i, lab in zip(enc.input_ids, enc.labels, strict=True))


def test_placeholders_expand_to_item_lengths_in_order() -> None:
    tok = byte_tokenizer()
    enc = encode_chat(tok, CHAT, {"audio": [5], "image": [3]})
    mods = enc.token_modality
    assert mods.count(MODALITY_IDS["audio"]) == 5 and mods.count(MODALITY_IDS["image"]) == 3
    first_audio, first_image = mods.index(MODALITY_IDS["audio"]), mods.index(MODALITY_IDS["image"])
    assert first_audio < first_image
    assert all(enc.input_ids[i] == tok.pad_token_id for i, m in enumerate(mods) if m != 0)
    assert "<audio>" not in tok.decode(enc.input_ids)


def test_generation_prompt_has_no_labels_and_ends_with_assistant_prefix() -> None:
    tok = byte_tokenizer()
    enc = encode_chat(tok, CHAT[:2], {"audio": [2], "image": [1]}, add_generation_prompt=True)
    assert set(enc.labels) == {IGNORE_INDEX}
    assert tok.decode(enc.input_ids).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(
    ("lengths", "needle"),
    [({"audio": [5, 5], "image": [3]}, "1 <audio> placeholder(s) for 2 audio"), ({"audio": [5]}, "no image item")],
)
def test_placeholder_mismatch(lengths: dict, needle: str) -> None:
    with pytest.raises(PlaceholderMismatch, match=re.escape(needle)):
        encode_chat(byte_tokenizer(), CHAT, lengths)
