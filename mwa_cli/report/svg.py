"""Inline SVG charts (no JavaScript, no external fonts or files). Every text from data is XML-escaped here,
because the HTML template inserts these strings as markup."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Sequence

W, H = 640, 320
ML, MR, MT, MB = 58, 16, 14, 46  # margins: left, right, top, bottom


@dataclass(frozen=True)
class Size:
    """A chart's drawing width and font size (SVG units). The HTML shows WIDE on wide screens and NARROW on phones,
    each scaled to the figure's width: 15 units at 640 stay ≥ 11 px from a 470 px figure, 14 at 360 from 283 px."""

    w: int = W
    font: int = 15


WIDE, NARROW = Size(W, 15), Size(360, 14)


def text_width(text: str, font: float) -> float:
    """A generous estimate of a label's rendered width (wide characters count double): for layout only."""
    return sum(font * (1.0 if ord(ch) > 0x2E7F else 0.62) for ch in text)


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


def _open(title: str, h: int, size: Size) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size.w} {h}" role="img" '
            f'aria-label="{_e(title)}" class="chart {"narrow" if size.w < W else "wide"}" font-size="{size.font}">', f"<title>{_e(title)}</title>"]


def _axes(parts: list[str], xt: list[float], yt: list[float], sx, sy, xlabel: str, ylabel: str, h: int,
          size: Size) -> None:
    x0, x1, y0, y1 = ML, size.w - MR, h - MB, MT
    for v in yt:
        y = sy(v)
        parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#4b5563">{_fmt_tick(v)}</text>')
    labels = [(sx(v), _fmt_tick(v)) for v in xt]
    room = (x1 - x0) / max(1, len(labels) - 1)
    every = 1 + int(max(text_width(t, size.font) for _, t in labels) + 6 > room)  # every other tick when crowded
    for i, (x, text) in enumerate(labels):
        parts.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + 4}" stroke="#9ca3af"/>')
        if i % every == 0:
            parts.append(f'<text x="{x:.1f}" y="{y0 + size.font + 4}" text-anchor="middle" fill="#4b5563">{text}</text>')
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#6b7280"/>')
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#6b7280"/>')
    parts.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{h - 6}" text-anchor="middle" fill="#111827">{_e(xlabel)}</text>')
    parts.append(f'<text transform="translate(14,{(y0 + y1) / 2:.1f}) rotate(-90)" text-anchor="middle" '
                 f'fill="#111827">{_e(ylabel)}</text>')


def _empty(title: str, message: str, size: Size) -> str:
    parts = _open(title, 120, size)
    parts.append(f'<text x="{size.w / 2}" y="64" text-anchor="middle" fill="#6b7280">{_e(message)}</text></svg>')
    return "".join(parts)


def legend_rows(labels: Sequence[str], size: Size) -> list[list[tuple[int, float]]]:
    """Legend items (index, x) wrapped into rows that fit the chart's width."""
    rows: list[list[tuple[int, float]]] = [[]]
    x = ML + 8
    for i, label in enumerate(labels):
        width = 23 + text_width(label, size.font) + 16
        if rows[-1] and x + width > size.w - MR:
            rows.append([])
            x = ML + 8
        rows[-1].append((i, x))
        x += width
    return rows


def _legend(parts: list[str], items: Sequence[tuple[str, str, bool]], y: float, size: Size) -> None:
    for r, row in enumerate(legend_rows([label for label, _, _ in items], size)):
        yy = y + r * (size.font + 6)
        for i, x in row:
            label, color, dashed = items[i]
            dash = ' stroke-dasharray="5 3"' if dashed else ""
            parts.append(f'<line x1="{x}" y1="{yy}" x2="{x + 18}" y2="{yy}" stroke="{color}" stroke-width="3"{dash}/>')
            parts.append(f'<text x="{x + 23}" y="{yy + size.font * 0.35:.1f}" fill="#111827">{_e(label)}</text>')


def _legend_height(labels: Sequence[str], size: Size) -> int:
    return len(legend_rows(labels, size)) * (size.font + 6)


def place_labels(anchors: Sequence[tuple[float, float, float]], height: float, lo: float, hi: float
                 ) -> list[float]:
    """Baselines for point labels (x0, x1 of the text, the point's y) that keep their boxes apart: above the
    point, else below, else further out, within [lo, hi]."""
    placed: list[tuple[float, float, float, float]] = []
    out = []
    for x0, x1, y in anchors:
        for k in range(12):
            step = (k // 2 + 1) * height
            base = y - 8 - (step - height) if k % 2 == 0 else y + 8 + step
            base = min(max(base, lo + height), hi)
            box = (x0, base - height, x1, base)
            if all(box[2] <= b[0] or box[0] >= b[2] or box[3] <= b[1] or box[1] >= b[3] for b in placed):
                break
        placed.append(box)
        out.append(base)
    return out


def scatter(points: Sequence[dict], *, title: str, xlabel: str, ylabel: str, empty: str,
            vlines: Sequence[dict] = (), size: Size = WIDE) -> str:
    """points: {"label", "x", "y", "color"}; vlines: {"label", "x", "color"} (dashed, e.g. an estimated time)."""
    pts = [p for p in points if p.get("x") is not None and p.get("y") is not None]
    if not pts and not vlines:
        return _empty(title, empty, size)
    xs = [p["x"] for p in pts] + [v["x"] for v in vlines]
    ys = [p["y"] for p in pts] or [0.0, 100.0]
    xt = nice_ticks(0.0, max(xs) * 1.1 or 1.0)
    ylo = max(0.0, min(ys) - 10)
    yt = nice_ticks(ylo, min(100.0, max(ys) + 5) if max(ys) + 5 > ylo else ylo + 10)
    w = size.w
    sx = lambda v: ML + (v - xt[0]) / (xt[-1] - xt[0]) * (w - ML - MR)  # noqa: E731
    sy = lambda v: H - MB - (v - yt[0]) / (yt[-1] - yt[0]) * (H - MB - MT)  # noqa: E731
    parts = _open(title, H, size)
    _axes(parts, xt, yt, sx, sy, xlabel, ylabel, H, size)
    for v in vlines:
        x = sx(v["x"])
        parts.append(f'<line x1="{x:.1f}" y1="{H - MB}" x2="{x:.1f}" y2="{MT}" stroke="{v["color"]}" '
                     f'stroke-width="2" stroke-dasharray="6 4"/>')
        left = x < w / 2
        parts.append(f'<text x="{x + (6 if left else -6):.1f}" y="{MT + 12}" text-anchor="{"start" if left else "end"}" '
                     f'fill="{v["color"]}">{_e(v["label"])}</text>')
    pts = sorted(pts, key=lambda p: -p["y"])  # labels placed from the top down
    anchors, anchors_of = [], []
    for p in pts:
        x, tw = sx(p["x"]), text_width(p["label"], size.font)
        end = x > w * 0.6
        x0 = x - 9 - tw if end else x + 9
        if x0 < 2 or x0 + tw > w - 2:  # keep the whole label inside the chart
            x0 = min(max(2.0, x - tw / 2), w - 2 - tw)
        anchors.append((x0, x0 + tw, sy(p["y"])))
        anchors_of.append(x0)
    bases = place_labels(anchors, size.font + 2, MT, H - MB - 2)
    for p, x0, base in zip(pts, anchors_of, bases):
        x, y = sx(p["x"]), sy(p["y"])
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{p["color"]}" stroke="#fff" stroke-width="1.5"/>')
        parts.append(f'<text x="{x0:.1f}" y="{base - 3:.1f}" fill="#111827" font-weight="600">{_e(p["label"])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def lines(series: Sequence[dict], *, title: str, xlabel: str, ylabel: str, empty: str, size: Size = WIDE) -> str:
    """series: {"label", "color", "points": [[x, y], ...]}; the legend sits above the plot."""
    ser = [s for s in series if s.get("points")]
    if not ser:
        return _empty(title, empty, size)
    allx = [p[0] for s in ser for p in s["points"]]
    ally = [p[1] for s in ser for p in s["points"]]
    xt = nice_ticks(min(0.0, min(allx)), max(allx))
    yt = nice_ticks(min(0.0, min(ally)), max(ally))
    leg = _legend_height([s["label"] for s in ser], size)
    hh = H + leg
    top = MT + leg + 4
    sx = lambda v: ML + (v - xt[0]) / (xt[-1] - xt[0]) * (size.w - ML - MR)  # noqa: E731
    sy = lambda v: hh - MB - (v - yt[0]) / (yt[-1] - yt[0]) * (hh - MB - top)  # noqa: E731
    parts = _open(title, hh, size)
    _axes(parts, xt, yt, sx, sy, xlabel, ylabel, hh, size)
    for s in ser:
        d = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(s["points"]))
        parts.append(f'<path d="{d}" fill="none" stroke="{s["color"]}" stroke-width="2" '
                     f'stroke-linejoin="round"/>')
    _legend(parts, [(s["label"], s["color"], False) for s in ser], MT + 4, size)
    parts.append("</svg>")
    return "".join(parts)


MAX_LABEL = 22  # characters of a category label before it is cut (the full name is in the bar's tooltip)


def grouped_bars(groups: Sequence[str], series: Sequence[dict], *, title: str, ylabel: str, empty: str,
                 size: Size = WIDE) -> str:
    """groups: x categories (labels); series: {"label", "color", "values": [float|None per group]}. Category
    labels stand upright when they do not fit side by side."""
    if not groups or not series:
        return _empty(title, empty, size)
    w = size.w
    plot_w = w - ML - MR
    gw = plot_w / len(groups)
    shown = [g if len(g) <= MAX_LABEL else g[:MAX_LABEL - 1] + "…" for g in groups]
    widths = [text_width(g, size.font) for g in shown]
    upright = max(widths) + 6 > gw
    below = (max(widths) + 10) if upright else size.font + 8
    leg = _legend_height([s["label"] for s in series], size)
    top = MT + leg + 4
    hh = top + 240 + below
    y0 = hh - below
    yt = [0, 20, 40, 60, 80, 100]
    bw = min(28.0, gw * 0.8 / len(series))
    sy = lambda v: y0 - v / 100.0 * (y0 - top)  # noqa: E731
    parts = _open(title, hh, size)
    x0 = ML
    for v in yt:
        y = sy(v)
        parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{w - MR}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#4b5563">{v}</text>')
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{w - MR}" y2="{y0}" stroke="#6b7280"/>')
    parts.append(f'<text transform="translate(14,{(y0 + top) / 2:.1f}) rotate(-90)" text-anchor="middle" '
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
        if upright:
            parts.append(f'<text class="cat" transform="translate({cx + size.font * 0.35:.1f},{y0 + 6}) rotate(-90)" '
                         f'text-anchor="end" fill="#111827">{_e(shown[gi])}<title>{_e(g)}</title></text>')
        else:
            parts.append(f'<text class="cat" x="{cx:.1f}" y="{y0 + size.font + 2}" text-anchor="middle" '
                         f'fill="#111827">{_e(shown[gi])}<title>{_e(g)}</title></text>')
    _legend(parts, [(s["label"], s["color"], False) for s in series], MT + 4, size)
    parts.append("</svg>")
    return "".join(parts)
