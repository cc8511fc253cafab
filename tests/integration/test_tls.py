"""TLS and mutual TLS from settings: a real queue server, certificates from a throw-away CA."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor.queue.v1 import service_pb2 as rpc
from conveyor.queue.v1 import service_pb2_grpc
from conveyor_core.grpc import create_channel
from conveyor_core.runtime import Platform
from conveyor_core.settings import ConfigurationError, CoreSettings
from tests.helpers.queue import spec
from tests.helpers.security import CertFiles, Principals, TlsMaterial

QUEUE = "namespaces/a/queues/jobs"
Serve = Callable[..., "AsyncIterator[str]"]


@pytest.fixture
def tls(tmp_path: Path) -> TlsMaterial:
    directory = tmp_path / "tls"
    directory.mkdir()
    return TlsMaterial(directory)


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    """Start queue servers on the embedded default with extra settings; stop them after."""
    started: list[Platform] = []

    async def serve(**settings: object) -> str:
        core = CoreSettings(data_dir=tmp_path / f"data-{len(started)}", **settings)
        platform = Platform(core, ["queue"])
        started.append(platform)
        return f"127.0.0.1:{await platform.start('127.0.0.1:0')}"

    yield serve
    for platform in started:
        await platform.stop(grace=0)


async def submit(address: str, client: CoreSettings | None, token: str | None = None) -> str:
    async with create_channel(address, settings=client, token=token) as channel:
        stub = service_pb2_grpc.WorkOrderQueueServiceStub(channel)
        reply = await stub.SubmitWorkOrder(
            rpc.SubmitWorkOrderRequest(parent=QUEUE, work_order=spec()), timeout=10
        )
        return reply.work_order.name


def client_settings(tls: TlsMaterial, cert: CertFiles | None = None) -> CoreSettings:
    files = {"tls_cert_file": cert.cert, "tls_key_file": cert.key} if cert else {}
    return CoreSettings(tls_ca_file=tls.ca_file, **files)


async def test_a_tls_server_answers_clients_that_trust_its_ca_only(
    servers: Callable[..., object], tls: TlsMaterial
) -> None:
    address = await servers(tls_cert_file=tls.server.cert, tls_key_file=tls.server.key)  # type: ignore[misc]
    assert (await submit(address, client_settings(tls))).startswith(QUEUE)

    with pytest.raises(grpc.aio.AioRpcError) as plaintext:
        await submit(address, None)
    assert plaintext.value.code() is grpc.StatusCode.UNAVAILABLE

    other = Path(tls.ca_file).parent.parent / "other-ca"
    other.mkdir()
    stranger = TlsMaterial(other)  # a CA the server's certificate does not chain to
    with pytest.raises(grpc.aio.AioRpcError) as untrusted:
        await submit(address, client_settings(stranger))
    assert untrusted.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_identifies_callers_by_their_certificate(
    servers: Callable[..., object], tls: TlsMaterial, tmp_path: Path
) -> None:
    principals = Principals(tmp_path / "principals.json")
    principals.add_subject("worker-7", "worker-7.conveyor.svc", ["a"], ["submitter"])
    token = principals.add("app", ["a"], ["submitter"])
    address = await servers(  # type: ignore[misc]
        tls_cert_file=tls.server.cert,
        tls_key_file=tls.server.key,
        tls_client_ca_file=tls.ca_file,
        auth_tokens_file=str(principals.path),
    )
    known = tls.client("worker-7.conveyor.svc")
    assert (await submit(address, client_settings(tls, known))).startswith(QUEUE)

    # A certificate the CA signed but no principal names: authenticated transport,
    # unknown caller.
    unknown = tls.client("stranger.example")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await submit(address, client_settings(tls, unknown))
    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED

    # A bearer token over mTLS names the caller instead of the certificate.
    assert (await submit(address, client_settings(tls, unknown), token=token)).startswith(QUEUE)

    # No client certificate: the handshake itself is refused.
    with pytest.raises(grpc.aio.AioRpcError) as no_cert:
        await submit(address, client_settings(tls))
    assert no_cert.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_probes_get_plaintext_health_on_a_port_of_their_own(
    tls: TlsMaterial, tmp_path: Path
) -> None:
    core = CoreSettings(
        data_dir=tmp_path,
        tls_cert_file=tls.server.cert,
        tls_key_file=tls.server.key,
        tls_client_ca_file=tls.ca_file,
        health_listen_address="127.0.0.1:0",
    )
    platform = Platform(core, ["queue"])
    await platform.start("127.0.0.1:0")
    assert platform.server is not None
    health_address = f"127.0.0.1:{platform.server.health_port}"
    name = "conveyor.queue.v1.WorkOrderQueueService"
    try:
        async with grpc.aio.insecure_channel(health_address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            # Nothing but health answers there.
            stub = service_pb2_grpc.WorkOrderQueueServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.SubmitWorkOrder(
                    rpc.SubmitWorkOrderRequest(parent=QUEUE, work_order=spec()), timeout=5
                )
            assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED
            # The probe port reports what the main port does (the same health servicer).
            await platform.server.set_serving(name, False)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await platform.stop(grace=0)


async def test_missing_tls_files_are_a_configuration_error(tmp_path: Path) -> None:
    core = CoreSettings(
        data_dir=tmp_path,
        tls_cert_file=str(tmp_path / "nope.pem"),
        tls_key_file=str(tmp_path / "nope.key"),
    )
    platform = Platform(core, ["queue"])
    with pytest.raises(ConfigurationError, match="CONVEYOR_TLS_CERT_FILE: cannot read"):
        await platform.start("127.0.0.1:0")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tls_cert_file": "a.pem"}, "set both or neither"),
        ({"tls_client_ca_file": "ca.pem"}, "needs CONVEYOR_TLS_CERT_FILE"),
    ],
)
def test_incomplete_tls_settings_are_refused_at_start(
    settings: dict[str, str], message: str
) -> None:
    from conveyor_core.settings import load

    with pytest.raises(ConfigurationError, match=message):
        load(CoreSettings, **settings)
