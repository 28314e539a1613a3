"""The frozen LLM loads by path through a recipe and matches the object that was saved."""

from __future__ import annotations

from pathlib import Path

import torch

from mmadapter.config import LLMSpec
from mmadapter.llm import LLMS, byte_tokenizer
from mmadapter.llm.causal_lm import TINY_LLAMA, causal_lm


def test_llm_saved_and_loaded_by_path_is_identical(tmp_path: Path) -> None:
    model, tok = LLMS.get("causal_lm_test")(LLMSpec(name="causal_lm_test"))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again, tok2 = causal_lm(LLMSpec(name_or_path=str(tmp_path)))
    ids = torch.tensor([tok("hello world", add_special_tokens=False).input_ids])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
    assert tok2.chat_template == tok.chat_template
    assert tok2("héllo").input_ids == tok("héllo").input_ids


def test_random_llm_from_config_and_vocab_check() -> None:
    model, _ = causal_lm(LLMSpec(config=TINY_LLAMA | {"num_hidden_layers": 1}))
    assert model.config.num_hidden_layers == 1 and model.config.vocab_size == len(byte_tokenizer())
    assert not any(p.device.type == "meta" for p in model.parameters())
    try:
        causal_lm(LLMSpec(config=TINY_LLAMA | {"vocab_size": 10}))
    except ValueError as e:
        assert "vocab_size=10" in str(e)
    else:
        raise AssertionError("a vocabulary smaller than the tokenizer must be rejected")
