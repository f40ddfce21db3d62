"""What every run of the report is measured against: the chosen runs, the primary protocol, the chance
and zero-shot references, each run's time to quality and the time the ROI prices, the baseline's yearly figures
and the shared backbone's storage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from mwa_cli.eval.zero_shot import ZeroShot
from mwa_cli.report import evidence, references
from mwa_cli.report import roi as roi_mod
from mwa_cli.report.choice import Choice
from mwa_cli.report.collect import Collection, Run
from mwa_cli.report.gallery import DataDir
from mwa_cli.report.model import Protocol
from mwa_cli.report.numbers import is_num
from mwa_cli.report.protocols import choose_primary_protocol


@dataclass(frozen=True)
class Storage:
    """The shared backbone's size, counted in the adapter methods' storage, and whether it is an estimate."""

    backbone_bytes: float | None
    estimated: bool


@dataclass(frozen=True)
class RoiHours:
    """What one training costs in the ROI: device-hours, wall seconds, and which time that is (`basis`)."""

    device_hours: float | None
    wall_s: float | None
    basis: str


@dataclass(frozen=True)
class Comparison:
    """What every run is measured against: the chosen runs, the primary protocol, the references and the
    baseline's time and yearly figures."""

    choice: Choice
    compare: str
    target_pct: int
    assumptions: roi_mod.Assumptions
    primary: Protocol
    chance: dict[str, Any]
    zero_shot: ZeroShot | None
    data: DataDir | None
    ref_best: float | None  # the baseline's best val RSUM (time to quality is measured to a share of it)
    ttq: dict[int, dict[str, Any]]  # by id(run)
    roi_hours: dict[int, RoiHours]  # by id(run)
    baseline_yearly: dict[str, Any] | None
    storage: Storage
    groups: dict[str, list[Run]]  # seed groups (evidence.seed_groups)
    group_of: dict[int, str]  # id(run) -> its seed group

    @property
    def baseline(self) -> Run | None:
        return self.choice.baseline

    @property
    def baseline_estimated(self) -> bool:
        return self.choice.baseline_estimated



def compare_runs(coll: Collection, choice: Choice, compare: str, a: roi_mod.Assumptions, data: DataDir | None,
                zero_shot: ZeroShot | None, target_pct: int) -> Comparison:
    runs, baseline = list(choice.runs), choice.baseline
    primary = cast(Protocol, choose_primary_protocol([r.eval or {} for r in runs]))  # one of its two values
    chance = references.chance([r.eval or {} for r in runs] + ([zero_shot.eval] if zero_shot else []), data,
                               coll.runs[0].split)
    ref_best = (evidence.reference_best(baseline, primary)
                if baseline is not None and not choice.baseline_estimated else None)
    ttq = _time_to_quality(runs, baseline, compare, ref_best, primary)
    hours = {id(r): _roi_hours(r, ttq[id(r)], target_pct) for r in runs}
    storage = _storage(choice)
    b_yearly = (roi_mod.yearly(hours[id(baseline)].device_hours, baseline.artefact_bytes, is_full_ft=True,
                               backbone_bytes=storage.backbone_bytes, a=a) if baseline is not None else None)
    groups = evidence.seed_groups(runs)
    return Comparison(choice=choice, compare=compare, target_pct=target_pct, assumptions=a, primary=primary,
                       chance=chance, zero_shot=zero_shot, data=data, ref_best=ref_best, ttq=ttq, roi_hours=hours,
                       baseline_yearly=b_yearly, storage=storage, groups=groups,
                       group_of={id(r): name for name, g in groups.items() for r in g})


def _storage(choice: Choice) -> Storage:
    """The full fine-tuning artefact when one was measured, else the largest total_params x 4 bytes (fp32)."""
    b = choice.baseline
    if b is not None and b.artefact_bytes:
        return Storage(float(b.artefact_bytes), choice.baseline_estimated)
    totals = [float(r.timing["total_params"]) for r in choice.runs if is_num(r.timing.get("total_params"))]
    return Storage(max(totals) * 4.0, True) if totals else Storage(None, False)


def baseline_method(baseline: Run | None, compare: str) -> str:
    return baseline.method if baseline is not None else compare


def _time_to_quality(runs: list[Run], baseline: Run | None, compare: str, ref_best: float | None,
                     protocol: str) -> dict[int, dict[str, Any]]:
    """Each run's time to quality against the baseline method's run of the same seed when there is one (seed
    groups), never against a target the zero-shot backbone already meets (its step-0 val RSUM)."""
    base_method = baseline_method(baseline, compare)
    ref_by_seed = {x.config.get("seed"): evidence.reference_best(x, protocol)
                   for x in runs if x.method == base_method and not x.estimated}
    floors = [v for v in (evidence.zero_shot_val(x, protocol) for x in ([baseline] if baseline else []) + runs)
              if v is not None]
    floor = floors[0] if floors else None
    out = {}
    for r in runs:
        ref = ref_best if r is baseline else ref_by_seed.get(r.config.get("seed"), ref_best)
        out[id(r)] = evidence.time_to_quality(r, None if r.method == references.FROZEN else ref,
                                              int(r.timing.get("n_devices") or 1), protocol, floor)
    return out


def _roi_hours(run: Run, ttq: dict[str, Any], target_pct: int) -> RoiHours:
    """One training for the ROI: the time to the target quality when the run reached it; the whole run otherwise
    ("not_reached": a lower bound; "whole_run": no validation curve)."""
    hit = ttq["to"].get(str(target_pct))
    if hit is not None:
        return RoiHours(hit["device_hours"], hit["time_s"], "time_to_quality")
    measured = ttq["checks"] and ttq["reference"] is not None and target_pct not in ttq.get("below_floor", [])
    return RoiHours(device_hours(run.timing), num(run.timing.get("wall_s")),
                    "not_reached" if measured else "whole_run")




def num(x: Any) -> float | None:
    return float(x) if is_num(x) else None


def device_hours(timing: dict[str, Any]) -> float | None:
    if is_num(timing.get("device_hours")):
        return float(timing["device_hours"])
    if is_num(timing.get("wall_s")):
        return float(timing["wall_s"]) * float(timing.get("n_devices") or 1) / 3600.0
    return None
