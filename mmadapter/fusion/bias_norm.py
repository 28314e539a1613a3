"""LLaMA-Adapter V2 bias/norm tuning (arXiv 2304.15010): zero-initialised biases on chosen linear layers and
unfrozen norms, trained as the group ``llm.bias_norm``; exactly the frozen LLM at init.

The biases live here (``bias_norm.biases.<layer>.<name>``, one vector per target layer) and are added by a
forward hook on the target, so the LLM's own weights keep their names; a target that already has a bias
gets a second one. The norms are the LLM's own modules: every module of a chosen layer whose parameters are
all vectors (RMSNorm / LayerNorm scales and shifts), plus the final norm.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from mmadapter.adapter_config import BiasNormConfig
from mmadapter.llm.layers import named_linears, select_layers
from mmadapter.lora.molora import MoLoRALinear

__all__ = ["BiasNormTuning"]


class BiasNormTuning(nn.Module):
    """New zero biases plus references to the norms to unfreeze.

    Args:
        config: The recipe's ``model.bias_norm``.
        layers: The LLM's decoder layers (after any MoLoRA wrapping: a wrapped target gets the bias on top).
        final_norm: The decoder's final norm, or ``None``.
    """

    def __init__(self, config: BiasNormConfig, layers: nn.ModuleList, final_norm: nn.Module | None) -> None:
        super().__init__()
        chosen = select_layers(config.layers, len(layers), "model.bias_norm.layers")
        self.paths: dict[str, dict[str, str]] = {}
        biases = {}
        for i in chosen:
            found = named_linears(layers[i], config.targets, "model.bias_norm.targets", (nn.Linear, MoLoRALinear))
            names = {path.rsplit(".", 1)[-1]: path for path in found}
            if len(names) != len(found):
                raise ValueError(f"model.bias_norm.targets: names {config.targets} are ambiguous in layer {i}")
            self.paths[str(i)] = names
            biases[str(i)] = nn.ParameterDict(
                {
                    n: nn.Parameter(torch.zeros(_out_features(found[p]), device=_device(found[p])))
                    for n, p in names.items()
                }
            )
        self.biases = nn.ModuleDict(biases)
        norms = [m for i in chosen for m in _norms(layers[i])] if config.norms else []
        if config.final_norm and final_norm is not None:
            norms.append(final_norm)
        self._norms = norms  # not registered: they are the LLM's modules, named there

    def norm_modules(self) -> list[nn.Module]:
        """The LLM's norm modules that this tuning unfreezes."""
        return list(self._norms)

    def attach(self, layers: nn.ModuleList) -> list[RemovableHandle]:
        """Register the bias hooks on the target layers; returns their handles."""
        handles = []
        for i, names in self.paths.items():
            for name, path in names.items():
                target = layers[int(i)].get_submodule(path)
                handles.append(target.register_forward_hook(partial(self._add_bias, i, name)))
        return handles

    def _add_bias(self, i: str, name: str, module: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor:
        return output + self.biases[i][name].to(output.dtype)

    @torch.no_grad()
    def fold_into(self, layers: nn.ModuleList) -> None:
        """Add the biases to the ``nn.Linear`` targets of ``layers`` (a merged copy of the LLM)."""
        for i, names in self.paths.items():
            for name, path in names.items():
                linear = layers[int(i)].get_submodule(path)
                if not isinstance(linear, nn.Linear):
                    raise TypeError(f"layer {i} {path}: expected an nn.Linear to fold a bias into")
                bias = self.biases[i][name].to(linear.weight.dtype)
                if linear.bias is None:
                    linear.bias = nn.Parameter(bias.clone(), requires_grad=linear.weight.requires_grad)
                else:
                    linear.bias.add_(bias)


def _out_features(module: nn.Module) -> int:
    base = module.base_layer if isinstance(module, MoLoRALinear) else module
    assert isinstance(base, nn.Linear)
    return base.out_features


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _norms(layer: nn.Module) -> list[nn.Module]:
    """Leaf modules of ``layer`` whose parameters are all vectors (norm scales and shifts)."""
    out = []
    for module in layer.modules():
        params = list(module.parameters(recurse=False))
        if module is not layer and not list(module.children()) and params and all(p.dim() == 1 for p in params):
            out.append(module)
    return out
