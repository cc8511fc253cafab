"""Authentication and authorization on the wire, and TLS credentials from settings.

Server side, `AuthInterceptor` (installed by `create_server` only when
`CONVEYOR_AUTH_TOKENS_FILE` is set, so it costs nothing otherwise):

* identifies the caller by the `authorization: Bearer <token>` metadata, or,
  without one, by the common name of a verified client certificate (mTLS);
  neither gives UNAUTHENTICATED;
* checks the method's `Access` rule (each service declares one per RPC in its
  `ServiceRegistration`): the role, then every namespace the request names;
  a miss gives PERMISSION_DENIED, and ErrorInfo names the principal and the
  role or namespace it lacked; a method without a rule is refused (fail closed);
* makes the principal current (`conveyor_core.auth.current_principal()`) for
  the handler, which records it as the actor of redrives and skips.

Health checks and reflection stay open: probes and `grpcurl list` carry no token.

It runs inside `ErrorInterceptor`, so its refusals get the rich error model
like any domain error, and inside the tracing span, so a refused call is
traced too. The request is decoded before the check: the namespaces are in it.

Client side, `create_channel(settings=...)` sends `CONVEYOR_PEER_TOKEN` on every
call (`conveyor_core.grpc.client.BearerClientInterceptor`) and dials TLS when
`CONVEYOR_TLS_CA_FILE` is set (`channel_credentials`), presenting the process's
own certificate when it has one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc

from conveyor_core.auth import Access, Authenticator, Principal, authorize, principal_var
from conveyor_core.errors import PermissionDenied, Unauthenticated
from conveyor_core.grpc.interceptors import (
    UNTRACED_SERVICES,
    metadata_value,
    rewrap_handler,
    run_behavior,
    split_method,
)
from conveyor_core.grpc.types import Context, Continuation, Handler
from conveyor_core.settings import ConfigurationError, CoreSettings

log = logging.getLogger(__name__)

AUTHORIZATION_METADATA_KEY = "authorization"
PUBLIC_SERVICES = UNTRACED_SERVICES  # health and reflection

Behavior = Callable[..., Any]


def bearer_token(metadata: Any) -> str | None:
    """The token of an `authorization: Bearer <token>` entry, if any."""
    value = metadata_value(metadata, AUTHORIZATION_METADATA_KEY)
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ""  # present but unusable
    return token.strip()


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses unauthenticated and unauthorized calls; see the module docstring."""

    def __init__(self, authenticator: Authenticator, rules: Mapping[str, Access]) -> None:
        self._authenticator = authenticator
        self._rules = dict(rules)  # "/pkg.Service/Method" -> Access

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or split_method(method)[0] in PUBLIC_SERVICES:
            return handler
        token = bearer_token(handler_call_details.invocation_metadata)
        rule = self._rules.get(method)

        def guard(
            behavior: Behavior, streamed_requests: bool, streamed_responses: bool
        ) -> Behavior:
            async def guarded(request: Any, context: Context) -> Any:
                # Streamed requests: the namespaces are not known before the handler
                # reads them, so only rules naming no request fields can allow them.
                principal = self._check(request, context, method, rule, token, streamed_requests)
                reset = principal_var.set(principal)
                try:
                    return await run_behavior(behavior, request, context, streamed_responses)
                finally:
                    principal_var.reset(reset)

            return guarded

        return rewrap_handler(handler, guard)

    def _check(
        self,
        request: Any,
        context: Context,
        method: str,
        rule: Access | None,
        token: str | None,
        streamed: bool,
    ) -> Principal:
        principal = self._identify(context, token)
        if rule is None or (streamed and any(rule.paths())):
            log.error("%s has no usable access rule; refusing it", method)
            raise PermissionDenied(
                f"{method} declares no access rule; nobody may call it",
                metadata={"principal": principal.name},
            )
        authorize(principal, rule, None if streamed else request, method)
        return principal

    def _identify(self, context: Context, token: str | None) -> Principal:
        if token:
            principal = self._authenticator.by_token(token)
            if principal is None:
                raise Unauthenticated("the bearer token is not known: revoked, expired or mistyped")
            return principal
        if token == "":
            raise Unauthenticated("the authorization metadata must be 'Bearer <token>'")
        for subject in _certificate_subjects(context):
            principal = self._authenticator.by_certificate_subject(subject)
            if principal is not None:
                return principal
        raise Unauthenticated(
            "this server requires authentication: send the metadata 'authorization: Bearer "
            "<token>' (or a client certificate of a known subject)"
        )


def _certificate_subjects(context: Context) -> list[str]:
    """Common names of the caller's verified client certificate (empty without mTLS)."""
    auth_context = context.auth_context() or {}
    return [
        value.decode() if isinstance(value, bytes) else str(value)
        for value in auth_context.get("x509_common_name", ())
    ]


# -- TLS -------------------------------------------------------------------------------


def _read(path: str, setting: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{setting}: cannot read {path}: {exc.strerror}") from None


def server_credentials(settings: CoreSettings) -> grpc.ServerCredentials | None:
    """TLS (mutual when a client CA is set) from settings; None for plaintext."""
    if not settings.tls_cert_file:
        return None
    chain = _read(settings.tls_cert_file, "CONVEYOR_TLS_CERT_FILE")
    key = _read(settings.tls_key_file, "CONVEYOR_TLS_KEY_FILE")
    client_ca = (
        _read(settings.tls_client_ca_file, "CONVEYOR_TLS_CLIENT_CA_FILE")
        if settings.tls_client_ca_file
        else None
    )
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def channel_credentials(settings: CoreSettings) -> grpc.ChannelCredentials | None:
    """TLS to peers when a CA bundle is set, presenting this process's certificate if any."""
    if not settings.tls_ca_file:
        return None
    root = _read(settings.tls_ca_file, "CONVEYOR_TLS_CA_FILE")
    if settings.tls_cert_file:
        return grpc.ssl_channel_credentials(
            root_certificates=root,
            private_key=_read(settings.tls_key_file, "CONVEYOR_TLS_KEY_FILE"),
            certificate_chain=_read(settings.tls_cert_file, "CONVEYOR_TLS_CERT_FILE"),
        )
    return grpc.ssl_channel_credentials(root_certificates=root)
