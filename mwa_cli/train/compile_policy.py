"""Whether and how `mwa train` compiles its layers: `--compile/--no-compile` and `--compile-mode`.

Default (`--compile` not given): compiled on CUDA, eager on the CPU (where compiling costs more than it saves on
runs of minutes, and needs a C++ compiler). `--compile-mode auto` takes the torch.compile mode of the method from
`AUTO_MODES`, the one measured fastest on the GPU (docs/benchmarks.md, "Training speed"); a method missing there
gets plain compilation. `graph` is plain compilation plus the whole training step replayed as one CUDA graph
(train/step_graph.py); the Trainer keeps it off where it cannot apply (CPU, fp16, several devices, micro-batches).
Edit `AUTO_MODES` after measuring: nothing else decides it.

Under a short budget the default is eager: a fresh process compiles for 20-40 s on a GPU
(`EXPECTED_COMPILE_S`, measured), which a budget under `COMPILE_PAYBACK` times that cannot win back; an explicit
`--compile` still compiles.
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


# Seconds a fresh `mwa train` process spends compiling before its first step on a GPU (regional compilation and
# the step graph, Inductor's cache cold; bench/bench_train_speed.py's setup_s on an H100); others: the largest.
EXPECTED_COMPILE_S = {"beit3-mini": 21.0, "beit3-base": 25.0, "beit3-large": 41.0}
COMPILE_PAYBACK = 4.0  # compile by default only when the budget is at least this many times the compile time


def expected_compile_s(backbone: str | None) -> float:
    return EXPECTED_COMPILE_S.get(str(backbone), max(EXPECTED_COMPILE_S.values()))


def budget_too_short(enabled: bool | None, device_type: str, budget_s: float | None, backbone: str | None) -> bool:
    """True when the default (`enabled` None) would compile on CUDA but the budget is too short to win it back."""
    return (enabled is None and device_type == "cuda" and budget_s is not None
            and budget_s < COMPILE_PAYBACK * expected_compile_s(backbone))


def chosen_mode(enabled: bool | None, mode: str, method: str, device_type: str, budget_s: float | None = None,
                backbone: str | None = None) -> str | None:
    """The mode in use: None (eager), or one of COMPILE_MODES but auto.

    `enabled` None: on for CUDA only, unless the budget is too short (`budget_too_short`); `mode` auto:
    `AUTO_MODES[method]`."""
    if not (device_type == "cuda" if enabled is None else enabled):
        return None
    if budget_too_short(enabled, device_type, budget_s, backbone):
        return None
    return AUTO_MODES.get(method, "default") if mode == "auto" else mode


def compile_setting(enabled: bool | None, mode: str, method: str, device_type: str, budget_s: float | None = None,
                    backbone: str | None = None) -> bool | str:
    """The Trainer's `compile` argument: False (eager), True (plain compilation) or a torch.compile mode."""
    chosen = chosen_mode(enabled, mode, method, device_type, budget_s, backbone)
    if chosen is None:
        return False
    return True if chosen in ("default", "graph") else chosen


def step_graph_setting(enabled: bool | None, mode: str, method: str, device_type: str,
                       budget_s: float | None = None, backbone: str | None = None) -> bool:
    """The Trainer's `cuda_graph` argument: the whole step as one CUDA graph (mode graph, on CUDA)."""
    return device_type == "cuda" and chosen_mode(enabled, mode, method, device_type, budget_s, backbone) == "graph"


def short_budget_note(budget_s: float, backbone: str | None) -> str:
    """What the run says when a short budget keeps the default from compiling."""
    return (f"budget {budget_s:.0f} s: the layers run eager (compiling takes about {expected_compile_s(backbone):.0f} s "
            f"here, more than a budget under {COMPILE_PAYBACK * expected_compile_s(backbone):.0f} s wins back; "
            f"--compile compiles anyway)")


def describe(setting: bool | str, step_graph: bool = False) -> str:
    """How the layers run, for timing.json: eager, compiled, compiled (reduce-overhead) or compiled + step graph."""
    if not setting:
        return "eager"
    if step_graph:
        return "compiled + step graph"
    return "compiled" if setting is True else f"compiled ({setting})"
