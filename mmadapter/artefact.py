"""The artefact: what ``--checkpoint RUN`` and ``init_from`` read (DESIGN.md §6). Never a pickle.

Files: ``recipe.yaml`` (resolved recipe), ``adapter.safetensors`` (trained weights: every parameter trainable
in any stage (:attr:`MultimodalLM.trained`, which counts what an ``init_from`` or a loaded artefact brought as
trained), the projectors, every adapter inside the LLM), ``frozen.safetensors`` (other weights that cannot be
fetched again: random ``config`` or ``*_test`` components), ``tokenizer/``
(when the tokenizer was built locally or changed), ``provenance.json``. Every file is written to a temporary
name and renamed into place, so a crash never leaves a half-written artefact file.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Collection, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from mmadapter.config import load_recipe

if TYPE_CHECKING:
    from mmadapter.model import MultimodalLM

__all__ = [
    "ARTEFACT_FILES",
    "adapter_state_names",
    "atomic_write",
    "load_artefact",
    "load_trained_weights",
    "rename_target",
    "save_artefact",
]

RECIPE, ADAPTER, FROZEN, TOKENIZER, PROVENANCE = (
    "recipe.yaml",
    "adapter.safetensors",
    "frozen.safetensors",
    "tokenizer",
    "provenance.json",
)
ARTEFACT_FILES = (RECIPE, ADAPTER, FROZEN, TOKENIZER, PROVENANCE)


def save_artefact(model: MultimodalLM, directory: str | Path, provenance: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s artefact into ``directory`` (created if needed); returns the directory."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    adapter, frozen = _split_state(model)
    atomic_write(out / RECIPE, model.recipe.to_yaml().encode())
    _save_tensors(adapter, out / ADAPTER)
    if frozen:
        _save_tensors(frozen, out / FROZEN)
    else:
        (out / FROZEN).unlink(missing_ok=True)
    if _tokenizer_is_local(model):
        tmp = tempfile.mkdtemp(dir=out, prefix=f".{TOKENIZER}.")
        model.tokenizer.save_pretrained(tmp)
        shutil.rmtree(out / TOKENIZER, ignore_errors=True)
        os.replace(tmp, out / TOKENIZER)
    info = _provenance(model) | (provenance or {})
    atomic_write(out / PROVENANCE, json.dumps(info, indent=2, sort_keys=True).encode())
    return out


def load_artefact(directory: str | Path, overrides: Sequence[str] = ()) -> MultimodalLM:
    """Rebuild a :class:`MultimodalLM` from an artefact: recipe, then frozen and adapter weights.

    Raises:
        FileNotFoundError: ``directory`` lacks ``recipe.yaml`` or ``adapter.safetensors``.
        ValueError: a weight file is unreadable or does not match the model the recipe builds.
    """
    from transformers import AutoTokenizer

    from mmadapter.model import MultimodalLM

    src = Path(directory)
    for name in (RECIPE, ADAPTER):
        if not (src / name).is_file():
            raise FileNotFoundError(f"{src} is not an mmadapter artefact: {name} is missing")
    model = MultimodalLM.from_recipe(load_recipe(src / RECIPE, overrides))
    if (src / TOKENIZER).is_dir():
        model.tokenizer = AutoTokenizer.from_pretrained(src / TOKENIZER)
    required = set(_must_save(model))
    loaded = _load_weights(model, src)
    missing = required - loaded
    if missing:
        raise ValueError(f"{src}: {len(missing)} weight(s) that cannot be rebuilt are missing, e.g. {min(missing)}")
    return model


def load_trained_weights(model: MultimodalLM, directory: str | Path) -> list[str]:
    """Load an artefact's weights into ``model`` (a stage's ``init_from``, a finished stage on resume): its
    ``frozen.safetensors`` when it has one (random components, which a model built with another seed would
    not match), then its ``adapter.safetensors``, whose names join :attr:`MultimodalLM.trained` so that the
    next artefact keeps them. Returns the names loaded.

    Raises:
        FileNotFoundError: ``directory`` has no ``adapter.safetensors``.
        ValueError: it holds tensors the model does not have.
    """
    if not (Path(directory) / ADAPTER).is_file():
        raise FileNotFoundError(f"{directory} is not an mmadapter artefact: {ADAPTER} is missing")
    # Frozen parts this model has trained itself (an earlier stage of the run) keep what it learnt.
    return sorted(_load_weights(model, Path(directory), keep=set(model.trained)))


def _load_weights(model: MultimodalLM, src: Path, keep: Collection[str] = ()) -> set[str]:
    """Frozen then adapter weights of ``src``; frozen ones named in ``keep`` are left as the model has them."""
    loaded = _load_into(model, src / FROZEN, skip=keep) if (src / FROZEN).is_file() else set()
    trained = _load_into(model, src / ADAPTER)
    model.trained |= trained & {n for n, _ in model.named_parameters()}
    return loaded | trained


def _load_into(model: MultimodalLM, path: Path, skip: Collection[str] = ()) -> set[str]:
    try:
        tensors = load_file(path)
    except Exception as e:  # safetensors raises its own error type for a cut, empty or foreign file
        raise ValueError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from e
    state = model.state_dict()
    tensors = _rewrapped(tensors, state)
    unexpected = set(tensors) - set(state)
    if unexpected:
        raise ValueError(f"{path}: {len(unexpected)} tensor(s) the model does not have, e.g. {min(unexpected)}")
    tensors = {n: t for n, t in tensors.items() if n not in skip}
    misfits = sorted(n for n, t in tensors.items() if t.shape != state[n].shape)
    if misfits:
        n = misfits[0]
        raise ValueError(
            f"{path}: {len(misfits)} tensor(s) of another shape than the model the recipe builds, e.g. {n} "
            f"{list(tensors[n].shape)} in the file, {list(state[n].shape)} in the model (was the recipe changed?)"
        )
    model.load_state_dict(tensors, strict=False)
    return set(tensors)


def _rewrapped(tensors: dict[str, Tensor], state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``tensors`` with the names of layers that MoLoRA wraps in this model but not in the artefact's (a recipe
    that adds MoLoRA, e.g. a language expert, to a model saved without) moved to the wrapped layer:
    ``….q_proj.weight`` → ``….q_proj.base_layer.weight``."""
    out = {}
    for name, tensor in tensors.items():
        head, _, leaf = name.rpartition(".")
        wrapped = f"{head}.base_layer.{leaf}"
        out[wrapped if name not in state and wrapped in state else name] = tensor
    return out


def rename_target(path: Path) -> Path | None:
    """Where a file written whole elsewhere is renamed to become ``path``: ``path`` itself, or the file a
    symbolic link at ``path`` points to (the link stays); ``None`` for a device or pipe (``/dev/stdout``),
    which must be written into rather than replaced."""
    if path.exists() and not path.is_file() and not path.is_dir():
        return None
    if str(path.absolute()).startswith(("/dev/", "/proc/")):  # /dev/stdout redirected to a file: append to it
        return None
    return path.resolve() if path.is_symlink() else path


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename (straight
    into a device or pipe; through to the target of a symbolic link)."""
    target = rename_target(path)
    if target is None:
        with path.open("wb") as f:
            f.write(data)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_tensors(tensors: dict[str, Tensor], path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata={"format": "pt"})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _split_state(model: MultimodalLM) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(trainable weights, frozen weights that cannot be re-fetched), tied tensors stored once."""
    state = _dedup(model.state_dict(keep_vars=True))
    adapter_names = {n for n, p in model.named_parameters() if p.requires_grad} | model.trained
    adapter_names |= _buffers_of_trained(model, adapter_names)
    adapter_names |= {n for n in state if n.startswith("projectors.")} | set(adapter_state_names(model))
    adapter = {n: t for n, t in state.items() if n in adapter_names}
    frozen = {n: t for n, t in state.items() if n not in adapter_names and n in set(_must_save(model))}
    return adapter, frozen


def _buffers_of_trained(model: MultimodalLM, trained: set[str]) -> set[str]:
    """The buffers of every module with a trained parameter (a batch norm's running statistics move with
    its weights, even in a component that reloads from its checkpoint)."""
    out = set()
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        if any(f"{dot}{n}" in trained for n, _ in module.named_parameters(recurse=False)):
            out |= {f"{dot}{n}" for n, _ in module.named_buffers(recurse=False)}
    return out


def _must_save(model: MultimodalLM) -> list[str]:
    """State names that a rebuild from the recipe cannot restore (tied duplicates excluded): non-reloadable
    components, projectors, and every adapter inside the LLM (randomly initialised, or trained in any stage)."""
    state = _dedup(model.state_dict(keep_vars=True))
    specs = {"llm": model.recipe.model.llm}
    specs |= {f"encoders.{m}": s for m, s in model.recipe.model.encoders.items()}
    keep = [f"{c}." for c, s in specs.items() if not s.reloadable] + ["projectors."]
    adapters = set(adapter_state_names(model))
    return [n for n in state if n.startswith(tuple(keep)) or n in adapters]


def adapter_state_names(model: MultimodalLM) -> list[str]:
    """State names of every adapter inside the LLM (MoLoRA, gated attention, bias/norm with its norms):
    artefacts always hold them, whichever stage trained them."""
    groups = model.groups()
    return sorted({n for g in ("molora", "gated_attention", "llm.bias_norm") for n in groups.get(g, {})})


def _dedup(state: dict[str, Tensor]) -> dict[str, Tensor]:
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    out = {}
    for name, t in state.items():
        ident = (
            (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)) if t.device.type != "meta" else None
        )
        if ident is not None and ident in seen:
            continue
        if ident is not None:
            seen.add(ident)
        out[name] = t
    return out


def _tokenizer_is_local(model: MultimodalLM) -> bool:
    spec = model.recipe.model.llm
    return not spec.reloadable or spec.chat_template is not None


def _provenance(model: MultimodalLM) -> dict[str, Any]:
    versions = {}
    packages = ("mmadapter", "torch", "transformers", "lightning", "webdataset", "torchaudio", "open_clip_torch")
    for pkg in (*packages, "timm", "torch_geometric", "flash_attn", "safetensors"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": versions,
        "python": platform.python_version(),
        "git_commit": _git_commit(),
        "seed": model.recipe.train.seed,
        "torch_default_dtype": str(torch.get_default_dtype()),
    }


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
