"""The `conveyor` command: operator commands here, platform commands from conveyor_core.

    conveyor queues list                       # tables for people
    conveyor -o json runs list --state failed  # JSON for scripts
    conveyor runs watch 5c14520f-...           # a live progress bar until the run ends

`serve`, `run`, `worker`, `migrate` and `token` are handed to conveyor_core.cli as they
were, imported only then: a client-only install (`pip install 'conveyor[cli]'`) has no
server side. See docs/cli.md for every command, the output modes and the exit codes.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from conveyor_cli.commands import ALL_GROUPS
from conveyor_cli.session import DEFAULT_ADDRESS, Exit, Options, Output, options_of

#: Commands of conveyor_core.cli (argparse), passed through untouched.
PLATFORM_COMMANDS = {
    "serve": "serve services (default: all) on CONVEYOR_LISTEN_ADDRESS",
    "run": "the whole platform on the embedded default (SQLite, in-process)",
    "worker": "an executor hosting a Python app (module:attribute)",
    "migrate": "apply schema migrations and exit",
    "token": "bearer tokens for CONVEYOR_AUTH_TOKENS_FILE",
}

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _version() -> str:
    try:
        return importlib.metadata.version("conveyor")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class ConveyorGroup(click.Group):
    """Lists operator commands and platform commands apart in --help, in their order."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        operator: list[tuple[str, str]] = []
        platform: list[tuple[str, str]] = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            target = platform if name in PLATFORM_COMMANDS else operator
            target.append((name, command.get_short_help_str(limit=80)))
        for title, rows in (("Operator commands", operator), ("Platform commands", platform)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def _set_option(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """A global option given after the command: it overrides the one before it."""
    if value is None or ctx.resilient_parsing:
        return
    options = options_of(ctx)
    if param.name == "output":
        value = Output(value)
    setattr(options, str(param.name), value)


def _leaf_options() -> list[click.Option]:
    """--output, --namespace, --address, --token again on every operator command, so
    `conveyor runs list -o json` works as well as `conveyor -o json runs list`."""
    common: dict[str, Any] = {"expose_value": False, "callback": _set_option, "default": None}
    return [
        click.Option(
            ["-o", "--output"],
            type=click.Choice([o.value for o in Output]),
            help="table (default) or json",
            **common,
        ),
        click.Option(["-n", "--namespace"], help="namespace of short names", **common),
        click.Option(["--address"], help="host:port of the platform", **common),
        click.Option(["--token"], help="bearer token", **common),
    ]


def _add_leaf_options(command: click.Command) -> None:
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _add_leaf_options(sub)
    else:
        command.params.extend(_leaf_options())


@click.group(cls=ConveyorGroup, context_settings=CONTEXT)
@click.option(
    "--address",
    envvar="CONVEYOR_ADDRESS",
    default=DEFAULT_ADDRESS,
    show_default=True,
    help="host:port of the platform [env CONVEYOR_ADDRESS]",
)
@click.option("--token", envvar="CONVEYOR_TOKEN", help="bearer token [env CONVEYOR_TOKEN]")
@click.option(
    "-n",
    "--namespace",
    envvar="CONVEYOR_NAMESPACE",
    default="default",
    show_default=True,
    help="namespace of short names [env CONVEYOR_NAMESPACE]",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice([o.value for o in Output]),
    envvar="CONVEYOR_OUTPUT",
    default=Output.TABLE.value,
    show_default=True,
    help="table for people, json for scripts (one document; JSON lines for streams)",
)
@click.option(
    "--tls/--no-tls",
    envvar="CONVEYOR_TLS",
    default=False,
    help="dial TLS, trusting the system's roots or --ca-file [env CONVEYOR_TLS]",
)
@click.option(
    "--ca-file",
    envvar="CONVEYOR_TLS_CA_FILE",
    type=click.Path(dir_okay=False),
    help="PEM CA bundle to verify the platform (implies --tls) [env CONVEYOR_TLS_CA_FILE]",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="deadline of each call in seconds (not of watch or tail -f)",
)
@click.version_option(_version(), "--version", prog_name="conveyor", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, **values: Any) -> None:
    """Operate a Conveyor platform: jobs, schedules, runs, queues, dead letters, topics,
    events, workflows and their blocked runs, and the journal. Short names are read in
    --namespace (docs/cli.md, which also lists the exit codes)."""
    ctx.obj = Options(
        address=values["address"],
        token=values["token"] or None,
        namespace=values["namespace"],
        output=Output(values["output"]),
        tls=values["tls"] or bool(values["ca_file"]),
        ca_file=values["ca_file"],
        timeout=values["timeout"],
    )


def _platform_command(name: str, summary: str) -> click.Command:
    @click.command(
        name,
        help=f"{summary} (`conveyor {name} --help` for its options)",
        short_help=summary,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        raise click.exceptions.Exit(run_platform_command([name, *args]))

    return command


def run_platform_command(argv: Sequence[str]) -> int:
    try:
        from conveyor_core import cli as platform_cli
    except ImportError as exc:
        print(
            f"conveyor: `{argv[0]}` needs the server side ({exc.name} is not installed): "
            "pip install 'conveyor[server]'",
            file=sys.stderr,
        )
        return int(Exit.USAGE)
    return platform_cli.main(list(argv))


for _group in ALL_GROUPS:
    _add_leaf_options(_group)
    cli.add_command(_group)
for _name, _summary in PLATFORM_COMMANDS.items():
    cli.add_command(_platform_command(_name, _summary))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in PLATFORM_COMMANDS:  # exactly as before this CLI existed
        return run_platform_command(args)
    try:
        # Not standalone: click returns the code of click.exceptions.Exit (--help, --version,
        # session.execute) and raises the rest here, where each becomes one line and a code.
        code = cli.main(args=args, prog_name="conveyor", standalone_mode=False)
    except click.ClickException as error:  # usage errors: exit 2 with the usage line
        error.show()
        return int(error.exit_code)
    except click.exceptions.Abort:
        print("conveyor: aborted", file=sys.stderr)
        return int(Exit.INTERRUPTED)
    except KeyboardInterrupt:
        return int(Exit.INTERRUPTED)
    except BrokenPipeError:  # `conveyor ... | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(Exit.OK)
    except Exception as exc:  # a bug of the CLI: one line, not a traceback
        print(f"conveyor: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return int(Exit.ERROR)
    return code if isinstance(code, int) else int(Exit.OK)


if __name__ == "__main__":
    sys.exit(main())
