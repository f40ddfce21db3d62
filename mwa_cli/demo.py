"""`mwa demo`: the whole job on the bundled sample photos with the built-in backbone, on any machine.

prepare sample_data -> zero-shot (frozen) -> mwa, nke, full-ft with equal budgets (× `seeds`) -> report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mwa_cli.data.ingest import SAMPLE_DATA
from mwa_cli.data.prepare import prepare_dataset
from mwa_cli.errors import EXIT_USAGE, MwaError
from mwa_cli.models.presets import MINI, resolve_config
from mwa_cli.train.checkpoint import find_checkpoint
from mwa_cli.report.i18n import fmt_duration
from mwa_cli.settings import report_settings
from mwa_cli.train.config import TrainConfig, parse_budget
from mwa_cli.train.loop import ProgressFn, train
from mwa_cli.train.setup import images_progress

METHODS = ("mwa", "nke", "full-ft")


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
    budget_per_method: str = "75s",
    methods: tuple[str, ...] = METHODS,
    photos: Path = SAMPLE_DATA,
    lang: str = "en",
    device: str = "auto",
    say: Callable[[str], None] = print,
    progress: ProgressFn | None = None,
    seeds: int = 1,
    force: bool = False,
) -> DemoResult:
    """Prepare the photos, evaluate the zero-shot backbone, train each method on an equal budget (seeds 0…N−1; the
    runs of seed s > 0 are named `<method>-s<s>`), write the report (mean ± spread over seeds when N > 1).

    Re-running it in the same `out` folder keeps the runs that finished and continues an interrupted one from
    its checkpoint; `force` removes the demo's earlier runs first."""
    if seeds < 1:
        raise MwaError(f"--seeds must be at least 1, not {seeds}", hint="e.g. mwa demo --seeds 3", exit_code=EXIT_USAGE)
    from mwa_cli.report.api import make_report

    out = Path(out)
    data_dir, runs_dir = out / "data", out / "runs"
    if force:
        _remove_demo_runs(runs_dir, say)
    parse_budget(budget_per_method)  # a bad budget is refused before anything runs
    _, cfg = resolve_config(MINI)
    say(f"1/3 preparing {photos} ({lang} captions, {cfg.img_size} px) -> {data_dir}")
    prepare_dataset(photos, data_dir, lang=lang, image_size=cfg.img_size,
                    progress=images_progress(progress, "decoding photos"))
    result = DemoResult(data_dir, runs_dir, out / "report.html", {})
    plan = [("frozen", None, 0), *[(m, budget_per_method, s) for s in range(seeds) for m in methods]]
    names = []
    for i, (method, budget, seed) in enumerate(plan, start=1):
        name = method if seed == 0 else f"{method}-s{seed}"
        names.append(name)
        say(f"2/3 [{i}/{len(plan)}] " + ("zero-shot evaluation of beit3-mini" if method == "frozen"
                                         else f"training {method} for at most {fmt_duration(parse_budget(budget))}"
                                              f" (seed {seed})"))
        run_dir = runs_dir / name
        if (run_dir / "adapter_model.safetensors").is_file() and (run_dir / "eval.json").is_file():
            say(f"      {name} finished in an earlier `mwa demo`: kept (--force starts over)")
            result.runs[name] = {"run_dir": str(run_dir), "status": "completed", "reused": True}
            continue
        if find_checkpoint(run_dir) is not None:  # stopped earlier: continue it where it stopped
            cfg = TrainConfig(resume=str(run_dir), out=str(runs_dir))
        else:
            cfg = TrainConfig(data_dir=str(data_dir), method=method, backbone=MINI, budget=budget,
                              epochs=1 if method == "frozen" else None, device=device, out=str(runs_dir),
                              name=name, seed=seed, val_evals=0 if method == "frozen" else None,
                              command=f"mwa train {data_dir} --method {method} --backbone {MINI} --seed {seed}"
                                      + (f" --budget {budget}" if budget else ""))
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
    say("3/3 writing the report")
    result.report = make_report([runs_dir / n for n in names], out=result.report_html, compare="full-ft",
                                **report_settings())
    return result
