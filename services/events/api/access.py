"""Who may call each EventStoreService and JournalService method when authentication is on
(docs/security.md)."""

from __future__ import annotations

from conveyor_core.auth import Access, Role, access

EVENT_STORE_ACCESS: dict[str, Access] = {
    # producers
    "PublishEvents": access(Role.SUBMITTER, "parent"),
    # consumer runs
    "ReserveEvents": access(Role.WORKER, "parent"),
    "ReleaseEvents": access(Role.WORKER, "parent"),
    "ConsumeEvents": access(Role.WORKER, "parent"),
    "CommitState": access(Role.WORKER, "name"),
    # Commit's topics are checked by the servicer to lie in `parent`'s namespace.
    "Commit": access(Role.WORKER, "parent", "state.name"),
    # reading
    "GetTopic": access(Role.VIEWER, "name"),
    "ListTopics": access(Role.VIEWER, "parent"),
    "GetTopicStats": access(Role.VIEWER, "name"),
    "ListEvents": access(Role.VIEWER, "parent"),
    "GetEvent": access(Role.VIEWER, "name"),
    "ListStaleEvents": access(Role.VIEWER, "parent"),
    "GetState": access(Role.VIEWER, "name"),
    # people managing topics and events
    "CreateTopic": access(Role.OPERATOR, "parent"),
    "SkipEvent": access(Role.OPERATOR, "name"),
}

JOURNAL_ACCESS: dict[str, Access] = {
    # The services' outbox relays; a client must not forge the audit trail.
    "AppendJournalRecords": access(Role.SYSTEM, namespaces=("records.namespace",)),
    # An empty namespace filter reads every namespace: only for principals with "*".
    "ReadJournal": access(Role.VIEWER, namespaces=("filter.namespace",)),
    "SubscribeJournal": access(Role.VIEWER, namespaces=("filter.namespace",)),
}
