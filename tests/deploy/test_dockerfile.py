"""deploy/Dockerfile and the files around it: pinned bases, non-root, the conveyor entry point.

Needs no YAML parser, so it runs wherever the suite does.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def stages(path: Path) -> list[list[tuple[str, str]]]:
    """Instructions grouped by stage; stage 0 holds the ARGs before the first FROM."""
    groups: list[list[tuple[str, str]]] = [[]]
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            groups.append([])
        groups[-1].append((keyword, rest))
    return groups


def base_images(path: Path) -> list[str]:
    """Every FROM image with global ARG defaults substituted; earlier stage names skipped."""
    groups = stages(path)
    defaults = {}
    for keyword, rest in groups[0]:
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
    images, stage_names = [], set()
    for group in groups[1:]:
        words = [w for w in group[0][1].split() if not w.startswith("--")]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), words[0])
        if len(words) >= 3 and words[1].upper() == "AS":
            stage_names.add(words[2])
        if image not in stage_names:
            images.append(image)
    return images


def test_dockerfile_is_multi_stage() -> None:
    groups = stages(DOCKERFILE)
    assert len(groups) - 1 >= 2, "a builder stage and a runtime stage"
    builder_runs = " ".join(rest for keyword, rest in groups[1] if keyword == "RUN")
    assert 'pip install ".[server]"' in builder_runs, (
        "the builder installs the project (server extra)"
    )
    final = groups[-1]
    copies = [rest for keyword, rest in final if keyword == "COPY"]
    assert any(rest.startswith("--from=") for rest in copies), "runtime copies the built venv"
    assert not any(keyword == "RUN" and "pip install" in rest for keyword, rest in final)


def test_every_base_image_is_pinned_by_tag() -> None:
    images = base_images(DOCKERFILE)
    assert images
    for image in images:
        name = image.split("@", 1)[0]
        assert ":" in name.rsplit("/", 1)[-1], f"{image}: pin a tag (and a digest for releases)"
        assert not name.endswith(":latest"), image


def test_final_stage_runs_as_a_numeric_non_root_user() -> None:
    final = stages(DOCKERFILE)[-1]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "the runtime stage must set USER"
    uid = users[-1].split(":", 1)[0]
    # Numeric, so Kubernetes' runAsNonRoot can check it without /etc/passwd.
    assert uid.isdigit(), f"USER {users[-1]}: use a numeric uid"
    assert int(uid) != 0
    assert uid == "10001"


def test_entrypoint_cmd_and_port() -> None:
    final = dict(stages(DOCKERFILE)[-1])  # the last occurrence wins, as in Docker
    assert final["ENTRYPOINT"] == '["conveyor"]', "exec form, so conveyor is PID 1 and gets SIGTERM"
    assert final["CMD"] == '["serve"]'
    assert final["EXPOSE"].split() == ["50051"]


def test_dockerignore_keeps_what_the_build_needs() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for needed in ("pyproject.toml", "libs", "services", "protos"):
        assert f"!{needed}" in ignore, f"{needed} must reach the build context"
    for copied in ("pyproject.toml", "libs", "services", "protos"):
        assert (ROOT / copied).exists(), copied


def test_nothing_under_deploy_uses_the_latest_tag() -> None:
    offenders = []
    for path in sorted(DEPLOY.rglob("*")):
        if not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if re.search(r":latest\b", line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
