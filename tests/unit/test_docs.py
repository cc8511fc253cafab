"""The README's configuration table names every setting the code reads."""

from __future__ import annotations

from pathlib import Path

from conveyor_console.settings import ConsoleSettings
from conveyor_core.settings import CoreSettings
from conveyor_executor.settings import ExecutorSettings
from conveyor_queue.settings import QueueSettings
from conveyor_scheduler.advisor import AdvisorSettings
from conveyor_scheduler.settings import SchedulerSettings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [
        f"{cls.model_config['env_prefix']}{name.upper()}"
        for cls in (
            CoreSettings,
            QueueSettings,
            AdvisorSettings,
            SchedulerSettings,
            ExecutorSettings,
            ConsoleSettings,
        )
        for name in cls.model_fields
        if f"`{cls.model_config['env_prefix']}{name.upper()}`" not in README
    ]
    assert missing == []
