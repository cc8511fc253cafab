"""The whole platform with security on: scoped bearer tokens, and mutual TLS between the
four servers (PostgreSQL + Redis), or tokens on the embedded default, where the services
in one process reach each other with an internal identity."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from pydantic import SecretStr

from conveyor.events.v1 import service_pb2_grpc as events_grpc
from conveyor.executor.v1 import messages_pb2 as executor_pb
from conveyor.executor.v1 import service_pb2 as executor_rpc
from conveyor.executor.v1 import service_pb2_grpc as executor_grpc
from conveyor.scheduler.v1 import service_pb2_grpc as scheduler_grpc
from conveyor_core.settings import CoreSettings
from tests.helpers.e2e import (
    FAST_PLATFORM,
    NAMESPACE,
    Deployment,
    endpoint,
    eventually,
    http_job,
    runs_of,
    schedule_every_second,
    start_embedded,
    start_separately,
)
from tests.helpers.http_fake import HttpFake, Reply
from tests.helpers.journal import read_journal
from tests.helpers.security import Principals, TlsMaterial

#: What the services' own token needs (docs/security.md).
SERVICE_ROLES = ["system", "submitter", "worker", "viewer"]


@pytest.fixture(autouse=True)
def fast_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FAST_PLATFORM.items():
        monkeypatch.setenv(name, value)


async def runs_a_job_and_journals_it(deployment: Deployment) -> None:
    """The team's token defines a job; it runs; the team reads its runs and journal."""
    with HttpFake() as web:
        web.route("GET", "/ok", Reply(200, body=b"fine"))
        async with (
            deployment.channel(deployment.scheduler) as scheduler_channel,
            deployment.channel(deployment.executor) as executor_channel,
            deployment.channel(deployment.events) as events_channel,
        ):
            scheduler = scheduler_grpc.SchedulerServiceStub(scheduler_channel)
            executor = executor_grpc.ExecutorServiceStub(executor_channel)
            journal = events_grpc.JournalServiceStub(events_channel)
            await schedule_every_second(scheduler, "ok", http_job(endpoint("ok", web.url("/ok"))))
            job = f"namespaces/{NAMESPACE}/jobs/ok"

            async def a_succeeded_run() -> executor_pb.Run | None:
                for run in await runs_of(executor, job):
                    if run.state == executor_pb.RUN_STATE_SUCCEEDED:
                        return run
                return None

            run = await eventually(a_succeeded_run, "a succeeded run under security")

            async def trail() -> set[str] | None:
                records = await read_journal(
                    journal, correlation_id=run.correlation_id, namespace=NAMESPACE
                )
                types = {r.type for r in records}
                wanted = {
                    "scheduler.schedule.fired",
                    "queue.work_order.leased",
                    "executor.run.succeeded",
                }
                return types if wanted <= types else None

            await eventually(trail, "the run's journal trail, appended by the services' relays")

            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await executor.ListRuns(executor_rpc.ListRunsRequest(parent="namespaces/other"))
            assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_four_servers_with_mutual_tls_and_scoped_tokens(
    postgres_core: CoreSettings, tmp_path: Path
) -> None:
    (tmp_path / "tls").mkdir()
    tls = TlsMaterial(tmp_path / "tls")
    principals = Principals(tmp_path / "principals.json")
    services_token = principals.add("conveyor-services", ["*"], SERVICE_ROLES)
    team_token = principals.add("team-e2e", [NAMESPACE], ["operator", "viewer"])
    core = postgres_core.model_copy(
        update={
            "auth_tokens_file": str(principals.path),
            "peer_token": SecretStr(services_token),
            "tls_cert_file": tls.server.cert,
            "tls_key_file": tls.server.key,
            "tls_client_ca_file": tls.ca_file,
            "tls_ca_file": tls.ca_file,
        }
    )
    deployment = await start_separately(core)
    team_cert = tls.client("team-e2e.example")
    deployment.client = CoreSettings(
        tls_ca_file=tls.ca_file, tls_cert_file=team_cert.cert, tls_key_file=team_cert.key
    )
    deployment.token = team_token
    try:
        await runs_a_job_and_journals_it(deployment)
    finally:
        await deployment.stop()


async def test_the_embedded_platform_with_tokens_needs_no_token_of_its_own(
    tmp_path: Path,
) -> None:
    principals = Principals(tmp_path / "principals.json")
    team_token = principals.add("team-e2e", [NAMESPACE], ["operator", "viewer"])
    core = CoreSettings(data_dir=tmp_path, auth_tokens_file=str(principals.path))
    deployment = await start_embedded(core)
    deployment.token = team_token
    try:
        await runs_a_job_and_journals_it(deployment)
    finally:
        await deployment.stop()
