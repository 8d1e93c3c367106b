"""Malformed HTTP is logged as one short INFO line per request, rate-limited, never a traceback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mirror.request_log import LINES_PER_WINDOW, LineBudget, RequestErrorLogger
from tests.support.fake_upstream import FakeUpstream
from tests.support.mirror_app import mirror_config, run_mirror
from tests.support.raw_http import exchange

_GET = b"GET /v2/ HTTP/1.1\r\nHost: mirror\r\n"
# Requests aiohttp's parser refuses (it answers 400 itself, before any handler).
MALFORMED = [
    _GET + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    _GET + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    _GET + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    _GET + b"X-Nul: a\x00b\r\n\r\n",
    _GET + b"X-Escape: \x1b[31mred\r\n\r\n",
    _GET + b"Bad Name: x\r\n\r\n",
    _GET + b"X-Long: " + b"a" * 9000 + b"\r\n\r\n",
    _GET + b"Content-Length: -1\r\n\r\n",
    _GET + b"Content-Length: \xc2\xb2\r\n\r\n",
    b"GE\x01T /v2/ HTTP/1.1\r\nHost: mirror\r\n\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: mirror\r\n\r\n",
    b"GET /v2/ HTTP/9.9\r\nHost: mirror\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 32,  # TLS on the plain port
]


async def test_malformed_requests_get_one_short_line_each_within_a_budget(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sent = 0
    async with FakeUpstream() as upstream:
        async with run_mirror(mirror_config(tmp_path, upstream.url)) as mirror:
            port = int(mirror.url.rsplit(":", 1)[1])
            while sent < LINES_PER_WINDOW + 10:
                for raw in MALFORMED:
                    answer = await exchange("127.0.0.1", port, raw)
                    assert answer.statuses == [400], (raw[:60], answer.received[:200])
                    sent += 1
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    lines = [r for r in caplog.records if r.name == "mirror.http"]
    assert len(lines) == LINES_PER_WINDOW, "one line per malformed request, up to the budget"
    for record in lines:
        message = record.getMessage()
        assert record.levelno == logging.INFO
        assert message.startswith("malformed HTTP request from 127.0.0.1, answered 400")
        assert message.isprintable(), "client bytes must be escaped, never forge a line"


def test_budget_allows_a_burst_per_window_and_counts_the_rest() -> None:
    now = [0.0]
    budget = LineBudget(3, 60.0, clock=lambda: now[0])
    assert [budget.take() for _ in range(5)] == [True, True, True, False, False]
    now[0] = 59.9
    assert not budget.take()
    now[0] = 60.0
    assert budget.take()
    assert budget.take_held_back() == 3
    assert budget.take_held_back() == 0


def test_other_exceptions_stay_errors_with_their_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only malformed HTTP is shortened: a bug inside aiohttp or a handler must stay visible."""
    log = RequestErrorLogger(logging.getLogger("mirror.http"), LineBudget(1, 60.0))
    try:
        raise ValueError("a real bug")
    except ValueError as exc:
        log.exception("Unhandled exception", exc_info=exc)
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
