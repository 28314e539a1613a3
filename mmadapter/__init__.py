"""mmadapter: pretrained modality encoders → trainable projectors → a frozen LLM with adapters."""

__version__ = "0.1.0"
