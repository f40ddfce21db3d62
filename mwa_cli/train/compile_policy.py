"""Whether and how `mwa train` compiles its layers: `--compile/--no-compile` and `--compile-mode`.

Default (`--compile` not given): compiled on CUDA, eager on the CPU (where compiling costs more than it saves on
runs of minutes, and needs a C++ compiler). `--compile-mode auto` takes the torch.compile mode of the method from
`AUTO_MODES`, the one measured fastest on the GPU (docs/benchmarks.md, "Training speed"); a method missing there
gets plain compilation. Edit `AUTO_MODES` after measuring: nothing else decides it.
"""

from __future__ import annotations

COMPILE_MODES = ("auto", "default", "reduce-overhead")

# torch.compile mode per method under --compile-mode auto: "default" = plain compilation, "reduce-overhead" =
# CUDA graphs of each layer as well. Plain everywhere until the GPU measurements say otherwise.
AUTO_MODES: dict[str, str] = {
    "full-ft": "default",
    "mwa": "default",
    "nke": "default",
    "lora": "default",
    "frozen": "default",
}


def compile_setting(enabled: bool | None, mode: str, method: str, device_type: str) -> bool | str:
    """The Trainer's `compile` argument: False (eager), True (plain compilation) or a torch.compile mode.

    `enabled` None: on for CUDA only; `mode` auto: `AUTO_MODES[method]`."""
    if not (device_type == "cuda" if enabled is None else enabled):
        return False
    chosen = AUTO_MODES.get(method, "default") if mode == "auto" else mode
    return True if chosen == "default" else chosen


def describe(setting: bool | str) -> str:
    """How the layers run, for timing.json: eager, compiled or compiled (reduce-overhead)."""
    if not setting:
        return "eager"
    return "compiled" if setting is True else f"compiled ({setting})"
