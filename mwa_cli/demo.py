"""`mwa demo`: the whole job on the bundled sample photos with the built-in backbone, on any machine.

prepare sample_data -> zero-shot (frozen) -> mwa, nke, full-ft for the same fixed number of steps (× `seeds`) ->
report. A fixed step count, not a wall-clock budget: a busy machine then takes longer but trains the same runs, so
two demos give the same numbers (docs/decisions.md, "mwa demo: fixed steps").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from mwa_cli.errors import EXIT_USAGE, MwaError
from mwa_cli.settings import report_settings

if TYPE_CHECKING:
    from mwa_cli.train.loop import ProgressFn

METHODS = ("mwa", "nke", "full-ft")
DEMO_STEPS = 150  # ≈ 6.8 epochs of the demo's 704 train pairs at batch 32: near each method's plateau (decisions.md)
DEMO_VAL_CHECKS = 4  # evenly spaced, so the best check (the published adapter) never depends on the clock


@dataclass
class DemoResult:
    data_dir: Path
    runs_dir: Path
    report_html: Path
    report: dict[str, Any]
    runs: dict[str, dict] = field(default_factory=dict)


def _remove_demo_runs(runs_dir: Path, say: Callable[[str], None]) -> None:
    """--force: delete the mwa run folders of an earlier demo (nothing else in the folder is touched)."""
    import shutil

    from mwa_cli.train.run_dir import is_run_folder

    if not runs_dir.is_dir():
        return
    removed = [p for p in sorted(runs_dir.iterdir()) if p.is_dir() and is_run_folder(p)]
    for p in removed:
        shutil.rmtree(p)
    if removed:
        say(f"--force: removed {len(removed)} earlier demo run(s) from {runs_dir}")


def run_demo(
    out: Path,
    *,
    steps_per_method: int = DEMO_STEPS,
    methods: tuple[str, ...] = METHODS,
    photos: Path | None = None,
    lang: str = "en",
    device: str = "auto",
    say: Callable[[str], None] = print,
    progress: "ProgressFn | None" = None,
    seeds: int = 1,
    force: bool = False,
    tune: bool = False,
) -> DemoResult:
    """Prepare the photos, evaluate the zero-shot backbone, train each method for `steps_per_method` steps (seeds
    0…N−1; the runs of seed s > 0 are named `<method>-s<s>`), say how long each took, write the report (with
    N > 1 its interval holds the seed-to-seed spread).

    Re-running it in the same `out` folder keeps the runs that finished and continues an interrupted one from
    its checkpoint; `force` removes the demo's earlier runs first. `tune`: also tune MWA and train its
    recommendation as run mwa-tuned (mwa_cli.tune.demo)."""
    if seeds < 1:
        raise MwaError(f"--seeds must be at least 1, not {seeds}", hint="e.g. mwa demo --seeds 3", exit_code=EXIT_USAGE)
    if steps_per_method < 1:
        raise MwaError(f"--steps-per-method must be at least 1, not {steps_per_method}",
                       hint=f"e.g. mwa demo --steps-per-method {DEMO_STEPS}", exit_code=EXIT_USAGE)
    # pandas and torch: the command line starts without them (`mwa --help` lists this command's default steps)
    from mwa_cli.data.ingest import SAMPLE_DATA
    from mwa_cli.data.prepare import prepare_dataset
    from mwa_cli.models.presets import MINI, resolve_config
    from mwa_cli.report.api import make_report
    from mwa_cli.report.numbers import fmt_duration
    from mwa_cli.train.checkpoint import find_checkpoint
    from mwa_cli.train.config import TrainConfig
    from mwa_cli.train.loop import train
    from mwa_cli.train.setup import images_progress

    out, photos = Path(out), Path(photos or SAMPLE_DATA)
    data_dir, runs_dir = out / "data", out / "runs"
    if force:
        _remove_demo_runs(runs_dir, say)
    _, cfg = resolve_config(MINI)
    say(f"1/3 preparing {photos} ({lang} captions, {cfg.img_size} px) -> {data_dir}")
    prepare_dataset(photos, data_dir, lang=lang, image_size=cfg.img_size,
                    progress=images_progress(progress, "decoding photos"))
    result = DemoResult(data_dir, runs_dir, out / "report.html", {})
    plan = [("frozen", 0), *[(m, s) for s in range(seeds) for m in methods]]
    names = []
    for i, (method, seed) in enumerate(plan, start=1):
        name = method if seed == 0 else f"{method}-s{seed}"
        names.append(name)
        say(f"2/3 [{i}/{len(plan)}] " + ("zero-shot evaluation of beit3-mini" if method == "frozen"
                                         else f"training {method} for {steps_per_method} steps (seed {seed})"))
        run_dir = runs_dir / name
        if (run_dir / "adapter_model.safetensors").is_file() and (run_dir / "eval.json").is_file():
            say(f"      {name} finished in an earlier `mwa demo`: kept (--force starts over)")
            result.runs[name] = {"run_dir": str(run_dir), "status": "completed", "reused": True}
            continue
        if find_checkpoint(run_dir) is not None:  # stopped earlier: continue it where it stopped
            cfg = TrainConfig(resume=str(run_dir), out=str(runs_dir))
        else:
            steps = None if method == "frozen" else steps_per_method
            cfg = TrainConfig(data_dir=str(data_dir), method=method, backbone=MINI, steps=steps,
                              epochs=1 if method == "frozen" else None, device=device, out=str(runs_dir),
                              name=name, seed=seed, val_evals=0 if method == "frozen" else DEMO_VAL_CHECKS,
                              command=f"mwa train {data_dir} --method {method} --backbone {MINI} --seed {seed}"
                                      + (f" --steps {steps} --val-evals {DEMO_VAL_CHECKS}" if steps else ""))
        run = train(cfg, progress)
        if run.status == "interrupted":
            raise MwaError(f"the demo stopped during its {name} run; that run's checkpoint and the finished runs "
                           "are kept", hint="run the same `mwa demo` command again to continue where it stopped",
                           exit_code=run.exit_code)
        if run.exit_code != 0:
            raise MwaError(f"the {name} run ended ({run.status}): {run.message}",
                           hint="run the same `mwa demo` command again to continue, or add --force to start over",
                           exit_code=run.exit_code)
        result.runs[name] = run.to_dict()
        if method != "frozen":
            took = (run.timing or {}).get("wall_s")
            say(f"      {name}: {run.steps} steps in {fmt_duration(took)}")
    if tune:
        from mwa_cli.tune.demo import tuned_run

        mwa_s = _wall_seconds(runs_dir / "mwa")
        names.append(tuned_run(data_dir, runs_dir, backbone=MINI, steps=steps_per_method, trial_s=mwa_s,
                               device=device, seed=0, say=say, progress=progress, force=force))
    say("3/3 writing the report")
    result.report = make_report([runs_dir / n for n in names], out=result.report_html, compare="full-ft", say=say,
                                **report_settings())
    return result


def _wall_seconds(run_dir: Path) -> float:
    """The wall time a finished demo run took (its timing.json; a minute when it cannot be read): the tune's unit."""
    from mwa_cli.safe_open import InputFileError, load_json

    try:
        wall = load_json(run_dir / "timing.json").get("wall_s")
    except (InputFileError, AttributeError):
        wall = None
    return float(wall) if isinstance(wall, (int, float)) and 0 < wall < 86400 else 60.0
