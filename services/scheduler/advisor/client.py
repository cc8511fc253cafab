"""HTTP client of an OpenAI-compatible chat-completions endpoint (the only I/O of the advisor)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from conveyor_scheduler.advisor.settings import AdvisorSettings

logger = logging.getLogger(__name__)


class ProviderError(Exception):
    """The provider could not be reached or gave no usable HTTP response."""


@dataclass(frozen=True, slots=True)
class ChatReply:
    """The parts of a chat-completions response the advisor uses.

    Attributes:
        content: the first choice's message content; None when there is no
            choice or the message has no content.
        input_tokens: `usage.prompt_tokens` (0 when not reported).
        output_tokens: `usage.completion_tokens` (0 when not reported).
    """

    content: str | None
    input_tokens: int
    output_tokens: int


class ChatClient:
    """POSTs {base_url}/chat/completions with a bearer key, a deadline and a size limit."""

    def __init__(self, settings: AdvisorSettings) -> None:
        self._settings = settings
        self._url = settings.base_url.rstrip("/") + "/chat/completions"
        self._http: httpx.AsyncClient | None = None

    async def complete(self, messages: Sequence[dict[str, str]]) -> ChatReply:
        """One chat completion.

        Raises:
            ProviderError: connection failure, timeout, HTTP error status, a body
                over `max_response_bytes`, or a body that is not a JSON object.
        """
        body = {
            "model": self._settings.model,
            "messages": list(messages),
            "temperature": self._settings.temperature,
            "max_tokens": self._settings.max_output_tokens,
        }
        if self._settings.json_mode:
            body["response_format"] = {"type": "json_object"}
        try:
            # httpx's timeout bounds each phase (connect, each read); this bounds the whole call,
            # so a provider trickling bytes cannot hold a scheduler slot indefinitely.
            async with asyncio.timeout(self._settings.timeout_seconds):
                status, raw = await self._post(body)
        except (TimeoutError, httpx.TimeoutException) as error:
            raise ProviderError(
                f"no answer within {self._settings.timeout_seconds:g}s ({type(error).__name__})"
            ) from error
        except httpx.HTTPError as error:
            raise ProviderError(f"request failed: {type(error).__name__}: {error}") from error
        if status >= 400:
            raise ProviderError(f"HTTP {status}: {raw[:200].decode('utf-8', 'replace')}")
        return _reply_from(raw)

    async def _post(self, body: dict[str, Any]) -> tuple[int, bytes]:
        """Status and body, reading at most `max_response_bytes`."""
        headers = {"Content-Type": "application/json"}
        key = self._settings.api_key.get_secret_value()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        limit = self._settings.max_response_bytes
        async with self._client().stream("POST", self._url, json=body, headers=headers) as response:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise ProviderError(f"response larger than {limit} bytes")
                chunks.append(chunk)
            return response.status_code, b"".join(chunks)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            # One timeout for connect, read, write and pool wait: the deadline of a request.
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(self._settings.timeout_seconds))
        return self._http

    async def close(self) -> None:
        """Close pooled connections; idempotent."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def _reply_from(raw: bytes) -> ChatReply:
    try:
        envelope = json.loads(raw)
    except ValueError as error:
        raise ProviderError(f"response body is not JSON ({error})") from error
    if not isinstance(envelope, dict):
        raise ProviderError("response body is not a JSON object")
    usage = envelope.get("usage")
    if not isinstance(usage, dict):
        usage = {}
    choices = envelope.get("choices")
    content = None
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            content = message["content"]
    elif choices is not None and not isinstance(choices, list):
        raise ProviderError("response 'choices' is not a list")
    return ChatReply(content, _count(usage, "prompt_tokens"), _count(usage, "completion_tokens"))


def _count(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
