"""GPU soak: many real `mwa train` runs with the GPU defaults, signals and resumes, and one number per run.

    PYTHONPATH=$PWD python bench/gpu_soak.py --out docs/gpu_soak_h200.json             # every part
    PYTHONPATH=$PWD python bench/gpu_soak.py --parts single --runs 20 --out soak1.json   # one part

Every command is a subprocess `python -m mwa_cli ...` with the defaults a GPU user gets (DataLoader workers,
pinned memory, bf16), on beit3-mini and the bundled sample_data (prepared once, English, 64 px), each in its own
process group under a time limit: a command still running at its limit is a **hang** (its group is killed).

Parts (--parts, comma-separated; default all that the machine can run):
* single  --runs N trainings on one GPU, seeds 1..N, 40-100 steps (a different count per seed), batch 32; with
          several GPUs, one run per GPU at a time. Expected: exit 0.
* cycles  --cycles K SIGTERM/SIGKILL + resume cycles on one GPU: the same 200-step run (seed 7, checkpoint every
          25 steps) is signalled at a random moment (SIGTERM on odd cycles, SIGKILL on even ones, after the
          first checkpoint), then `mwa train --resume` must finish it. Expected: exit 143 (SIGTERM) or -9, then 0;
          the resumed run's train steps continuous up to the reference's last step; its adapter against an
          uninterrupted reference run, and two
          uninterrupted runs against each other (the run-to-run noise floor of bf16 GPU kernels).
* ddp     the same cycles with `--devices 2` (needs 2 GPUs), and their reference.
After each finished run: `mwa eval RUN --json` on the same GPU, compared with the eval.json `mwa train` wrote
(rsum, mean recall, i2t, t2i, per label): "equal" means identical numbers.
Every step also counts processes left behind (python processes whose command line names the soak's folder).
Prints a Markdown table and writes everything to --out (rewritten after every run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchlib import leftover_processes

REPO = Path(__file__).resolve().parents[1]
EVAL_KEYS = ("rsum", "mean_recall", "i2t", "t2i", "per_label", "n_images", "n_captions")


def _env(gpu: str | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), COLUMNS="200")
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def run(argv: list[str], *, limit: float, gpu: str | None = None, signal_plan=None) -> dict:
    """`mwa <argv>` in its own process group; `signal_plan(proc) -> (sig, at_s) | None` may signal it once."""
    cmd = [sys.executable, "-m", "mwa_cli", *argv]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=str(REPO), env=_env(gpu), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    sent = None
    if signal_plan is not None:
        sent = signal_plan(proc)
    try:
        out, err = proc.communicate(timeout=max(1.0, limit - (time.monotonic() - t0)))
        hang = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        hang = True
    return {"argv": " ".join(argv), "rc": proc.returncode, "hang": hang, "seconds": round(time.monotonic() - t0, 2),
            "signal": sent, "stderr_tail": err[-1500:], "stdout": out}


def eval_pair(run_dir: Path, gpu: str | None, limit: float) -> dict:
    """eval.json written by training against `mwa eval RUN --json` on the same device."""
    written = json.loads((run_dir / "eval.json").read_text())
    res = run(["eval", str(run_dir), "--json"], limit=limit, gpu=gpu)
    if res["rc"] != 0 or res["hang"]:
        return {"equal": False, "error": res["stderr_tail"][-500:], "rc": res["rc"], "hang": res["hang"]}
    again = json.loads(res["stdout"])
    diff = [k for k in EVAL_KEYS if again.get(k) != written.get(k)]
    return {"equal": not diff, "differs": diff, "rsum_train": written["rsum"], "rsum_eval": again["rsum"],
            "numerics": written.get("numerics")}


def train_steps(run_dir: Path) -> list[int]:
    rows = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("kind") == "train":
            rows.append(int(r["step"]))
    return rows


def adapter_diff(a: Path, b: Path) -> float | None:
    """max |difference| of the two runs' adapter weights (None when either is missing)."""
    from safetensors.torch import load_file

    pa, pb = a / "adapter_model.safetensors", b / "adapter_model.safetensors"
    if not (pa.is_file() and pb.is_file()):
        return None
    wa, wb = load_file(pa), load_file(pb)
    if set(wa) != set(wb):
        return float("inf")
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa) if wa else 0.0


class Record:
    def __init__(self, path: Path, meta: dict):
        self.path, self.data = path, dict(meta, parts={})

    def put(self, part: str, value) -> None:
        self.data["parts"][part] = value
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str), encoding="utf-8")
        os.replace(tmp, self.path)


# ============================================================================ parts
def part_single(args, data: Path, work: Path, gpus: list[str]) -> list[dict]:
    def one(seed: int) -> dict:
        gpu = gpus[seed % len(gpus)] if gpus else None
        steps = 40 + (seed * 37) % 61
        name = f"single-{seed:02d}"
        res = run(["train", str(data), "--backbone", "beit3-mini", "--method", "mwa", "--steps", str(steps),
                   "--batch-size", "32", "--seed", str(seed), "--out", str(work / "runs"), "--name", name,
                   "--quiet"], limit=args.limit, gpu=gpu)
        res.update(seed=seed, steps=steps, gpu=gpu)
        if res["rc"] == 0 and not res["hang"]:
            res["eval"] = eval_pair(work / "runs" / name, gpu, args.limit)
        res.pop("stdout", None)
        print(f"  single seed {seed:2d} ({steps} steps, GPU {gpu}): exit {res['rc']}{' HANG' if res['hang'] else ''}"
              f" in {res['seconds']} s; eval {'equal' if res.get('eval', {}).get('equal') else res.get('eval')}",
              flush=True)
        return res

    with ThreadPoolExecutor(max_workers=max(1, len(gpus))) as ex:
        return list(ex.map(one, range(1, args.runs + 1)))


def part_cycles(args, data: Path, work: Path, gpu: str | None, devices: int) -> dict:
    tag = "ddp" if devices > 1 else "cycle"
    common = ["--backbone", "beit3-mini", "--method", "mwa", "--steps", str(args.cycle_steps), "--batch-size", "32",
              "--seed", "7", "--checkpoint-every", "25", "--out", str(work / "runs"), "--quiet"]
    if devices > 1:
        common += ["--devices", str(devices)]
    refs = []
    for i in (1, 2):
        name = f"{tag}-ref{i}"
        res = run(["train", str(data), *common, "--name", name], limit=args.limit, gpu=gpu)
        res.pop("stdout", None)
        refs.append(res)
        print(f"  {tag} reference {i}: exit {res['rc']} in {res['seconds']} s", flush=True)
    noise = adapter_diff(work / "runs" / f"{tag}-ref1", work / "runs" / f"{tag}-ref2")
    rng = random.Random(args.seed)
    cycles = []
    for c in range(1, args.cycles + 1):
        name = f"{tag}-{c}"
        run_dir = work / "runs" / name
        sig = signal.SIGTERM if c % 2 else signal.SIGKILL

        def plan(proc, run_dir=run_dir, sig=sig) -> dict:
            # wait for the first checkpoint (a SIGKILL before it leaves nothing to resume), then a random delay
            deadline = time.monotonic() + args.limit / 2
            while time.monotonic() < deadline and proc.poll() is None:
                if (run_dir / "checkpoint" / "last" / "meta.json").is_file():
                    break
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 2.0))
            if proc.poll() is not None:
                return {"signal": None, "note": "finished before the signal"}
            os.kill(proc.pid, sig)  # the trainer (or launcher) alone: its workers and ranks must follow by themselves
            return {"signal": signal.Signals(sig).name, "at_step": (train_steps(run_dir) or [0])[-1]}

        first = run(["train", str(data), *common, "--name", name], limit=args.limit, gpu=gpu, signal_plan=plan)
        first.pop("stdout", None)
        time.sleep(1.0)
        left_after_signal = len(leftover_processes(str(run_dir)))
        resumed = run(["train", "--resume", str(run_dir), "--quiet"] + (["--devices", str(devices)] if devices > 1
                                                                       else []), limit=args.limit, gpu=gpu)
        resumed.pop("stdout", None)
        entry = {"cycle": c, "interrupted": first, "resumed": resumed, "leftovers_after_signal": left_after_signal}
        if resumed["rc"] == 0 and not resumed["hang"]:
            steps = train_steps(run_dir)
            ref_steps = train_steps(work / "runs" / f"{tag}-ref1")  # early stopping may end both before the limit
            entry["steps_continuous"] = steps == sorted(set(steps)) and steps[-1] == ref_steps[-1]
            entry["adapter_vs_reference"] = adapter_diff(run_dir, work / "runs" / f"{tag}-ref1")
            entry["eval"] = eval_pair(run_dir, gpu, args.limit)
        print(f"  {tag} {c}: {first['signal']} → exit {first['rc']}{' HANG' if first['hang'] else ''}; resume → exit "
              f"{resumed['rc']}{' HANG' if resumed['hang'] else ''}; continuous {entry.get('steps_continuous')}; "
              f"Δw vs reference {entry.get('adapter_vs_reference')} (noise {noise}); eval "
              f"{'equal' if entry.get('eval', {}).get('equal') else entry.get('eval')}", flush=True)
        cycles.append(entry)
    ref_evals = [eval_pair(work / "runs" / f"{tag}-ref{i}", gpu, args.limit) for i in (1, 2)
                 if refs[i - 1]["rc"] == 0]
    return {"devices": devices, "references": refs, "noise_floor_max_abs_dw": noise, "cycles": cycles,
            "reference_evals": ref_evals}


def _as_expected(res: dict) -> bool:
    """143 after SIGTERM, killed after SIGKILL, 0 when the run finished before the signal."""
    sent = (res.get("signal") or {}).get("signal")
    if sent is None:
        return res["rc"] == 0
    return res["rc"] == (143 if sent == "SIGTERM" else -9)


def summary(parts: dict) -> list[str]:
    lines = ["| part | runs | exit as expected | hangs | resumes completed | steps continuous | eval equal |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    if "single" in parts:
        s = parts["single"]
        ok = sum(r["rc"] == 0 for r in s)
        ev = sum(bool(r.get("eval", {}).get("equal")) for r in s)
        lines.append(f"| single GPU | {len(s)} | {ok} | {sum(r['hang'] for r in s)} | – | – | {ev}/{ok} |")
    for key, label in (("cycles", "signal + resume, 1 GPU"), ("ddp", "signal + resume, 2 GPUs")):
        if key not in parts:
            continue
        cy = parts[key]["cycles"]
        expected = sum(_as_expected(c["interrupted"]) for c in cy)
        hangs = sum(c["interrupted"]["hang"] + c["resumed"]["hang"] for c in cy)
        done = sum(c["resumed"]["rc"] == 0 for c in cy)
        cont = sum(bool(c.get("steps_continuous")) for c in cy)
        ev = sum(bool(c.get("eval", {}).get("equal")) for c in cy)
        ev += sum(bool(e.get("equal")) for e in parts[key]["reference_evals"])
        n_ev = done + len(parts[key]["reference_evals"])
        lines.append(f"| {label} | {len(cy)} (+2 references) | {expected} | {hangs} | {done} | {cont} | "
                     f"{ev}/{n_ev} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="gpu_soak.json")
    ap.add_argument("--work", default=None, help="work folder (default: a new temporary one)")
    ap.add_argument("--parts", default="single,cycles,ddp")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--cycle-steps", type=int, default=200)
    ap.add_argument("--limit", type=float, default=180.0, help="seconds before a command counts as a hang")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import tempfile

    import torch

    work = Path(args.work or tempfile.mkdtemp(prefix="mwa-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    n_gpu = torch.cuda.device_count()
    gpus = [str(i) for i in range(n_gpu)]
    meta = {"gpu": torch.cuda.get_device_name(0) if n_gpu else None, "n_gpu": n_gpu, "torch": torch.__version__,
            "python": platform.python_version(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "args": vars(args)}
    print(f"GPU soak on {n_gpu} × {meta['gpu']} (torch {torch.__version__}); work folder {work}", flush=True)
    rec = Record(Path(args.out), meta)
    data = work / "data"
    if not (data / "manifest.csv").is_file():
        prep = run(["prepare", "mwa_cli/sample_data", "--out", str(data), "--lang", "en", "--image-size", "64"],
                   limit=300)
        if prep["rc"] != 0:
            sys.exit(f"prepare failed: {prep['stderr_tail']}")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    done: dict = {}
    for part in parts:
        t0 = time.monotonic()
        if part == "single":
            done[part] = part_single(args, data, work, gpus)
        elif part == "cycles":
            done[part] = part_cycles(args, data, work, gpus[0] if gpus else None, 1)
        elif part == "ddp":
            if n_gpu < 2:
                done[part] = {"skipped": f"needs 2 GPUs, {n_gpu} visible"}
                print(f"  ddp: skipped ({n_gpu} GPU visible)", flush=True)
                rec.put(part, done[part])
                continue
            done[part] = part_cycles(args, data, work, ",".join(gpus[:2]), 2)
        else:
            sys.exit(f"unknown part {part!r}")
        rec.put(part, done[part])
        rec.put(part + "_seconds", round(time.monotonic() - t0, 1))
    rec.put("leftover_processes", len(leftover_processes(str(work / "runs"))))  # any trainer, rank or worker of the soak
    table = summary({k: v for k, v in done.items() if not (isinstance(v, dict) and "skipped" in v)})
    rec.put("table", table)
    print("\n".join(table))
    print(f"GPU: {meta['gpu']} × {n_gpu}; leftover processes: {rec.data['parts']['leftover_processes']}")


if __name__ == "__main__":
    main()
