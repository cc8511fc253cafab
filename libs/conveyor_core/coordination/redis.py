"""Redis coordination: wake-ups, leases, counters and rate limits shared by replicas.

Every key and channel lives under `key_prefix`:

* `{prefix}wake:{sender}:{channel}`  pub/sub channel of wake-ups (payload: how many
                                 waiters to wake, empty for all; `sender`: the
                                 publishing instance's 16 hex digits)
* `{prefix}lease:{name}`         "<holder>|<token>", expires with the lease
* `{prefix}lease-token:{name}`   last fencing token issued (never expires)
* `{prefix}counter:{name}`       shared counter
* `{prefix}rate:{key}`           token bucket hash {tokens, ts}
* `{prefix}value:{name}`         compare-and-set value

Multi-step operations are Lua scripts, so each is atomic on the server, and
time-dependent ones read Redis `TIME`, never a replica's clock.

Wake-ups: `notify` wakes this process's listeners at once and hands the
PUBLISH to a background task, which sends what piled up meanwhile in one
round trip, a run of notifies of one channel as one message. One more task
per instance holds a subscription to every other instance's wake-ups and
wakes local listeners for them. Its patterns (`{prefix}wake:` + the sender id
differing from this instance's at digit i, one pattern per digit) never match
the instance's own messages, so it does not receive, parse and drop each of
its own wake-ups. A message published while that subscription is down is
lost, so every time it is (re)established every local listener is woken
once: a duplicate wake-up costs a database check, a lost one would leave work
waiting until the listener's timeout.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conveyor_core.coordination.base import (
    CoordinationUnavailable,
    Lease,
    check_lease_args,
    check_positive,
    check_rate_limit_args,
    ttl_millis,
)
from conveyor_core.coordination.inprocess import HubListening, ListenerHub
from conveyor_core.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

# KEYS: holder key, token key. ARGV: holder, ttl ms.
# Free (or held by the same holder): issue the next token. Tokens never fall below
# the server's epoch milliseconds, so they keep increasing even if Redis loses the
# token key (restart without persistence, flush, failover to a stale replica).
_LEASE_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current and string.match(current, '^(.*)|%d+$') ~= ARGV[1] then
  return false
end
local time = redis.call('TIME')
local floor = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local token = redis.call('INCR', KEYS[2])
if token < floor then
  token = floor
  redis.call('SET', KEYS[2], string.format('%.0f', token))
end
local value = ARGV[1] .. '|' .. string.format('%.0f', token)
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return token
"""

# KEYS: holder key. ARGV: "<holder>|<token>", ttl ms.
_LEASE_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: holder key. ARGV: "<holder>|<token>".
_LEASE_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: counter key. ARGV: amount, ttl ms or "" (expiry set only when the key has none).
_COUNTER_ADD = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if ARGV[2] ~= '' and redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
"""

# KEYS: bucket hash. ARGV: requested, rate (tokens/s), burst.
# Time is the server's, in microseconds (exact in a Lua double until 2255).
_RATE_LIMIT_TAKE = """
local requested = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil or updated == nil then
  tokens = burst
else
  tokens = math.min(burst, tokens + math.max(0, now - updated) * rate / 1000000)
end
local taken = math.min(requested, math.floor(tokens + 1e-9))
tokens = math.max(0, tokens - taken)
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'ts', string.format('%.0f', now))
-- Once full again the bucket equals a missing one: let it expire then.
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return taken
"""

# KEYS: value key. ARGV: "1" if the key must be missing else "0", expected, new value,
# ttl ms or "" (no expiry).
_VALUE_COMPARE_AND_SET = """
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current then return 0 end
elseif current ~= ARGV[2] then
  return 0
end
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
else
  redis.call('SET', KEYS[1], ARGV[3])
end
return 1
"""


@contextmanager
def _unavailable_on_connection_error(operation: str) -> Iterator[None]:
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise CoordinationUnavailable(f"Redis {operation} failed: {exc}") from exc


#: Hex digits of an instance's sender id: 64 random bits, one subscription pattern each.
_SENDER_DIGITS = 16


def _glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters so a key prefix matches only itself."""
    return "".join("\\" + char if char in "\\*?[]" else char for char in text)


class RedisCoordination(HubListening):
    """`Coordination` shared through Redis by every replica using the same key prefix.

    Args:
        url: redis://, rediss:// or unix:// URL.
        key_prefix: Prefix of every key and channel (for example "conveyor:").
        client_name: CLIENT SETNAME of the connections (the subscriber's gets a
            "-wake" suffix), so operators can tell replicas apart in CLIENT LIST.
        connect_timeout: Seconds to connect, and for start() to establish the
            wake-up subscription before raising `CoordinationUnavailable`.
        command_timeout: Seconds a command may take before it fails.
    """

    #: Seconds without traffic on the subscription before it is probed with PING.
    idle_ping_after = 10.0
    #: Seconds to wait for that PING's reply before reconnecting.
    pong_timeout = 5.0
    #: Reconnect delays (seconds) double from the first to the cap, with jitter.
    reconnect_delay_first = 0.05
    reconnect_delay_max = 5.0

    def __init__(
        self,
        url: str,
        key_prefix: str,
        *,
        client_name: str = "conveyor",
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
    ) -> None:
        check_positive("connect_timeout", connect_timeout)
        check_positive("command_timeout", command_timeout)
        self._url = url
        self._prefix = key_prefix
        self._client_name = client_name
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._wake_prefix = f"{key_prefix}wake:"
        #: In each wake-up's channel name; the subscription excludes this instance's own.
        self._sender_id = uuid.uuid4().hex[:_SENDER_DIGITS]
        self._publish_prefix = f"{self._wake_prefix}{self._sender_id}:"
        escaped, sender = _glob_escape(self._wake_prefix), self._sender_id
        self._wake_patterns = [
            f"{escaped}{sender[:i]}[^{sender[i]}]*" for i in range(_SENDER_DIGITS)
        ]
        self._unpublished: list[tuple[str, int | None]] = []  # in notify order
        self._publisher: asyncio.Task[None] | None = None
        self._publish_connection: Connection | None = None
        self._stopped = False  # stop() ran: notify() only wakes this process's listeners
        self._client: Redis = Redis.from_url(
            url,
            decode_responses=True,
            client_name=client_name,
            socket_connect_timeout=connect_timeout,
            socket_timeout=command_timeout,
            socket_keepalive=True,
        )
        self._lease_acquire = self._client.register_script(_LEASE_ACQUIRE)
        self._lease_renew = self._client.register_script(_LEASE_RENEW)
        self._lease_release = self._client.register_script(_LEASE_RELEASE)
        self._counter_add = self._client.register_script(_COUNTER_ADD)
        self._rate_limit_take = self._client.register_script(_RATE_LIMIT_TAKE)
        self._value_cas = self._client.register_script(_VALUE_COMPARE_AND_SET)
        self._listeners = ListenerHub()
        self._lifecycle_lock = asyncio.Lock()
        self._subscriber: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._failed_attempts = 0
        self._last_error: BaseException | None = None

    # -- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        """Start the wake-up subscriber and wait until it is subscribed.

        Raises:
            CoordinationUnavailable: The subscription was not established
                within `connect_timeout` seconds.
        """
        async with self._lifecycle_lock:
            if self._subscriber is not None:
                return
            self._stopped = False
            self._subscribed.clear()
            self._failed_attempts = 0
            self._subscriber = asyncio.create_task(
                self._run_subscriber(), name=f"coordination-subscriber:{self._prefix}"
            )
            try:
                async with asyncio.timeout(self._connect_timeout):
                    await self._subscribed.wait()
            except TimeoutError:
                await self._stop_subscriber()
                raise CoordinationUnavailable(
                    f"Redis wake-up subscription not established within "
                    f"{self._connect_timeout}s: {self._last_error}"
                ) from None

    async def stop(self) -> None:
        async with self._lifecycle_lock:
            self._stopped = True
            await self._stop_subscriber()
            await self._finish_publishing()
            await self._client.aclose()

    async def _finish_publishing(self) -> None:
        """Send the wake-ups still queued, for at most `command_timeout` seconds."""
        task, self._publisher = self._publisher, None
        if task is not None and not task.done():
            done, _ = await asyncio.wait([task], timeout=self._command_timeout)
            if not done:
                await cancel_and_wait(task)
        connection, self._publish_connection = self._publish_connection, None
        if connection is not None:
            await connection.disconnect()

    async def _stop_subscriber(self) -> None:
        task, self._subscriber = self._subscriber, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # stop() itself was cancelled

    async def ping(self) -> None:
        with _unavailable_on_connection_error("PING"):
            await self._client.ping()

    # -- wake-ups ---------------------------------------------------------

    async def notify(self, channel: str, waiters: int | None = None) -> None:
        """Wake listeners on `channel` here at once, and in other replicas via PUBLISH.

        The PUBLISH is queued for the publishing task, so the caller does not
        wait for Redis. Notifies of one channel in a row share one message
        (their waiter counts added up); the order of channels is kept, so a
        replica never sees a wake-up before one notified ahead of it.
        """
        self._listeners.deliver(channel, waiters)
        if self._stopped:
            return
        pending = self._unpublished
        if pending and pending[-1][0] == channel:
            last = pending[-1][1]
            pending[-1] = (channel, None if last is None or waiters is None else last + waiters)
        else:
            pending.append((channel, waiters))
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.get_running_loop().create_task(
                self._publish_queued(), name=f"coordination-publisher:{self._prefix}"
            )

    async def _publish_queued(self) -> None:
        """Publish queued wake-ups until none is left, all queued meanwhile in one round trip.

        A failed PUBLISH is logged, not raised: the notifier's own change is
        already committed, and remote listeners still wake on their timeout
        (or on their subscriber's reconnect, if Redis itself went away).
        """
        while self._unpublished:
            batch, self._unpublished = self._unpublished, []
            try:
                await self._publish(batch)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                logger.warning(
                    "coordination: %d wake-up(s) not published (channels %s): %s",
                    len(batch),
                    ", ".join(sorted({channel for channel, _ in batch})),
                    exc,
                )

    async def _publish(self, batch: list[tuple[str, int | None]]) -> None:
        """PUBLISH each of `batch` in one write, on the publishing task's own connection.

        Only this task uses the connection, so it needs none of the client's
        per-command pool checkout, retries and response dispatch, which cost
        about as much again as the command itself.
        """
        if self._publish_connection is None:
            self._publish_connection = self._client.connection_pool.make_connection()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        connection = self._publish_connection
        commands = [
            ("PUBLISH", self._publish_prefix + channel, "" if waiters is None else str(waiters))
            for channel, waiters in batch
        ]
        packed = connection.pack_commands(commands)
        for attempt in (1, 2):  # a connection found dead (idle timeout, restart): once more
            try:
                await connection.send_packed_command(packed, False)
                for _ in commands:
                    await connection.read_response()
                return
            except (RedisConnectionError, RedisTimeoutError):
                await connection.disconnect(nowait=True)
                if attempt == 2:
                    raise
            except BaseException:
                await connection.disconnect(nowait=True)  # replies left unread: start afresh
                raise

    async def _run_subscriber(self) -> None:
        """Hold the wake-up subscription for the life of the instance, reconnecting."""
        while True:
            try:
                await self._subscribe_and_dispatch()
            except Exception as exc:
                # Any failure (connection reset, CLIENT KILL, timeout, protocol) -> reconnect.
                self._subscribed.clear()
                self._last_error = exc
                self._failed_attempts += 1
                delay = min(
                    self.reconnect_delay_max,
                    self.reconnect_delay_first * 2 ** (self._failed_attempts - 1),
                ) * random.uniform(0.5, 1.0)
                logger.warning(
                    "coordination: Redis wake-up subscription down (%s: %s); "
                    "reconnecting in %.2fs (attempt %d)",
                    type(exc).__name__,
                    exc,
                    delay,
                    self._failed_attempts,
                )
                await asyncio.sleep(delay)

    async def _subscribe_and_dispatch(self) -> None:
        client: Redis = Redis.from_url(
            self._url,
            decode_responses=True,
            client_name=f"{self._client_name}-wake",
            socket_connect_timeout=self._connect_timeout,
            socket_timeout=self._command_timeout,
            socket_keepalive=True,
            # No silent retries: a lost connection surfaces here, is logged, and
            # the subscription is rebuilt (then every listener is woken).
            retry=Retry(NoBackoff(), 0),
        )
        pubsub = client.pubsub()
        try:
            await pubsub.psubscribe(*self._wake_patterns)
            await self._dispatch(pubsub)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # unannotated before redis-py 8.2
            await client.aclose()

    async def _dispatch(self, pubsub: PubSub) -> None:
        """Deliver messages until the connection fails; PING it when idle to detect loss."""
        loop = asyncio.get_running_loop()
        last_traffic = loop.time()
        pinged = False
        while True:
            quiet_limit = self.idle_ping_after + (self.pong_timeout if pinged else 0.0)
            remaining = last_traffic + quiet_limit - loop.time()
            message = await pubsub.get_message(timeout=max(remaining, 0.001))
            if message is not None:
                last_traffic, pinged = loop.time(), False
                self._handle(message)
            elif loop.time() - last_traffic >= quiet_limit:
                if pinged:
                    raise RedisTimeoutError(f"no reply to PING within {self.pong_timeout}s")
                await pubsub.ping()
                pinged = True

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "pmessage":
            # {prefix}wake:{sender}:{channel}; the patterns already left out our own.
            channel = message["channel"][len(self._wake_prefix) + _SENDER_DIGITS + 1 :]
            data = message["data"]
            self._listeners.deliver(channel, int(data) if data.isdigit() else None)
        elif kind == "psubscribe" and message["data"] == len(self._wake_patterns):
            self._on_subscribed()  # the last pattern's confirmation

    def _on_subscribed(self) -> None:
        if self._failed_attempts:
            logger.info(
                "coordination: Redis wake-up subscription re-established after %d attempt(s)",
                self._failed_attempts,
            )
        self._failed_attempts = 0
        self._last_error = None
        self._subscribed.set()
        # Wake-ups published while unsubscribed are lost: make every listener re-check.
        self._listeners.wake_all()

    # -- leases -----------------------------------------------------------

    def _lease_key(self, name: str) -> str:
        return f"{self._prefix}lease:{name}"

    async def lease_acquire(self, name: str, holder: str, ttl: float) -> Lease | None:
        check_lease_args(name, holder, ttl)
        keys = [self._lease_key(name), f"{self._prefix}lease-token:{name}"]
        args: list[str | int] = [holder, ttl_millis(ttl)]
        with _unavailable_on_connection_error("lease acquire"):
            token = await self._lease_acquire(keys=keys, args=args)
        if token is None:
            return None
        return Lease(name=name, holder=holder, token=int(token), ttl=ttl)

    async def lease_renew(self, lease: Lease) -> bool:
        check_positive("lease ttl", lease.ttl)
        args: list[str | int] = [f"{lease.holder}|{lease.token}", ttl_millis(lease.ttl)]
        with _unavailable_on_connection_error("lease renew"):
            renewed = await self._lease_renew(keys=[self._lease_key(lease.name)], args=args)
        return bool(renewed)

    async def lease_release(self, lease: Lease) -> None:
        args = [f"{lease.holder}|{lease.token}"]
        with _unavailable_on_connection_error("lease release"):
            await self._lease_release(keys=[self._lease_key(lease.name)], args=args)

    # -- counters ---------------------------------------------------------

    def _counter_key(self, name: str) -> str:
        return f"{self._prefix}counter:{name}"

    async def counter_add(self, name: str, amount: int = 1, ttl: float | None = None) -> int:
        if ttl is not None:
            check_positive("counter ttl", ttl)
        args: list[str | int] = [int(amount), "" if ttl is None else ttl_millis(ttl)]
        with _unavailable_on_connection_error("counter add"):
            value = await self._counter_add(keys=[self._counter_key(name)], args=args)
        return int(value)

    async def counters_get(self, names: Sequence[str]) -> list[int]:
        if not names:
            return []
        with _unavailable_on_connection_error("counters get"):
            values = await self._client.mget([self._counter_key(name) for name in names])
        return [0 if value is None else int(value) for value in values]

    # -- rate limits ------------------------------------------------------

    async def rate_limit_take(self, key: str, requested: int, rate: float, burst: int) -> int:
        check_rate_limit_args(requested, rate, burst)
        args: list[str | int] = [int(requested), repr(float(rate)), int(burst)]
        with _unavailable_on_connection_error("rate limit take"):
            taken = await self._rate_limit_take(keys=[f"{self._prefix}rate:{key}"], args=args)
        return int(taken)

    # -- compare-and-set values -----------------------------------------------

    def _value_key(self, name: str) -> str:
        return f"{self._prefix}value:{name}"

    async def value_get(self, name: str) -> str | None:
        with _unavailable_on_connection_error("value get"):
            value = await self._client.get(self._value_key(name))
        return None if value is None else str(value)

    async def value_compare_and_set(
        self, name: str, expected: str | None, value: str, ttl: float | None = None
    ) -> bool:
        if ttl is not None:
            check_positive("value ttl", ttl)
        args = [
            "1" if expected is None else "0",
            "" if expected is None else expected,
            value,
            "" if ttl is None else ttl_millis(ttl),
        ]
        with _unavailable_on_connection_error("value compare-and-set"):
            done = await self._value_cas(keys=[self._value_key(name)], args=args)
        return bool(done)
