"""Principals files and TLS material for tests of authentication (docs/security.md).

`Principals` writes a real principals file and hands out the tokens it admits;
`TlsMaterial` is a throw-away CA (trustme) with a server certificate for
127.0.0.1/localhost and client certificates by common name, written as PEM files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from conveyor_core.auth import hash_token, new_token


@dataclass
class Principals:
    """A principals file on disk; `add` admits a new token and returns it."""

    path: Path
    entries: list[dict[str, object]] = field(default_factory=list)

    def add(self, name: str, namespaces: list[str], roles: list[str]) -> str:
        token = new_token()
        self.entries.append(
            {
                "name": name,
                "token_sha256": hash_token(token),
                "namespaces": namespaces,
                "roles": roles,
            }
        )
        self.write()
        return token

    def add_subject(self, name: str, subject: str, namespaces: list[str], roles: list[str]) -> None:
        self.entries.append(
            {
                "name": name,
                "certificate_subject": subject,
                "namespaces": namespaces,
                "roles": roles,
            }
        )
        self.write()

    def remove(self, name: str) -> None:
        self.entries = [e for e in self.entries if e["name"] != name]
        self.write()

    def write(self) -> None:
        staged = self.path.with_suffix(".tmp")
        staged.write_text(json.dumps({"principals": self.entries}))
        staged.replace(self.path)  # atomically, as a Secret volume update does


@dataclass(frozen=True)
class CertFiles:
    cert: str
    key: str


class TlsMaterial:
    """A CA and certificates as PEM files under `directory`."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._ca = trustme.CA()
        self.ca_file = str(directory / "ca.pem")
        self._ca.cert_pem.write_to_path(self.ca_file)
        self.server = self._issue("server", "127.0.0.1", "localhost", common_name="localhost")

    def client(self, common_name: str) -> CertFiles:
        return self._issue(f"client-{common_name}", common_name, common_name=common_name)

    def _issue(self, stem: str, *identities: str, common_name: str) -> CertFiles:
        issued = self._ca.issue_cert(*identities, common_name=common_name)
        cert, key = self._directory / f"{stem}.pem", self._directory / f"{stem}.key"
        cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(key))
        return CertFiles(str(cert), str(key))

    def read(self, path: str) -> bytes:
        return Path(path).read_bytes()
