"""The one exponential backoff of the platform (pure).

The delay after `failures` failed tries (>= 1) is

    min(initial * coefficient^(failures-1), maximum), then spread uniformly by +/- jitter,

as the conveyor.common.v1.RetryPolicy comment defines it. The queue (retries of a
work order, from its stored policy), the executor (retries within one attempt)
and the outbox relays (deliveries to the journal) all use `backoff_seconds`.

It never raises, whatever the numbers: a stored policy written before validation
refused such values (a NaN or infinite coefficient, NaN jitter, a coefficient
whose powers overflow) gets `maximum`, the longest delay its policy allows, where
the arithmetic has no answer; a jitter outside 0..1 counts as none.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

#: random.uniform, or a seeded generator's, or a test's.
Uniform = Callable[[float, float], float]


def backoff_seconds(
    failures: int,
    *,
    initial: float,
    coefficient: float,
    maximum: float,
    jitter: float,
    uniform: Uniform = random.uniform,
) -> float:
    """Seconds to wait after `failures` failed tries (see the module doc); never negative."""
    cap = max(maximum, 0.0) if not math.isnan(maximum) else 0.0
    try:
        base = initial * coefficient ** max(failures - 1, 0)
    except (OverflowError, ZeroDivisionError, ValueError):
        base = cap
    if not math.isfinite(base) or base > cap:  # NaN, inf, or past the cap
        base = cap
    spread_of = jitter if 0 <= jitter <= 1 else 0.0  # NaN: no jitter
    if spread_of:
        spread = base * spread_of
        base += uniform(-spread, spread)
    return max(base, 0.0)


@dataclass(frozen=True, slots=True)
class RetryBackoff:
    """The backoff's four numbers, in seconds; `delay(n)` is `backoff_seconds(n, ...)`."""

    initial: float = 0.2
    coefficient: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.2

    def delay(self, failures: int, uniform: Uniform = random.uniform) -> float:
        return backoff_seconds(
            failures,
            initial=self.initial,
            coefficient=self.coefficient,
            maximum=self.maximum,
            jitter=self.jitter,
            uniform=uniform,
        )
