"""The Rich progress displays of the commands: `mwa train`'s (and each training stage of `mwa demo`'s) with one
bar per run and an ETA from the first timed steps, or from the budget's remaining time under --budget; the bar of
a photo decoding pass (`count_bar`, fed by the data layer's `progress(done, total)` callbacks); and the words for
a run stopped by a second Ctrl-C."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from mwa_cli.commands.common import err_console, shown

if TYPE_CHECKING:
    from mwa_cli.data.cache import ProgressCallback


def fmt_clock(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def eta_seconds(now: float, step: int, total: int | None, first: tuple[float, int] | None,
                deadline: float | None) -> float | None:
    """Seconds left. Under a budget: until its deadline (the run plans its steps, evaluation included, to end
    there; early stopping can only end it sooner). Otherwise from the step rate since the first timed step
    (`first` = (time, step)), once a later step has been timed; None until then."""
    if deadline is not None:
        return max(0.0, deadline - now)
    if total is None or first is None or step <= first[1] or now <= first[0]:
        return None
    return max(0.0, (total - step) * (now - first[0]) / (step - first[1]))


class EtaColumn(ProgressColumn):
    """'ETA 0:12:34' ('ETA ≤ …' under a budget: early stopping may end the run sooner); 'done' at the end."""

    def render(self, task: Task) -> Text:
        f = task.fields
        if f.get("done"):
            ended = f.get("ended") or "done"  # "interrupted": the bar keeps the step it stopped at
            return Text(ended, style="green" if ended == "done" else "yellow")
        eta = eta_seconds(time.monotonic(), int(task.completed), int(task.total) if task.total else None,
                          f.get("first"), f.get("deadline"))
        if eta is None:
            return Text("ETA -:--:--", style="progress.remaining")
        return Text(("ETA ≤ " if f.get("deadline") is not None else "ETA ") + fmt_clock(eta),
                    style="progress.remaining")


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f} img/s" if task.speed else "", style="cyan")


def photo_bar(enabled: bool) -> Progress | None:
    """A Rich progress bar with rate and ETA on stderr (stdout stays clean for --json), or None."""
    if not enabled:
        return None
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err_console)


@contextlib.contextmanager
def count_bar(description: str, enabled: bool) -> Iterator[ProgressCallback | None]:
    """A `progress(done, total)` callback for the data layer, drawn as one `photo_bar` (None when not `enabled`).
    The bar appears at the first call, so a pass with nothing to decode shows none, and ends with the block."""
    bar = photo_bar(enabled)
    if bar is None:
        yield None
        return
    task = bar.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        bar.start()  # a no-op once started
        bar.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        bar.stop()  # a no-op when it never started


def budget_text(seconds: float) -> str:
    """'2 h 00 min', '1 min 15 s': the budget as parsed, echoed so '2 hours' or '2hours' can be checked."""
    from mwa_cli.report.numbers import fmt_duration

    return fmt_duration(seconds)


class TrainProgress:
    """Maps trainer events onto Rich progress bars (stderr): one bar per run (the demo adds one per stage), with
    ETA, loss, lr, samples/s and memory, and one per photo decoding pass ("images" events: the demo's prepare
    step, a missing image cache). The live display starts at the first bar. Remembers the run folder for the
    words after a second Ctrl-C."""

    def __init__(self, quiet: bool, name_bars: bool = False):
        self.quiet = quiet
        self.name_bars = name_bars  # the demo: each bar named after its run
        self.progress: Progress | None = None
        self.live = False
        self.task = None
        self.cache_task = None
        self.images_task = None
        self.run_dir: Path | None = None
        if not quiet:
            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), EtaColumn(), TextColumn("{task.fields[info]}"),
                                     console=err_console, transient=False)

    def __enter__(self) -> "TrainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live and self.progress is not None:
            self.progress.__exit__(*exc)
            self.live = False

    def print(self, text: str) -> None:
        """A line above the bars (or on stderr before they start)."""
        if self.quiet:
            return
        (self.progress.console if self.live and self.progress is not None else err_console).print(text,
                                                                                                 highlight=False)

    def _start(self) -> None:
        if not self.live and self.progress is not None:
            self.progress.__enter__()
            self.live = True

    def _task(self) -> Task:
        return self._task_of(self.task)

    def _task_of(self, task_id: TaskID) -> Task:
        return next(t for t in self.progress.tasks if t.id == task_id)

    def __call__(self, event: str, data: dict) -> None:
        if event == "setup":
            self.run_dir = Path(data["run_dir"])
        if event == "message" and str(data.get("text", "")).startswith("warning:"):  # shown even with --quiet
            (self.progress.console if self.live and self.progress is not None else err_console).print(
                f"[yellow]{shown(data['text'])}[/]", highlight=False)
            return
        if self.quiet or self.progress is None:
            return
        if event == "setup":
            self.print(f"[bold]{shown(data['method'])}[/] on {shown(data['backbone'])} · {data['device']} · "
                        f"{data['precision']} · batch {data['batch_size']} (micro {data['micro_batch']}) · {data['train_pairs']} pairs · "
                        f"trainable {data['trainable_params']:,} / {data['total_params']:,} "
                        f"({100 * data['trainable_params'] / max(1, data['total_params']):.2f} %)"
                        + (f", of which vocabulary extension {data['vocab_extension_params']:,}"
                           if data.get("vocab_extension_params") else ""))
            if data.get("budget_s"):
                self.print(f"budget {budget_text(data['budget_s'])} for the whole run, evaluation included")
            self.print(f"run folder: {shown(data['run_dir'])}")
            self._start()
            left = data.get("budget_left_s")
            self.task = self.progress.add_task(
                shown(Path(data["run_dir"]).name) if self.name_bars else "train",
                total=data.get("total_steps"), info="warming up",
                deadline=None if left is None else time.monotonic() + left, first=None, done=False)
        elif event == "images":  # {"description", "done", "total"}: done 0 starts a pass
            if self.images_task is None or data["done"] == 0:
                self._start()
                self.images_task = self.progress.add_task(data["description"], total=data["total"], info="",
                                                          deadline=None, first=(time.monotonic(), 0), done=False)
            t = self._task_of(self.images_task)
            rate = data["done"] / max(1e-9, time.monotonic() - t.fields["first"][0])
            self.progress.update(self.images_task, completed=data["done"], total=data["total"],
                                 info=f"{rate:,.0f} img/s" if data["done"] else "",
                                 done=data["done"] >= data["total"])
        elif event == "cache":
            if self.cache_task is None:
                self.cache_task = self.progress.add_task("feature cache", total=data["total"], info="",
                                                         deadline=None, first=None, done=False)
            self.progress.update(self.cache_task, completed=data["done"], total=data["total"])
        elif event == "plan" and self.task is not None:
            self.progress.update(self.task, total=data["total_steps"])
        elif event == "step" and self.task is not None:
            info = (f"loss {data['loss']:.4f} · lr {data['lr']:.2e} · {data['samples_per_s']:.1f} samples/s · "
                    f"{data['mem_gib']:.2f} GiB")
            first = self._task().fields.get("first") or (time.monotonic(), int(data["step"]))
            self.progress.update(self.task, completed=data["step"], total=data.get("total_steps"), info=info,
                                 first=first)
        elif event == "eval":
            from mwa_cli.eval.label_level import PROTOCOL_WORDS

            words = PROTOCOL_WORDS.get(str(data.get("protocol")), PROTOCOL_WORDS["instance"])
            self.print(f"  eval step {data['step']} {data['split']}: RSUM {data['rsum']:.2f} ({words}; "
                       f"i2t R@1 {data['i2t_r1']:.1f}, t2i R@1 {data['t2i_r1']:.1f})")
        elif event == "best":
            self.print(f"  [green]best so far[/]: step {data['step']}, val RSUM {data['val_rsum']:.2f}"
                       + (f" ({data['protocol']})" if data.get("protocol") else ""))
        elif event == "message":
            self.print(f"[cyan]·[/] {shown(data['text'])}")
        elif event == "done" and self.task is not None:
            t = self._task()
            step = int(data["step"]) if data.get("step") is not None else int(t.completed)
            status = str(data.get("status", ""))
            self.progress.update(self.task, completed=step, total=data.get("total_steps") or t.total or step or 1,
                                 done=True, ended="done" if status == "completed" else status, info="")


def second_interrupt_message(run_dir: Path | None) -> tuple[str, str]:
    """(message, hint) after a second Ctrl-C stopped a run at once, without writing a checkpoint."""
    from mwa_cli.train.checkpoint import find_checkpoint

    if run_dir is None:
        return ("stopped at once (second Ctrl-C) before the run folder was made: nothing was written",
                "run the same command again to start the run")
    ckpt = find_checkpoint(run_dir)
    if ckpt is None:
        return (f"stopped at once (second Ctrl-C) without writing a checkpoint; {run_dir} has none yet, so the run "
                "cannot be resumed", "run the same command again to start over (the run folder is reused)")
    step = _checkpoint_step(ckpt)
    at = f"step {step}" if step is not None else "an earlier step"
    return (f"stopped at once (second Ctrl-C) without writing a new checkpoint; the last checkpoint ({at}) in "
            f"{ckpt} is intact", f"resume from it with: mwa train --resume {run_dir}")


def _checkpoint_step(ckpt: Path) -> int | None:
    import json

    try:
        return int(json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
