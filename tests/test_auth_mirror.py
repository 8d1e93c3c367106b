"""Client authentication wired into the mirror: real sockets, a fake upstream, real tokens.

The mirror runs with the rules of docs/security.md's example, on one upstream
named ``ghcr.io`` (the fake upstream): everyone may pull ``public/*``, team X
(alice) may pull ``team/*``, olga may use the admin API; the default is deny.
Requests are made as docker, containerd, podman and skopeo make them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from mirror.app import create_app
from mirror.config import Config
from mirror.routes.access import AccessLogger
from mirror.security.keys import read_signing_key
from mirror.security.tokens import TokenAuthority
from tests.support.fake_upstream import FakeUpstream
from tests.support.hostile_requests import request
from tests.support.htpasswd import write_htpasswd
from tests.support.mirror_app import RunningMirror, mirror_config, run_mirror
from tests.support.processes import free_port
from tests.support.raw_http import exchange
from tests.support.small_images import SmallImage, add_small_image
from tests.support.tls_clients import basic_auth

PASSWORDS = {"alice": "alice-secret-1", "carol": "carol-secret-2", "olga": "olga-secret-3"}
SERVICE = "mirror.test"


def auth_settings(tmp_path: Path, *, token: bool = True, **extra: Any) -> dict[str, Any]:
    """The ``[auth]`` table of the example (``token``: with token auth)."""
    users = tmp_path / "htpasswd"
    if not users.exists():
        write_htpasswd(users, *PASSWORDS.items(), flags=("-B", "-C", "4"))
    auth: dict[str, Any] = {
        "htpasswd": str(users),
        "default": "deny",
        "groups": {"team-x": ["alice"]},
        "rules": [
            {"who": ["everyone"], "upstream": "ghcr.io", "repository": "public/*"},
            {"who": ["group:team-x"], "upstream": "ghcr.io", "repository": "team/*"},
            {"who": ["user:olga"], "actions": ["admin"]},
        ],
    }
    if token:
        auth["token"] = {"key": str(tmp_path / "token.key"), "service": SERVICE}
    return {**auth, **extra}


def guarded_config(tmp_path: Path, up: FakeUpstream, **settings: Any) -> Config:
    """A mirror of ``up`` (as ``ghcr.io``) with ``settings`` (``auth`` defaults to the example)."""
    settings.setdefault("auth", auth_settings(tmp_path))
    upstream = {"name": "ghcr.io", "url": up.url, "retries": 1, "read_timeout": 10}
    return mirror_config(tmp_path / "cache", up.url, upstreams=[upstream], **settings)


@pytest.fixture
async def up() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
def images(up: FakeUpstream) -> dict[str, SmallImage]:
    return {
        "public": add_small_image(up, "public/app", "1", "public", layer_size=10_000),
        "team": add_small_image(up, "team/app", "1", "team", layer_size=10_000),
    }


@pytest.fixture
async def mirror(
    tmp_path: Path, up: FakeUpstream, images: dict[str, SmallImage]
) -> AsyncIterator[RunningMirror]:
    async with run_mirror(guarded_config(tmp_path, up)) as running:
        yield running


def basic(user: str, password: str | None = None) -> dict[str, str]:
    """The header of a Basic login (``password`` defaults to the user's own)."""
    secret = password if password is not None else PASSWORDS[user]
    return {"Authorization": "Basic " + basic_auth(user, secret)}


def bearer(token: str) -> dict[str, str]:
    """The header that presents a token."""
    return {"Authorization": "Bearer " + token}


def manifest_path(image: SmallImage) -> str:
    return f"/v2/{image.repository}/manifests/{image.tag}"


async def get_token(http: aiohttp.ClientSession, base: str, *scopes: str,
                    headers: dict[str, str] | None = None) -> str:  # fmt: skip
    params = [("service", SERVICE), *(("scope", s) for s in scopes)]
    async with http.get(f"{base}/auth/token", params=params, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        token: str = (await resp.json())["token"]
    return token


async def answer(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None,
                 method: str = "GET") -> tuple[int, str, str]:  # fmt: skip
    """Status, OCI error code (or ``-``), ``WWW-Authenticate`` (or ``""``)."""
    async with http.request(method, url, headers=headers) as resp:
        code = "-"
        if resp.status >= 400 and method != "HEAD":
            code = (await resp.json())["errors"][0]["code"]
        else:
            await resp.read()
        return resp.status, code, resp.headers.get("WWW-Authenticate", "")


async def metric(http: aiohttp.ClientSession, base: str, line: str) -> float:
    """The value of one exported series (``name{labels}``)."""
    async with http.get(base + "/metrics") as resp:
        text = await resp.text()
    for row in text.splitlines():
        if row.startswith(line + " "):
            return float(row.rsplit(" ", 1)[1])
    raise AssertionError(f"{line} not exported")


async def test_the_token_flow_pulls_what_the_rules_allow(
    mirror: RunningMirror, images: dict[str, SmallImage], up: FakeUpstream
) -> None:
    base, public, team = mirror.url, images["public"], images["team"]
    async with aiohttp.ClientSession() as http:
        status, code, challenge = await answer(http, base + "/v2/")
        assert (status, code) == (401, "UNAUTHORIZED")
        assert challenge == f'Bearer realm="{base}/auth/token",service="{SERVICE}"'
        # Anonymous: a token for what everyone may pull; the rest is left out of it.
        anonymous = await get_token(http, base, f"repository:{public.repository}:pull",
                                    f"repository:{team.repository}:pull")  # fmt: skip
        assert (await answer(http, base + manifest_path(public), bearer(anonymous)))[0] == 200
        for digest in public.blobs:
            url = f"{base}/v2/{public.repository}/blobs/{digest}"
            assert (await answer(http, url, bearer(anonymous)))[0] == 200
        status, code, challenge = await answer(http, base + manifest_path(team), bearer(anonymous))
        assert (status, code) == (401, "UNAUTHORIZED"), "anonymous may log in: not a 403"
        assert 'scope="repository:ghcr.io/team/app:pull"' in challenge
        # A team member gets the team's repository; another user is denied, not challenged.
        scope = "repository:ghcr.io/team/app:pull"
        alice = await get_token(http, base, scope, headers=basic("alice"))
        assert (await answer(http, base + manifest_path(team), bearer(alice)))[0] == 200
        carol = await get_token(http, base, scope, headers=basic("carol"))
        for headers in (bearer(carol), basic("carol")):
            assert (await answer(http, base + manifest_path(team), headers))[:2] == (403, "DENIED")
        # Denied, not unknown: the answer does not say whether a repository exists.
        missing = "/v2/team/no-such-thing/manifests/latest"
        assert (await answer(http, base + missing, basic("carol")))[:2] == (403, "DENIED")
        assert (await answer(http, base + missing, basic("alice")))[0] == 404
        assert await metric(http, base, 'mirror_tokens_issued_total{grant="anonymous"}') == 1
        assert await metric(http, base, 'mirror_tokens_issued_total{grant="basic"}') == 2
        assert await metric(http, base, 'mirror_client_access_refused_total{answer="denied"}') == 3
    # The mirror's clients' credentials never reach the upstream.
    sent = {r.headers.get("Authorization") for r in up.requests}
    assert sent == {None}


async def test_a_token_is_good_only_for_its_repositories_and_names(
    mirror: RunningMirror, images: dict[str, SmallImage]
) -> None:
    base, public = mirror.url, images["public"]
    async with aiohttp.ClientSession() as http:
        # Any spelling of the name is one grant: the path prefix and ?ns= too.
        token = await get_token(http, base, "repository:public/app:pull")
        for path in (manifest_path(public), "/v2/ghcr.io/public/app/manifests/1",
                     "/v2/public/app/manifests/1?ns=ghcr.io"):  # fmt: skip
            assert (await answer(http, base + path, bearer(token)))[0] == 200, path
        other = "/v2/public/other/manifests/1"
        status, _, challenge = await answer(http, base + other, bearer(token))
        assert status == 401
        assert challenge == (
            f'Bearer realm="{base}/auth/token",service="{SERVICE}",'
            'scope="repository:ghcr.io/public/other:pull",error="insufficient_scope"'
        )


def forged_tokens(config: Config) -> dict[str, str]:
    """Tokens the mirror must refuse, signed with its own key where that is the point."""
    auth = config.security.auth
    assert auth is not None
    assert auth.token is not None
    key = read_signing_key(auth.token.key)
    grant = ["ghcr.io/team/app"]
    past = TokenAuthority(key, auth.token, clock=lambda: 1_000_000_000.0)
    claims = jwt.decode(past.issue("alice", grant).token, options={"verify_signature": False})
    now = int(time.time())
    fresh = {**claims, "exp": now + 300, "nbf": now, "iat": now}
    other = ec.generate_private_key(ec.SECP256R1())
    kid = {"kid": key.key_id}
    return {
        "expired": past.issue("alice", grant).token,
        "another key": jwt.encode(fresh, other, "ES256", headers=kid),
        "wrong audience": jwt.encode({**fresh, "aud": "other"}, key.private_key, "ES256",
                                     headers=kid),
        "wrong issuer": jwt.encode({**fresh, "iss": "other"}, key.private_key, "ES256",
                                   headers=kid),
        "alg none": jwt.encode(fresh, "", "none", headers=kid),
        "not a JWT": "not.a.jwt",
    }  # fmt: skip


async def test_forged_and_expired_tokens_are_refused(
    mirror: RunningMirror, images: dict[str, SmallImage]
) -> None:
    url = mirror.url + manifest_path(images["team"])
    async with aiohttp.ClientSession() as http:
        # The key exists once the mirror runs (made at start, mode 0600).
        for name, token in forged_tokens(mirror.config).items():
            status, code, challenge = await answer(http, url, bearer(token))
            assert (status, code) == (401, "UNAUTHORIZED"), name
            assert challenge.endswith(',error="invalid_token"'), name
        failures = 'mirror_client_auth_failures_total{credential="token",reason="%s"}'
        assert await metric(http, mirror.url, failures % "expired_token") == 1
        assert await metric(http, mirror.url, failures % "invalid_token") == 5


async def test_basic_credentials_on_every_request(
    tmp_path: Path, up: FakeUpstream, images: dict[str, SmallImage]
) -> None:
    config = guarded_config(tmp_path, up, auth=auth_settings(tmp_path, token=False))
    async with run_mirror(config) as mirror, aiohttp.ClientSession() as http:
        url = mirror.url + manifest_path(images["team"])
        assert (await answer(http, url, basic("alice")))[0] == 200
        status, code, challenge = await answer(http, url)
        assert (status, code, challenge) == (401, "UNAUTHORIZED", 'Basic realm="registry-mirror"')
        assert (await answer(http, url, basic("alice", "wrong")))[:2] == (401, "UNAUTHORIZED")
        assert (await answer(http, url, basic("nobody", "x")))[:2] == (401, "UNAUTHORIZED")
        # No token endpoint without token auth.
        assert (await answer(http, mirror.url + "/auth/token"))[0] == 404


async def test_probes_and_metrics_are_not_gated(tmp_path: Path, up: FakeUpstream) -> None:
    config = guarded_config(tmp_path, up, auth=auth_settings(tmp_path, default="deny"),
                            rate_limit={"rate": 1, "burst": 1})  # fmt: skip
    async with run_mirror(config) as mirror, aiohttp.ClientSession() as http:
        for _ in range(3):  # not rate limited either
            for path in ("/healthz", "/readyz", "/metrics"):
                assert (await answer(http, mirror.url + path))[0] == 200, path
        assert (await answer(http, mirror.url + "/no-such-page"))[:2] == (404, "NAME_UNKNOWN")
        for path in ("/v2/", "/v2/_catalog", "/v2/x/blobs/uploads/", "/v2/not/an/endpoint"):
            assert (await answer(http, mirror.url + path))[:2] == (401, "UNAUTHORIZED"), path


async def test_the_admin_api_takes_identities_with_admin_and_its_static_token(
    tmp_path: Path, up: FakeUpstream
) -> None:
    for static in (None, "static-admin-token"):
        config = guarded_config(tmp_path, up, admin={"token": static} if static else {})
        async with run_mirror(config) as mirror, aiohttp.ClientSession() as http:
            url = mirror.url + "/admin/cache"
            assert (await answer(http, url, basic("olga")))[0] == 200
            assert (await answer(http, url, basic("carol")))[:2] == (403, "DENIED")
            assert (await answer(http, url))[:2] == (401, "UNAUTHORIZED")
            # Every path under /admin/ is the admin API's: a route added later is guarded too.
            other = mirror.url + "/admin/not-a-route"
            assert (await answer(http, other, basic("carol")))[:2] == (403, "DENIED")
            assert (await answer(http, other, basic("olga")))[0] == 404
            if static is not None:
                assert (await answer(http, url, bearer(static)))[0] == 200


async def test_the_htpasswd_file_is_read_again_when_it_changes(
    tmp_path: Path, up: FakeUpstream, images: dict[str, SmallImage]
) -> None:
    async with run_mirror(guarded_config(tmp_path, up)) as mirror, aiohttp.ClientSession() as http:
        url = mirror.url + manifest_path(images["public"])
        dave = basic("dave", "dave-secret-4")
        assert (await answer(http, url, dave))[0] == 401
        write_htpasswd(tmp_path / "htpasswd", ("dave", "dave-secret-4"), flags=("-B", "-C", "4"))
        deadline = time.monotonic() + 20  # the file is looked at every 2 s
        while (await answer(http, url, dave))[0] != 200:
            assert time.monotonic() < deadline, "the new user was never accepted"
            await asyncio.sleep(0.25)


async def test_repeated_failed_logins_are_slowed_down_and_counted(
    mirror: RunningMirror, images: dict[str, SmallImage]
) -> None:
    url = mirror.url + manifest_path(images["team"])
    async with aiohttp.ClientSession() as http:
        started = time.monotonic()
        for _ in range(5):  # 3 free failures, then turns 0.5 s and 1 s apart
            assert (await answer(http, url, basic("alice", "guess")))[0] == 401
        assert time.monotonic() - started >= 1.0
        delayed = 'mirror_client_login_throttled_total{outcome="delayed"}'
        assert await metric(http, mirror.url, delayed) >= 1
        wrong = 'mirror_client_auth_failures_total{credential="password",reason="wrong_password"}'
        assert await metric(http, mirror.url, wrong) == 5


async def test_a_client_over_its_rate_gets_429_with_retry_after(
    tmp_path: Path, up: FakeUpstream, images: dict[str, SmallImage]
) -> None:
    config = guarded_config(tmp_path, up, rate_limit={"rate": 0.2, "burst": 3})
    async with run_mirror(config) as mirror, aiohttp.ClientSession() as http:
        url = mirror.url + manifest_path(images["public"])
        for _ in range(3):
            assert (await answer(http, url, basic("alice")))[0] == 200
        async with http.get(url, headers=basic("alice")) as resp:
            assert resp.status == 429
            assert (await resp.json())["errors"][0]["code"] == "TOOMANYREQUESTS"
            assert 1 <= int(resp.headers["Retry-After"]) <= 5
        # Counted per user: another user (and the address) still has its burst.
        assert (await answer(http, url, basic("carol")))[0] == 200
        assert (await answer(http, mirror.url + "/healthz"))[0] == 200
        assert (
            await metric(http, mirror.url, 'mirror_client_rate_limited_total{client="user"}') == 1
        )


async def test_the_access_log_names_the_caller_never_the_credentials(
    tmp_path: Path, up: FakeUpstream, images: dict[str, SmallImage],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    runner = web.AppRunner(
        create_app(guarded_config(tmp_path, up)), handle_signals=False,
        access_log=logging.getLogger("test.access"), access_log_class=AccessLogger,
    )  # fmt: skip
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}" + manifest_path(images["team"])
    try:
        with caplog.at_level(logging.INFO):
            async with aiohttp.ClientSession() as http:
                assert (await answer(http, url, basic("alice")))[0] == 200
                assert (await answer(http, url, basic("carol", "not-carols")))[0] == 401
    finally:
        await runner.cleanup()
    access = [r for r in caplog.records if r.name == "test.access"]
    assert [(r.__dict__["user"], r.__dict__["status"]) for r in access] == [
        ("alice", 200), ("-", 401),
    ]  # fmt: skip
    assert ' alice "GET /v2/team/app/manifests/1" 200 ' in access[0].getMessage()
    assert "failed login: user carol from 127.0.0.1 (password, wrong_password)" in caplog.text
    assert "not-carols" not in caplog.text
    assert PASSWORDS["alice"] not in caplog.text


@pytest.mark.parametrize(
    "value",
    [b"Basic", b"Basic !!!", b"Basic \xe9\xe9", b"Basic " + base64.b64encode(b"no-colon"),
     b"Bearer ", b"Digest username=alice", b"Basic " + base64.b64encode(b"\xff:\xfe")],
    ids=["basic-empty", "not-base64", "latin-1", "no-colon", "bearer-empty", "digest", "not-utf8"],
)  # fmt: skip
async def test_malformed_authorization_gets_a_401_challenge_never_a_500(
    mirror: RunningMirror, images: dict[str, SmallImage], value: bytes
) -> None:
    port = int(mirror.url.rsplit(":", 1)[1])
    data = request(manifest_path(images["public"]), headers=((b"Authorization", value),))
    answered = await exchange("127.0.0.1", port, data, wait=10.0)
    [response] = answered.responses
    assert response.status == 401
    assert json.loads(response.body)["errors"][0]["code"] == "UNAUTHORIZED"
    assert response.headers["www-authenticate"].startswith("Bearer realm=")


async def test_malformed_token_requests_get_400(mirror: RunningMirror) -> None:
    token_url = mirror.url + "/auth/token"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    async with aiohttp.ClientSession() as http:
        assert (await answer(http, token_url, bearer("a.b.c")))[0] == 400
        for body in (b"grant_type=client_credentials", b"grant_type=password&password=x",
                     b"a=b&" * 200 + b"grant_type=password&username=" + b"a" * 20000):  # fmt: skip
            async with http.post(token_url, data=body, headers=form) as resp:
                assert resp.status == 400, body[:40]
                assert (await resp.json())["errors"][0]["code"] == "UNSUPPORTED"
        async with http.post(token_url, json={"grant_type": "password"}) as resp:
            assert resp.status == 400


async def test_login_and_refresh_grants_and_the_ns_scope(
    mirror: RunningMirror, images: dict[str, SmallImage], tmp_path: Path
) -> None:
    base, team = mirror.url, images["team"]
    url = f"{base}/auth/token"
    async with aiohttp.ClientSession() as http:
        # containerd: HEAD with ?ns= first; the challenge's scope names upstream and repository.
        head = f"{base}/v2/team/app/manifests/1?ns=ghcr.io"
        status, _, challenge = await answer(http, head, method="HEAD")
        assert status == 401
        scope = challenge.split('scope="')[1].split('"')[0]
        assert scope == "repository:ghcr.io/team/app:pull"
        # The password grant (containerd with --user, containers/image), then its refresh.
        form = {"grant_type": "password", "username": "alice", "password": PASSWORDS["alice"],
                "access_type": "offline", "scope": scope, "service": SERVICE}  # fmt: skip
        async with http.post(url, data=form) as resp:
            body = await resp.json()
        assert (await answer(http, head, bearer(body["access_token"]), "HEAD"))[0] == 200
        form = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"],
                "scope": scope, "service": SERVICE}  # fmt: skip
        async with http.post(url, data=form) as resp:
            refreshed = (await resp.json())["access_token"]
        assert (await answer(http, base + manifest_path(team), bearer(refreshed)))[0] == 200
        # A new password ends the refresh tokens of the old one (the file is re-read).
        write_htpasswd(tmp_path / "htpasswd", ("alice", "a-new-one"), flags=("-B", "-C", "4"))
        deadline = time.monotonic() + 20
        while True:
            async with http.post(url, data=form) as resp:
                if resp.status == 401:
                    assert "invalid_token" in resp.headers["WWW-Authenticate"]
                    break
            assert time.monotonic() < deadline, "the old login never ended"
            await asyncio.sleep(0.25)
        password = 'mirror_tokens_issued_total{grant="password"}'
        assert await metric(http, base, password) == 1
