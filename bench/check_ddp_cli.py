"""End-to-end check of `mwa train --devices N` through the real command line.

    PYTHONPATH=$PWD python bench/check_ddp_cli.py --out docs/check_ddp_cli.json     # a machine with ≥ 2 GPUs
    PYTHONPATH=$PWD python bench/check_ddp_cli.py --cpu                             # CPU: 2 gloo processes

Every command is a subprocess `python -m mwa_cli ...` (`--entry-point`: the installed `mwa` script instead), the
same code path a user's shell takes; on the CPU with OMP_NUM_THREADS=1 unless set (one thread per process, as the
tests do). mwa_cli/sample_data/ is prepared once (English captions, 64 px; WORK/data is reused when present). All training
runs use the same options: beit3-mini, method mwa, global batch --batch-size, --steps S, seed 0, --log-every 1,
--val-evals 1, and dropout 0 / drop path 0 (`--keep-dropout` keeps the defaults) so the runs draw nothing at random
and must agree with each other up to round-off.

1. prepare  `mwa prepare mwa_cli/sample_data --out WORK/data --lang en --image-size 64`.
2. single   `mwa train WORK/data ... --name single --json` on one device: the reference.
3. ddp      the same with `--devices N --name ddp`: exit 0, one JSON document on stdout, eval numbers, train
            losses and final adapter weights against the single run, samples/s (timing.json), rank 0 alone wrote
            files (metrics rows = the single run's rows, no duplicate, one eval.json, no stray files). Pass/fail
            on the first 10 losses (--loss-tol); later steps, weights and recalls are recorded, not judged
            (Adam turns round-off of near-zero gradients into differences of up to ~lr; bf16 on GPU).
4. eval     `mwa eval` has no distributed option (checked in its --help; used when it appears): the evaluation the
            DDP job ran on rank 0 (eval.json, and the step-0 val row) against a plain single-process `mwa eval` of
            the same run on the same split, and against the single run's step-0 val row: max |difference|.
5. resume   `--devices N --name intr`, SIGTERM to the launcher once a train row is logged: exit code (143 expected),
            seconds from the signal to the exit, the checkpoint's step and world size, no worker left behind (a
            SIGTERM the run ignores, finishing with exit 0, fails the step and is tried once more, --retries; one
            that kills the ranks' DataLoader workers fails it and is tried once more with --workers 0); then
            `mwa train --resume WORK/runs/intr --devices N` must finish all S steps (exit 0), and its adapter is
            compared with the uninterrupted ddp run's. Then the device count changes across a resume: a run
            interrupted on N devices resumed with no --devices (1 process), and a run interrupted on 1 device
            resumed on N: supported (exit 0, S steps, adapter against the single run) or refused (message quoted).
6. A Markdown summary table on stdout.

Results go to one JSON file (--out, default check_ddp_cli.json), rewritten after every step so a timeout keeps
what was done. On the CPU the interrupted segments sleep --step-delay (0.25 s; tests/helpers/fault_mwa.py) after each
step so the signal lands mid-run; the delay changes no number, and the resumed segments run without it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE_ENV: dict = {}  # set in main: OMP_NUM_THREADS=1 on the CPU
EVAL_KEYS = ("rsum", "mean_recall")
DIR_KEYS = ("r1", "r5", "r10", "median_rank")


# ============================================================================ helpers
class Check:
    """The JSON record, written after every step."""

    def __init__(self, path: Path, record: dict):
        self.path = path
        self.record = record
        self.record.setdefault("steps", {})
        self.save()

    def step(self, name: str, data: dict) -> None:
        self.record["steps"][name] = data
        self.save()

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.record, indent=2, default=str), encoding="utf-8")
        os.replace(tmp, self.path)


def _env(extra: dict | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), COLUMNS="200")
    env.update(BASE_ENV)
    env.update(extra or {})
    return env


def _base_cmd(args) -> list[str]:
    if args.entry_point:
        exe = shutil.which("mwa")
        if not exe:
            sys.exit("--entry-point: no `mwa` on PATH")
        return [exe]
    return [sys.executable, "-m", "mwa_cli"]


def _show(cmd: list[str]) -> str:
    """The command as a user would type it (`mwa ...`)."""
    i = 3 if cmd[1:3] == ["-m", "mwa_cli"] else 1
    return " ".join(["mwa", *cmd[i:]])


def run_mwa(args, argv: list[str], *, timeout: float, env: dict | None = None, log: Path | None = None) -> dict:
    """Run `mwa <argv>` to completion: rc, seconds, stdout, stderr (also written to `log`.out/.err)."""
    cmd = _base_cmd(args) + argv
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=str(REPO), env=_env(env), capture_output=True, text=True, timeout=timeout)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as exc:
        rc = None
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = (exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")) + "\n[timed out]"
    seconds = round(time.monotonic() - t0, 2)
    if log is not None:
        log.with_suffix(".out").write_text(out)
        log.with_suffix(".err").write_text(err)
    print(f"  $ {_show(cmd)}  → exit {rc} in {seconds} s", flush=True)
    return {"command": _show(cmd), "rc": rc, "seconds": seconds, "stdout": out, "stderr": err}


def _tail(text: str, n: int = 1500) -> str:
    return text[-n:]


def _flat(text: str) -> str:
    """stderr with Rich's line wrapping undone."""
    return re.sub(r"\s+", " ", text)


def _line(pattern: str, text: str) -> str | None:
    """The first stderr line matching `pattern` (Rich prints at COLUMNS=200 here, so a message is one line),
    without Rich's leading '· '; else the match in the unwrapped text."""
    for line in text.splitlines():
        if re.search(pattern, line):
            return line.strip().lstrip("·").strip()
    m = re.search(pattern + r"[^·]*", _flat(text))
    return m.group(0).strip() if m else None


def _json_doc(stdout: str) -> tuple[dict | None, int]:
    """The JSON document on stdout and how many top-level documents there were (rank 0 alone should print)."""
    dec = json.JSONDecoder()
    docs, i, s = [], 0, stdout.strip()
    while i < len(s):
        try:
            obj, j = dec.raw_decode(s, i)
        except ValueError:
            break
        docs.append(obj)
        i = j
        while i < len(s) and s[i].isspace():
            i += 1
    return (docs[0] if docs else None), len(docs)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _metrics(run: Path) -> list[dict]:
    rows = []
    p = run / "metrics.jsonl"
    if p.is_file():
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                rows.append({"kind": "unparsable", "line": line[:200]})
    return rows


def _row_key(r: dict) -> tuple:
    return (r.get("kind"), r.get("step"), r.get("split"))


def _train_losses(rows: list[dict]) -> dict[int, float]:
    return {int(r["step"]): float(r["loss"]) for r in rows if r.get("kind") == "train"}


def _eval_numbers(ev: dict | None) -> dict:
    if not ev:
        return {}
    out = {k: ev.get(k) for k in EVAL_KEYS}
    for d in ("i2t", "t2i"):
        for k in DIR_KEYS:
            out[f"{d}_{k}"] = (ev.get(d) or {}).get(k)
    for label, m in sorted((ev.get("per_label") or {}).items()):
        out[f"per_label.{label}.rsum"] = m.get("rsum")
    return out


def _row_numbers(row: dict | None) -> dict:
    if not row:
        return {}
    return {k: row[k] for k in ("rsum", "mean_recall", "i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")
            if k in row}


def _max_diff(a: dict, b: dict) -> float | None:
    keys = [k for k in a if k in b and isinstance(a[k], (int, float)) and isinstance(b[k], (int, float))]
    if not keys:
        return None
    return max(abs(float(a[k]) - float(b[k])) for k in keys)


def _adapter_diff(a: Path, b: Path) -> dict:
    """Largest |difference| of the adapters' tensors (same keys expected)."""
    fa, fb = a / "adapter_model.safetensors", b / "adapter_model.safetensors"
    if not (fa.is_file() and fb.is_file()):
        return {"max_abs_diff": None, "note": "adapter missing"}
    from safetensors.torch import load_file

    wa, wb = load_file(str(fa)), load_file(str(fb))
    if set(wa) != set(wb):
        return {"max_abs_diff": None, "note": f"different keys: {sorted(set(wa) ^ set(wb))[:5]}"}
    diffs = {k: float((wa[k].float() - wb[k].float()).abs().max()) if wa[k].numel() else 0.0 for k in wa}
    worst = max(diffs, key=diffs.get)
    scale = max(float(wa[worst].float().abs().max()), 1e-12)
    return {"max_abs_diff": diffs[worst], "worst_tensor": worst, "worst_tensor_max_abs": scale, "tensors": len(wa)}


def _files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())


def _stray(run: Path) -> list[str]:
    """Files a second writer would leave: temporaries, rank-suffixed copies, a second eval.json anywhere."""
    bad = []
    for rel in _files(run):
        name = Path(rel).name
        if ".tmp" in name or re.search(r"rank|\.\d+$", name) or (name == "eval.json" and rel != "eval.json"):
            bad.append(rel)
    return bad


def _workers_left(runs: Path, name: str) -> list[int]:
    """Processes still running run `name` of `runs` (`--out RUNS ... --name NAME`, or `--resume RUNS/NAME`): ranks
    or DataLoader workers (forked: the rank's command line) that outlived their launcher."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            argv = (d / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        named = any(a == "--name" and b == name for a, b in zip(argv, argv[1:])) and str(runs) in argv
        if named or str(runs / name) in argv:
            pids.append(int(d.name))
    return pids


def _device_info(cpu: bool) -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
    except OSError:
        model = platform.processor()
    info["cpu_model"] = model
    if not cpu and torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


# ============================================================================ the steps
def train_args(args, name: str, *, devices: int | None = None, json_out: bool = False, workers: int | None = None
               ) -> list[str]:
    a = ["train", str(args.data), "--backbone", "beit3-mini", "--method", "mwa", "--steps", str(args.steps),
         "--batch-size", str(args.batch_size), "--seed", "0", "--log-every", "1", "--val-evals", "1",
         "--out", str(args.runs), "--name", name]
    if not args.keep_dropout:
        a += ["--drop-path", "0", "--option", "dropout=0"]
    if args.cpu:
        a += ["--device", "cpu"]
    workers = args.workers if workers is None else workers
    if workers is not None:
        a += ["--workers", str(workers)]
    if devices:
        a += ["--devices", str(devices)]
    if json_out:
        a += ["--json"]
    return a


def step_prepare(args, chk: Check) -> bool:
    t0 = time.monotonic()
    if (args.data / "manifest.csv").is_file() and (args.data / "dataset.json").is_file():
        rec = {"reused": str(args.data), "rc": 0, "seconds": round(time.monotonic() - t0, 2), "ok": True}
    else:
        r = run_mwa(args, ["prepare", str(REPO / "mwa_cli" / "sample_data"), "--out", str(args.data), "--lang", "en",
                           "--image-size", "64", "--json"], timeout=args.timeout, log=args.logs / "prepare")
        doc, _ = _json_doc(r["stdout"])
        rec = {"command": r["command"], "rc": r["rc"], "seconds": r["seconds"], "ok": r["rc"] == 0,
               "by_split": ((doc or {}).get("counts") or {}).get("by_split")}
        if r["rc"] != 0:
            rec["stderr_tail"] = _tail(r["stderr"])
    chk.step("prepare", rec)
    return rec["ok"]


def step_train(args, chk: Check, name: str, devices: int | None) -> dict:
    run = args.runs / name
    r = run_mwa(args, train_args(args, name, devices=devices, json_out=True), timeout=args.timeout,
                log=args.logs / name)
    doc, n_docs = _json_doc(r["stdout"])
    timing = _read_json(run / "timing.json") or {}
    rows = _metrics(run)
    ev = _read_json(run / "eval.json")
    rec = {"command": r["command"], "rc": r["rc"], "seconds": r["seconds"], "json_documents_on_stdout": n_docs,
           "status": (doc or {}).get("status"), "steps": (doc or {}).get("steps"),
           "total_steps": (doc or {}).get("total_steps"), "message": (doc or {}).get("message"),
           "eval_stdout": _eval_numbers((doc or {}).get("eval")), "eval_json": _eval_numbers(ev),
           "samples_per_s": timing.get("samples_per_s"), "train_s": timing.get("train_s"),
           "wall_s": timing.get("wall_s"), "n_devices": timing.get("n_devices"),
           "device_name": timing.get("device_name"), "peak_mem_gib": timing.get("peak_mem_gib"),
           "precision": timing.get("precision"), "micro_batch": timing.get("micro_batch"),
           "train_losses": _train_losses(rows),
           "val_step0": _row_numbers(next((x for x in rows if x.get("kind") == "eval" and x.get("step") == 0), None)),
           "files": _files(run)}
    train_sps = [x["samples_per_s"] for x in rows if x.get("kind") == "train" and x.get("step", 0) > 1]
    rec["samples_per_s_median_rows"] = statistics.median(train_sps) if train_sps else None
    rec["ok"] = (r["rc"] == 0 and n_docs == 1 and rec["status"] == "completed" and rec["steps"] == args.steps
                 and ev is not None)
    if r["rc"] != 0 or n_docs != 1:
        rec["stdout_tail"] = _tail(r["stdout"])
        rec["stderr_tail"] = _tail(r["stderr"])
    return rec


def compare_ddp(args, single: dict, ddp: dict) -> dict:
    """Step 3's checks on the ddp run against the single run."""
    run_s, run_d = args.runs / "single", args.runs / "ddp"
    rows_s, rows_d = _metrics(run_s), _metrics(run_d)
    keys_s, keys_d = [_row_key(r) for r in rows_s], [_row_key(r) for r in rows_d]
    ls, ld = single["train_losses"], ddp["train_losses"]
    common = sorted(set(ls) & set(ld))
    first = common[:10]
    cfg = _read_json(run_d / "config.json") or {}
    out = {
        "first_losses_single": [ls[s] for s in common[:5]],
        "first_losses_ddp": [ld[s] for s in common[:5]],
        "loss_max_abs_diff_first10": max((abs(ls[s] - ld[s]) for s in first), default=None),
        "loss_max_abs_diff": max((abs(ls[s] - ld[s]) for s in common), default=None),
        "loss_steps_compared": len(common),
        "adapter_vs_single": _adapter_diff(run_s, run_d),
        "eval_max_abs_diff_vs_single": _max_diff(single["eval_json"], ddp["eval_json"]),
        "rsum_single": single["eval_json"].get("rsum"), "rsum_ddp": ddp["eval_json"].get("rsum"),
        "samples_per_s_single": single["samples_per_s"], "samples_per_s_ddp": ddp["samples_per_s"],
        "speedup": (ddp["samples_per_s"] / single["samples_per_s"]
                    if ddp["samples_per_s"] and single["samples_per_s"] else None),
        "metrics_rows_single": len(rows_s), "metrics_rows_ddp": len(rows_d),
        "config_distributed": cfg.get("distributed"),
        "config_command": cfg.get("command"),
        "stray_files": _stray(run_d),
    }
    checks = {
        "exit_0": ddp["rc"] == 0,
        "one_json_document": ddp["json_documents_on_stdout"] == 1,
        "all_steps": ddp["steps"] == args.steps,
        "n_devices_in_timing": ddp["n_devices"] == args.devices,
        "world_size_in_config": (cfg.get("distributed") or {}).get("world_size") == args.devices,
        "metrics_rows_equal_single_rows": keys_d == keys_s,
        "no_duplicate_metrics_rows": len(set(keys_d)) == len(keys_d),
        "one_eval_json": ddp["files"].count("eval.json") == 1 and not out["stray_files"],
        "stdout_eval_equals_eval_json": _max_diff(ddp["eval_stdout"], ddp["eval_json"]) == 0.0,
        "first_losses_close": out["loss_max_abs_diff_first10"] is not None
        and out["loss_max_abs_diff_first10"] <= args.loss_tol,
    }
    out["checks"] = checks
    out["ok"] = all(checks.values())
    return out


def step_eval(args, ddp: dict) -> dict:
    run_d = args.runs / "ddp"
    helptext = run_mwa(args, ["eval", "--help"], timeout=120)["stdout"]
    dist_opt = next((o for o in ("--devices", "--distributed", "--nproc") if o in helptext), None)
    trained = _read_json(run_d / "eval.json")  # what rank 0 of the DDP job wrote (mwa eval rewrites the file)
    shutil.copy(run_d / "eval.json", args.work / "ddp_eval_from_training.json")
    dev = ["--device", "cpu"] if args.cpu else []
    plain = run_mwa(args, ["eval", str(run_d), "--json", *dev], timeout=args.timeout, log=args.logs / "eval_plain")
    plain_doc, _ = _json_doc(plain["stdout"])
    rec = {"eval_distributed_option": dist_opt,
           "plain": {"command": plain["command"], "rc": plain["rc"], "seconds": plain["seconds"],
                     "numbers": _eval_numbers(plain_doc)},
           "from_ddp_training": _eval_numbers(trained)}
    rec["max_abs_diff_training_vs_plain"] = _max_diff(rec["from_ddp_training"], rec["plain"]["numbers"])
    if dist_opt:
        d = run_mwa(args, ["eval", str(run_d), "--json", dist_opt, str(args.devices), *dev], timeout=args.timeout,
                    log=args.logs / "eval_dist")
        d_doc, n = _json_doc(d["stdout"])
        rec["distributed"] = {"command": d["command"], "rc": d["rc"], "seconds": d["seconds"],
                              "json_documents_on_stdout": n, "numbers": _eval_numbers(d_doc)}
        rec["max_abs_diff_distributed_vs_plain"] = _max_diff(rec["distributed"]["numbers"], rec["plain"]["numbers"])
    else:
        rec["note"] = ("`mwa eval` has no distributed option: the distributed evaluation is the one `mwa train "
                       "--devices N` runs on rank 0 inside the DDP job (eval.json, val rows); it is compared with "
                       "a plain single-process `mwa eval` of the same adapter on the same split")
    checks = {"plain_eval_exit_0": plain["rc"] == 0,
              "training_eval_equals_plain": rec["max_abs_diff_training_vs_plain"] is not None
              and rec["max_abs_diff_training_vs_plain"] <= args.eval_tol}
    if dist_opt:
        checks["distributed_eval_exit_0"] = rec["distributed"]["rc"] == 0
        checks["distributed_equals_plain"] = (rec.get("max_abs_diff_distributed_vs_plain") is not None
                                              and rec["max_abs_diff_distributed_vs_plain"] <= args.eval_tol)
    rec["checks"] = checks
    rec["ok"] = all(checks.values())
    if plain["rc"] != 0:
        rec["plain"]["stderr_tail"] = _tail(plain["stderr"])
    return rec


def interrupt(args, name: str, devices: int | None, workers: int | None = None) -> dict:
    """Start a run, SIGTERM its (launcher) process once a train row is logged, wait for the exit."""
    run = args.runs / name
    cmd = _base_cmd(args) + train_args(args, name, devices=devices, workers=workers)
    extra = {}
    if args.step_delay > 0:  # the CLI with a sleep after each step, from the tests' fault-injection module
        cmd = [sys.executable, "-m", "fault_mwa"] + cmd[3 if cmd[1:3] == ["-m", "mwa_cli"] else 1:]
        extra = {"FAULT_SPEC": json.dumps({"step_delay": args.step_delay}),
                 "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    log = args.logs / f"{name}-interrupt"
    t0 = time.monotonic()
    with open(log.with_suffix(".out"), "w") as fo, open(log.with_suffix(".err"), "w") as fe:
        proc = subprocess.Popen(cmd, cwd=str(REPO), env=_env(extra), stdout=fo, stderr=fe)
        deadline = t0 + args.timeout
        signalled_at_step = None
        while time.monotonic() < deadline and proc.poll() is None:
            rows = [r for r in _metrics(run) if r.get("kind") == "train"]
            if rows or (run / "checkpoint" / "last" / "meta.json").is_file():
                signalled_at_step = rows[-1]["step"] if rows else None
                break
            time.sleep(0.05)
        finished_before_signal = proc.poll() is not None
        t_sig = time.monotonic()
        if not finished_before_signal:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            rc = None
    t_exit = time.monotonic()
    err = log.with_suffix(".err").read_text()
    left = _workers_left(args.runs, name)
    if rc is None:  # our own launcher did not stop: end it (and only it)
        proc.kill()
        proc.wait()
    meta = _read_json(run / "checkpoint" / "last" / "meta.json") or {}
    ckpt_world = None
    state_path = run / "checkpoint" / "last" / "state.pt"
    if state_path.is_file():
        import torch

        ckpt_world = torch.load(state_path, map_location="cpu", weights_only=False).get("world_size")
    flat = _flat(err)
    hint = _line(r"Resume with: ", err)
    rows = [r for r in _metrics(run) if r.get("kind") == "train"]
    status = (_read_json(run / "timing.json") or {}).get("status")
    rec = {"name": name, "command": _show(cmd), "devices": devices or 1, "rc": rc, "expected_rc": 143,
           "signal_lost": not finished_before_signal and rc == 0 and status == "completed",
           "dataloader_worker_killed": "DataLoader worker" in flat and "killed by signal" in flat,
           "seconds_to_signal": round(t_sig - t0, 2), "seconds_signal_to_exit": round(t_exit - t_sig, 2),
           "finished_before_signal": finished_before_signal, "last_logged_step_at_signal": signalled_at_step,
           "checkpoint_step": meta.get("step"), "checkpoint_world_size": ckpt_world,
           "last_train_row_step": rows[-1]["step"] if rows else None,
           "resume_hint": hint.split("Resume with:", 1)[1].strip() if hint and "Resume with:" in hint else None,
           "stopped_message": _line(r"SIGTERM: stopped at step", err),
           "workers_left": left, "step_delay_s": args.step_delay,
           "segment_timing": {k: (_read_json(run / "timing.json") or {}).get(k)
                              for k in ("status", "wall_s", "n_devices", "device_hours")}}
    checks = {"exit_143": rc == 143, "interrupted_mid_run": not finished_before_signal
              and meta.get("step") is not None and 0 < meta["step"] < args.steps,
              "checkpoint_world_size": ckpt_world == (devices or 1), "resume_hint_printed": "Resume with" in flat,
              "no_worker_left": not left}
    rec["checks"] = checks
    rec["ok"] = all(checks.values())
    if not rec["ok"]:
        rec["stderr_tail"] = _tail(err)
    if left:  # processes of our own job that outlived the launcher: end them by id
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return rec


def interrupted(args, chk: Check, key: str, name: str, devices: int | None) -> dict:
    """Step 5's interruption. Two failures are recorded (the step fails) and followed by another attempt, so that
    the resume after it is still checked: a SIGTERM the run ignored (it finished, exit 0: --retries more tries),
    and a SIGTERM that killed the ranks' DataLoader workers (no checkpoint: once more with --workers 0)."""
    attempts = [interrupt(args, name, devices)]
    retries, workers = args.retries, None
    while attempts[-1]["checkpoint_step"] is None:
        last = attempts[-1]
        if last["dataloader_worker_killed"] and workers != 0:
            workers = 0
        elif last["signal_lost"] and retries > 0:
            retries -= 1
        else:
            break
        nxt = f"{name}_try{len(attempts) + 1}"
        print(f"  attempt {len(attempts)}: {_outcome(last)}; again as {nxt}"
              + (" with --workers 0" if workers == 0 else ""), flush=True)
        attempts.append(interrupt(args, nxt, devices, workers=workers))
        attempts[-1]["workers"] = workers
    rec = dict(attempts[-1])
    if len(attempts) > 1:
        rec["earlier_attempts"] = attempts[:-1]
    rec["signals_lost"] = sum(int(a["signal_lost"]) for a in attempts)
    rec["dataloader_crashes"] = sum(int(a["dataloader_worker_killed"]) for a in attempts)
    rec["attempts_summary"] = [_outcome(a) for a in attempts]
    rec["checks"]["no_signal_lost"] = rec["signals_lost"] == 0
    rec["checks"]["no_dataloader_worker_killed"] = rec["dataloader_crashes"] == 0
    rec["ok"] = all(rec["checks"].values())
    chk.step(key, rec)
    return rec


def _outcome(a: dict) -> str:
    """One interruption attempt in words."""
    w = " (--workers 0)" if a.get("workers") == 0 else ""
    if a["signal_lost"]:
        return f"SIGTERM ignored{w}: the run finished all steps, exit {a['rc']}, no checkpoint"
    if a["dataloader_worker_killed"] and a["checkpoint_step"] is None:
        return (f"SIGTERM killed the DataLoader workers{w}: the ranks died (internal error), exit {a['rc']}, "
                f"no checkpoint")
    return (f"exit {a['rc']}{w}, checkpoint at step {a['checkpoint_step']} (world {a['checkpoint_world_size']}), "
            f"{_f(a['seconds_signal_to_exit'])} s signal → exit, workers left {len(a['workers_left'])}")


def resume(args, name: str, devices: int | None, ref: str, *, cross: bool = False, segment: dict | None = None
           ) -> dict:
    """`mwa train --resume WORK/runs/<name> [--devices N]`: finishes? against run `ref`'s adapter and eval.
    `cross`: the device count differs from the interrupted segment's (a clear refusal, exit 2, is accepted)."""
    run = args.runs / name
    argv = ["train", "--resume", str(run)] + (["--devices", str(devices)] if devices else [])
    r = run_mwa(args, argv, timeout=args.timeout, log=args.logs / f"{name}-resume")
    flat = _flat(r["stderr"])
    timing = _read_json(run / "timing.json") or {}
    rows = _metrics(run)
    steps = [x["step"] for x in rows if x.get("kind") == "train"]
    keys = [_row_key(x) for x in rows]
    ev = _eval_numbers(_read_json(run / "eval.json"))
    ref_ev = _eval_numbers(_read_json(args.work / "ddp_eval_from_training.json") if ref == "ddp"
                           else _read_json(args.runs / ref / "eval.json"))
    ls, lr = _train_losses(_metrics(args.runs / ref)), _train_losses(rows)
    common = sorted(set(ls) & set(lr))
    refused = re.search(r"error: (.+?)(?= hint:|$)", flat)
    rec = {"command": r["command"], "rc": r["rc"], "seconds": r["seconds"], "devices": devices or 1,
           "steps_done": timing.get("steps"), "planned_steps": timing.get("planned_steps"),
           "status": timing.get("status"), "n_devices": timing.get("n_devices"),
           "resumed_message": _line(r"resuming \S+ at step \d+ of \d+", r["stderr"]),
           "device_count_message": _line(r"continuing on \d+ device", r["stderr"]),
           "refused_message": refused.group(1).strip() if (refused and r["rc"] != 0) else None,
           "train_steps_logged": len(steps), "no_duplicate_rows": len(set(keys)) == len(keys),
           "rsum": ev.get("rsum"), f"rsum_{ref}": ref_ev.get("rsum"), "eval_max_abs_diff_vs_ref": _max_diff(ev, ref_ev),
           "loss_max_abs_diff_vs_ref": max((abs(ls[s] - lr[s]) for s in common), default=None),
           "adapter_vs_ref": _adapter_diff(args.runs / ref, run), "ref": ref}
    checks = {"exit_0": r["rc"] == 0, "all_planned_steps": timing.get("steps") == args.steps
              and timing.get("planned_steps") == args.steps and bool(steps) and steps[-1] == args.steps,
              "train_rows_unique_sorted": steps == sorted(set(steps)), "no_duplicate_rows": rec["no_duplicate_rows"],
              "n_devices": timing.get("n_devices") == (devices or 1)}
    seg = (segment or {}).get("segment_timing") or {}
    if seg.get("device_hours") is not None and timing.get("wall_s") is not None:
        # the run's device-hours: each segment at its own device count (not judged: recorded as an observation)
        expected = seg["device_hours"] + (timing["wall_s"] - seg["wall_s"]) * (devices or 1) / 3600.0
        rec["device_hours"] = {"reported": timing.get("device_hours"), "per_segment": round(expected, 6),
                               "wall_s": timing.get("wall_s"), "first_segment": seg,
                               "matches": abs(timing.get("device_hours", 0) - expected) <= 0.02 * expected + 1e-6}
    rec["outcome"] = "supported" if all(checks.values()) else "failed"
    if cross and r["rc"] == 2 and rec["refused_message"]:  # a clear refusal is an acceptable answer too
        rec["outcome"] = "refused"
        checks = {"refused_with_message": True}
    rec["checks"] = checks
    rec["ok"] = all(checks.values())
    if r["rc"] != 0:
        rec["stderr_tail"] = _tail(r["stderr"])
    return rec


# ============================================================================ summary
def _f(x, nd=2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 0.01 and x != 0 else f"{x:.{nd}f}"
    return str(x)


def summary(rec: dict) -> str:
    st = rec["steps"]
    n = rec["settings"]["devices"]
    lines = [f"\n### mwa train --devices {n}, end to end ({rec['mode']}; {rec['device_label']}; "
             f"torch {rec['info']['torch']}; beit3-mini, mwa, batch {rec['settings']['batch_size']}, "
             f"{rec['settings']['steps']} steps)\n",
             "| step | result | numbers | s |", "|---|---|---|---:|"]

    def ok(d: dict | None) -> str:
        if not d:
            return "not run"
        return "**pass**" if d.get("ok") else "**FAIL** (" + ", ".join(k for k, v in (d.get("checks") or {}).items()
                                                                       if not v) + ")"

    if "prepare" in st:
        p = st["prepare"]
        lines.append(f"| 1 prepare | {ok(p)} | {'reused' if p.get('reused') else 'exit ' + str(p.get('rc'))} | "
                     f"{_f(p.get('seconds'))} |")
    if "single" in st:
        s = st["single"]
        lines.append(f"| 2 single device | {ok(s)} | exit {s['rc']}, test RSUM {_f(s['eval_json'].get('rsum'))}, "
                     f"{_f(s['samples_per_s'], 1)} samples/s | {_f(s['seconds'])} |")
    if "ddp" in st:
        d, c = st["ddp"], st["ddp"].get("compare", {})
        lines.append(f"| 3 --devices {n} | {ok(d)} | exit {d['rc']}, test RSUM {_f(d['eval_json'].get('rsum'))} "
                     f"(single {_f(c.get('rsum_single'))}), loss max Δ {_f(c.get('loss_max_abs_diff_first10'))} "
                     f"(first 10 steps; all: {_f(c.get('loss_max_abs_diff'))}), adapter max Δ "
                     f"{_f((c.get('adapter_vs_single') or {}).get('max_abs_diff'))}, {_f(d['samples_per_s'], 1)} "
                     f"samples/s ({_f(c.get('speedup'))}×), rows {c.get('metrics_rows_ddp')} = single's "
                     f"{c.get('metrics_rows_single')}, files written once: "
                     f"{(c.get('checks') or {}).get('one_eval_json')} | {_f(d['seconds'])} |")
    if "eval" in st:
        e = st["eval"]
        lines.append(f"| 4 eval in DDP job vs `mwa eval` | {ok(e)} | distributed option: "
                     f"{e.get('eval_distributed_option') or 'none'}; max Δ "
                     f"{_f(e.get('max_abs_diff_training_vs_plain'))}; step-0 val, single vs ddp: max Δ "
                     f"{_f(e.get('val_step0_max_abs_diff_single_vs_ddp'))} | "
                     f"{_f((e.get('plain') or {}).get('seconds'))} |")
    for key, label in (("interrupt", f"5a SIGTERM on {n}"), ("resume", f"5a resume on {n}"),
                       ("interrupt_2to1", f"5b SIGTERM on {n}"), ("resume_2to1", f"5b resume {n} → 1"),
                       ("interrupt_1to2", "5c SIGTERM on 1"), ("resume_1to2", f"5c resume 1 → {n}")):
        if key not in st:
            continue
        x = st[key]
        if key.startswith("interrupt"):
            tries = x.get("attempts_summary") or [_outcome(x)]
            nums = "; ".join(f"try {i + 1}: {t}" for i, t in enumerate(tries)) if len(tries) > 1 else tries[0]
            secs = sum(a["seconds_to_signal"] + a["seconds_signal_to_exit"]
                       for a in [x, *x.get("earlier_attempts", [])])
        else:
            nums = (f"{x['outcome']}: exit {x['rc']}, {x['steps_done']}/{x['planned_steps']} steps on "
                    f"{x['n_devices']}, RSUM {_f(x['rsum'])} vs {x['ref']} {_f(x.get('rsum_' + x['ref']))}, "
                    f"adapter max Δ vs {x['ref']} "
                    f"{_f((x.get('adapter_vs_ref') or {}).get('max_abs_diff'))}")
            if x.get("device_count_message"):
                nums += f"; “{x['device_count_message']}”"
            if x.get("refused_message"):
                nums += f"; refused: “{x['refused_message']}”"
            secs = x["seconds"]
        lines.append(f"| {label} | {ok(x)} | {nums} | {_f(secs)} |")
    for key in ("resume", "resume_2to1", "resume_1to2"):
        dh = (st.get(key) or {}).get("device_hours")
        if dh and not dh["matches"]:
            seg = dh["first_segment"]
            lines.append(f"\nnote ({key}): timing.json device_hours {dh['reported']} = wall {dh['wall_s']} s × "
                         f"{st[key]['n_devices']} device(s) of the last segment; counting the first "
                         f"{seg['wall_s']} s on {seg['n_devices']} device(s) gives {dh['per_segment']}")
    lines.append(f"\nall passed: {rec.get('ok')} · {_f(rec.get('seconds'), 1)} s in all")
    return "\n".join(lines)


# ============================================================================ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="--device cpu: N gloo processes instead of N GPUs")
    ap.add_argument("--work", default=None, help="work folder (data/, runs/, logs/) [a new temporary folder]")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps of every run [CPU 6, GPU 300]")
    ap.add_argument("--batch-size", type=int, default=32, help="global batch [32]")
    ap.add_argument("--devices", type=int, default=2, help="processes / GPUs of the DDP runs [2]")
    ap.add_argument("--step-delay", type=float, default=None,
                    help="sleep after each step of the interrupted segments [CPU 0.25, GPU 0]")
    ap.add_argument("--keep-dropout", action="store_true", help="keep dropout 0.1 / drop path 0.1 (runs then differ)")
    ap.add_argument("--workers", type=int, default=None,
                    help="--workers of every training run [mwa's default: 0 on CPU, ≤ 8 on GPU]")
    ap.add_argument("--skip-1to2", action="store_true", help="skip the run interrupted on 1 device, resumed on N")
    ap.add_argument("--loss-tol", type=float, default=None,
                    help="max |Δ loss| ddp vs single over the first 10 steps [CPU 1e-3, GPU (bf16) 0.05]")
    ap.add_argument("--eval-tol", type=float, default=1e-6, help="max |Δ metric| DDP-job eval vs mwa eval [1e-6]")
    ap.add_argument("--retries", type=int, default=1,
                    help="tries after a SIGTERM the run ignored (recorded; the step still fails) [1]")
    ap.add_argument("--timeout", type=float, default=400, help="seconds per command [400]")
    ap.add_argument("--entry-point", action="store_true", help="run the installed `mwa` script, not python -m mwa_cli")
    ap.add_argument("--out", default="check_ddp_cli.json", help="JSON file [check_ddp_cli.json]")
    args = ap.parse_args()
    gpu = not args.cpu
    args.steps = args.steps or (300 if gpu else 6)
    args.step_delay = args.step_delay if args.step_delay is not None else (0.0 if gpu else 0.25)
    args.loss_tol = args.loss_tol if args.loss_tol is not None else (0.05 if gpu else 1e-3)
    info = _device_info(args.cpu)
    if gpu and len(info.get("gpus", [])) < args.devices:
        sys.exit(f"needs {args.devices} GPUs, sees {len(info.get('gpus', []))} (add --cpu for the gloo check)")
    if args.cpu and "OMP_NUM_THREADS" not in os.environ:
        # one thread per process, as the tests and bench_ddp.py --smoke do (and as `--devices N --device cpu` picks
        # on 2 cores): on a shared CPU, 2 OpenMP threads beside another job run several times slower
        BASE_ENV["OMP_NUM_THREADS"] = "1"
    info["OMP_NUM_THREADS_children"] = BASE_ENV.get("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS"))
    args.work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="check_ddp_cli-"))
    args.data, args.runs, args.logs = args.work / "data", args.work / "runs", args.work / "logs"
    args.logs.mkdir(parents=True, exist_ok=True)
    args.runs.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.runs)  # a re-run on the same --work starts afresh (the data is kept)
    args.runs.mkdir()
    t_all = time.monotonic()
    label = (", ".join(info["gpus"][:args.devices]) if gpu else f"{info['cpu_model']}, {info['cpu_count']} cores")
    chk = Check(Path(args.out), {
        "script": "bench/check_ddp_cli.py", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(),
        "mode": "gpu" if gpu else "cpu (gloo)", "device_label": label, "info": info, "work": str(args.work),
        "settings": {"steps": args.steps, "batch_size": args.batch_size, "devices": args.devices,
                     "backbone": "beit3-mini", "method": "mwa", "seed": 0, "dropout_off": not args.keep_dropout,
                     "step_delay_s": args.step_delay, "workers": args.workers, "loss_tol": args.loss_tol,
                     "eval_tol": args.eval_tol,
                     "command_base": "mwa (installed script)" if args.entry_point else "python -m mwa_cli"},
        "ok": None})
    print(f"check_ddp_cli: {chk.record['mode']}, {label}; work folder {args.work}", flush=True)
    n = args.devices

    def finish(ok: bool) -> None:
        chk.record["ok"] = ok
        chk.record["seconds"] = round(time.monotonic() - t_all, 1)
        chk.save()
        print(summary(chk.record))
        print(f"\nwrote {args.out}")
        sys.exit(0 if ok else 1)

    print("1. prepare", flush=True)
    if not step_prepare(args, chk):
        finish(False)
    print("2. single device", flush=True)
    single = step_train(args, chk, "single", None)
    chk.step("single", single)
    print(f"3. --devices {n}", flush=True)
    ddp = step_train(args, chk, "ddp", n)
    if ddp["rc"] == 0 and single["rc"] == 0:
        ddp["compare"] = compare_ddp(args, single, ddp)
        ddp["checks"] = dict(ddp["compare"]["checks"], completed=ddp["ok"])
        ddp["ok"] = all(ddp["checks"].values())
    chk.step("ddp", ddp)
    if ddp["rc"] == 0:
        print("4. evaluation", flush=True)
        ev = step_eval(args, ddp)
        ev["val_step0_single"] = single["val_step0"]
        ev["val_step0_ddp"] = ddp["val_step0"]
        ev["val_step0_max_abs_diff_single_vs_ddp"] = _max_diff(single["val_step0"], ddp["val_step0"])
        ev["checks"]["val_step0_single_equals_ddp"] = (ev["val_step0_max_abs_diff_single_vs_ddp"] is not None and
                                                       ev["val_step0_max_abs_diff_single_vs_ddp"] <= args.eval_tol)
        ev["ok"] = all(ev["checks"].values())
        chk.step("eval", ev)
    print(f"5. SIGTERM and resume on {n}", flush=True)
    intr = interrupted(args, chk, "interrupt", "intr", n)
    if intr["checkpoint_step"] is not None:
        chk.step("resume", resume(args, intr["name"], n, "ddp", segment=intr))
    print(f"5. SIGTERM on {n}, resume on 1", flush=True)
    i21 = interrupted(args, chk, "interrupt_2to1", "intr_2to1", n)
    if i21["checkpoint_step"] is not None:
        chk.step("resume_2to1", resume(args, i21["name"], None, "single", cross=True, segment=i21))
    if not args.skip_1to2:
        print(f"5. SIGTERM on 1, resume on {n}", flush=True)
        i12 = interrupted(args, chk, "interrupt_1to2", "intr_1to2", None)
        if i12["checkpoint_step"] is not None:
            chk.step("resume_1to2", resume(args, i12["name"], n, "single", cross=True, segment=i12))
    needed = ["prepare", "single", "ddp", "eval", "interrupt", "resume", "interrupt_2to1", "resume_2to1"]
    if not args.skip_1to2:
        needed += ["interrupt_1to2", "resume_1to2"]
    finish(all(chk.record["steps"].get(k, {}).get("ok") for k in needed))


if __name__ == "__main__":
    main()
