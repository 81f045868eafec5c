"""Collapse monitor for DINO (Caron et al. 2021, §5.3 and Fig. 7).

Two failure modes, both visible in the teacher's output distribution:

- **uniform collapse**: teacher and student output ~uniform; the loss sits at
  ``ln(out_dim)`` and the per-sample teacher entropy is ~``ln(out_dim)``
  (centering without enough sharpening);
- **dominant-dimension collapse**: every image maps to the same prototype; the
  entropy of the batch-mean teacher distribution falls to ~0 (sharpening without
  enough centering).

Both are judged on a moving window after a grace period, so the first iterations
(where the loss legitimately starts near ``ln(out_dim)``) do not raise an alarm.
"""
from __future__ import annotations

import math
from collections import deque


class CollapseMonitor:
    """Feed ``update(iteration, loss, teacher_entropy, batch_entropy)``; returns a warning string or None.

    ``uniform_frac``: window-mean loss and teacher entropy above this fraction of
    ``ln(out_dim)`` means uniform collapse. ``min_prototypes``: ``exp(batch entropy)``
    (the effective number of prototypes used by a batch) below this means one-hot collapse.
    """

    def __init__(self, out_dim: int, *, window: int = 20, grace: int = 20, uniform_frac: float = 0.97,
                 min_prototypes: float = 2.0) -> None:
        self.ln_k = math.log(out_dim)
        self.window = max(1, window)
        self.grace = grace
        self.uniform_frac = uniform_frac
        self.min_prototypes = min_prototypes
        self._hist: deque[tuple[float, float, float]] = deque(maxlen=self.window)
        self.warnings: list[str] = []
        self._warned: set[str] = set()

    def update(self, iteration: int, *, loss: float, teacher_entropy: float, batch_entropy: float) -> str | None:
        self._hist.append((loss, teacher_entropy, batch_entropy))
        if iteration < self.grace or len(self._hist) < self.window:
            return None
        n = len(self._hist)
        m_loss = sum(h[0] for h in self._hist) / n
        m_ent = sum(h[1] for h in self._hist) / n
        m_bent = sum(h[2] for h in self._hist) / n
        msg = None
        if m_loss >= self.uniform_frac * self.ln_k and m_ent >= self.uniform_frac * self.ln_k and "uniform" not in self._warned:
            self._warned.add("uniform")
            msg = (
                f"collapse (uniform) at iteration {iteration}: loss {m_loss:.3f} and teacher entropy {m_ent:.3f} "
                f"sit at ln(out_dim) = {self.ln_k:.3f} over the last {n} iterations. Lower the teacher "
                "temperature (or lengthen its warm-up from a lower start), lower out_dim, or raise the lr."
            )
        elif math.exp(m_bent) < self.min_prototypes and "onehot" not in self._warned:
            self._warned.add("onehot")
            msg = (
                f"collapse (one prototype) at iteration {iteration}: the batch uses exp(H) = {math.exp(m_bent):.2f} "
                "prototypes on average. Raise center_momentum's effect (lower it), raise the teacher temperature, "
                "or lower the lr."
            )
        if msg:
            self.warnings.append(msg)
        return msg
