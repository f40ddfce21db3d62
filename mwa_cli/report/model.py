"""The report's data: what build.py makes and the terminal (console.py), the HTML (html.py, view.py) and
``--json`` all show. Plain JSON-ready dicts, typed here; ``schema_version`` 1, key order as printed by --json.

Entries that other modules make and document themselves stay ``dict[str, Any]``: a run's ``learning``
(learning.assess), ``time_to_quality`` (evidence.time_to_quality), the bootstrap intervals (eval/bootstrap.py),
``gallery`` (gallery.build_gallery), the chance levels (references.chance) and a decision's ``seeds``
(evidence.seed_difference). docs/formats.md, "Report", describes every figure.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

Protocol = Literal["instance", "label_level"]
HoursUnit = Literal["gpu_hours", "cpu_hours", "device_hours"]
RoiBasis = Literal["time_to_quality", "not_reached", "whole_run"]


class Recall(TypedDict):
    """Recall@1/5/10 per direction (and median_rank when eval.json has it), RSUM and its mean."""

    i2t: dict[str, float]
    t2i: dict[str, float]
    rsum: float
    mean_recall: float


# points vs the baseline per recall
RecallDelta = TypedDict("RecallDelta", {
    "i2t_r1": float, "i2t_r5": float, "i2t_r10": float, "t2i_r1": float, "t2i_r5": float, "t2i_r10": float,
    "rsum": float, "mean_recall": float})


class ProtocolFigures(TypedDict):
    recall: Recall | None
    recall_delta: RecallDelta | None
    rsum_kept_pct: float | None


class EstimatedFlags(TypedDict):
    """Which of a run's figures are estimates."""

    recall: bool
    cost: bool
    savings: bool
    roi: bool


class Cost(TypedDict):
    wall_s: float | None
    train_s: float | None
    device_hours: float | None
    hours_unit: HoursUnit
    samples_per_s: float | None
    peak_mem_gib: float | None
    trainable_params: int | None
    total_params: int | None
    trainable_pct: float | None
    artefact_bytes: int | None


class Savings(TypedDict):
    """Percent less than the baseline (+ = less)."""

    wall_s: float | None
    device_hours: float | None
    peak_mem_gib: float | None
    artefact_bytes: float | None


class RunROI(TypedDict):
    """Yearly figures of one method (roi.yearly); diff = this run's minus the baseline's."""

    trainings_per_year: int
    device_hours_per_year: float | None
    compute_cost_per_year: float | None
    storage_bytes: float | None
    compute_cost_diff: float | None
    storage_bytes_diff: float | None


class LabelFigures(TypedDict):
    mean_recall: float
    rsum: float
    n_images: int | None
    n_captions: int | None


class LossCurve(TypedDict):
    x: Literal["time_min", "step"]
    points: list[list[float]]


class Provenance(TypedDict):
    device_name: str | None
    device_type: str | None
    n_devices: int | None
    torch: str | None
    mwa: str | None
    command: str | None
    created: str | None
    budget_s: float | None
    eval_numerics: dict[str, Any] | None


class RunEntry(TypedDict):
    """One run of the report, under the primary protocol (``by_protocol``: under each)."""

    name: str
    path: str
    method: str
    backbone: str | None
    is_baseline: bool
    is_main: bool
    estimated: EstimatedFlags
    recall: Recall | None
    recall_delta: RecallDelta | None
    rsum_kept_pct: float | None  # the baseline's RSUM kept, in percent
    recall_ci: dict[str, Any] | None  # bootstrap over the test images (evidence.py); None without ranks
    recall_delta_ci: dict[str, Any] | None  # paired, vs the baseline
    protocol_name: Protocol
    learning: dict[str, Any]
    time_to_quality: dict[str, Any]
    roi_basis: RoiBasis | None  # None (and roi None): no verdict, nothing to price
    seed: Any
    seed_group: str | None
    time_pct_of_baseline: float | None  # to the target quality
    by_protocol: dict[str, ProtocolFigures]
    cost: Cost
    savings_pct: Savings
    roi: RunROI | None
    per_label: dict[str, LabelFigures]
    loss_curve: LossCurve
    provenance: Provenance
    gallery: dict[str, Any] | None


class BaselineInfo(TypedDict):
    run: str | None
    method: str
    found: bool
    estimated: bool
    train_command: str | None


class DatasetInfo(TypedDict):
    hash: str | None
    images: int | None
    captions: int | None
    split: str | None
    n_images: int | None
    n_captions: int | None
    data_dir: str | None


class AssumptionsInfo(TypedDict):
    gpu_cost_per_hour: float
    currency: str
    lines: int
    retrains_per_year: int
    backbone_bytes: float | None
    backbone_bytes_estimated: bool


class ZeroShotReference(TypedDict):
    source: str
    path: str | None
    run: str | None
    backbone: str | None
    shown_as_run: bool
    by_protocol: dict[str, Recall | None]
    recall_ci: dict[str, Any] | None


class References(TypedDict):
    chance: dict[str, Any]
    zero_shot: ZeroShotReference | None
    zero_shot_note: str | None


class Decision(TypedDict):
    kind: Literal["compare", "no_verdict"]
    roi_withheld: bool
    runs_not_learned: list[str]
    seeds: dict[str, Any] | None
    single_seed: bool


class BootstrapInfo(TypedDict):
    resamples: int
    seed: int
    level: float
    unit: str


class TimeToQualityInfo(TypedDict):
    target_pct: int
    targets: list[int]
    reference_best_val_rsum: float | None
    reference_run: str | None
    zero_shot_val_rsum: float | None


class Spread(TypedDict):
    mean: float
    sd: float
    n: int


SeedGroupRow = TypedDict("SeedGroupRow", {
    "name": str, "method": str, "runs": list[str], "seeds": list[Any], "test_rsum": Spread | None,
    "best_val_rsum": Spread | None, "to_95_s": Spread | None, "to_99_s": Spread | None, "reached": dict[str, int]})


class TunePage(TypedDict):
    page: str
    runs: list[str]


class Report(TypedDict):
    schema_version: int
    created: str
    lang: str
    mwa_version: str
    compare: str
    baseline: BaselineInfo
    dataset: DatasetInfo
    assumptions: AssumptionsInfo
    hours_unit: HoursUnit
    runs: list[RunEntry]  # the baseline first, then the main run, then the rest by method and name
    references: References
    verdict: str
    verdict_estimated: bool
    decision: Decision
    bootstrap: BootstrapInfo
    time_to_quality: TimeToQualityInfo
    seed_groups: list[SeedGroupRow]
    notes: list[str]
    tunes: list[TunePage]  # the tune.html pages of the `mwa tune` the runs came from
    skipped: list[list[str]]  # [path, reason]
    protocol: str | None
    primary_protocol: Protocol
    protocols: dict[str, str | None]  # one sentence per protocol
    html: str | None
