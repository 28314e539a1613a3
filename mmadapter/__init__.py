"""mmadapter: pretrained modality encoders → trainable projectors → a frozen LLM with adapters."""

import warnings

__version__ = "0.1.0"

# torch_geometric scripts a few helpers with torch.jit.script when it is imported, and recent torch (2.14 here) warns
# about each call: two FutureWarnings on every command, about code neither we nor our users can change. Only that
# message, only as torch.jit issues it (torch gives no stacklevel, so it is hidden for users' own calls too).
warnings.filterwarnings(
    "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning, module=r"torch\.jit\._script"
)
