"""An OTLP/gRPC trace receiver in a thread of the bench process, for `--tracing exported`.

The bench's servers export their spans to it as they would to a collector (the
BatchSpanProcessor's real OTLP export path); it only counts what arrives, so the
window measures what tracing costs the platform, not a collector's work.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

from tests.helpers.otlp_receiver import OtlpReceiver


class OtlpSink:
    """`with OtlpSink() as sink:` serves on `sink.endpoint`; `sink.spans()` counts arrivals."""

    def __init__(self) -> None:
        self.endpoint = ""
        self._receiver = OtlpReceiver()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def spans(self) -> int:
        return len(self._receiver.spans)

    def __enter__(self) -> OtlpSink:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(self._receiver.__aenter__(), self._loop)
        self.endpoint = started.result(timeout=30).endpoint
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        stopped = asyncio.run_coroutine_threadsafe(
            self._receiver.__aexit__(None, None, None), self._loop
        )
        stopped.result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
