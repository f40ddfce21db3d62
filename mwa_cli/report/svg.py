"""Inline SVG charts (no JavaScript, no external fonts or files). Every text from data is XML-escaped here,
because the HTML template inserts these strings as markup."""

from __future__ import annotations

import math
from html import escape
from typing import Sequence

W, H = 640, 320
ML, MR, MT, MB = 58, 16, 14, 46  # margins: left, right, top, bottom

PALETTE = {"full-ft": "#6b7280", "mwa": "#1d4ed8", "nke": "#0f766e", "lora": "#c2410c", "frozen": "#7c3aed"}
EXTRA = ["#be185d", "#4d7c0f", "#0369a1", "#a16207", "#9333ea", "#b91c1c"]


def color_for(method: str, index: int = 0) -> str:
    return PALETTE.get(method, EXTRA[index % len(EXTRA)])


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 10))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _fmt_tick(v: float) -> str:
    text = f"{v:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _open(title: str, h: int = H) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {h}" role="img" '
            f'aria-label="{_e(title)}" class="chart" font-size="13">', f"<title>{_e(title)}</title>"]


def _axes(parts: list[str], xt: list[float], yt: list[float], sx, sy, xlabel: str, ylabel: str, h: int = H,
          xticklabels: Sequence[str] | None = None) -> None:
    x0, x1, y0, y1 = ML, W - MR, h - MB, MT
    for v in yt:
        y = sy(v)
        parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#4b5563">{_fmt_tick(v)}</text>')
    if xticklabels is None:
        for v in xt:
            x = sx(v)
            parts.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + 4}" stroke="#9ca3af"/>')
            parts.append(f'<text x="{x:.1f}" y="{y0 + 17}" text-anchor="middle" fill="#4b5563">{_fmt_tick(v)}</text>')
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#6b7280"/>')
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#6b7280"/>')
    parts.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{h - 8}" text-anchor="middle" fill="#111827">{_e(xlabel)}</text>')
    parts.append(f'<text transform="translate(14,{(y0 + y1) / 2:.1f}) rotate(-90)" text-anchor="middle" '
                 f'fill="#111827">{_e(ylabel)}</text>')


def _empty(title: str, message: str) -> str:
    parts = _open(title, 120)
    parts.append(f'<text x="{W / 2}" y="64" text-anchor="middle" fill="#6b7280">{_e(message)}</text></svg>')
    return "".join(parts)


def _legend(parts: list[str], items: Sequence[tuple[str, str, bool]], y: float) -> None:
    x = ML + 8
    for label, color, dashed in items:
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        parts.append(f'<line x1="{x}" y1="{y}" x2="{x + 18}" y2="{y}" stroke="{color}" stroke-width="3"{dash}/>')
        parts.append(f'<text x="{x + 23}" y="{y + 4}" fill="#111827">{_e(label)}</text>')
        x += 34 + 7 * len(label)


def scatter(points: Sequence[dict], *, title: str, xlabel: str, ylabel: str, empty: str,
            vlines: Sequence[dict] = ()) -> str:
    """points: {"label", "x", "y", "color"}; vlines: {"label", "x", "color"} (dashed, e.g. an estimated time)."""
    pts = [p for p in points if p.get("x") is not None and p.get("y") is not None]
    if not pts and not vlines:
        return _empty(title, empty)
    xs = [p["x"] for p in pts] + [v["x"] for v in vlines]
    ys = [p["y"] for p in pts] or [0.0, 100.0]
    xt = nice_ticks(0.0, max(xs) * 1.1 or 1.0)
    ylo = max(0.0, min(ys) - 10)
    yt = nice_ticks(ylo, min(100.0, max(ys) + 5) if max(ys) + 5 > ylo else ylo + 10)
    sx = lambda v: ML + (v - xt[0]) / (xt[-1] - xt[0]) * (W - ML - MR)  # noqa: E731
    sy = lambda v: H - MB - (v - yt[0]) / (yt[-1] - yt[0]) * (H - MB - MT)  # noqa: E731
    parts = _open(title)
    _axes(parts, xt, yt, sx, sy, xlabel, ylabel)
    for v in vlines:
        x = sx(v["x"])
        parts.append(f'<line x1="{x:.1f}" y1="{H - MB}" x2="{x:.1f}" y2="{MT}" stroke="{v["color"]}" '
                     f'stroke-width="2" stroke-dasharray="6 4"/>')
        left = x < W / 2
        parts.append(f'<text x="{x + (6 if left else -6):.1f}" y="{MT + 12}" text-anchor="{"start" if left else "end"}" '
                     f'fill="{v["color"]}">{_e(v["label"])}</text>')
    for p in pts:
        x, y = sx(p["x"]), sy(p["y"])
        anchor = "end" if x > W * 0.7 else "start"
        dx = -9 if anchor == "end" else 9
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{p["color"]}" stroke="#fff" stroke-width="1.5"/>')
        parts.append(f'<text x="{x + dx:.1f}" y="{y - 8:.1f}" text-anchor="{anchor}" fill="#111827" '
                     f'font-weight="600">{_e(p["label"])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def lines(series: Sequence[dict], *, title: str, xlabel: str, ylabel: str, empty: str) -> str:
    """series: {"label", "color", "points": [[x, y], ...]}."""
    ser = [s for s in series if s.get("points")]
    if not ser:
        return _empty(title, empty)
    allx = [p[0] for s in ser for p in s["points"]]
    ally = [p[1] for s in ser for p in s["points"]]
    xt = nice_ticks(min(0.0, min(allx)), max(allx))
    yt = nice_ticks(min(0.0, min(ally)), max(ally))
    hh = H + 18
    sx = lambda v: ML + (v - xt[0]) / (xt[-1] - xt[0]) * (W - ML - MR)  # noqa: E731
    sy = lambda v: hh - MB - (v - yt[0]) / (yt[-1] - yt[0]) * (hh - MB - MT - 22)  # noqa: E731
    parts = _open(title, hh)
    _axes(parts, xt, yt, sx, sy, xlabel, ylabel, h=hh)
    for s in ser:
        d = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(s["points"]))
        parts.append(f'<path d="{d}" fill="none" stroke="{s["color"]}" stroke-width="2" '
                     f'stroke-linejoin="round"/>')
    _legend(parts, [(s["label"], s["color"], False) for s in ser], MT + 4)
    parts.append("</svg>")
    return "".join(parts)


def grouped_bars(groups: Sequence[str], series: Sequence[dict], *, title: str, ylabel: str, empty: str) -> str:
    """groups: x categories (labels); series: {"label", "color", "values": [float|None per group]}."""
    if not groups or not series:
        return _empty(title, empty)
    hh = H + 40
    yt = [0, 20, 40, 60, 80, 100]
    plot_w = W - ML - MR
    gw = plot_w / len(groups)
    bw = min(28.0, gw * 0.8 / len(series))
    sy = lambda v: hh - MB - 26 - v / 100.0 * (hh - MB - 26 - MT - 22)  # noqa: E731
    parts = _open(title, hh)
    x0, y0 = ML, hh - MB - 26
    for v in yt:
        y = sy(v)
        parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{W - MR}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#4b5563">{v}</text>')
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{W - MR}" y2="{y0}" stroke="#6b7280"/>')
    parts.append(f'<text transform="translate(14,{(y0 + MT) / 2:.1f}) rotate(-90)" text-anchor="middle" '
                 f'fill="#111827">{_e(ylabel)}</text>')
    for gi, g in enumerate(groups):
        cx = ML + gw * (gi + 0.5)
        start = cx - bw * len(series) / 2
        for si, s in enumerate(series):
            v = s["values"][gi]
            if v is None:
                continue
            y = sy(max(0.0, min(100.0, v)))
            parts.append(f'<rect x="{start + si * bw:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" height="{y0 - y:.1f}" '
                         f'fill="{s["color"]}"><title>{_e(s["label"])} · {_e(g)}: {v:.1f}</title></rect>')
        label = g if len(g) <= 18 else g[:17] + "…"
        parts.append(f'<text x="{cx:.1f}" y="{y0 + 16}" text-anchor="middle" fill="#111827">{_e(label)}</text>')
    _legend(parts, [(s["label"], s["color"], False) for s in series], MT + 4)
    parts.append("</svg>")
    return "".join(parts)
