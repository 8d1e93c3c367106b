"""Per-client rate limit and failed-login slowdown: arithmetic with a hand-moved clock."""

from __future__ import annotations

import asyncio

import pytest

from mirror.errors import TooManyRequests
from mirror.security.limits import LoginThrottle, RateLimiter, address_key
from tests.support.clock import ManualClock


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        (None, "-"),
        ("unix-socket", "unix-socket"),
    ],
)
def test_addresses_count_per_host_and_ipv6_per_64(address: str | None, key: str) -> None:
    assert address_key(address) == key


def test_a_bucket_allows_bursts_then_the_rate() -> None:
    clock = ManualClock()
    limiter = RateLimiter(rate=2.0, burst=3, max_clients=100, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)
    assert limiter.take("b") == 0.0, "each client has its own bucket"
    clock.now += 0.5
    assert limiter.take("a") == 0.0
    assert limiter.take("a") == pytest.approx(0.5)
    clock.now += 60
    assert [limiter.take("a") for _ in range(4)][-1] > 0, "refills to burst, not beyond"


def test_check_answers_429_with_a_whole_retry_after() -> None:
    clock = ManualClock()
    limiter = RateLimiter(rate=0.1, burst=1, max_clients=100, clock=clock)
    limiter.check("a")
    with pytest.raises(TooManyRequests) as caught:
        limiter.check("a")
    assert (caught.value.status, caught.value.code) == (429, "TOOMANYREQUESTS")
    assert caught.value.headers() == {"Retry-After": "10"}


def test_memory_is_bounded_and_a_forgotten_client_starts_full() -> None:
    clock = ManualClock()
    limiter = RateLimiter(rate=1.0, burst=1, max_clients=100, clock=clock)
    limiter.take("first")
    assert limiter.take("first") > 0
    for index in range(100):
        limiter.take(f"flood-{index}")
    assert len(limiter._buckets) == 100
    assert limiter.take("first") == 0.0, "pushed out by the flood, so allowed again"


async def test_failures_slow_down_the_next_checks_up_to_a_cap() -> None:
    clock = ManualClock()
    throttle = LoginThrottle(free_failures=3, base_delay=0.5, max_delay=4.0, clock=clock,
                             sleep=clock.sleep)  # fmt: skip
    waits = []
    for _ in range(8):
        waits.append(await throttle.wait_turn("192.0.2.7"))
        throttle.failed("192.0.2.7")
    assert waits == [0, 0, 0, 0.5, 1.0, 2.0, 4.0, 4.0]
    assert clock.slept == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert await throttle.wait_turn("192.0.2.8") == 0, "another address is not held up"


async def test_parallel_guesses_queue_and_the_excess_is_refused() -> None:
    clock = ManualClock(frozen=True)
    throttle = LoginThrottle(free_failures=1, base_delay=1.0, max_delay=3.0, clock=clock,
                             sleep=clock.sleep)  # fmt: skip
    throttle.failed("192.0.2.7")

    async def guess() -> float | str:
        try:
            return await throttle.wait_turn("192.0.2.7")
        except TooManyRequests as exc:
            return f"429, retry after {exc.retry_after}"

    # Six guesses arrive at the same moment: each takes the next turn, a second apart.
    results = await asyncio.gather(*(guess() for _ in range(6)))
    assert sorted(results, key=str) == [1.0, 2.0, 3.0] + ["429, retry after 4"] * 3


async def test_failures_are_forgotten_after_a_quiet_while() -> None:
    clock = ManualClock()
    throttle = LoginThrottle(free_failures=1, base_delay=1.0, forget_after=60.0, clock=clock,
                             sleep=clock.sleep)  # fmt: skip
    assert throttle.failed("192.0.2.7") == 1
    assert throttle.failed("192.0.2.7") == 2
    clock.now += 61
    assert await throttle.wait_turn("192.0.2.7") == 0
    assert throttle.failed("192.0.2.7") == 1


def test_the_throttle_remembers_a_bounded_number_of_addresses() -> None:
    throttle = LoginThrottle(max_addresses=100)
    for index in range(1000):
        throttle.failed(f"10.0.{index // 256}.{index % 256}")
    assert len(throttle._records) == 100
