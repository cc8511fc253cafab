"""The operator commands, one module per resource (docs/cli.md lists them all)."""

from __future__ import annotations

import click

from conveyor_cli.commands.blocked import blocked, mutations, resolve
from conveyor_cli.commands.dead_letters import dead_letters
from conveyor_cli.commands.events import events, topics
from conveyor_cli.commands.jobs import jobs
from conveyor_cli.commands.journal import journal
from conveyor_cli.commands.queues import queues
from conveyor_cli.commands.runs import runs
from conveyor_cli.commands.schedules import schedules
from conveyor_cli.commands.submit import submit
from conveyor_cli.commands.workflows import sessions, workflows

#: In the order --help lists them.
ALL_GROUPS: list[click.Command] = [
    submit,
    jobs,
    schedules,
    runs,
    queues,
    dead_letters,
    topics,
    events,
    workflows,
    sessions,
    blocked,
    resolve,
    mutations,
    journal,
]
