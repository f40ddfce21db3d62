"""Whether and how `mwa train` compiles its layers: `--compile/--no-compile` and `--compile-mode`.

Default (`--compile` not given): compiled on CUDA, eager on the CPU (where compiling costs more than it saves on
runs of minutes, and needs a C++ compiler). `--compile-mode auto` takes the torch.compile mode of the method from
`AUTO_MODES`, the one measured fastest on the GPU (docs/benchmarks.md, "Training speed"); a method missing there
gets plain compilation. `graph` is plain compilation plus the whole training step replayed as one CUDA graph
(train/step_graph.py); the Trainer keeps it off where it cannot apply (CPU, fp16, several devices, micro-batches).
Edit `AUTO_MODES` after measuring: nothing else decides it.
"""

from __future__ import annotations

COMPILE_MODES = ("auto", "default", "reduce-overhead", "graph")

# Compile mode per method under --compile-mode auto: "default" = plain compilation, "reduce-overhead" = CUDA graphs
# of each layer as well, "graph" = plain compilation and one CUDA graph per training step.
AUTO_MODES: dict[str, str] = {
    "full-ft": "graph",
    "mwa": "graph",
    "nke": "default",  # not yet timed with the step graph
    "lora": "default",  # not yet timed with the step graph
    "frozen": "default",  # nothing trains: no step to capture
}


def chosen_mode(enabled: bool | None, mode: str, method: str, device_type: str) -> str | None:
    """The mode in use: None (eager), or one of COMPILE_MODES but auto.

    `enabled` None: on for CUDA only; `mode` auto: `AUTO_MODES[method]`."""
    if not (device_type == "cuda" if enabled is None else enabled):
        return None
    return AUTO_MODES.get(method, "default") if mode == "auto" else mode


def compile_setting(enabled: bool | None, mode: str, method: str, device_type: str) -> bool | str:
    """The Trainer's `compile` argument: False (eager), True (plain compilation) or a torch.compile mode."""
    chosen = chosen_mode(enabled, mode, method, device_type)
    if chosen is None:
        return False
    return True if chosen in ("default", "graph") else chosen


def step_graph_setting(enabled: bool | None, mode: str, method: str, device_type: str) -> bool:
    """The Trainer's `cuda_graph` argument: the whole step as one CUDA graph (mode graph, on CUDA)."""
    return device_type == "cuda" and chosen_mode(enabled, mode, method, device_type) == "graph"


def describe(setting: bool | str, step_graph: bool = False) -> str:
    """How the layers run, for timing.json: eager, compiled, compiled (reduce-overhead) or compiled + step graph."""
    if not setting:
        return "eager"
    if step_graph:
        return "compiled + step graph"
    return "compiled" if setting is True else f"compiled ({setting})"
