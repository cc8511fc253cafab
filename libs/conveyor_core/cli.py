"""`conveyor` command line: serve services, run the embedded platform, migrate schemas.

conveyor serve queue            # one service, as a Kubernetes pod runs it
conveyor serve console          # the web console (HTTP on CONVEYOR_CONSOLE_LISTEN_ADDRESS),
                                # calling the services at CONVEYOR_{QUEUE,EVENTS,...}_ADDRESS
conveyor serve                  # every service and the console in one process
conveyor run --example          # embedded default + an example producer and worker
conveyor run --app billing.app:app
                                # embedded default hosting a Python app (conveyor.App)
conveyor worker billing.app:app # an executor hosting the app, leasing only its queues,
                                # from the platform at --address (default 127.0.0.1:50051)
conveyor serve executor --app billing.app:app
                                # the same as a Kubernetes pod runs it
conveyor migrate [queue ...]    # apply schema migrations and exit
conveyor token create --name billing-app --namespace billing --role submitter --role viewer
                                # a new bearer token and its principals-file entry
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from conveyor_core import db, migrations
from conveyor_core.auth import ALL_NAMESPACES, Role, hash_token, new_token, parse_principals
from conveyor_core.metrics import configure_metrics
from conveyor_core.runtime import (
    SERVICES,
    Platform,
    build_service,
    coordination_from,
    freeze_startup_heap,
)
from conveyor_core.settings import ConfigurationError, CoreSettings, load
from conveyor_core.telemetry import configure_logging, configure_tracing, shutdown_tracing
from conveyor_sdk import AppError

log = logging.getLogger("conveyor")


async def _serve(
    core: CoreSettings,
    names: Sequence[str],
    example: bool,
    hosting: dict[str, Any] | None = None,
) -> None:
    shop = None
    if example and hosting and any(a.workflows for a in hosting["apps"]):
        from conveyor_core import example_workflow

        shop = example_workflow.start_shop()  # before the first session needs it
    platform = Platform(core, names, hosting=hosting)
    port = await platform.start()
    freeze_startup_heap()  # full GC pauses were the latency tail (see its docstring)
    assert platform.server is not None
    platform.install_signal_handlers(asyncio.get_running_loop())
    host = core.listen_address.rpartition(":")[0]
    _print_banner(core, names, f"{host}:{port}", platform)
    example_task = workflow_task = None
    if example:
        from conveyor_core.example import run_example

        example_task = asyncio.create_task(run_example(f"{host}:{port}"))
        example_task.add_done_callback(_report_example_failure)
        if shop is not None:
            from conveyor_core import example_workflow

            workflow_task = asyncio.create_task(
                example_workflow.run_workflow_example(f"{host}:{port}", shop)
            )
            workflow_task.add_done_callback(_report_example_failure)
    try:
        await platform.server.wait_for_termination()
    finally:
        if example_task is not None:
            example_task.cancel()
        if workflow_task is not None:
            workflow_task.cancel()
        if shop is not None:
            shop.stop()
        await platform.stop()


def _report_example_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the example stopped", exc_info=task.exception())


def _print_banner(
    core: CoreSettings, names: Sequence[str], address: str, platform: Platform
) -> None:
    storage = (
        db.redacted(core.database_url) if core.database_url else f"SQLite under {core.data_dir}/"
    )
    coordination = "Redis" if core.redis_url else "in-process"
    security = (
        f"bearer tokens from {core.auth_tokens_file}" if core.auth_enabled else "off (open to all)"
    )
    if core.tls_cert_file:
        security += "; mutual TLS" if core.tls_client_ca_file else "; TLS"
    lines = [
        f"Conveyor is serving {', '.join(n for n in names if n != 'console') or 'health only'}"
        f" on {address}",
        f"  storage: {storage}; coordination: {coordination}",
        f"  authentication: {security} (docs/security.md)",
        "  talk to it with any gRPC client, e.g. (grpcurl uses server reflection):",
        f"    grpcurl -plaintext {address} list",
        f'    grpcurl -plaintext -d \'{{"parent": "namespaces/demo/queues/default",'
        f' "work_order": {{"priority": 5}}}}\' {address}'
        " conveyor.queue.v1.WorkOrderQueueService/SubmitWorkOrder",
        "  Python: from conveyor.queue.v1 import service_pb2_grpc (stubs in libs/conveyor_proto)",
        "  stop with Ctrl-C",
    ]
    if "console" in names:
        lines.insert(3, f"  web console: {platform.service('console').url} (docs/console.md)")
    if "executor" in names and platform.service("executor").task_host is not None:
        executor = platform.service("executor")
        tasks = ", ".join(sorted(n for _, n in executor.task_host.tasks)) or "none"
        workflows = ", ".join(sorted(w for a in executor.apps for w in a.workflows)) or "none"
        s = executor.settings
        lines.insert(
            3,
            f"  hosting tasks: {tasks}; workflows: {workflows} (docs/workflows.md): "
            f"namespace {s.namespace}, queues {list(s.queues)}",
        )
    print("\n".join(lines), flush=True)  # the banner is the command's output, not a log


async def _migrate(core: CoreSettings, names: Sequence[str]) -> None:
    coordination = coordination_from(core)
    for name in names:
        service = build_service(name, core, coordination)
        if not hasattr(service, "migrations"):  # the console keeps no schema
            await service.stop()
            continue
        engine = db.create_engine(service.database_url, core)  # type: ignore[attr-defined]
        try:
            await migrations.upgrade(engine, service.migrations)
            revision = await migrations.current_revision(engine, service.migrations)
            log.info("%s schema at revision %s", name, revision)
        finally:
            await engine.dispose()
            await service.stop()


def _token_create(name: str, namespaces: Sequence[str], roles: Sequence[str]) -> int:
    """Print a new token (once: only its digest is kept) and the entry that admits it."""
    token = new_token()
    entry = {
        "name": name,
        "token_sha256": hash_token(token),
        "namespaces": list(namespaces),
        "roles": list(roles),
    }
    try:
        parse_principals(json.dumps({"principals": [entry]}), "the new entry")
    except ValueError as exc:
        print(f"conveyor: {exc}", file=sys.stderr)
        return 2
    print(f"token (shown once; give it to {name}, keep it secret):\n  {token}")
    print("add this entry to the principals file (CONVEYOR_AUTH_TOKENS_FILE):")
    print("  " + json.dumps(entry))
    return 0


def _hosting(args: argparse.Namespace) -> dict[str, Any] | None:
    """The executor's hosted app from --app (or the worker's positional app), validated."""
    spec = getattr(args, "app", None)
    if not spec:
        return None
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # `module:app` of the current directory, as python -m does
    from conveyor_sdk import load_app

    return {"apps": [load_app(spec)], "only_app_queues": args.command != "run"}


def _worker_settings(core: CoreSettings, address: str, listen: str) -> CoreSettings:
    """A worker calls the platform at `address` unless its peers are configured."""
    update: dict[str, Any] = {"listen_address": listen}
    for field in ("queue_address", "events_address", "journal_address", "scheduler_address"):
        if not getattr(core, field):
            update[field] = address
    return core.model_copy(update=update)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="conveyor", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve services (default: all) on CONVEYOR_LISTEN_ADDRESS")
    serve.add_argument("services", nargs="*", choices=[[], *SERVICES], default=[])
    run = sub.add_parser("run", help="the whole platform on the embedded default")
    run.add_argument(
        "--example", action="store_true", help="also run an example producer and worker"
    )
    run.add_argument("--app", help="host this Python app (module:attribute) in the executor")
    serve.add_argument("--app", help="the executor hosts this app and leases only its queues")
    worker = sub.add_parser("worker", help="an executor hosting a Python app (module:attribute)")
    worker.add_argument("app", help="module:attribute of a conveyor.App, e.g. billing.app:app")
    worker.add_argument(
        "--address",
        default="127.0.0.1:50051",
        help="the platform (queue, events, journal) unless CONVEYOR_*_ADDRESS say otherwise",
    )
    worker.add_argument(
        "--listen",
        default="127.0.0.1:0",
        help="where the worker's own ExecutorService listens (default: any free port)",
    )
    migrate = sub.add_parser("migrate", help="apply schema migrations and exit")
    migrate.add_argument("services", nargs="*", default=[])
    token = sub.add_parser("token", help="bearer tokens for CONVEYOR_AUTH_TOKENS_FILE")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="print a new token and its principals entry")
    create.add_argument("--name", required=True, help="who holds it, e.g. billing-app")
    create.add_argument(
        "--namespace",
        action="append",
        required=True,
        dest="namespaces",
        help=f"a namespace it may use (repeat; {ALL_NAMESPACES!r} for all)",
    )
    create.add_argument(
        "--role",
        action="append",
        required=True,
        dest="roles",
        choices=[role.value for role in Role],
        help="a role it holds (repeat)",
    )
    args = parser.parse_args(argv)
    if args.command == "token":  # needs no settings
        return _token_create(args.name, args.namespaces, args.roles)

    try:
        core = load(CoreSettings)
    except ConfigurationError as exc:
        print(f"conveyor: {exc}", file=sys.stderr)
        return 2
    configure_logging(core)
    names = list(args.services) if getattr(args, "services", None) else list(SERVICES)
    if args.command == "worker":
        names, core = ["executor"], _worker_settings(core, args.address, args.listen)
    try:
        hosting = _hosting(args)
    except AppError as exc:
        print(f"conveyor: {exc}", file=sys.stderr)
        return 2
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        print(f"conveyor: unknown service(s) {unknown}; known: {list(SERVICES)}", file=sys.stderr)
        return 2
    try:
        if args.command == "migrate":
            asyncio.run(_migrate(core, names))
        else:
            process_name = "conveyor" if len(names) > 1 else f"conveyor-{names[0]}"
            if core.otlp_endpoint:  # without a collector, recording spans is pure cost;
                # W3C trace context still propagates through the API's non-recording spans
                configure_tracing(process_name, core)
            configure_metrics(process_name, core)
            example = getattr(args, "example", False)
            if example and hosting is None and "executor" in names:
                from conveyor_core import example_workflow  # the workflow walkthrough's app

                hosting = {"apps": [example_workflow.app], "only_app_queues": False}
            try:
                asyncio.run(_serve(core, names, example=example, hosting=hosting))
            finally:
                shutdown_tracing()  # bounded final flush (CONVEYOR_OTLP_SHUTDOWN_TIMEOUT_SECONDS)
    except ConfigurationError as exc:
        print(f"conveyor: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # start-up failures: one clear line, the traceback at DEBUG
        log.debug("start-up failure", exc_info=True)
        print(f"conveyor: {args.command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
