"""Notice a collapsed contrastive run: every image and caption mapped to the same embedding.

Then all logits of a row are equal and the softmax loss sits at log(n) for n columns (with one or many positives
per row alike), where no gradient separates the pairs again; recall drops to chance while the loss looks merely
"flat". Seen on class-folder data at learning rates tuned on richer captions (docs/benchmarks.md). The watch
reads the logged loss only (no extra sync) and says once what to do.

After the run, `recall_collapse` reads the same failure off a label-level evaluation (eval.json `label_level`):
recall 0 for every label but one or two (all but one with three labels or fewer), or one label answering most
queries, far more than its share of them (docs/decisions.md, "Runs that did not learn").
"""

from __future__ import annotations

import math
from typing import Any


class CollapseWatch:
    """`observe(step, loss)` → a message the first time the loss has stayed within `tol` (relative) of log(n) for
    `patience` consecutive log rows after `after_step`; None otherwise."""

    def __init__(self, columns: int, *, after_step: int, lr: float, patience: int = 3, tol: float = 0.002):
        self.uniform = math.log(max(2, int(columns)))
        self.after_step, self.lr, self.patience, self.tol = int(after_step), float(lr), int(patience), float(tol)
        self._streak = 0
        self.fired = False

    def observe(self, step: int, loss: float) -> str | None:
        if self.fired or step <= self.after_step:
            return None
        self._streak = self._streak + 1 if abs(loss - self.uniform) <= self.tol * self.uniform else 0
        if self._streak < self.patience:
            return None
        self.fired = True
        return (f"the loss has stayed at {loss:.3f} ≈ log of the batch ({self.uniform:.3f}), the value when every "
                f"image and caption get the same embedding: the run has probably collapsed (recall near chance). "
                f"Start again with a lower --lr (this run: {self.lr:g}; try {self.lr / 10:g})")


ANSWER_SHARE = 50.0  # "most queries": at least this share (%) answered by one label ...
ANSWER_OVER = 2.0  # ... and at least this many times the share a perfect model would give it (capped at 95 %)


def recall_collapse(level: dict[str, Any]) -> dict[str, Any] | None:
    """{"kind": "zero_recall" | "one_answer", "labels", "zero_labels", "label", "share", "direction"} when the
    label-level figures of one evaluation show a collapse; None otherwise (or without per-label figures)."""
    per = {str(k): v for k, v in (level.get("per_label") or {}).items() if isinstance(v, dict)}
    if len(per) < 2:
        return None
    r1 = {name: float((m.get("i2t") or {}).get("r1") or 0.0) for name, m in per.items()}
    alive = sorted(n for n, v in r1.items() if v > 0)
    zero = sorted(n for n, v in r1.items() if v <= 0)
    if len(alive) <= (1 if len(per) <= 3 else 2):
        return {"kind": "zero_recall", "labels": alive, "zero_labels": zero, "label": alive[0] if alive else None,
                "share": None, "direction": "i2t"}
    for direction, count in (("i2t", "n_images"), ("t2i", "n_captions")):
        answers = ((level.get("top_answers") or {}).get(direction) or [])[:1]
        total = sum(int(m.get(count) or 0) for m in per.values())
        if not answers or total <= 0 or answers[0][0] not in per:
            continue
        label, share = str(answers[0][0]), float(answers[0][1])
        fair = 100.0 * int(per[label].get(count) or 0) / total  # a perfect model's share for this label
        if share >= max(ANSWER_SHARE, min(95.0, ANSWER_OVER * fair)):
            return {"kind": "one_answer", "labels": alive, "zero_labels": zero, "label": label, "share": share,
                    "direction": direction}
    return None
