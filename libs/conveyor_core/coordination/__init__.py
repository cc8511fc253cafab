"""Coordination between replicas: wake-ups, leader leases, shared counters, rate limits.

`RedisCoordination` serves deployments with several replicas;
`InProcessCoordination` the embedded single-process default. Both implement
the `Coordination` protocol.
"""

from conveyor_core.coordination.base import (
    Coordination,
    CoordinationUnavailable,
    Lease,
    Listener,
)
from conveyor_core.coordination.inprocess import InProcessCoordination
from conveyor_core.coordination.redis import RedisCoordination

__all__ = [
    "Coordination",
    "CoordinationUnavailable",
    "InProcessCoordination",
    "Lease",
    "Listener",
    "RedisCoordination",
]
