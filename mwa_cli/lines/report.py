"""`mwa line report LINE --html FILE`: one line's history as a self-contained page (no script, inline SVG, the
report's CSP): held-out recall over versions with 95 % intervals, the gate's comparison of each publish, who
published or rolled back what and when, and why when forced. Built from `mwa_cli.lines.view.describe_line`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from markupsafe import Markup

from mwa_cli import __version__
from mwa_cli.errors import ConfigError
from mwa_cli.fileio import atomic_write_text
from mwa_cli.report import svg
from mwa_cli.report.numbers import fmt_bytes
from mwa_cli.templating import get_template

TEMPLATE = "line_report.html.j2"
LABELS: dict[str, dict[str, str]] = {
    "en": {"title": "Line", "current": "current version", "versions": "Versions", "history": "History",
           "held_out": "held-out set", "backbone": "backbone", "version": "version", "recall": "held-out mean recall",
           "ci": "95 % interval", "run": "run", "published": "published", "by": "by", "gate": "vs the version before",
           "forced": "published although worse", "why": "why", "action": "action", "chart": "Recall over versions",
           "chart_y": "mean recall (%)", "chart_x": "version", "empty": "no version published yet",
           "run_recall": "run's own test recall", "adapter": "adapter", "at": "when", "changed_data":
           "evaluated on another state of the held-out set than the current version",
           "note": "Mean recall on the line's held-out set at publish time; intervals from 2000 bootstrap resamples "
                   "of the held-out photos. A publish is refused when the candidate falls below the current "
                   "version's interval, unless forced (recorded below)."},
    "ja": {"title": "ライン", "current": "現在のバージョン", "versions": "バージョン", "history": "履歴",
           "held_out": "評価用データ", "backbone": "バックボーン", "version": "バージョン",
           "recall": "評価用データの平均再現率", "ci": "95 %区間", "run": "学習ラン", "published": "公開日時",
           "by": "公開者", "gate": "直前のバージョンとの比較", "forced": "劣化を承知で公開", "why": "理由",
           "action": "操作", "chart": "バージョンごとの再現率", "chart_y": "平均再現率 (%)", "chart_x": "バージョン",
           "empty": "まだ公開されたバージョンはありません", "run_recall": "ラン自身のテスト再現率",
           "adapter": "アダプタ", "at": "日時", "changed_data": "現在のバージョンとは異なる状態の評価用データで評価",
           "note": "公開時点のラインの評価用データでの平均再現率。区間は評価用写真の2000回のブートストラップ再標本化による。"
                   "候補が現在のバージョンの区間を下回る場合、強制しない限り公開は拒否されます(強制は下に記録)。"},
}


def recall_chart(versions: list[dict[str, Any]], t: dict[str, str], size: svg.Size) -> str:
    """Held-out mean recall (and the run's own test recall) per version number."""
    def points(key: str) -> list[list[float]]:
        return [[float(v["version"]), float(v[key]["mean_recall"])] for v in versions
                if (v.get(key) or {}).get("mean_recall") is not None]

    series = [{"label": t["recall"], "color": svg.color_for("mwa"), "points": points("held_out")},
              {"label": t["run_recall"], "color": svg.color_for("full-ft"), "points": points("run_eval")}]
    return svg.lines(series, title=t["chart"], xlabel=t["chart_x"], ylabel=t["chart_y"], empty=t["empty"],
                     size=size)


def render_line_report(rep: dict[str, Any], lang: str = "en") -> str:
    if lang not in LABELS:
        raise ConfigError(f"--lang {lang!r} is not offered", hint="choose en or ja")
    t = LABELS[lang]
    current_hash = ((rep.get("held_out") or {}).get("dataset_hash"))
    for v in rep["versions"]:
        held = v.get("held_out") or {}
        v["other_data"] = bool(held.get("dataset_hash") and current_hash and held["dataset_hash"] != current_hash)
    return get_template(TEMPLATE).render(
        rep=rep, t=t, lang=lang, mwa_version=__version__, fmt_bytes=fmt_bytes,
        chart_wide=Markup(recall_chart(rep["versions"], t, svg.WIDE)),
        chart_narrow=Markup(recall_chart(rep["versions"], t, svg.NARROW)))


def write_line_report(rep: dict[str, Any], path: str | Path, lang: str = "en") -> Path:
    path = Path(path)
    atomic_write_text(path, render_line_report(rep, lang))
    return path
