"""Over 250 malformed and hostile requests on raw sockets: no 5xx, no traceback, no stray dial.

The table is tests/support/hostile_requests.py. Every request goes to a
running mirror whose configured upstreams are one fake registry; decoy
listeners on other loopback addresses and ports count every connection,
and the hostile requests name them every way a host can be written
(``ns``, path prefixes, absolute-form and authority-form targets, ``Host``,
forwarding headers, userinfo, decimal, octal and hex IPv4, IPv6). For each
request: a well-formed answer or a clean close, never a 5xx. For the whole
run: no traceback and no ERROR in the log, not one connection to a decoy,
and nothing but well-formed pull requests at the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from mirror.app import create_app
from mirror.routes.access import AccessLogger
from tests.support.fake_upstream import FakeUpstream
from tests.support.hostile_requests import Bed, Case, build_cases
from tests.support.htpasswd import write_htpasswd
from tests.support.manifest_samples import OCI_MANIFEST
from tests.support.mirror_app import mirror_config
from tests.support.raw_http import RawExchange, exchange
from tests.support.small_images import minimal_manifest

_UPSTREAM_PATH = re.compile(
    r"/v2/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"/(?:manifests/[A-Za-z0-9_][A-Za-z0-9._-]{0,127}|manifests/sha(?:256|512):[0-9a-f]+"
    r"|blobs/sha(?:256|512):[0-9a-f]+|tags/list|referrers/sha256:[0-9a-f]{64})"
)


@dataclass
class Decoys:
    """Listeners that count connections; the mirror must never dial one."""

    addresses: tuple[tuple[str, int], ...]
    accepted: Counter[tuple[str, int]]


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@contextlib.asynccontextmanager
async def decoys() -> AsyncIterator[Decoys]:
    """127.0.0.2, 127.0.0.3, another port of 127.0.0.1, and ::1 (else 127.0.0.4)."""
    hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.1", "::1" if _has_ipv6_loopback() else "127.0.0.4"]
    accepted: Counter[tuple[str, int]] = Counter()
    servers: list[asyncio.Server] = []
    addresses = []
    for host in hosts:

        def count(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str = host
        ) -> None:
            accepted[(host, writer.get_extra_info("sockname")[1])] += 1
            writer.close()

        server = await asyncio.start_server(count, host, 0)
        servers.append(server)
        addresses.append((host, server.sockets[0].getsockname()[1]))
    try:
        yield Decoys(tuple(addresses), accepted)
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[int]:
    """``app`` on a loopback port, with the access log on, as ``registry-mirror serve`` runs it."""
    runner = web.AppRunner(
        app, handle_signals=False, access_log=logging.getLogger("mirror.access"),
        access_log_class=AccessLogger, shutdown_timeout=1,
    )  # fmt: skip
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    try:
        yield server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    finally:
        await runner.cleanup()


def problems(case: Case, answer: RawExchange, also: frozenset[int] = frozenset()) -> list[str]:
    """What is wrong with the mirror's answer to ``case`` (nothing, ideally); statuses in
    ``also`` are accepted besides the case's own."""
    found = []
    clean_close = not answer.received and not answer.timed_out
    if not clean_close and (not answer.responses or answer.unparsed):
        found.append(f"no well-formed answer: {answer.received[:160]!r}")
    for response in answer.responses:
        if response.status >= 500:
            found.append(f"{response.status}: {response.body[:200]!r}")
        elif case.statuses is not None and response.status not in case.statuses | also:
            found.append(f"status {response.status}, expected one of {sorted(case.statuses)}")
        if "json" in response.headers.get("content-type", "") and not case.head:
            found += _json_problems(response.status, response.body)
    return found


def _json_problems(status: int, body: bytes) -> list[str]:
    try:
        document = json.loads(body)
    except ValueError:
        return [f"a JSON answer that does not parse: {body[:100]!r}"]
    if status >= 400 and not (isinstance(document, dict) and document.get("errors")):
        return [f"an error without an OCI error document: {body[:100]!r}"]
    return []


def front_door(tmp_path: Path) -> dict[str, object]:
    """``[auth]`` with users, token auth and an admin rule: every request meets the gate."""
    users = write_htpasswd(tmp_path / "htpasswd", ("olga", "olga-pw"), flags=("-B", "-C", "4"))
    return {
        "auth": {"htpasswd": str(users), "rules": [{"who": ["user:olga"], "actions": ["admin"]}],
                 "token": {"key": str(tmp_path / "token.key")}},
    }  # fmt: skip


@pytest.mark.parametrize("gated", [False, True], ids=["open", "auth"])
async def test_hostile_requests_get_clean_answers_and_dial_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, gated: bool
) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeUpstream() as up, decoys() as listeners:
        up.add_manifest("library/tiny", minimal_manifest(), OCI_MANIFEST, tag="latest")
        cached = up.add_blob(bytes(range(256)) * 16)
        cold = up.add_blob(bytes(reversed(range(256))) * 16)
        upstream = {"url": up.url, "retries": 0, "connect_timeout": 2, "read_timeout": 5}
        config = mirror_config(
            tmp_path, up.url, upstreams=[{**upstream, "name": "docker.io"},
                                         {**upstream, "name": "registry.example"}],
            **(front_door(tmp_path) if gated else {}),
        )  # fmt: skip
        bed = Bed(listeners.addresses, cached, cold, "library/tiny")
        cases = build_cases(bed)
        async with serving(create_app(config)) as port:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/v2/library/tiny/blobs/{cached}"):
                    pass  # cache the Range target
            limit = asyncio.Semaphore(16)

            async def send(case: Case) -> RawExchange:
                async with limit:
                    # Failed logins from one address are slowed down (turns up to 15 s apart).
                    slowed = gated and "authorization" in case.name
                    wait = 20.0 if slowed else 2.0
                    return await exchange("127.0.0.1", port, case.data, wait=wait, head=case.head)

            answers = await asyncio.gather(*(send(case) for case in cases))
        upstream_requests = list(up.requests)

    assert len(cases) >= 200
    failures = {
        case.name: found
        for case, answer in zip(cases, answers, strict=True)
        # With [auth], anything may also be refused for want of credentials.
        if (found := problems(case, answer, frozenset({401}) if gated else frozenset()))
    }
    assert failures == {}, "\n".join(f"{name}: {found}" for name, found in failures.items())
    assert sum(listeners.accepted.values()) == 0, f"the mirror dialled {listeners.accepted}"
    strays = [r.path for r in upstream_requests if not _UPSTREAM_PATH.fullmatch(r.path)]
    assert strays == [], "only well-formed pull requests may reach the upstream"
    assert {key for r in upstream_requests for key in r.query} <= {"n", "last", "artifactType"}
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert loud == [], [f"{r.name}: {r.getMessage()}" for r in loud]
    assert not any("Traceback" in r.getMessage() for r in caplog.records)
