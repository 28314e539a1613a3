"""Modality encoders; importing this package registers every family in :data:`ENCODERS`."""

from mmadapter.encoders import gnn, hf_vision, open_clip, timm_vit, whisper
from mmadapter.encoders.base import ENCODERS, Encoder, EncoderSpec

__all__ = ["ENCODERS", "Encoder", "EncoderSpec", "gnn", "hf_vision", "open_clip", "timm_vit", "whisper"]
