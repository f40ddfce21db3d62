"""`python -m fault_mwa ...`: the mwa command line with faults injected by the tests (never by production code).

The faults come from the JSON in FAULT_SPEC (read here, in test code only):
  {"worker_raise_at": S}          a DataLoader worker raises IndexError while loading the batch of (1-based) step S
  {"rank_exit_at": S, "rank": R}  process R dies (os._exit(77), a code mwa never uses, like a crash) before optimizer step S
  {"rank_raise_at": S, "rank": R} process R raises RuntimeError before optimizer step S
  {"step_delay": 0.3}             every optimizer step sleeps (so a signal lands mid-run)
  {"ckpt_pause": 3}               a checkpoint sleeps between writing its files and publishing them (SIGKILL there)
  {"final_eval_delay": 30}        the final evaluation starts by sleeping (a signal lands in it)
  {"stamp": PATH}                 the moment a fault fires is written to PATH (time.time())
With `--devices N`, the launcher starts its ranks through this module too, so they carry the same faults.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

import torch

SPEC = json.loads(os.environ.get("FAULT_SPEC") or "{}")


def _stamp() -> None:
    if SPEC.get("stamp"):
        with open(SPEC["stamp"], "a", encoding="utf-8") as f:
            f.write(f"{time.time()}\n")


def _patch() -> None:
    from mwa_cli.train import launcher
    from mwa_cli.train.data import TrainBatches
    from mwa_cli.train.trainer import Trainer

    launcher.launch = functools.partial(launcher.launch, module="fault_mwa")

    if "worker_raise_at" in SPEC:
        original_getitem = TrainBatches.__getitem__

        def getitem(self, step):
            if int(step) + 1 == int(SPEC["worker_raise_at"]) and torch.utils.data.get_worker_info() is not None:
                _stamp()
                raise IndexError("injected fault: index 1144097184 is out of bounds for axis 0 with size 704")
            return original_getitem(self, step)

        TrainBatches.__getitem__ = getitem

    original_step = Trainer.step
    rank = int(os.environ.get("RANK", "0"))

    def step(self, batch):
        nxt = self.step_count + 1
        if SPEC.get("rank", 0) == rank:
            if nxt == SPEC.get("rank_exit_at"):
                _stamp()
                os._exit(77)
            if nxt == SPEC.get("rank_raise_at"):
                _stamp()
                raise RuntimeError("injected fault in a training process")
        if SPEC.get("step_delay"):
            time.sleep(float(SPEC["step_delay"]))
        return original_step(self, batch)

    Trainer.step = step

    if SPEC.get("final_eval_delay"):
        from mwa_cli.train import loop

        original_final = loop.final_evaluation

        def final_evaluation(*args, **kwargs):
            _stamp()
            time.sleep(float(SPEC["final_eval_delay"]))
            return original_final(*args, **kwargs)

        loop.final_evaluation = final_evaluation

    if SPEC.get("ckpt_pause"):
        from mwa_cli import fileio

        original_fsync_dir = fileio.fsync_dir

        def fsync_dir(path):
            original_fsync_dir(path)
            if Path(path).name.startswith(fileio.TEMP_DIR_PREFIX):  # the new checkpoint is written, not published
                time.sleep(float(SPEC["ckpt_pause"]))

        fileio.fsync_dir = fsync_dir


if __name__ == "__main__":
    _patch()
    from mwa_cli.cli import main

    sys.argv[0] = "mwa"
    main()
