"""Principals, access rules and the per-service access tables (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor

from conveyor.events.v1 import service_pb2 as events_rpc
from conveyor.queue.v1 import service_pb2 as queue_rpc
from conveyor.scheduler.v1 import messages_pb2 as scheduler_pb
from conveyor.scheduler.v1 import service_pb2 as scheduler_rpc
from conveyor_core.auth import (
    Access,
    Authenticator,
    Principal,
    PrincipalsFileError,
    Role,
    access,
    actor,
    authorize,
    hash_token,
    new_token,
    parse_principals,
    principal_var,
    requested_namespaces,
)
from conveyor_core.errors import InvalidArgument, PermissionDenied
from conveyor_events.api.access import EVENT_STORE_ACCESS, JOURNAL_ACCESS
from conveyor_executor.api.access import ACCESS as EXECUTOR_ACCESS
from conveyor_queue.api.access import ACCESS as QUEUE_ACCESS
from conveyor_scheduler.api.access import ACCESS as SCHEDULER_ACCESS

TABLES = {
    "conveyor.queue.v1.WorkOrderQueueService": QUEUE_ACCESS,
    "conveyor.events.v1.EventStoreService": EVENT_STORE_ACCESS,
    "conveyor.events.v1.JournalService": JOURNAL_ACCESS,
    "conveyor.scheduler.v1.SchedulerService": SCHEDULER_ACCESS,
    "conveyor.executor.v1.ExecutorService": EXECUTOR_ACCESS,
}


def entry(name: str = "app", token: str = "secret-1", **fields: object) -> dict[str, object]:
    return {
        "name": name,
        "token_sha256": hash_token(token),
        "namespaces": ["a"],
        "roles": ["viewer"],
        **fields,
    }


def document(*entries: dict[str, object]) -> str:
    return json.dumps({"principals": list(entries)})


# -- the principals file ---------------------------------------------------------------


def test_a_valid_file_maps_token_digests_and_certificate_subjects() -> None:
    principals = parse_principals(
        document(
            entry(roles=["submitter", "viewer"]),
            {
                "name": "executor",
                "certificate_subject": "executor.conveyor.svc",
                "namespaces": ["*"],
                "roles": ["worker"],
            },
        )
    )
    app = principals.by_token_hash[hash_token("secret-1")]
    assert app == Principal("app", frozenset({"a"}), frozenset({Role.SUBMITTER, Role.VIEWER}))
    executor = principals.by_subject["executor.conveyor.svc"]
    assert executor.all_namespaces and executor.roles == {Role.WORKER}


@pytest.mark.parametrize(
    ("principals", "problem"),
    [
        ([entry(roles=["root"])], "unknown role 'root'"),
        ([entry(roles=[])], "principals[0].roles: a non-empty list"),
        ([entry(namespaces=[])], "principals[0].namespaces"),
        ([entry(namespaces=[""])], "principals[0].namespaces"),
        ([entry(name="has space")], "principals[0].name"),
        ([entry(token_sha256="abc")], "64 lower-case hex digits"),
        ([entry(), entry(name="other")], "the same token as 'app'"),
        ([entry(), entry(token="secret-2")], "'app' appears twice"),
        ([{"name": "x", "namespaces": ["a"], "roles": ["viewer"]}], "needs token_sha256"),
        ([entry(token="x", extra=1)], "unknown keys ['extra']"),
        (["not an object"], "principals[0]: must be an object"),
    ],
)
def test_an_invalid_file_names_each_problem(principals: list[object], problem: str) -> None:
    with pytest.raises(PrincipalsFileError) as raised:
        parse_principals(json.dumps({"principals": principals}), "tokens.json")
    assert problem in str(raised.value)
    assert str(raised.value).startswith("tokens.json:")


@pytest.mark.parametrize("text", ["", "[]", '{"users": []}', "{not json"])
def test_a_file_of_the_wrong_shape_is_refused(text: str) -> None:
    with pytest.raises(PrincipalsFileError):
        parse_principals(text)


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(PrincipalsFileError) as raised:
        parse_principals(document(entry(roles=["root"]), entry(name="b", namespaces=[])))
    assert "principals[0].roles" in str(raised.value)
    assert "principals[1].namespaces" in str(raised.value)


def test_new_tokens_are_random_and_prefixed() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(t.startswith("cvy_") and len(t) > 40 for t in tokens)


def test_the_authenticator_reloads_a_changed_file_and_keeps_the_last_good_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "principals.json"
    path.write_text(document(entry(token="old")))
    clock = [0.0]
    authenticator = Authenticator(path, reload_seconds=10, monotonic=lambda: clock[0])
    assert authenticator.by_token("old") is not None

    path.write_text(document(entry(token="new", roles=["admin"])))
    clock[0] += 9  # not yet due: the file is not looked at
    assert authenticator.by_token("old") is not None
    clock[0] += 1
    assert authenticator.by_token("old") is None
    new = authenticator.by_token("new")
    assert new is not None and new.has_role(Role.OPERATOR)

    path.write_text("{broken")  # a bad edit keeps the last good principals in force
    clock[0] += 10
    assert authenticator.by_token("new") is not None


def test_an_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PrincipalsFileError, match="cannot read"):
        Authenticator(tmp_path / "missing.json")


def test_extra_tokens_are_accepted_besides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "principals.json"
    path.write_text(document(entry()))
    authenticator = Authenticator(path)
    internal = Principal("internal", frozenset({"*"}), frozenset({Role.ADMIN}))
    authenticator.add_token("in-process", internal)
    assert authenticator.by_token("in-process") == internal
    assert authenticator.by_token("secret-1") is not None
    assert authenticator.by_token("nope") is None


# -- rules -------------------------------------------------------------------------------

ALICE = Principal("alice", frozenset({"a", "b"}), frozenset({Role.SUBMITTER}))
ROOT = Principal("root", frozenset({"*"}), frozenset({Role.ADMIN}))


def submit(parent: str, *item_parents: str) -> queue_rpc.BatchSubmitWorkOrdersRequest:
    return queue_rpc.BatchSubmitWorkOrdersRequest(
        parent=parent,
        requests=[queue_rpc.SubmitWorkOrderRequest(parent=p) for p in item_parents],
    )


BATCH_SUBMIT = QUEUE_ACCESS["BatchSubmitWorkOrders"]


def test_the_namespaces_of_a_request_include_nested_and_repeated_fields() -> None:
    request = submit("namespaces/a/queues/q", "", "namespaces/b/queues/r")
    assert requested_namespaces(BATCH_SUBMIT, request) == {"a", "b"}
    authorize(ALICE, BATCH_SUBMIT, request, "BatchSubmit")


def test_one_item_in_a_foreign_namespace_refuses_the_whole_call() -> None:
    request = submit("namespaces/a/queues/q", "namespaces/a/queues/q", "namespaces/c/queues/q")
    with pytest.raises(PermissionDenied) as raised:
        authorize(ALICE, BATCH_SUBMIT, request, "BatchSubmit")
    assert raised.value.metadata == {"principal": "alice", "namespace": "c"}


def test_a_missing_role_is_refused_naming_it() -> None:
    with pytest.raises(PermissionDenied) as raised:
        authorize(
            ALICE,
            QUEUE_ACCESS["PauseQueue"],
            queue_rpc.PauseQueueRequest(name="namespaces/a/queues/q"),
            "Pause",
        )
    assert raised.value.metadata["required_role"] == "operator"
    assert "lacks the role 'operator'" in raised.value.message


def test_admin_holds_every_role_and_star_every_namespace() -> None:
    for table in TABLES.values():
        for rule in table.values():
            assert ROOT.has_role(rule.role)
    assert ROOT.sees("anything")


@pytest.mark.parametrize("parent", ["", "queues/q", "namespaces//queues/q", "namespace/a"])
def test_a_request_that_does_not_name_its_namespace_is_invalid(parent: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        requested_namespaces(BATCH_SUBMIT, submit(parent))
    assert raised.value.violations[0].field == "parent"


def test_an_empty_namespace_filter_means_every_namespace() -> None:
    read = JOURNAL_ACCESS["ReadJournal"]
    everything = events_rpc.ReadJournalRequest()
    assert requested_namespaces(read, everything) is None
    viewer = Principal("v", frozenset({"a"}), frozenset({Role.VIEWER}))
    with pytest.raises(PermissionDenied, match="name one"):
        authorize(viewer, read, everything, "ReadJournal")
    authorize(viewer, read, events_rpc.ReadJournalRequest(filter={"namespace": "a"}), "Read")
    authorize(ROOT, read, everything, "ReadJournal")


def test_journal_appends_need_the_system_role_in_each_record_namespace() -> None:
    append = JOURNAL_ACCESS["AppendJournalRecords"]
    request = events_rpc.AppendJournalRecordsRequest(
        records=[{"namespace": "a"}, {"namespace": "b"}]
    )
    assert requested_namespaces(append, request) == {"a", "b"}
    with pytest.raises(PermissionDenied):
        authorize(ALICE, append, request, "Append")
    system_in_a = Principal("relay", frozenset({"a"}), frozenset({Role.SYSTEM}))
    with pytest.raises(PermissionDenied, match="'b'"):
        authorize(system_in_a, append, request, "Append")


def test_update_requests_are_checked_by_the_resource_they_carry() -> None:
    rule = SCHEDULER_ACCESS["UpdateJob"]
    request = scheduler_rpc.UpdateJobRequest(job=scheduler_pb.Job(name="namespaces/b/jobs/j"))
    assert requested_namespaces(rule, request) == {"b"}


def test_the_actor_is_the_principal_when_there_is_one() -> None:
    assert actor(" alice ") == "alice"
    token = principal_var.set(ALICE)
    try:
        assert actor("") == "alice"
        assert actor("alice") == "alice"
        assert actor("bob") == "alice (on behalf of bob)"
    finally:
        principal_var.reset(token)


# -- every RPC has a sound rule -----------------------------------------------------------


def services() -> dict[str, object]:
    from conveyor.events.v1 import service_pb2 as events
    from conveyor.executor.v1 import service_pb2 as executor
    from conveyor.queue.v1 import service_pb2 as queue
    from conveyor.scheduler.v1 import service_pb2 as scheduler

    found = {}
    for module in (queue, events, scheduler, executor):
        for service in module.DESCRIPTOR.services_by_name.values():
            found[service.full_name] = service
    return found


def test_every_service_of_the_platform_has_an_access_table() -> None:
    assert set(services()) == set(TABLES)


@pytest.mark.parametrize("service_name", sorted(TABLES))
def test_every_method_has_a_rule_and_every_rule_a_method(service_name: str) -> None:
    service = services()[service_name]
    methods = {method.name for method in service.methods}  # type: ignore[attr-defined]
    assert set(TABLES[service_name]) == methods


def _field_at(message: object, path: str) -> FieldDescriptor:
    descriptor = message
    field = None
    for part in path.split("."):
        field = descriptor.fields_by_name.get(part)  # type: ignore[attr-defined]
        assert field is not None, f"{path}: no field {part!r}"
        descriptor = field.message_type
    assert field is not None
    return field


@pytest.mark.parametrize("service_name", sorted(TABLES))
def test_every_rule_names_string_fields_of_its_request(service_name: str) -> None:
    service = services()[service_name]
    for method in service.methods:  # type: ignore[attr-defined]
        rule: Access = TABLES[service_name][method.name]
        assert not method.client_streaming, "streamed requests cannot be checked per namespace"
        assert rule.names or rule.namespaces, f"{method.name} names no namespace"
        for path in rule.paths():
            field = _field_at(method.input_type, path)
            assert field.type == FieldDescriptor.TYPE_STRING, f"{method.name}: {path}"


def test_reads_need_only_the_viewer_role() -> None:
    for table in TABLES.values():
        for method, rule in table.items():
            if method.startswith(("Get", "List", "Watch", "Read", "Subscribe", "Preview")):
                assert rule.role is Role.VIEWER, method


def test_access_shorthand_keeps_the_order_of_names() -> None:
    assert access(Role.WORKER, "parent", "requests.name") == Access(
        Role.WORKER, ("parent", "requests.name")
    )
