"""Numbers as people read them, the same in the CLI, the demo's summary and the web console."""

from __future__ import annotations

import math
from typing import Any


def mean_pm(mean: Any, stderr: Any) -> str:
    """'0.6819 ± 0.0027': the standard error to two significant digits and the mean to the same
    decimal place, the precision the measurement supports (a mean printed to six digits beside
    an error in the third claims more than was measured). Anything that is not a finite number
    is shown as it came."""
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (mean, stderr)):
        return f"{mean} ± {stderr}"
    if stderr <= 0:
        return f"{mean:.4g} ± 0"
    rounded = float(f"{stderr:.2g}")  # 0.009986 is 0.010: its places are those of 0.010
    places = max(0, 1 - math.floor(math.log10(rounded)))
    return f"{mean:.{places}f} ± {stderr:.{places}f}"
