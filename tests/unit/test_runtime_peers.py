"""How a hosted service finds the services it calls (runtime.peer_addresses)."""

from conveyor_core.runtime import peer_addresses
from conveyor_core.settings import CoreSettings, load


def test_a_configured_address_wins_over_a_hosted_peer() -> None:
    core = load(CoreSettings, queue_address="queue.internal:50051")
    assert peer_addresses(core, {"queue", "events"}, "127.0.0.1:7000") == {
        "queue": "queue.internal:50051",
        "events": "127.0.0.1:7000",
    }


def test_a_peer_neither_configured_nor_hosted_is_absent() -> None:
    core = load(CoreSettings)
    assert peer_addresses(core, set(), "127.0.0.1:7000") == {}
