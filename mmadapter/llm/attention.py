"""The LLM's attention backend: chosen once with the reason logged, and fed packed batches (DESIGN.md §4).

``model.llm.attn`` picks one of:

- ``flash_attn``: flash-attn 2's ``flash_attn_varlen_func`` (CUDA sm80+, ``pip install 'mmadapter[flash]'``);
- ``varlen``: ``torch.nn.attention.varlen.varlen_attn`` (CUDA sm80+, PyTorch ≥ 2.10), the same FA2 kernels
  shipped inside PyTorch;
- ``flex``: flex attention with a causal document mask built once per batch from ``cu_seqlens`` (compiled on
  CUDA; on CPU it runs unfused and forward only);
- ``sdpa_varlen``: ``F.scaled_dot_product_attention`` over the samples of a packed row padded to the longest one
  (any device, with autograd): the work of each sample's own attention, not of a dense mask over the whole row;
- ``sdpa`` / ``eager``: transformers' own. A packed row is split into its samples by transformers' packed-sequence
  detection, which needs ``attention_mask=None``, ``use_cache=False`` and restarting ``position_ids``; otherwise
  the samples silently attend to each other. On CUDA that path builds a dense ``(t, t)`` mask.
- ``auto``: on CUDA the first of ``flash_attn``, ``varlen``, ``flex`` that can run; elsewhere ``sdpa_varlen``.

The first four are functions registered with transformers' ``AttentionInterface``
(:mod:`mmadapter.llm.packed_attention` over the kernels of :mod:`mmadapter.llm.varlen_kernels`), with
transformers' ``flash_attention_mask`` as mask function so no dense mask is built; a packed batch reaches them as
``cu_seq_lens_q/k`` and ``max_length_q/k`` decoder kwargs (:func:`packed_kwargs`). They also run padded batches and
generation with a cache, from the 2-D padding mask.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, get_args

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

from mmadapter.config import AttentionBackendName as BackendName
from mmadapter.llm.packed_attention import attention_function

if TYPE_CHECKING:
    from mmadapter.batch import MultimodalBatch

__all__ = [
    "ATTN_REQUESTS",
    "Backend",
    "BackendName",
    "apply_backend",
    "choose_backend",
    "default_device",
    "packed_kwargs",
    "register_attention_functions",
]

log = logging.getLogger(__name__)

ATTN_REQUESTS: tuple[str, ...] = ("auto", *get_args(BackendName))

# transformers names of our registered functions. They must not contain "flash" (transformers would try to load
# a flash-attn package for them), "sdpa" or "flex_attention" (it would run that implementation's checks).
_REGISTERED = {
    "flash_attn": "mmadapter_fa2_varlen",
    "varlen": "mmadapter_varlen",
    "flex": "mmadapter_flex",
    "sdpa_varlen": "mmadapter_padded",
}
_HF_NAMES: dict[str, str] = {**_REGISTERED, "sdpa": "sdpa", "eager": "eager"}
_NEEDS = {
    "flash_attn": "a CUDA GPU (sm80+) and flash-attn 2 (pip install 'mmadapter[flash]')",
    "varlen": "a CUDA GPU (sm80+) and PyTorch >= 2.10 (torch.nn.attention.varlen)",
    "flex": "torch.nn.attention.flex_attention (PyTorch >= 2.5)",
}
_PACKED_SDPA = (
    "transformers' packed-sequence {name} path (attention_mask=None, use_cache=False, restarting position_ids)"
)
_logged: set[tuple[str, str, str]] = set()


@dataclass(frozen=True)
class Backend:
    """The attention backend of the LLM.

    Attributes:
        name: Our backend name (``model.llm.attn`` with ``auto`` resolved).
        attn_implementation: The transformers name to load the model with (``attn_implementation=``).
        reason: Why this backend was chosen, for the log.
    """

    name: BackendName
    attn_implementation: str
    reason: str

    @property
    def takes_cu_seqlens(self) -> bool:
        """Whether packed rows reach it as ``cu_seq_lens_q/k`` kwargs (rather than through an empty mask)."""
        return self.name in _REGISTERED


def default_device() -> torch.device:
    """The device a model is trained on when none is named: CUDA when available (as ``dtype: auto`` assumes)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def register_attention_functions() -> None:
    """Register our attention functions and their mask function with transformers (idempotent)."""
    for kernel, hf_name in _REGISTERED.items():
        AttentionInterface.register(hf_name, attention_function(kernel))
        ALL_MASK_ATTENTION_FUNCTIONS.register(hf_name, flash_attention_mask)


def choose_backend(requested: str, device: torch.device | str) -> Backend:
    """Resolve ``model.llm.attn`` for the device the LLM will run on; logs the choice and its reason once.

    Registers our attention functions, so ``Backend.attn_implementation`` can be passed to ``from_pretrained``.

    Raises:
        ValueError: ``requested`` is not a backend name, or names one that cannot run here (the message says what
            it needs and what is available).
    """
    device = torch.device(device)
    if requested not in ATTN_REQUESTS:
        raise ValueError(f"model.llm.attn={requested!r} is not one of {list(ATTN_REQUESTS)}")
    register_attention_functions()
    if requested == "auto":
        backend = _auto(device)
    else:
        ok, detail = _probe(requested, device)
        if not ok:
            available = [n for n in get_args(BackendName) if _probe(n, device)[0]]
            raise ValueError(
                f"model.llm.attn={requested!r} cannot run here: {detail}. It needs {_NEEDS[requested]}; "
                f"available on {device}: {[*available, 'auto']}"
            )
        backend = Backend(requested, _HF_NAMES[requested], f"requested (model.llm.attn={requested}): {detail}")
    key = (requested, str(device), backend.name)
    if key not in _logged:
        _logged.add(key)
        log.info(
            "attention backend %s (attn_implementation=%s): %s",
            backend.name,
            backend.attn_implementation,
            backend.reason,
        )
    return backend


def _auto(device: torch.device) -> Backend:
    if device.type != "cuda":
        return Backend(
            "sdpa_varlen", _HF_NAMES["sdpa_varlen"], f"{device.type.upper()}: {_probe('sdpa_varlen', device)[1]}"
        )
    flash_ok, flash = _probe("flash_attn", device)
    if flash_ok:
        return Backend("flash_attn", _HF_NAMES["flash_attn"], flash)
    varlen_ok, varlen = _probe("varlen", device)
    if varlen_ok:
        return Backend("varlen", _HF_NAMES["varlen"], f"CUDA but {flash}; using torch.nn.attention.varlen")
    flex_ok, flex = _probe("flex", device)
    if flex_ok:
        reason = f"CUDA but {flash} and {varlen}; using flex attention with a document mask"
        return Backend("flex", _HF_NAMES["flex"], reason)
    return Backend("sdpa", "sdpa", f"CUDA but {flash}, {varlen} and {flex}; " + _PACKED_SDPA.format(name="SDPA"))


@cache
def _probe(name: str, device: torch.device) -> tuple[bool, str]:
    """Whether backend ``name`` can run on ``device``, and a phrase saying what was found (or what failed)."""
    if name == "sdpa_varlen":
        return True, "SDPA over each packed row's samples padded to the longest one (no dense (t, t) mask)"
    if name in ("sdpa", "eager"):
        dense = "; on CUDA it builds a dense (t, t) mask per packed row" if device.type == "cuda" else ""
        return True, _PACKED_SDPA.format(name=name.upper() if name == "sdpa" else name) + dense
    if name == "flex":
        try:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: F401
        except ImportError as e:
            return False, f"flex attention unavailable in torch {torch.__version__}: {type(e).__name__}: {e}"
        if device.type == "cuda":
            return True, "flex attention (compiled) with a document mask"
        return True, f"flex attention on {device.type} runs unfused and forward only (no backward off CUDA)"
    if device.type != "cuda" or not torch.cuda.is_available():
        return False, f"device is {device.type}" + ("" if device.type != "cuda" else " but CUDA is not available")
    capability = torch.cuda.get_device_capability(device)
    gpu = f"{torch.cuda.get_device_name(device)}, sm{capability[0]}{capability[1]}"
    if capability < (8, 0):
        return False, f"the GPU ({gpu}) is older than sm80, which FlashAttention kernels need"
    if name == "varlen":
        try:
            from torch.nn.attention.varlen import varlen_attn  # noqa: F401
        except ImportError as e:
            return False, f"torch.nn.attention.varlen unavailable in torch {torch.__version__}: {type(e).__name__}: {e}"
        return True, f"torch.nn.attention.varlen on CUDA ({gpu})"
    try:
        import flash_attn
        from flash_attn import flash_attn_varlen_func  # noqa: F401
    except Exception as e:  # ImportError, or OSError/RuntimeError from a wheel built for another torch or CUDA
        return False, f"flash_attn not installed: {type(e).__name__}: {e}"
    version = str(getattr(flash_attn, "__version__", "unknown"))
    if not version.startswith("2."):
        return False, f"flash_attn {version} is installed but not 2.x (its flash_attn_varlen_func API differs)"
    return True, f"flash-attn {version} found on CUDA ({gpu})"


def packed_kwargs(batch: MultimodalBatch, backend: Backend) -> dict[str, Any]:
    """Extra decoder kwargs for ``batch``: sequence offsets for a packed batch on a ``cu_seqlens`` backend.

    Empty for a padded batch (its ``attention_mask`` does the job) and for ``sdpa``/``eager``, which find the
    samples of a packed row from its restarting ``position_ids`` when ``attention_mask`` is None. transformers
    passes these kwargs through the decoder to every attention layer.
    """
    if batch.cu_seqlens is None or not backend.takes_cu_seqlens:
        return {}
    cu = batch.cu_seqlens.to(device=batch.input_ids.device, dtype=torch.int32)
    longest = int(batch.max_seqlen) or int(cu.diff().max())
    tail = batch.input_ids.shape[1] - int(cu[-1])
    if tail > 0:  # a row padded past its last sample: the padding becomes a sequence of its own, seen by none
        cu = torch.cat([cu, cu.new_tensor([batch.input_ids.shape[1]])])
        longest = max(longest, tail)
    return {
        "attention_mask": None,
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": longest,
        "max_length_k": longest,
    }


def apply_backend(model: PreTrainedModel, backend: Backend) -> PreTrainedModel:
    """Switch a loaded transformers model to ``backend`` (a no-op when it was loaded with it)."""
    register_attention_functions()
    if model.config._attn_implementation != backend.attn_implementation:
        model.set_attn_implementation(backend.attn_implementation)
    return model
