"""Notice a collapsed contrastive run: every image and caption mapped to the same embedding.

Then all logits of a row are equal and the softmax loss sits at log(n) for n columns (with one or many positives
per row alike), where no gradient separates the pairs again; recall drops to chance while the loss looks merely
"flat". Seen on class-folder data at learning rates tuned on richer captions (docs/benchmarks.md). The watch
reads the logged loss only (no extra sync) and says once what to do.
"""

from __future__ import annotations

import math


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
