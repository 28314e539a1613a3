"""LoRA-style adapters inside the frozen LLM: mixture-of-modality LoRA experts."""

from mmadapter.lora.molora import MoLoRALinear, attach_molora, balance_loss, merge_molora

__all__ = ["MoLoRALinear", "attach_molora", "balance_loss", "merge_molora"]
