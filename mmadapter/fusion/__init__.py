"""Zero-init gated fusion inside the frozen LLM: LLaMA-Adapter prompts, Flamingo cross-attention, and
LLaMA-Adapter V2 bias/norm tuning."""

from mmadapter.fusion.bias_norm import BiasNormTuning
from mmadapter.fusion.cross_attention import GatedCrossAttentionBlock
from mmadapter.fusion.gated_attention import GatedAttention
from mmadapter.fusion.prompt_attention import PromptAttention
from mmadapter.fusion.tanh_gate import TanhGate

__all__ = ["BiasNormTuning", "GatedAttention", "GatedCrossAttentionBlock", "PromptAttention", "TanhGate"]
