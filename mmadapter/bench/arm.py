"""One arm of ``mmadapter bench model``: a model, its optimizer and one batch per step, timed step by step.

A step is what a training step costs: forward to the loss, backward, optimizer step. On CUDA the device is
synchronised around it, and the memory its step allocates above what was allocated when it began is
recorded; on CPU no memory figure is taken (there is no allocator counter to read, and none is made up).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mmadapter.batch import MultimodalBatch

__all__ = ["Arm", "resident_bytes"]

MIB = 2**20


@dataclass
class Arm:
    """One way of running the workload.

    Attributes:
        name: Its key in the report (``mmadapter`` or ``baseline``).
        loss: One batch → the scalar training loss.
        model: Every module the arm owns: its weights are counted in its memory.
        optimizer: AdamW over the arm's trainable parameters.
        batches: One batch per step, on the device, in step order.
        facts: What runs, for the report (layout, attention, adapters).
        seconds: Wall time of each step run so far.
        losses: Loss of each step run so far.
        step_bytes: CUDA only: bytes each step allocated above the allocation at its start.
    """

    name: str
    loss: Callable[[MultimodalBatch], Tensor]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    batches: list[MultimodalBatch]
    facts: dict[str, Any]
    seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    step_bytes: list[int] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return self.batches[0].input_ids.device

    def step(self, index: int, autocast_dtype: torch.dtype | None) -> None:
        """Run and time training step ``index`` (forward, backward, optimizer step) under autocast when a dtype
        is given."""
        batch, device = self.batches[index], self.device
        cuda = device.type == "cuda"
        self.optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = self.loss(batch)
        loss.backward()
        self.optimizer.step()
        if cuda:
            torch.cuda.synchronize(device)
        self.seconds.append(time.perf_counter() - start)
        if cuda:
            self.step_bytes.append(torch.cuda.max_memory_allocated(device) - before)
        self.losses.append(float(loss.detach()))

    def report(self, warmup: int) -> dict[str, Any]:
        """Figures over the steps after the first ``warmup``: real (non-pad) tokens/s, mean step time, peak
        memory (``None`` off CUDA) and the share of padding in the batches' token slots."""
        seconds = self.seconds[warmup:]
        if not seconds:
            raise ValueError(f"{self.name}: no timed step ({len(self.seconds)} run, {warmup} of them warm-up)")
        real = [b.num_tokens() for b in self.batches]
        slots = [b.input_ids.numel() for b in self.batches]
        timed = slice(warmup, len(self.seconds))
        peak = None
        if self.step_bytes:
            peak = (resident_bytes(self.model, self.optimizer) + max(self.step_bytes[timed])) / MIB
        return {
            **self.facts,
            "trainable_parameters": sum(p.numel() for g in self.optimizer.param_groups for p in g["params"]),
            "tokens_per_s": sum(real[timed]) / sum(seconds),
            "step_time_s": sum(seconds) / len(seconds),
            "peak_memory_mib": peak,
            "padded_fraction": 1 - sum(real[timed]) / sum(slots[timed]),
            "real_tokens_per_step": real,
            "losses": self.losses,
        }


def resident_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the CUDA tensors that live across steps: parameters, buffers and optimizer state (each once)."""
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}
    for state in optimizer.state.values():
        tensors |= {id(t): t for t in state.values() if isinstance(t, Tensor)}
    return sum(t.numel() * t.element_size() for t in tensors.values() if t.device.type == "cuda")
