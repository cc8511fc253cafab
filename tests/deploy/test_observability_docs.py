"""deploy/observability/ and its docs agree: each alert links to a runbook section that
exists, each panel has a query, and every setting the ops docs name is a real one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
RUNBOOK = ROOT / "docs" / "operations.md"
README = (ROOT / "README.md").read_text()


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as dashes."""
    found = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return found


def test_every_alert_links_to_a_runbook_section_and_has_a_severity() -> None:
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())
    sections = anchors(RUNBOOK.read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert len(alerts) >= 8
    for rule in alerts:
        path, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert path == "docs/operations.md" and anchor in sections, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]


def test_the_dashboard_panels_each_have_queries_and_unique_ids() -> None:
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 20
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"


def test_settings_named_in_the_ops_docs_exist() -> None:
    named: set[str] = set()
    for doc in ("operations.md", "observability.md"):
        text = (ROOT / "docs" / doc).read_text()
        named |= set(re.findall(r"`(CONVEYOR_[A-Z0-9_]+)`", text))
    wildcard = {name for name in named if name.endswith("_")}  # prefixes like CONVEYOR_*_
    missing = sorted(n for n in named - wildcard if f"`{n}`" not in README)
    assert missing == []
