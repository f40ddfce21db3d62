"""The training run behind `mwa train`: `train(config, progress=None) -> RunResult`.

`train()` builds the run with `setup.setup_run` (config, device, data, model, trainer, run folder, planner) and
hands it to `TrainingRun`, whose `run()` reads top-down: start (feature cache, zero-shot check, loader), the loop
(`_before_step` → `_train_step` → `_after_step`: budget planning, logging, validation checks, checkpoints,
signals), then `_interrupted()` or `_final()` (best adapter, final evaluation, artefacts). The run's changing
state lives in one object each: the step plan (`StepPlan`), the time totals (`RunClocks`, train/clocks.py), the
config.json record (`ConfigRecord`, its one writer), the budget planner and the best-checkpoint keeper.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mwa_cli import __version__
from mwa_cli.errors import EXIT_INTERNAL, EXIT_NONFINITE, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, MwaError
from mwa_cli.eval.label_level import PROTOCOL_WORDS, primary_protocol, primary_recall, primary_rsum, protocol_words
from mwa_cli.outdir import released_on_exit
from mwa_cli.runtime import amp_dtype
from mwa_cli.train import checkpoint as ckpt_mod
from mwa_cli.train.budget import EndRecord, Measurement, default_schedule_of, short_schedule_note
from mwa_cli.train.clocks import RunClocks
from mwa_cli.train.collapse import CollapseWatch
from mwa_cli.train.compile_policy import compile_setting
from mwa_cli.train.compile_policy import describe as describe_compile
from mwa_cli.train.config import TrainConfig
from mwa_cli.train.data import close_loader, make_loader, open_cache_array
from mwa_cli.train.dist.context import reseed_rank
from mwa_cli.train.dist.env import start_time_monotonic
from mwa_cli.train.dist.rank0 import on_main
from mwa_cli.train.measure import device_name, peak_mem_gib, process_age_s
from mwa_cli.train.setup import ProgressFn, RunData, RunEnv, RunSetup, loader_workers, setup_run
from mwa_cli.train.signals import SignalFlag, agree_stop
from mwa_cli.train.trainer import Trainer
from mwa_cli.train.val_schedule import step_checks

if TYPE_CHECKING:
    from mwa_cli.eval.bootstrap import QueryRanks
    from mwa_cli.eval.evaluate import SplitData
    from mwa_cli.train.feature_cache import FeatureCache

MIN_STOP_FRACTION = 0.5  # early stopping never before half the planned steps (docs/decisions.md: a dip-then-climb curve)


class NonFiniteLoss(MwaError):
    exit_code = EXIT_NONFINITE


class StopRun(Exception):
    """Raised by a progress callback on a "validation" event to end the run there, cleanly: the best adapter is
    published and evaluated as at any other end, and `status` ("pruned": a tuner's early stop) is the run's status
    in timing.json and RunResult instead of "completed"."""

    def __init__(self, reason: str, status: str = "pruned"):
        super().__init__(reason)
        self.reason, self.status = reason, status


@dataclass
class RunResult:
    run_dir: Path
    status: str  # completed | pruned (a StopRun) | interrupted | nonfinite
    exit_code: int
    steps: int
    total_steps: int
    message: str = ""
    resume_command: str | None = None
    eval: dict | None = None
    timing: dict = field(default_factory=dict)
    last_loss: float | None = None

    def to_dict(self) -> dict:
        return {"run_dir": str(self.run_dir), "status": self.status, "exit_code": self.exit_code,
                "steps": self.steps, "total_steps": self.total_steps, "message": self.message,
                "resume_command": self.resume_command, "eval": self.eval, "timing": self.timing,
                "last_loss": self.last_loss}


def train(config: TrainConfig, progress: ProgressFn | None = None, *, count_from_process_start: bool = False
          ) -> RunResult:
    """Run (or resume) one training run; see the module docstring. Never calls sys.exit.

    `progress(event, data)` receives "setup", "plan", "step", "eval", "validation", "checkpoint", "message", "done"
    events; on "validation" (after every check on the val split) it may raise `StopRun` to end the run there.
    With `count_from_process_start` (the CLI), the budget clock starts when the process started, so interpreter
    and import time count too. The run's lock is released when it returns or fails.
    """
    with released_on_exit():
        return _train(config, progress, count_from_process_start=count_from_process_start)


def _train(config: TrainConfig, progress: ProgressFn | None, *, count_from_process_start: bool) -> RunResult:
    t_start = time.monotonic() - (process_age_s() if count_from_process_start else 0.0)
    launched = start_time_monotonic() if count_from_process_start else None
    if launched is not None:
        t_start = launched  # started by `mwa train --devices N`: count from the launcher
    return TrainingRun(setup_run(config, progress, t_start)).run()


class TrainingRun:
    """The loop of one run over its `RunSetup`; `run()` trains, checks, checkpoints and finishes it."""

    # set by _start, once the feature cache and the zero-shot check are done
    interval_loss: torch.Tensor  # the loss summed on the device since the last sync point
    interval_steps: int
    t_interval: float  # start of the logging interval (samples/s counts training time only)
    last_ckpt_time: float
    measure: Measurement | None  # budget: the warm-up step-time measurement until the first plan
    eval_steps: set[int]  # the steps with a planned validation check

    def __init__(self, setup: RunSetup):
        self.setup = setup
        self.cfg, self.env, self.data, self.folder = setup.cfg, setup.env, setup.data, setup.folder
        self.backbone, self.trainer, self.batches = setup.backbone, setup.training.trainer, setup.training.batches
        self.batch_size, self.budget_s, self.limit = setup.training.batch_size, setup.budget_s, setup.limit
        self.run_dir = setup.folder.run
        # the run's changing state, each value in one object: steps planned, time totals, budget, best check
        self.plan, self.clocks, self.planner, self.keeper = setup.plan, setup.clocks, setup.planner, setup.keeper
        self.message, self.emit = setup.env.message, setup.env.emit
        self.step = self.trainer.step_count
        self.stop_reason: str | None = None
        self.last_check_step: int | None = None
        self.last_loss: float | None = None
        resumed = setup.resume_state
        self.last_good_ckpt_step = int(resumed["trainer"]["step"]) if resumed is not None else None
        self.status = "completed"
        self.stop_request: StopRun | None = None  # a progress callback's StopRun, acted on before the next step
        self.val_at_left: list[float] = []  # the training times of `val_at` not reached yet (set by _start)
        self.fcache: FeatureCache | None = None
        self.it: Iterator[dict] | None = None
        self.collapse = None  # softmax loss only: the sigmoid loss has no single "everything equal" value
        if getattr(self.backbone.model, "loss_kind", "softmax") == "softmax":
            self.collapse = CollapseWatch(  # micro-batches keep the whole batch's columns (Trainer, GradCache)
                self.batch_size, after_step=max(1, round(self.cfg.warmup_frac * max(1, self.plan.total_steps))),
                lr=self.cfg.lr)
        self.flag = SignalFlag()

    # ------------------------------------------------------------------ the run, top-down
    def run(self) -> RunResult:
        self.flag.install()
        try:
            self._start()
            try:
                self._loop()
                self.clocks.count_training()
                self.last_loss = self._check_interval(self.step) or self.last_loss
            except NonFiniteLoss as exc:
                self.clocks.count_training()
                self._write_timing("nonfinite")
                return RunResult(self.run_dir.path, "nonfinite", EXIT_NONFINITE, self.trainer.step_count,
                                 int(self.plan.total_steps),
                                 message=exc.message + (f"\n  hint: {exc.hint}" if exc.hint else ""),
                                 timing={}, last_loss=None)
            finally:
                close_loader(self.it)
            self.folder.config.write_final_plan()  # small refits are not written each time
            if (self.stop_reason is None and self.budget_s is not None and self.limit is not None
                    and self.step >= self.limit and self.trainer.trains):
                self.stop_reason = f"the --steps/--epochs limit ({self.limit} steps) ended the run before its budget"
                self.message(self.stop_reason)
            if self.env.dctx.enabled:  # the same decision on every rank, also for a signal after the last agreement
                self.flag.signum, _ = self.env.dctx.agree(self.flag.signum)
            if self.flag.signum is not None:
                return self._interrupted()
            return self._final()
        finally:
            self.flag.restore()
            if self.fcache is not None:
                self.fcache.close()

    def _start(self) -> None:
        """Feature cache, the step-0 validation check (zero-shot point), the loop's clocks and the data loader."""
        trainer, cfg, device, plan, planner = self.trainer, self.cfg, self.env.device, self.plan, self.planner
        if self.setup.training.use_cache:  # the frozen layers run once per image and caption, not once per epoch
            self.fcache = _fill_feature_cache(trainer, cfg, self.data, self.run_dir.path, self.env)
            trainer.enable_compile(compile_setting(cfg.compile, cfg.compile_mode, cfg.method, device.type,
                                                   cfg.budget_s, self.backbone.binfo.name))
        self.step = trainer.step_count
        if trainer.compiled and trainer.trains and plan.goes_on(self.step):
            self._compile_up_front()
        if self.setup.resume_state is None and self.data.val is not None and cfg.val_evals != 0 and trainer.trains:
            self._validate(0)

        self.interval_loss = torch.zeros((), device=device)
        self.interval_steps = 0
        self.t_interval = time.monotonic()
        self.last_ckpt_time = time.monotonic()
        self.measure = planner.new_measurement(device.type, max_steps=self.limit) if not plan.planned else None
        self.eval_steps = planner.eval_steps(plan.total_steps) if plan.planned else set()
        if self._checks_by_step():  # no budget: the same steps checked (and published) every run (val_schedule.py)
            self.eval_steps = step_checks(plan.total_steps, self.batch_size, planner.val_items, planner.val_share)
        self.clocks.mark_training()
        # resumed: the times reached before the checkpoint were checked then
        saved = self.clocks.wall_prev_s - self.clocks.total("eval")
        self.val_at_left = sorted(t for t in cfg.val_at if t > saved)
        if plan.planned and self.budget_s is not None:  # resumed: re-measure from here, warm-up included
            planner.start_rate(self.step, self.clocks.total("train"))
        if trainer.trains and plan.goes_on(self.step):
            loader = make_loader(self.batches, self.step, workers=loader_workers(cfg, device),
                                 pin_memory=device.type == "cuda")
            self.it = iter(loader)

    def _compile_up_front(self) -> None:
        """Compile before the first step and the step-0 check (Trainer.warm_compile), so the budget's step-time
        measurement sees steady steps; the time is simply spent, and said once."""
        batch = self.batches[self.step]  # the first step's own batch, as the loader will give it
        if self.fcache is not None:
            batch = self.fcache.inputs(batch, self.env.device)
        eval_batch = self.cfg.eval_batch_size if self.data.val is not None and self.cfg.val_evals != 0 else 0
        seconds = self.trainer.warm_compile(batch, self.batches.other_widths(batch), eval_batch=eval_batch)
        self.clocks.add("compile", seconds)
        self.message(f"compiling the layers: {seconds:.0f} s, paid once per run (--no-compile trains without)")

    def _loop(self) -> None:
        """Steps until the plan, a limit, a budget stop, early stopping or a signal ends training."""
        while self.it is not None and self.plan.goes_on(self.step):
            action, time_due = self._before_step()
            if action == "stop":
                break
            if action == "again":
                continue
            self._train_step()
            if self.measure is not None and self._measurement_done():
                if self._plan_from_measurement():
                    break
                continue
            if self._after_step(time_due):
                break

    # ------------------------------------------------------------------ one step
    def _before_step(self) -> tuple[str, bool]:
        """Decide, the same on every rank, whether to stop, to run a due validation check first ("again"), or to
        train ("train"); also returns whether a time-based checkpoint is due."""
        planner, plan, step = self.planner, self.plan, self.step
        must_stop = plan.planned and self.budget_s is not None and planner.must_stop(step, plan.total_steps,
                                                                                           self.eval_steps)
        time_due = time.monotonic() - self.last_ckpt_time >= self.cfg.checkpoint_minutes * 60
        self.clocks.count_training()
        val_due = (plan.planned and self.data.val is not None and self.last_check_step != step and
                   (self._asked_check_due() or not self._checks_by_step()
                    and planner.val_due(self.clocks.total("val_check"), self.clocks.elapsed())))
        stop_signal, must_stop, time_due, val_due, requested = agree_stop(self.env.dctx, self.flag, must_stop,
                                                                          time_due, val_due,
                                                                          self.stop_request is not None)
        if stop_signal is not None:
            return "stop", time_due
        if requested:  # a progress callback's StopRun at the last check (rank 0's, agreed by every rank)
            request = self.stop_request or StopRun("stopped by rank 0's progress callback")
            self.stop_reason, self.status = request.reason, request.status
            self.message(self.stop_reason)
            return "stop", time_due
        if val_due and not must_stop:  # cost-aware check, between steps (the weights of `step`)
            if self._timed_check(step):
                return "stop", time_due
            return "again", time_due
        if must_stop:
            self.stop_reason = (f"stopping at step {step} of {plan.total_steps}: the remaining budget is needed for "
                                "the final evaluation and artefacts")
            self.message(self.stop_reason)
            return "stop", time_due
        return "train", time_due

    def _asked_check_due(self) -> bool:
        """A check at a training time `val_at` asks for, now reached, that still fits before the budget's end
        (each time is checked once: a check that no longer fits is dropped)."""
        if not self.val_at_left:  # every step asks: most runs have no such times
            return False
        reached = self.clocks.elapsed_without_evals()
        if self.val_at_left[0] > reached:
            return False
        self.val_at_left = [t for t in self.val_at_left if t > reached]
        return self.planner.check_fits()

    def _checks_by_step(self) -> bool:
        """Cost-aware checks without a time budget go by step, not by the clock (docs/decisions.md)."""
        return (self.plan.planned and self.budget_s is None and self.data.val is not None
                and self.planner.cost_aware)

    def _train_step(self) -> None:
        """The next batch (its wait counted), then one optimizer step; the loss stays on the device."""
        assert self.it is not None  # the loop runs only with a loader
        with self.clocks.timing("data_wait"):
            try:
                batch = next(self.it)
            except Exception as exc:  # noqa: BLE001 - a worker's error or death, or the loader's timeout
                raise loader_failure(exc, self.step + 1,
                                     self.folder.resume_cmd if self.last_good_ckpt_step is not None else None
                                     ) from None
            if self.fcache is not None:
                batch = self.fcache.inputs(batch, self.env.device)
        reseed_rank(self.cfg.seed, self.step)  # ranks > 0: this step's own dropout / drop-path draws
        loss = self.trainer.step(batch)
        self.step = self.trainer.step_count
        self.interval_loss += loss
        self.interval_steps += 1
        self.clocks.count_samples(self.batch_size)

    def _measurement_done(self) -> bool:
        """Budget: has the warm-up step-time measurement finished (rank 0's clock decides)?"""
        assert self.measure is not None
        done = self.measure.tick(self.step, self.trainer.synchronize)
        if self.env.dctx.enabled:
            done = self.env.dctx.broadcast_object(done)
        return done

    def _plan_from_measurement(self) -> bool:
        """Budget: checkpoint, measure a warm check, then plan the run's steps and fit the schedule to them; True
        when the plan ends the run here."""
        trainer, planner, cfg, step, measure = self.trainer, self.planner, self.cfg, self.step, self.measure
        assert measure is not None
        self._log_train(step)  # syncs and checks the loss is finite before the checkpoint
        self.clocks.count_training()
        secs = self._checkpoint(step)
        self.last_good_ckpt_step = step
        self.last_ckpt_time = time.monotonic()
        planner.observe_checkpoint(secs)
        if self.data.val is not None and cfg.val_evals != 0 and not planner.warm_eval_seen:
            self._validate(step)  # the step-0 check was the process's first (cold): measure a warm one
        total_steps, why = on_main(lambda: planner.plan(
            step, measure.step_time, self.limit, time.monotonic(),
            checks_s=self.clocks.total("val_check"), elapsed_s=self.clocks.elapsed()))
        self.plan.fix(total_steps)
        trainer.schedule.fit(max(1, total_steps))
        self.measure = None
        self.eval_steps = planner.eval_steps(total_steps)
        self.emit("plan", {"total_steps": total_steps, "reason": why, "step_time_s": planner.step_time,
                           "budget_s": self.budget_s})
        self.message(why)
        config = self.folder.config
        default = default_schedule_of(config.record)
        if note := short_schedule_note(total_steps, default):  # said when the plan is made, not at the end
            self.message(note)
        config.set_plan({"total_steps": total_steps, "step_time_s": planner.step_time,
                         "warmup_steps": trainer.schedule.warmup_steps, "reason": why,
                         "schedule": trainer.schedule.kind, "refits": 0,
                         "default_steps": default[0] if default else None})
        self.clocks.mark_training()
        planner.start_rate(step, self.clocks.total("train"))
        return step >= total_steps

    def _after_step(self, time_due: bool) -> bool:
        """Logging, re-planning, a planned validation check and a due checkpoint; True when early stopping ends
        the run."""
        cfg, dctx, plan, step = self.cfg, self.env.dctx, self.plan, self.step
        logged = step % cfg.log_every == 0 or plan.ended_at(step) or step == 1
        if logged:
            self._log_train(step)
        if plan.planned and self.budget_s is not None and (logged or (self.env.device.type != "cuda"
                                                                            and not dctx.enabled)):
            # refit the plan to the step time measured over the recent window (CPU: host clock is exact,
            # every step; CUDA/DDP: at logging steps, which sync anyway)
            self.clocks.count_training()
            new_total = on_main(lambda: self._refit(step))
            if new_total is not None:
                plan.total_steps = new_total
                self.trainer.schedule.fit(max(1, new_total), at_step=step)
                self.eval_steps = {e for e in self.planner.eval_steps(new_total) if e > step} | {
                    e for e in self.eval_steps if e <= step}
        is_last = plan.ended_at(step)
        if step in self.eval_steps and not is_last and self.data.val is not None and self._timed_check(step):
            return True
        due = (cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0) or (
            cfg.checkpoint_every <= 0 and (time_due if dctx.enabled else
                                           time.monotonic() - self.last_ckpt_time >= cfg.checkpoint_minutes * 60))
        if due and not is_last:
            self._check_interval(step, consume=False)  # never checkpoint/evaluate non-finite weights
            self.clocks.count_training()
            secs = self._checkpoint(step)
            self.planner.observe_checkpoint(secs)
            self.last_good_ckpt_step = step
            self.last_ckpt_time = time.monotonic()
            self.clocks.mark_training()
            self.t_interval += secs  # samples/s counts training time only
        return False

    # ------------------------------------------------------------------ the end of a run
    def _interrupted(self) -> RunResult:
        """A signal stopped the run: a resumable checkpoint, timing.json, and how to resume."""
        step, run, plan, resume_cmd = self.step, self.run_dir, self.plan, self.folder.resume_cmd
        self._check_weights(step)  # a resumable checkpoint of NaN weights would resume nothing
        self._checkpoint(step)
        self.env.dctx.barrier()  # no rank leaves before rank 0 has written the checkpoint
        code = EXIT_SIGTERM if self.flag.signum == signal.SIGTERM else EXIT_SIGINT
        name = "SIGTERM" if self.flag.signum == signal.SIGTERM else "Ctrl-C (SIGINT)"
        timing = self._write_timing("interrupted")
        where = (f"stopped at step {step} of {plan.total_steps}" if plan.planned else
                 f"stopped during warm-up (step {step}), before the step plan was made")
        msg = (f"{name}: {where}; a resumable checkpoint is in {run.checkpoint_root / 'last'}. "
               f"Resume with: {resume_cmd}")
        self.emit("done", {"status": "interrupted", "message": msg, "step": step,
                           "total_steps": int(plan.total_steps) if plan.planned else None})
        return RunResult(run.path, "interrupted", code, step, int(plan.total_steps), message=msg,
                         resume_command=resume_cmd, timing=timing, last_loss=self.last_loss)

    def _final(self) -> RunResult:
        """The final evaluation and artefacts: last check, best adapter published, evaluated as `mwa eval` would."""
        from mwa_cli.adapters.io import save_adapter

        step, run, keeper, data, env = self.step, self.run_dir, self.keeper, self.data, self.env
        end = EndRecord(self.planner.reserve_parts() if self.budget_s is not None else None)
        if self.trainer.trains and self.last_good_ckpt_step != step:
            # an interruption from here on resumes straight into the final evaluation
            end.taken["checkpoint_s"] = self._checkpoint(step)
            self.last_good_ckpt_step = step
        self.flag.restore()  # from here on, Ctrl-C interrupts the (short) finalisation directly
        if data.val is not None and self.last_check_step != step:
            result, _, end.taken["val_s"] = self._run_eval(data.val, "val", step)
            self._log_eval(result, step)
            keeper.observe(step, primary_rsum(result), self.clocks.elapsed_without_evals(), self._best_weights)
        self._publish_best(step)
        with self.clocks.timing("checkpoint") as lap:
            if env.dctx.is_main:
                save_adapter(run.path, self.backbone.model, self.backbone.applied, self.backbone.binfo)
        end.taken["publish_s"] = lap.seconds
        with end.timing("final_eval_s"):
            result, top, ranks = final_evaluation(run.path, data.final_split, env.device, env.precision,
                                                  self.cfg.eval_batch_size, self.clocks)
        run.write_eval(result, top, ranks=ranks)
        timing = self._write_timing(self.status, end)
        protocol, fig = primary_recall(result)
        msg = (f"finished {step} steps in {timing['wall_s']:.1f} s; {data.final_split} RSUM {fig['rsum']:.2f} "
               f"({PROTOCOL_WORDS[protocol]})")
        if self.stop_reason:
            msg += f" ({self.stop_reason})"
        if keeper.step is not None and keeper.step != step:
            msg += (f"; the published adapter is the best one, from step {keeper.step} (val RSUM {keeper.rsum:.2f}, "
                    f"{protocol_words(data.val)})")
        self.emit("done", {"status": self.status, "message": msg, "eval": result, "timing": timing,
                           "step": step, "total_steps": step})
        return RunResult(run.path, self.status, EXIT_OK, step, int(self.plan.total_steps), message=msg, eval=result,
                         timing=timing, last_loss=self.last_loss)

    # ------------------------------------------------------------------ evaluations
    def _run_eval(self, split_data: SplitData, split_name: str, step: int, *, topk: bool = False
                  ) -> tuple[dict, dict | None, float]:
        from mwa_cli.eval.evaluate import evaluate_model, evaluation_numerics

        data, env = self.data, self.env

        def evaluate() -> tuple[dict, dict | None]:
            with evaluation_numerics():
                return evaluate_model(self.backbone.model, data.tok, data.data_dir, split_name,
                                      device=env.device, dtype=amp_dtype(env.precision),
                                      batch_size=self.cfg.eval_batch_size, cache=data.cache, split_data=split_data,
                                      topk=topk, identity=data.identity)

        with self.clocks.timing("eval") as lap:
            result, top = on_main(evaluate)  # rank 0 evaluates, the others wait
        return result, top, lap.seconds

    def _log_eval(self, result: dict, step: int) -> None:
        protocol, fig = primary_recall(result)  # one protocol per number: the one the best adapter is kept by
        row = {"kind": "eval", "step": step, "split": result["split"], "protocol": protocol, "rsum": fig["rsum"],
               "i2t_r1": fig["i2t"]["r1"], "i2t_r5": fig["i2t"]["r5"], "i2t_r10": fig["i2t"]["r10"],
               "t2i_r1": fig["t2i"]["r1"], "t2i_r5": fig["t2i"]["r5"], "t2i_r10": fig["t2i"]["r10"],
               "mean_recall": fig["mean_recall"], "instance_rsum": result["rsum"],
               "time_s": round(self.clocks.elapsed(), 3),
               "time_no_val_s": round(self.clocks.elapsed_without_evals(), 3)}  # time to quality excludes checks
        self.run_dir.append_metrics(row)
        self.emit("eval", row)

    def _best_weights(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().to("cpu", copy=True) for n, p in self.backbone.applied.trainable_named_parameters()}

    def _validate(self, step_now: int) -> None:
        """A validation check during training: logged, timed (its share of the wall time), best kept."""
        val, keeper = self.data.val, self.keeper
        assert val is not None
        result, _, secs = self._run_eval(val, "val", step_now)
        self.planner.observe_eval(secs, val.n_images + val.n_captions, warm=step_now > 0)
        self.clocks.add("val_check" if step_now > 0 else "val_zero_shot", secs)  # step 0 also measures the cost
        self._log_eval(result, step_now)
        self.last_check_step = step_now
        if keeper.observe(step_now, primary_rsum(result), self.clocks.elapsed_without_evals(), self._best_weights):
            self.emit("best", dict(keeper.record(), protocol=protocol_words(val)))
        try:
            self.emit("validation", {"step": step_now, "val_primary": primary_rsum(result),
                                     "elapsed_s": self.clocks.elapsed_without_evals()})
        except StopRun as request:  # ends the run before the next step
            self.stop_request = request

    def _timed_check(self, step_now: int) -> bool:
        """A validation check between steps (its time is not training time); True when early stopping says
        the run is done (`stop_reason` set and said)."""
        self._check_interval(step_now, consume=False)  # never evaluate non-finite weights
        self.clocks.count_training()
        t_eval = time.monotonic()
        self._validate(step_now)
        self.clocks.mark_training()
        self.t_interval += time.monotonic() - t_eval
        if self.keeper.should_stop() and self._stop_allowed(step_now):
            self.stop_reason = self.keeper.reason()
            self.message(self.stop_reason)
            return True
        return False

    def _stop_allowed(self, step_now: int) -> bool:
        """Early stopping waits for the warm-up and half of the planned steps: a high learning rate often
        costs recall before it pays (full fine-tuning dips below zero-shot at first)."""
        return step_now >= max(self.trainer.schedule.warmup_steps, MIN_STOP_FRACTION * self.plan.total_steps)

    def _publish_best(self, step_now: int) -> None:
        """Put the best validation checkpoint's weights back: the published adapter is the best one seen."""
        keeper = self.keeper
        if keeper.step is None or keeper.step == step_now or keeper.weights is None:
            return
        params = dict(self.backbone.applied.trainable_named_parameters())
        with torch.no_grad():
            for name, value in keeper.weights.items():
                params[name].copy_(value.to(params[name].device, params[name].dtype))
        self.message(f"publishing the best adapter: step {keeper.step} (val RSUM {keeper.rsum:.2f}, "
                     f"{protocol_words(self.data.val)}), not the last "
                     f"step {step_now}")

    # ------------------------------------------------------------------ loss, logging, planning
    def _check_interval(self, step_now: int, consume: bool = True) -> float | None:
        """Sync point: read the interval's mean loss; stop on a non-finite value (consume: start a new one)."""
        if self.interval_steps == 0:
            self._check_weights(step_now)
            return None
        # global batch's loss, same on all ranks
        value = float(self.env.dctx.mean(self.interval_loss).item()) / self.interval_steps
        if not math.isfinite(value):
            raise NonFiniteLoss(
                f"the loss became {value} between steps {step_now - self.interval_steps + 1} and {step_now}: "
                f"training stopped; {self._kept()}", hint=nonfinite_hint(self.cfg, "the loss"))
        self._check_weights(step_now)
        if not consume:
            return value
        self.interval_loss = torch.zeros((), device=self.env.device)
        self.interval_steps = 0
        return value

    def _check_weights(self, step_now: int) -> None:
        """Stop when a trainable weight is NaN or infinite, although the loss was finite (an optimizer setting
        that overflows the update): they are never checkpointed, evaluated or published. One device sync."""
        params = [p for _, p in self.backbone.applied.trainable_named_parameters()]
        if not params or bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            return
        raise NonFiniteLoss(f"the weights became NaN or infinite by step {step_now}, while the loss was still "
                            f"finite: training stopped; {self._kept()}",
                            hint=nonfinite_hint(self.cfg, "the optimizer's update"))

    def _kept(self) -> str:
        return (f"the last good checkpoint (step {self.last_good_ckpt_step}) is kept in "
                f"{self.run_dir.checkpoint_root / 'last'}" if self.last_good_ckpt_step is not None
                else "no checkpoint had been written yet")

    def _log_train(self, step_now: int) -> None:
        """A metrics.jsonl train row (a sync point: reads the interval's mean loss)."""
        self.clocks.count_training()
        dt = time.monotonic() - self.t_interval
        n_int = self.interval_steps
        value = self._check_interval(step_now)
        if value is None:
            return
        self.last_loss = value
        row = {"kind": "train", "step": step_now, "epoch": round(step_now / self.batches.steps_per_epoch, 4),
               "loss": value, "lr": self.trainer.last_lr,
               "samples_per_s": round(n_int * self.batch_size / dt, 3) if dt > 0 else 0.0,
               "mem_gib": round(peak_mem_gib(self.env.device), 4), "time_s": round(self.clocks.elapsed(), 3)}
        self.run_dir.append_metrics(row)
        self.emit("step", dict(row, total_steps=self.plan.shown()))
        if self.collapse is not None and (note := self.collapse.observe(step_now, value)):
            self.message(note)
        self.t_interval = time.monotonic()
        self.clocks.mark_training()

    def _refit(self, step_now: int) -> int | None:
        """Rank 0: re-measure the step time and re-plan; the new total when it moved by ≥ 1 % (≥ 1 step)."""
        planner, total_steps = self.planner, self.plan.total_steps
        st = planner.observe_progress(step_now, self.clocks.total("train"))
        if st is None:
            return None
        new_total, why = planner.plan(step_now, st, self.limit, time.monotonic(),
                                      evals_left=sum(1 for e in self.eval_steps if e > step_now),
                                      checks_s=self.clocks.total("val_check"), elapsed_s=self.clocks.elapsed())
        new_total = max(new_total, step_now)
        if abs(new_total - total_steps) < max(1.0, 0.01 * total_steps):
            return None
        config = self.folder.config
        config.refit_plan(total_steps=new_total, step_time_s=st, reason=why, replanned_at=step_now)
        if abs(new_total - total_steps) > 0.03 * total_steps:  # say and write the larger moves only
            self.message("re-planned: " + why)
            self.emit("plan", {"total_steps": new_total, "reason": why, "step_time_s": st,
                               "budget_s": self.budget_s})
            config.write()
        return new_total

    # ------------------------------------------------------------------ checkpoints and timing
    def _checkpoint(self, step: int) -> float:
        """Rank 0 writes a resumable checkpoint of `step` (DDP keeps the trainables and optimizer equal on every
        rank); its seconds, 0 on the other ranks."""
        if not self.env.dctx.is_main:
            return 0.0
        plan, root = self.plan, self.run_dir.checkpoint_root
        with self.clocks.timing("checkpoint") as lap:
            state = {"trainer": self.trainer.state_dict(), "rng": ckpt_mod.rng_state(), "acc": self.clocks.state(),
                     "total_steps": int(plan.total_steps), "planned": plan.planned, "batch_size": self.batch_size,
                     "world_size": self.env.dctx.world_size, "planner": self.planner.state(),
                     "best": self.keeper.state_dict()}
            epoch, j = self.batches.position(step)
            ckpt_mod.save_checkpoint(root, state, {"step": step, "epoch": epoch, "batch_in_epoch": j,
                                                   "total_steps": int(plan.total_steps)})
        self.emit("checkpoint", {"step": step, "seconds": lap.seconds, "path": str(root / "last")})
        return lap.seconds

    def _write_timing(self, status: str, end: EndRecord | None = None) -> dict:
        from mwa_cli.adapters.vocab import extension_params

        clocks, trainer, device, batch_size = self.clocks, self.trainer, self.env.device, self.batch_size
        training, val = self.setup.training, self.data.val
        wall = clocks.elapsed()
        train_s = clocks.total("train")
        graphs = trainer.step_graph_record()
        timing = {
            "wall_s": round(wall, 3), "train_s": round(train_s, 3), "eval_s": round(clocks.total("eval"), 3),
            "checkpoint_s": round(clocks.total("checkpoint"), 3), "steps": trainer.step_count,
            "samples": clocks.samples,
            "samples_per_s": round(clocks.samples / train_s, 3) if train_s > 0 else 0.0,
            "device_hours": round(clocks.device_seconds() / 3600.0, 6), "device_type": device.type,
            "device_name": device_name(device), "n_devices": self.env.dctx.world_size,
            "peak_mem_gib": round(peak_mem_gib(device), 4),
            "data_wait_fraction": round(clocks.total("data_wait") / train_s, 4) if train_s > 0 else 0.0,
            "budget_s": self.budget_s, "torch": torch.__version__, "mwa": __version__,
            "trainable_params": training.trainable_params, "total_params": training.total_params,
            "estimated": False, "vocab_extension_params": extension_params(self.backbone.model),
            "status": status, "planned_steps": int(self.plan.total_steps), "batch_size": batch_size,
            "micro_batch": trainer.micro_batch or batch_size, "precision": self.env.precision,
            "feature_cache": self.fcache.describe() if self.fcache is not None else None,
            "val_share": round(clocks.total("val_check") / wall, 4) if wall > 0 else 0.0,
            "val_zero_shot_s": round(clocks.total("val_zero_shot"), 3),
            "best": dict(self.keeper.record(), protocol=primary_protocol(val.captions) if val else None),
            "stop_reason": self.stop_reason,
            "layers": describe_compile(trainer.compiled, graphs is not None),
            "step_graph": graphs, "compile_s": round(clocks.total("compile"), 3),
        }
        if end is not None and end.reserved is not None:
            timing["end"] = end.record()
        self.run_dir.write_timing(timing)
        return timing


def final_evaluation(run_path: Path, split: str, device: torch.device, precision: str, batch_size: int,
                     clocks: RunClocks) -> tuple[dict, dict | None, QueryRanks | None]:
    """The run's number: its published adapter loaded into a fresh model and evaluated by `evaluate_target`, the
    code `mwa eval RUN` runs, with the same precision and batch size (rank 0; the other ranks wait)."""
    from mwa_cli.eval.evaluate import evaluate_target

    def run() -> tuple[dict, dict | None, QueryRanks | None]:
        result, top, _, ranks = evaluate_target(run_path, split=split, device=str(device), precision=precision,
                                                batch_size=batch_size)
        return result, top, ranks

    with clocks.timing("eval"):
        if device.type == "cuda":
            torch.cuda.empty_cache()
        result, top, ranks = on_main(run)
    return result, top, ranks


def nonfinite_hint(cfg: TrainConfig, what: str) -> str:
    """What to change after `what` became non-finite: an option that is itself not a finite number, when one is;
    else the settings that make an update overflow."""
    odd = [f"--{k.replace('_', '-')} {v}" for k, v in vars(cfg).items()
           if isinstance(v, float) and not math.isfinite(v)]
    if odd:
        return f"{', '.join(odd)} is not a finite number: start a new run with a finite value"
    return (f"{what} overflowed: start a new run with a lower --lr (it was {cfg.lr:g}) or --weight-decay (it was "
            f"{cfg.weight_decay:g}), or with --precision fp32")


def loader_failure(exc: BaseException, step: int, resume_cmd: str | None) -> MwaError:
    """A clear error for a data-loader failure at `step`: what failed, and how to go on."""
    if isinstance(exc, MwaError) and exc.hint:  # already says what failed and what to do (a loader without workers)
        return exc
    from mwa_cli.env_errors import explain

    known = explain(exc)  # out of memory, a full or read-only disk: said as such, not as a loader failure
    if known is not None:
        return known
    text = str(exc).strip()
    if "Original Traceback" in text:  # a worker's exception: keep its first and last lines, not the traceback
        lines = [x for x in text.splitlines() if x.strip()]
        text = f"{lines[0]} {lines[-1].strip()}"
    what = f"loading the training batch of step {step} failed ({type(exc).__name__}: {text[:400]})"
    hint = (f"the last checkpoint is kept; after fixing the cause, resume with: {resume_cmd}" if resume_cmd
            else "no checkpoint had been written yet; after fixing the cause, start the run again")
    return MwaError(what, hint=hint + " (`--workers 0` loads in the training process, which shows the error "
                    "without worker processes)", exit_code=EXIT_INTERNAL)


def _fill_feature_cache(trainer: Trainer, cfg: TrainConfig, data: RunData, run_path: Path, env: RunEnv
                        ) -> FeatureCache:
    """Fill the feature cache of the train split (progress events "cache"), and say what it holds."""
    from mwa_cli.models.preprocess import to_pixels
    from mwa_cli.train.dist.cache_share import CacheShare
    from mwa_cli.train.dist.context import get as dist_context
    from mwa_cli.train.feature_cache import fill_feature_cache

    size = trainer.image_size
    k = trainer.feature_start
    pairs = data.pairs
    env.message(f"feature cache: layers 0-{k - 1} are frozen, so their output is computed once per training image "
                f"and caption; images are used whole (no random crop or flip) so the cache stays valid every epoch")
    fc = fill_feature_cache(
        trainer.model, k, open_cache_array(data.data_dir, size, len(data.cache.ids)), pairs.image_rows,
        pairs.input_ids, pairs.padding_mask, lambda u8: to_pixels(u8, size), device=trainer.device,
        dtype=amp_dtype(env.precision), location=cfg.feature_cache, folder=run_path, batch_size=cfg.eval_batch_size,
        progress=lambda done, total: env.emit("cache", {"done": done, "total": total}),
        share=CacheShare(dist_context()))
    d = fc.describe()
    env.message(f"feature cache: {d['images']} images + {d['captions']} captions, {d['gib']:.2f} GiB in "
                f"{d['location'].upper() if d['location'] in ('gpu', 'ram') else 'a file in the run folder'}, "
                f"filled in {d['fill_s']:.1f} s")
    return fc
