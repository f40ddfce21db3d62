"""`mwa train --devices N`: start N training processes on this machine and end them together.

One process per device, each started as `python -m mwa_cli ...` with the variables torchrun sets (RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so `dist.context.init_from_env` cannot tell the two
launchers apart. This launcher exists for one guarantee the elastic agent does not give: **when one process
fails, the whole command ends within seconds**. The agent asks the survivors to stop with SIGTERM, which a rank
blocked in a collective never sees, then waits its shutdown timeout; here every rank runs in its own process group
(its DataLoader workers with it) and is killed whole once a peer has failed and a short grace has passed.

* Ctrl-C / SIGTERM to the launcher: forwarded once to every rank (not to their workers); the ranks agree on a step,
  save one checkpoint and exit 130/143. A second signal kills every process group at once.
* A rank that exits non-zero (or is killed) while the others run: the others get `FAIL_GRACE_S` to end on their own
  (a gloo peer sees the closed connection at once), then their process groups are killed.
* Once any rank has exited, the others have `EXIT_GRACE_S` to follow (every rank leaves `train()` through the
  same final collective, so they exit within moments of each other); a rank still running then is stuck and killed.
* Ranks > 0 write their output to a log file; when one of them fails first, the failure report holds its last
  lines. The launcher prints nothing itself: the command hands in `report`, which words a `FailureReport`.
* Linux: every rank dies with the launcher (PR_SET_PDEATHSIG), also when the launcher is killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from mwa_cli.errors import EXIT_PEER_LOST, EXIT_SIGINT, EXIT_SIGTERM, ConfigError
from mwa_cli.train.dist.env import ENV_COMMAND, ENV_RESULT, ENV_T0, RESULT_DIR_PREFIX

CPU_MAX_PROCESSES = 8  # --device cpu: each process trains a whole copy of the model; more only thrash the cores
FAIL_GRACE_S = 5.0
EXIT_GRACE_S = 60.0
POLL_S = 0.1


def parse_devices(spec: str, device: str | None) -> tuple[int, str | None]:
    """`--devices 2 | 0,1 | all` → (number of processes, CUDA_VISIBLE_DEVICES value or None)."""
    spec = (spec or "").strip().lower()
    cpu = (device or "auto").lower() == "cpu"
    if spec == "all":
        if cpu:
            raise ConfigError("--devices all needs GPUs", hint="on the CPU give a number of processes: --devices 2")
        n = torch.cuda.device_count()
        if n == 0:
            raise ConfigError("--devices all: no CUDA GPU is visible", hint="check the driver / CUDA_VISIBLE_DEVICES")
        return n, None
    if "," in spec:
        try:
            ids = [int(x) for x in spec.split(",") if x.strip() != ""]
        except ValueError:
            raise ConfigError(f"--devices {spec!r}: write a count (2), GPU ids (0,1) or all") from None
        if cpu:
            raise ConfigError("--devices with GPU ids needs GPUs", hint="on the CPU give a number: --devices 2")
        if len(set(ids)) != len(ids) or any(i < 0 for i in ids):
            raise ConfigError(f"--devices {spec!r}: GPU ids must be distinct and non-negative")
        visible = torch.cuda.device_count()
        if any(i >= visible for i in ids):
            raise ConfigError(f"--devices {spec!r}: this machine has {visible} GPU(s) (ids 0 to {visible - 1})"
                              if visible else f"--devices {spec!r}: no CUDA GPU is visible",
                              hint="`nvidia-smi` lists them; CUDA_VISIBLE_DEVICES may hide some")
        return len(ids), ",".join(str(i) for i in ids)
    try:
        n = int(spec)
    except ValueError:
        raise ConfigError(f"--devices {spec!r}: write a count (2), GPU ids (0,1) or all") from None
    if n < 1:
        raise ConfigError("--devices must be at least 1")
    if cpu and n > CPU_MAX_PROCESSES:
        raise ConfigError(f"--devices {n} with --device cpu: at most {CPU_MAX_PROCESSES} CPU processes",
                          hint=f"each process trains a whole copy of the model; give --devices 2 to "
                               f"{CPU_MAX_PROCESSES} (or train on GPUs)")
    if not cpu and torch.cuda.is_available() and n > torch.cuda.device_count():
        raise ConfigError(f"--devices {n}: only {torch.cuda.device_count()} GPU(s) are visible")
    if not cpu and not torch.cuda.is_available() and n > 1:
        raise ConfigError(f"--devices {n}: no CUDA GPU is visible",
                          hint="add --device cpu to train with several CPU processes (gloo), e.g. for testing")
    return n, None


def strip_devices(argv: list[str]) -> list[str]:
    """argv without `--devices X` / `--devices=X`."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--devices":
            skip = True
            continue
        if a.startswith("--devices="):
            continue
        out.append(a)
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_preexec() -> None:
    """In the child before exec: its own process group (killed whole), and death with the launcher."""
    os.setsid()
    from mwa_cli.train.data import die_with_parent

    die_with_parent()


@dataclass
class _Rank:
    rank: int
    proc: subprocess.Popen
    log: Path | None
    exited_at: float | None = None
    killed: bool = False

    @property
    def code(self) -> int | None:
        return self.proc.returncode

    def kill_group(self) -> None:
        if self.proc.poll() is None:
            self.killed = True
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@dataclass(frozen=True)
class FailureReport:
    """What the user is told when a rank failed: which one and how (`error`), the last lines of its output when it
    was not rank 0 (`output`, indented), and how to go on (`hint`: the `--resume` command, or to start again)."""

    error: str
    output: str
    hint: str


@dataclass
class _Outcome:
    first_failure: _Rank | None = None
    interrupted: int | None = None
    stuck_killed: list[int] = field(default_factory=list)


def _exit_status(code: int) -> int:
    return 128 - code if code < 0 else code


def _log_tail(path: Path | None, lines: int = 12) -> str:
    if path is None or not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return "\n".join("    " + x for x in text[-lines:])


class _Signals:
    """Ctrl-C and SIGTERM caught as data from the first rank's start to the last one's end: the launcher is never
    interrupted half-way (no traceback, no rank left unsupervised); `_supervise` acts on them."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._previous: dict = {}

    def __enter__(self) -> "_Signals":
        self._previous = {s: signal.signal(s, lambda signum, _frame: self.received.append(signum))
                          for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)


def _supervise(ranks: list[_Rank], signals: list[int], *, fail_grace_s: float, exit_grace_s: float) -> _Outcome:
    """Wait for every rank; forward the first signal, kill everything on the second; kill stuck survivors."""
    out = _Outcome()
    forwarded = 0
    failures: list[_Rank] = []
    try:
        while True:
            now = time.monotonic()
            while forwarded < len(signals):
                sig = signals[forwarded]
                forwarded += 1
                if forwarded == 1:
                    out.interrupted = sig
                    for r in ranks:
                        if r.proc.poll() is None:
                            try:
                                os.kill(r.proc.pid, sig)  # the rank only: its workers ignore Ctrl-C
                            except ProcessLookupError:
                                pass
                else:  # second signal: stop now
                    for r in ranks:
                        r.kill_group()
            running = []
            for r in ranks:
                if r.proc.poll() is None:
                    running.append(r)
                elif r.exited_at is None:
                    r.exited_at = now
                    if r.code != 0 and not (out.interrupted and r.code in (EXIT_SIGINT, EXIT_SIGTERM, -signal.SIGTERM,
                                                                            -signal.SIGINT)):
                        failures.append(r)
            # the cause, not its echo: a rank that only lost contact with a failed peer is reported last
            causes = [r for r in failures if r.code != EXIT_PEER_LOST] or failures
            out.first_failure = causes[0] if causes else None
            if not running:
                return out
            exits = [r.exited_at for r in ranks if r.exited_at is not None]
            if exits:
                grace = fail_grace_s if failures else exit_grace_s
                anchor = failures[0].exited_at if failures else min(exits)
                if now - anchor > grace:
                    for r in running:
                        out.stuck_killed.append(r.rank)
                        r.kill_group()
            time.sleep(POLL_S)
    finally:
        for r in ranks:  # never leave a process behind
            r.kill_group()
            try:
                r.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not refused
                pass


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def launch(nproc: int, argv: list[str], *, report: Callable[[FailureReport], None], visible: str | None = None,
           cpu: bool = False, module: str = "mwa_cli", t0_wall: float | None = None, command: str | None = None,
           fail_grace_s: float = FAIL_GRACE_S, exit_grace_s: float = EXIT_GRACE_S) -> int:
    """Run `python -m <module> <argv>` as `nproc` ranks on this machine; return the command's exit code.

    The code is rank 0's result (0, 130, 143, ...) when every rank ended normally; when a rank failed, the
    failing rank's code (1 at least), after `report` was given a `FailureReport` naming it (unless rank 0 failed
    alone: it printed its own message)."""
    env = dict(os.environ)
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    if "OMP_NUM_THREADS" not in env:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover
            cores = os.cpu_count() or 1
        env["OMP_NUM_THREADS"] = str(max(1, cores // nproc) if cpu else max(1, min(8, cores // nproc)))
    work = Path(tempfile.mkdtemp(prefix=RESULT_DIR_PREFIX))
    result_path = work / "result.json"
    env.update({ENV_RESULT: str(result_path), ENV_T0: repr(t0_wall or time.time()),
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(nproc),
                "LOCAL_WORLD_SIZE": str(nproc), "GROUP_RANK": "0", "ROLE_RANK": "0", "ROLE_WORLD_SIZE": str(nproc)})
    if command:
        env[ENV_COMMAND] = command
    ranks: list[_Rank] = []
    with _Signals() as signals:  # until every process is gone, also during the clean-up
        try:
            for r in range(nproc):
                if signals.received:  # Ctrl-C while starting: start no more, stop those started
                    return _stopped_while_starting(ranks, signals.received[0], nproc, report)
                ranks.append(_start_rank(r, module, argv, env, work))
            outcome = _supervise(ranks, signals.received, fail_grace_s=fail_grace_s, exit_grace_s=exit_grace_s)
            result = _read_json(result_path)
            if outcome.first_failure is None and not outcome.stuck_killed:
                if "exit_code" in result:
                    return int(result["exit_code"])
                if outcome.interrupted is not None:
                    return EXIT_SIGTERM if outcome.interrupted == signal.SIGTERM else EXIT_SIGINT
                return _exit_status(ranks[0].code or 0)
            failure = failure_report(ranks, outcome, result, nproc)
            if failure is not None:
                report(failure)
            bad = outcome.first_failure
            return max(1, _exit_status(bad.code or 1)) if bad is not None else 1
        finally:
            for r in ranks:  # the whole group, leader gone or not: no worker left behind
                try:
                    os.killpg(r.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            for f in work.iterdir():
                f.unlink(missing_ok=True)
            work.rmdir()


def _start_rank(rank: int, module: str, argv: list[str], env: dict[str, str], work: Path) -> _Rank:
    """Start rank `rank` (`python -m <module> <argv>`); ranks > 0 write their output to a log in `work`."""
    renv = dict(env, RANK=str(rank), LOCAL_RANK=str(rank))
    log = None if rank == 0 else work / f"rank{rank}.log"
    out = None if log is None else open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    try:
        proc = subprocess.Popen([sys.executable, "-m", module, *argv], env=renv, stdout=out,
                                stderr=subprocess.STDOUT if out is not None else None,
                                stdin=subprocess.DEVNULL, preexec_fn=_rank_preexec)
    finally:
        if out is not None:
            out.close()
    return _Rank(rank, proc, log)


def _stopped_while_starting(ranks: list[_Rank], signum: int, nproc: int,
                            report: Callable[[FailureReport], None]) -> int:
    """A signal came before every rank had started: nothing trained yet, so every started rank is ended at once
    (the caller's `finally` kills their process groups) and the command ends with the signal's code."""
    for r in ranks:
        r.kill_group()
        r.proc.wait()
    name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    report(FailureReport(f"stopped by {name} while the {nproc} training processes were starting "
                         f"({len(ranks)} had started; all of them were ended)", "",
                         "nothing was trained; run the same command again to start the run"))
    return EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT


def failure_report(ranks: list[_Rank], outcome: _Outcome, result: dict, nproc: int) -> FailureReport | None:
    """Which process failed, how, what happened to the others, and how to resume; None when rank 0 failed and
    the others ended with it (rank 0 printed its own message and hint)."""
    bad = outcome.first_failure
    others = [r.rank for r in ranks if r is not bad and r.killed]
    if bad is not None and bad.rank == 0 and not others:
        return None
    if bad is not None:
        code = bad.code or 0
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        text = f"training process {bad.rank} of {nproc} {how}"
    else:
        text = f"training process(es) {', '.join(map(str, outcome.stuck_killed))} of {nproc} stopped responding"
    if others:
        text += f"; process(es) {', '.join(map(str, others))} were stopped"
    tail = _log_tail(bad.log) if bad is not None and bad.rank != 0 else ""
    run_dir = result.get("run_dir")
    if run_dir:
        from mwa_cli.train.checkpoint import find_checkpoint

        if find_checkpoint(Path(run_dir)) is not None:
            return FailureReport(f"{text}.", tail, f"a checkpoint was kept; resume with: mwa train --resume "
                                                   f"{shlex.quote(str(run_dir))} --devices {nproc}")
    return FailureReport(f"{text}.", tail, "no checkpoint had been written; fix the cause above and start the run "
                                           "again")
