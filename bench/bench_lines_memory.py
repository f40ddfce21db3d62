"""Memory of serving N production lines: one shared backbone + N adapters (`mwa serve --lines`) against N full
models (each line's run loaded on its own), for N = 1, 10, 50 by default.

Each (mode, N) runs in a fresh process (`measure`), which loads N line adapters and embeds one query per line
(so every tensor is touched), then reports its resident set (VmRSS, RssAnon: /proc/self/status) before and after,
the peak (VmHWM), and on CUDA `torch.cuda.memory_allocated`. `shared` loads through
`mwa_cli.lines.shared.SharedBackbones` (what the line server does); `full` through
`mwa_cli.search.model.load_search_model` (what one `mwa serve --index` per line would hold).

It also times the alternative the server does not use: one model, each line's adapter tensors copied into it
before its request (`swap`), against the chosen design (one module tree per line over the shared tensors: nothing
to copy), as ms per switch next to ms per query encoding.

    PYTHONPATH=$PWD python bench/bench_lines_memory.py --out $OUT/lines_memory.json                 # beit3-mini
    PYTHONPATH=$PWD python bench/bench_lines_memory.py --backbone beit3-base --out $OUT/lm_base.json  # random Base
    PYTHONPATH=$PWD python bench/bench_lines_memory.py --lines 1,2 --full-max 2 --out /tmp/lm.json    # a quick look

`--backbone` other than beit3-mini builds the preset with random weights (memory does not depend on their values);
`--full-max` caps N for the full-model mode (50 × Large does not fit everywhere): larger N are reported as not
measured. The machine (CPU model, GPU name) is written with every number.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_search_memory import _status_kib
from benchlib import cpu_name, publish, save_run

QUERY = "a long scratch on the upper left of a steel plate"


def _mib(kib: float) -> float:
    return round(kib / 1024, 1)


def make_adapters(folder: Path, n: int, backbone: str, method: str) -> list[Path]:
    """`n` adapter folders of `method` on `backbone` (seed 0), each moved off its initial values differently."""
    return [save_run(folder / f"line{i:02d}", backbone, method, perturb=0.02, seed=i + 1) for i in range(n)]


def _device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(0) if device == "cuda" else cpu_name()


def measure(mode: str, adapters: list[Path], device: str) -> dict[str, Any]:
    """In this (fresh) process: load the lines in `mode`, embed one query each, report memory."""
    import torch

    import mwa_cli.adapters.io  # noqa: F401 - code both modes load, imported before the first reading
    import mwa_cli.eval.embed  # noqa: F401
    import mwa_cli.models.presets  # noqa: F401
    from mwa_cli.lines.shared import SharedBackbones
    from mwa_cli.search.model import load_search_model

    torch.set_num_threads(1)
    before = _status_kib()
    cuda_before = torch.cuda.memory_allocated() if device == "cuda" else 0
    t0 = time.perf_counter()
    pool = SharedBackbones(device) if mode == "shared" else None
    models = [pool.model_for(a) if pool else load_search_model(a, device=device) for a in adapters]
    embeddings = [m.encode_texts([QUERY]) for m in models]
    load_s = time.perf_counter() - t0
    after = _status_kib()
    distinct = len({tuple(e.flatten()[:8].tolist()) for e in embeddings})
    return {"mode": mode, "n": len(adapters), "load_s": round(load_s, 2),
            "rss_before_mib": _mib(before["VmRSS"]), "rss_after_mib": _mib(after["VmRSS"]),
            "rss_added_mib": _mib(after["VmRSS"] - before["VmRSS"]),
            "anon_added_mib": _mib(after["RssAnon"] - before["RssAnon"]), "peak_rss_mib": _mib(after["VmHWM"]),
            "cuda_added_mib": round((torch.cuda.memory_allocated() - cuda_before) / 2**20, 1)
            if device == "cuda" else None,
            "distinct_answers": distinct, "device": device, "device_name": _device_name(device)}


def swap_timing(adapters: list[Path], device: str, repeats: int = 50) -> dict[str, Any]:
    """ms to copy one line's adapter tensors into a shared model (the design not chosen) vs ms per query encode."""
    import torch
    from safetensors.torch import load_file

    from mwa_cli.adapters.io import WEIGHTS_FILE
    from mwa_cli.search.model import load_search_model

    torch.set_num_threads(1)
    sm = load_search_model(adapters[0], device=device)
    params = dict(sm.model.named_parameters())
    states = [{k: v.to(device) for k, v in load_file(str(a / WEIGHTS_FILE)).items()} for a in adapters[:2]]

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    swap, encode = [], []
    for i in range(repeats):
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            for k, v in states[i % len(states)].items():
                params[k].copy_(v)
        sync()
        t1 = time.perf_counter()
        sm.encode_texts([QUERY])
        sync()
        swap.append((t1 - t0) * 1000)
        encode.append((time.perf_counter() - t1) * 1000)
    return {"swap_ms_median": round(statistics.median(swap), 3),
            "encode_ms_median": round(statistics.median(encode), 2),
            "adapter_tensors": len(states[0]), "adapter_mib": round(sum(v.numel() * v.element_size()
                                                                        for v in states[0].values()) / 2**20, 2),
            "device": device, "device_name": _device_name(device)}


def _child(args: list[str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"measure {' '.join(args)} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(lines: list[int], backbone: str, method: str, device: str, full_max: int, out: Path) -> dict[str, Any]:
    import torch

    with tempfile.TemporaryDirectory(prefix="bench_lines_") as tmp:
        adapters = make_adapters(Path(tmp), max(lines), backbone, method)
        rows = []
        for n in lines:
            folders = [str(a) for a in adapters[:n]]
            rows.append(_child(["measure", "--mode", "shared", "--device", device, *folders]))
            rows.append(_child(["measure", "--mode", "full", "--device", device, *folders]) if n <= full_max
                        else {"mode": "full", "n": n, "not_measured": f"--full-max {full_max}"})
        swap = _child(["swap", "--device", device, *(str(a) for a in adapters[:2])])
        adapter_bytes = (adapters[0] / "adapter_model.safetensors").stat().st_size
    result = {"bench": "lines_memory", "backbone": backbone + ("" if backbone == "beit3-mini" else " (random weights)"),
              "method": method, "device": device, "device_name": _device_name(device), "cpu": cpu_name(),
              "torch": torch.__version__, "python": platform.python_version(),
              "adapter_file_mib": round(adapter_bytes / 2**20, 2), "results": rows, "swap_vs_alias": swap}
    publish(result, out)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] in ("measure", "swap"):
        sub = argparse.ArgumentParser()
        sub.add_argument("cmd")
        sub.add_argument("--mode", choices=["shared", "full"], default="shared")
        sub.add_argument("--device", default="cpu")
        sub.add_argument("adapters", nargs="+", type=Path)
        a = sub.parse_args(argv)
        res = measure(a.mode, a.adapters, a.device) if a.cmd == "measure" else swap_timing(a.adapters, a.device)
        print(json.dumps(res))
        return 0
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--lines", default="1,10,50", help="the N to measure, comma-separated")
    ap.add_argument("--backbone", default="beit3-mini")
    ap.add_argument("--method", default="mwa")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--full-max", type=int, default=50, help="largest N measured with full models")
    a = ap.parse_args(argv)
    run([int(x) for x in a.lines.split(",")], a.backbone, a.method, a.device, a.full_max, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
