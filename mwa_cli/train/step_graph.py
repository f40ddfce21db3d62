"""A whole training step (forward, backward and optimizer update) replayed as one CUDA graph per batch shape.

Regional compilation fuses each layer's kernels, but the host still walks 2 × depth compiled layers forward and
backward, through the autograd engine, and launches every kernel; on an H100 that leaves the GPU idle for a
fifth of a BEiT-3 Large step and most of a beit3-mini one. Captured once, a step is one launch: the host cost
disappears for every method alike (docs/decisions.md, "One CUDA graph per training step").

How it stays exact: the first ``WARMUP_STEPS`` steps of each batch shape run eagerly (on the capture stream, which
also initialises the optimizer's state and the compiled code for that shape); the next one is captured and
replayed, and every later step of that shape only copies its batch into the graph's input buffers and replays.
Captured and eager steps run the same kernels on the same inputs, the dropout draws included (the CUDA generator
hands a replay the offsets an eager step would have used). All graphs share one memory pool: they never run at
the same time and keep nothing between steps but the parameters and optimizer state, which live outside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

WARMUP_STEPS = 2  # eager steps per batch shape before its capture (the CUDA-graph recipe asks for a few)
MAX_GRAPHS = 8  # shapes beyond these (rare text-length buckets) keep running eagerly

StepFn = Callable[..., Tensor]  # (*batch tensors) -> loss, running forward, backward and the optimizer update


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[Tensor | None, ...]
    loss: Tensor


def batch_key(tensors: tuple[Tensor | None, ...]) -> tuple:
    """What a captured graph is specific to: each input's shape and dtype (None stays None)."""
    return tuple(None if t is None else (tuple(t.shape), t.dtype) for t in tensors)


class StepGraphs:
    """Runs training steps eagerly until a batch shape has been seen ``warmup`` times, then as a CUDA graph."""

    def __init__(self, device: torch.device, clear_grads: Callable[[], None], *, warmup: int = WARMUP_STEPS,
                 max_graphs: int = MAX_GRAPHS, on_message: Callable[[str], None] | None = None):
        self.device = device
        self.clear_grads = clear_grads  # after a failed capture the gradients point into the abandoned graph
        self.warmup = warmup
        self.max_graphs = max_graphs
        self.on_message = on_message or (lambda _msg: None)
        self.stream = torch.cuda.Stream(device)
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[tuple, _Graph] = {}
        self.seen: dict[tuple, int] = {}
        self.disabled_reason: str | None = None
        self.replays = 0

    @property
    def active(self) -> bool:
        return self.disabled_reason is None

    def reset(self) -> None:
        """Forget every graph (the step changed: a new micro-batch size); shapes warm up again."""
        self.graphs.clear()
        self.seen.clear()

    def run(self, step: StepFn, *tensors: Tensor | None) -> Tensor:
        """One training step on `tensors`: replayed when its shape has a graph, else eager (and maybe captured)."""
        key = batch_key(tensors)
        captured = self.graphs.get(key)
        if captured is not None:
            return self._replay(captured, tensors)
        self.seen[key] = self.seen.get(key, 0) + 1
        if not self.active or self.seen[key] <= self.warmup or len(self.graphs) >= self.max_graphs:
            return self._on_stream(step, tensors)
        captured = self._capture(step, tensors)
        if captured is None:
            return self._on_stream(step, tensors)
        self.graphs[key] = captured
        return self._replay(captured, tensors)

    def _on_stream(self, step: StepFn, tensors: tuple[Tensor | None, ...]) -> Tensor:
        """An eager step on the capture stream (warm-up must run where the capture will)."""
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            loss = step(*tensors)
        current.wait_stream(self.stream)
        return loss

    def _capture(self, step: StepFn, tensors: tuple[Tensor | None, ...]) -> _Graph | None:
        inputs = tuple(None if t is None else t.detach().clone() for t in tensors)
        graph = torch.cuda.CUDAGraph()
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        try:
            # thread_local: the loader's pin-memory thread may allocate host memory while this thread captures
            with torch.cuda.graph(graph, pool=self.pool, stream=self.stream, capture_error_mode="thread_local"):
                loss = step(*inputs)
        except Exception as exc:  # noqa: BLE001 - any failure to capture falls back to eager steps, said once
            self.clear_grads()
            first_line = str(exc).splitlines()[0][:160] if str(exc) else ""
            self.disable(f"{type(exc).__name__}: {first_line}")
            return None
        current.wait_stream(self.stream)
        return _Graph(graph, inputs, loss)

    def _replay(self, captured: _Graph, tensors: tuple[Tensor | None, ...]) -> Tensor:
        for static, t in zip(captured.inputs, tensors):
            if static is not None:
                static.copy_(t, non_blocking=True)
        captured.graph.replay()
        self.replays += 1
        return captured.loss.clone()  # the graph overwrites its loss at the next replay

    def disable(self, reason: str) -> None:
        """Run every later step eagerly (a capture failed, or the trainer changed in a way graphs can't follow)."""
        if self.disabled_reason is None:
            self.on_message(f"CUDA graphs off for this run ({reason}); training continues without them")
        self.disabled_reason = reason
        self.graphs.clear()
