"""The frozen causal LM, its tokenizer and chat encoding."""

from mmadapter.llm.causal_lm import LLMS, causal_lm, causal_lm_test, resolve_dtype
from mmadapter.llm.chat import IGNORE_INDEX, MODALITY_IDS, EncodedChat, PlaceholderMismatch, encode_chat
from mmadapter.llm.tokenizer import byte_tokenizer

__all__ = [
    "IGNORE_INDEX",
    "LLMS",
    "MODALITY_IDS",
    "EncodedChat",
    "PlaceholderMismatch",
    "byte_tokenizer",
    "causal_lm",
    "causal_lm_test",
    "encode_chat",
    "resolve_dtype",
]
