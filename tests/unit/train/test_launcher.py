"""The launcher's failure report: data for the command to print (the launcher itself prints nothing)."""

from __future__ import annotations

from types import SimpleNamespace

from mwa_cli.train.launcher import FailureReport, _Outcome, _Rank, failure_report


def _rank(rank: int, code: int, log=None, killed: bool = False) -> _Rank:
    return _Rank(rank, SimpleNamespace(returncode=code, pid=-1), log, killed=killed)  # type: ignore[arg-type]


def test_a_failed_worker_is_named_with_its_last_output_and_the_way_on(tmp_path):
    log = tmp_path / "rank1.log"
    log.write_text("loading\nRuntimeError: injected\n")
    ranks = [_rank(0, -9, killed=True), _rank(1, 7, log)]
    report = failure_report(ranks, _Outcome(first_failure=ranks[1]), {}, 2)
    assert report == FailureReport("training process 1 of 2 exited with code 7; process(es) 0 were stopped.",
                                   "    loading\n    RuntimeError: injected",
                                   "no checkpoint had been written; fix the cause above and start the run again")


def test_a_kept_checkpoint_gives_the_resume_command(tmp_path):
    run = tmp_path / "my run"
    (run / "checkpoint" / "last").mkdir(parents=True)
    for name in ("state.pt", "meta.json"):
        (run / "checkpoint" / "last" / name).write_text("{}")
    ranks = [_rank(0, 0), _rank(1, -9)]
    report = failure_report(ranks, _Outcome(first_failure=ranks[1]), {"run_dir": str(run)}, 2)
    assert report is not None and report.error == "training process 1 of 2 was killed by signal 9."
    assert report.hint == f"a checkpoint was kept; resume with: mwa train --resume '{run}' --devices 2"


def test_rank_0_failing_alone_has_said_it_already():
    ranks = [_rank(0, 2), _rank(1, 0)]
    assert failure_report(ranks, _Outcome(first_failure=ranks[0]), {}, 2) is None
