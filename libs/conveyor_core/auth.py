"""Who may call what: bearer tokens (or mTLS identities) scoped to namespaces and roles.

Authentication is off unless `CONVEYOR_AUTH_TOKENS_FILE` names a principals
file. With it, every call except health checks and reflection must present a
known identity, and every RPC declares what it needs (`Access`): one role, and
the request fields that name the namespaces it touches. The gRPC side lives in
`conveyor_core.grpc.auth`; this module has no gRPC in it.

The principals file is JSON, usually mounted from a Kubernetes Secret:

    {"principals": [
      {"name": "billing-app", "token_sha256": "<64 hex>",
       "namespaces": ["billing"], "roles": ["submitter", "viewer"]},
      {"name": "executor", "certificate_subject": "executor.conveyor.svc",
       "namespaces": ["*"], "roles": ["worker", "submitter", "viewer", "system"]}
    ]}

Only SHA-256 digests of tokens are stored, never tokens (`conveyor token create`
prints a new token and its entry). A principal with `certificate_subject` is
matched against the common name of a verified client certificate (mTLS).

Roles (a principal holds any set of them; `admin` implies all):

| role | may |
| --- | --- |
| viewer | read: Get*, List*, stats, positions, journal Read/Subscribe, WatchRun |
| submitter | submit and cancel work orders, publish events |
| worker | lease, heartbeat, complete, fail orders; reserve, release, consume, Commit |
| operator | change things people manage: queues, jobs, schedules, topics, redrive, skip, abort |
| system | what the platform's own services do to each other: append journal records |
| admin | everything |
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor_core.errors import FieldViolation, InvalidArgument, PermissionDenied

log = logging.getLogger(__name__)

ALL_NAMESPACES = "*"
TOKEN_PREFIX = "cvy_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_RESOURCE_NAMESPACE = re.compile(r"namespaces/([^/]+)(?:/.*)?", re.DOTALL)


class Role(enum.StrEnum):
    VIEWER = "viewer"
    SUBMITTER = "submitter"
    WORKER = "worker"
    OPERATOR = "operator"
    SYSTEM = "system"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: its name, the namespaces it may touch and its roles."""

    name: str
    namespaces: frozenset[str]
    roles: frozenset[Role]

    @property
    def all_namespaces(self) -> bool:
        return ALL_NAMESPACES in self.namespaces

    def has_role(self, role: Role) -> bool:
        return Role.ADMIN in self.roles or role in self.roles

    def sees(self, namespace: str) -> bool:
        return self.all_namespaces or namespace in self.namespaces


#: The platform's own identity for calls between services hosted in one process.
def internal_principal() -> Principal:
    return Principal("conveyor-internal", frozenset({ALL_NAMESPACES}), frozenset({Role.ADMIN}))


principal_var: ContextVar[Principal | None] = ContextVar("conveyor_principal", default=None)


def current_principal() -> Principal | None:
    """The authenticated caller of the call being handled; None when authentication is off."""
    return principal_var.get()


def actor(claimed: str) -> str:
    """Who did something, for records such as a redrive's `requested_by`.

    With authentication on, the principal's name is the truth; a different
    name the request claims is kept as "on behalf of". Off, the claim is all
    there is.
    """
    principal = current_principal()
    claimed = claimed.strip()
    if principal is None:
        return claimed
    if claimed and claimed != principal.name:
        return f"{principal.name} (on behalf of {claimed})"
    return principal.name


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A new random bearer token (256 bits), recognisable by its prefix in a leak scanner."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class PrincipalsFileError(ValueError):
    """The principals file is missing, unreadable or invalid; the message lists each problem."""


@dataclass(frozen=True)
class _Principals:
    by_token_hash: Mapping[str, Principal]
    by_subject: Mapping[str, Principal]


def parse_principals(text: str, source: str = "principals file") -> _Principals:
    """Validate a principals document; raises PrincipalsFileError listing every problem."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PrincipalsFileError(f"{source}: not JSON: {exc}") from None
    entries = document.get("principals") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise PrincipalsFileError(f'{source}: must be an object with a "principals" list')
    problems: list[str] = []
    by_hash: dict[str, Principal] = {}
    by_subject: dict[str, Principal] = {}
    names: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"principals[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be an object")
            continue
        unknown = set(entry) - {
            "name",
            "token_sha256",
            "certificate_subject",
            "namespaces",
            "roles",
        }
        if unknown:
            problems.append(f"{where}: unknown keys {sorted(unknown)}")
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            problems.append(f"{where}.name: required, 1-128 of A-Z a-z 0-9 . _ : @ / -")
            name = f"<{where}>"
        elif name in names:
            problems.append(f"{where}.name: {name!r} appears twice")
        names.add(name)
        namespaces = entry.get("namespaces")
        if (
            not isinstance(namespaces, list)
            or not namespaces
            or not all(isinstance(n, str) and n for n in namespaces)
        ):
            problems.append(f'{where}.namespaces: a non-empty list of namespaces, or ["*"]')
            namespaces = []
        roles: list[Role] = []
        raw_roles = entry.get("roles")
        if not isinstance(raw_roles, list) or not raw_roles:
            problems.append(f"{where}.roles: a non-empty list of {[r.value for r in Role]}")
        else:
            for role in raw_roles:
                try:
                    roles.append(Role(role))
                except ValueError:
                    problems.append(
                        f"{where}.roles: unknown role {role!r}; known: {[r.value for r in Role]}"
                    )
        principal = Principal(name, frozenset(namespaces), frozenset(roles))
        digest, subject = entry.get("token_sha256"), entry.get("certificate_subject")
        if digest is None and subject is None:
            problems.append(f"{where}: needs token_sha256 or certificate_subject (or both)")
        if digest is not None:
            if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
                problems.append(
                    f"{where}.token_sha256: 64 lower-case hex digits (sha256 of the token)"
                )
            elif digest in by_hash:
                problems.append(f"{where}.token_sha256: the same token as {by_hash[digest].name!r}")
            else:
                by_hash[digest] = principal
        if subject is not None:
            if not isinstance(subject, str) or not subject:
                problems.append(f"{where}.certificate_subject: a non-empty common name")
            elif subject in by_subject:
                problems.append(f"{where}.certificate_subject: also {by_subject[subject].name!r}'s")
            else:
                by_subject[subject] = principal
    if problems:
        raise PrincipalsFileError(f"{source}:\n  " + "\n  ".join(problems))
    return _Principals(by_hash, by_subject)


class Authenticator:
    """Maps a bearer token or a client certificate's subject to a `Principal`.

    Reads the principals file at construction (raising `PrincipalsFileError`)
    and re-reads it when it changed, so a rotated Kubernetes Secret takes
    effect without a restart: a token or subject not known is looked up again
    at once if the file changed (a new principal works on its first call), and
    a revoked one stops working within `reload_seconds`. A file that became
    invalid is logged and the last good one stays in force.
    """

    def __init__(
        self,
        path: Path,
        *,
        reload_seconds: float = 10.0,
        extra: Iterable[tuple[str, Principal]] = (),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._reload_seconds = reload_seconds
        self._monotonic = monotonic  # tests drive it instead of sleeping
        self._extra = {hash_token(token): principal for token, principal in extra}
        self._stamp = self._file_stamp()
        self._principals = self._read()
        self._checked_at = self._monotonic()

    def _file_stamp(self) -> tuple[float, int]:
        try:
            stat = os.stat(self._path)
        except OSError as exc:
            raise PrincipalsFileError(f"{self._path}: cannot read: {exc.strerror}") from None
        return stat.st_mtime, stat.st_size

    def _read(self) -> _Principals:
        try:
            text = self._path.read_text()
        except OSError as exc:
            raise PrincipalsFileError(f"{self._path}: cannot read: {exc.strerror}") from None
        return parse_principals(text, str(self._path))

    def add_token(self, token: str, principal: Principal) -> None:
        """Accept `token` for `principal` besides the file (the in-process internal identity)."""
        self._extra[hash_token(token)] = principal

    def _maybe_reload(self, *, now: bool = False) -> None:
        """Re-read a changed file: every `reload_seconds`, or `now` (a cheap stat)."""
        checked_at = self._monotonic()
        if not now and checked_at - self._checked_at < self._reload_seconds:
            return
        self._checked_at = checked_at
        try:
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._principals = self._read()
                self._stamp = stamp
                log.info("reloaded principals from %s", self._path)
        except PrincipalsFileError as exc:
            log.error("keeping the previous principals: %s", exc)

    def by_token(self, token: str) -> Principal | None:
        digest = hash_token(token)
        if digest in self._extra:
            return self._extra[digest]
        self._maybe_reload()
        principal = self._principals.by_token_hash.get(digest)
        if principal is None:  # perhaps added since: new tokens work at once
            self._maybe_reload(now=True)
            principal = self._principals.by_token_hash.get(digest)
        return principal

    def by_certificate_subject(self, subject: str) -> Principal | None:
        self._maybe_reload()
        principal = self._principals.by_subject.get(subject)
        if principal is None:
            self._maybe_reload(now=True)
            principal = self._principals.by_subject.get(subject)
        return principal


# -- what each RPC needs -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Access:
    """What one RPC requires of its caller.

    Attributes:
        role: the role the caller must hold.
        names: request field paths ("parent", "requests.parent", "queue.name")
            holding resource names `namespaces/{namespace}[/...]`. The first
            path is required; later ones may be empty (they default to it).
            Every non-empty value must name a namespace the caller may use.
        namespaces: field paths holding a bare namespace ("filter.namespace").
            Empty means every namespace, which needs a principal with "*".
    """

    role: Role
    names: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()

    def paths(self) -> Iterator[str]:
        yield from self.names
        yield from self.namespaces


def access(role: Role, *names: str, namespaces: tuple[str, ...] = ()) -> Access:
    """Shorthand for the per-service access tables: `access(Role.VIEWER, "name")`."""
    return Access(role, names, namespaces)


def field_values(message: Any, path: str) -> list[str]:
    """The string values at a dotted path, flattening repeated fields on the way."""
    values: list[Any] = [message]
    for part in path.split("."):
        step: list[Any] = []
        for value in values:
            child = getattr(value, part)
            if value.DESCRIPTOR.fields_by_name[part].is_repeated:
                step.extend(child)
            else:
                step.append(child)
        values = step
    return [v for v in values if isinstance(v, str)]


def requested_namespaces(rule: Access, request: Any) -> set[str] | None:
    """The namespaces a request touches per `rule`; None means all of them.

    Raises:
        InvalidArgument: the required resource name is missing or not
            `namespaces/{namespace}[/...]`.
    """
    found: set[str] = set()
    for index, path in enumerate(rule.names):
        for value in field_values(request, path):
            if not value:
                if index == 0 and "." not in path:
                    raise InvalidArgument(
                        FieldViolation(path, "required: namespaces/{namespace}/...")
                    )
                continue
            match = _RESOURCE_NAMESPACE.fullmatch(value)
            if match is None:
                raise InvalidArgument(
                    FieldViolation(
                        path,
                        f"must be a resource name namespaces/{{namespace}}/...; got {value[:80]!r}",
                    )
                )
            found.add(match.group(1))
    for path in rule.namespaces:
        for value in field_values(request, path):
            if not value:
                return None
            found.add(value)
    return found


def authorize(principal: Principal, rule: Access, request: Any, method: str) -> None:
    """Raise PermissionDenied unless `principal` may make this call; InvalidArgument if the
    request does not say which namespace it is about."""
    if not principal.has_role(rule.role):
        raise PermissionDenied(
            f"{principal.name!r} lacks the role {rule.role.value!r} that {method} needs",
            metadata={"principal": principal.name, "required_role": rule.role.value},
        )
    namespaces = requested_namespaces(rule, request)
    if namespaces is None:
        if not principal.all_namespaces:
            raise PermissionDenied(
                f"{principal.name!r} is limited to namespaces {sorted(principal.namespaces)}: "
                "name one (an empty namespace filter means all of them)",
                metadata={"principal": principal.name},
            )
        return
    for namespace in sorted(namespaces):
        if not principal.sees(namespace):
            raise PermissionDenied(
                f"{principal.name!r} may not use namespace {namespace!r}",
                metadata={"principal": principal.name, "namespace": namespace},
            )
