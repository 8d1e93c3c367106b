"""Bounded, in-memory limits: requests per client, and failed logins per address.

Both remember at most a fixed number of clients (least recently seen ones
are forgotten first), so a flood of new addresses costs bounded memory; a
forgotten client starts again with a full allowance, which errs on the side
of serving. IPv6 addresses count per /64 network, because one host usually
holds a whole /64 and could otherwise change address at every attempt.

:class:`RateLimiter` is a token bucket per client identity (the user name when
known, else the address): ``rate`` requests a second on average, ``burst`` at
once. A request over the limit is told how many seconds until it may retry.

:class:`LoginThrottle` slows down guessing: after ``free_failures`` failed
logins from one address, each further credential check from it waits for its
turn, the turns ``base_delay`` apart and doubling with every failure up to
``max_delay``. Checks are queued one after the other, so parallel guesses gain
nothing; one that would wait longer than ``max_delay`` is refused at once
(``429``). An address is forgotten ``forget_after`` seconds after its last
failure; a successful login does not clear it, so a guesser behind the same
NAT as a real user gains nothing from the user's logins. Credentials that
already passed (:meth:`mirror.security.htpasswd.Htpasswd.known_good`) are
never held up, so the real user is slowed down at most once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cachetools import LRUCache, TTLCache

from mirror.errors import TooManyRequests


def address_key(address: str | None) -> str:
    """The key an address is counted under: IPv4 as it is, IPv6 by its /64."""
    if not address:
        return "-"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per client, for at most ``max_clients`` clients at a time."""

    def __init__(
        self, rate: float, burst: int, max_clients: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: LRUCache[str, _Bucket] = LRUCache(max_clients)

    def take(self, client: str) -> float:
        """Spend one request of ``client``: 0.0 when allowed, else seconds to wait."""
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self._rate

    def check(self, client: str) -> None:
        """:meth:`take`, raising ``429 TOOMANYREQUESTS`` with ``Retry-After`` when over."""
        wait = self.take(client)
        if wait:
            raise TooManyRequests("too many requests from this client", math.ceil(wait))


@dataclass(slots=True)
class _Failures:
    count: int
    next_turn: float


class LoginThrottle:
    """Failed logins per address, and the wait they impose on the next attempts."""

    def __init__(
        self,
        *,
        free_failures: int = 3,
        base_delay: float = 0.5,
        max_delay: float = 15.0,
        forget_after: float = 900.0,
        max_addresses: int = 10000,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._free = free_failures
        self._base = base_delay
        self._max = max_delay
        self._clock = clock
        self._sleep = sleep
        self._records: TTLCache[str, _Failures] = TTLCache(max_addresses, forget_after, clock)

    def _delay(self, failures: int) -> float:
        return min(self._base * 2.0 ** max(0, failures - self._free), self._max)

    async def wait_turn(self, address: str | None) -> float:
        """Wait until a credential check from ``address`` may run; the seconds waited.

        :class:`mirror.errors.TooManyRequests` when the wait would exceed ``max_delay``.
        """
        record = self._records.get(address_key(address))
        if record is None or record.count < self._free:
            return 0.0
        now = self._clock()
        turn = max(now, record.next_turn)
        wait = turn - now
        if wait > self._max:
            raise TooManyRequests("too many failed logins from this address", math.ceil(wait))
        record.next_turn = turn + self._delay(record.count)
        if wait > 0:
            await self._sleep(wait)
        return wait

    def failed(self, address: str | None) -> int:
        """Count a failed login from ``address``; how many it has now."""
        key = address_key(address)
        record = self._records.get(key) or _Failures(0, 0.0)
        record.count += 1
        if record.count >= self._free:
            record.next_turn = max(record.next_turn, self._clock() + self._delay(record.count))
        self._records[key] = record  # re-set: forget_after runs from the last failure
        return record.count
