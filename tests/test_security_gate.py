"""The client-auth middleware and the token endpoint over real sockets.

A guarded registry (:mod:`tests.support.guarded_registry`) serves the test
images behind :class:`mirror.security.gate.ClientGate`, with the rules of the
issue's example: everyone may pull ``docker.io/library/*``, team X may pull
``ghcr.io/library/*``, olga may use the admin API; the default is deny.
Requests are made the way docker, containerd, podman and skopeo make them.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from mirror.config import Config, build_config
from mirror.security.keys import read_signing_key
from mirror.security.limits import LoginThrottle
from mirror.security.tokens import TokenAuthority
from tests.support.guarded_registry import RunningRegistry, run_registry
from tests.support.htpasswd import write_htpasswd
from tests.support.images import ImageSet, build_images, default_image_dir
from tests.support.pki import PrivateCA

TINY = "/v2/library/tiny/manifests/oci"
GHCR_TINY = "/v2/ghcr.io/library/tiny/manifests/oci"
PASSWORDS = {"alice": "alice-secret-1", "carol": "carol-secret-2", "olga": "olga-secret-3"}


@pytest.fixture(scope="module")
def images() -> ImageSet:
    return build_images(default_image_dir(large_mb=1), large_mb=1)


def gate_config(tmp_path: Path, **extra: Any) -> Config:
    users = write_htpasswd(tmp_path / "htpasswd", *PASSWORDS.items(), flags=("-B", "-C", "4"))
    raw: dict[str, Any] = {
        "upstreams": [{"url": "https://registry-1.docker.io"},
                      {"name": "ghcr.io", "url": "https://ghcr.io"}],
        "auth": {
            "htpasswd": str(users),
            "default": "deny",
            "groups": {"team-x": ["alice"]},
            "rules": [
                {"who": ["everyone"], "upstream": "docker.io", "repository": "library/*"},
                {"who": ["group:team-x"], "upstream": "ghcr.io", "repository": "library/*"},
                {"who": ["user:olga"], "actions": ["admin"]},
            ],
            "token": {"key": str(tmp_path / "token.key"), "service": "mirror.test"},
        },
    }  # fmt: skip
    raw.update(extra)
    return build_config(raw)


@pytest.fixture
async def registry(tmp_path: Path, images: ImageSet) -> AsyncIterator[RunningRegistry]:
    async with run_registry(gate_config(tmp_path), images, htpasswd_interval=0) as running:
        yield running


def basic(user: str, password: str | None = None) -> dict[str, str]:
    value = f"{user}:{password if password is not None else PASSWORDS[user]}"
    return {"Authorization": "Basic " + base64.b64encode(value.encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def get_token(http: aiohttp.ClientSession, registry: RunningRegistry, *scopes: str,
                    headers: dict[str, str] | None = None) -> str:  # fmt: skip
    params = [("service", "mirror.test"), *(("scope", s) for s in scopes)]
    async with http.get(f"{registry.url}/auth/token", params=params, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert resp.headers["Cache-Control"] == "no-store"
    token: str = body["token"]
    return token


def granted(token: str) -> list[str]:
    claims = jwt.decode(token, options={"verify_signature": False})
    return [entry["name"] for entry in claims["access"]]


async def status_of(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None,
                    method: str = "GET") -> tuple[int, dict[str, Any], str]:  # fmt: skip
    async with http.request(method, url, headers=headers) as resp:
        body = await resp.json() if method != "HEAD" else {}
        return resp.status, body, resp.headers.get("WWW-Authenticate", "")


async def test_v2_without_credentials_gets_the_challenge(registry: RunningRegistry) -> None:
    async with aiohttp.ClientSession() as http:
        status, body, challenge = await status_of(http, f"{registry.url}/v2/")
        assert status == 401
        assert body["errors"][0]["code"] == "UNAUTHORIZED"
        assert challenge == f'Bearer realm="{registry.url}/auth/token",service="mirror.test"'
        token = await get_token(http, registry)  # docker: an anonymous token without a scope
        assert (await status_of(http, f"{registry.url}/v2/", bearer(token)))[0] == 200
        assert (await status_of(http, f"{registry.url}/v2/", basic("carol")))[0] == 200


async def test_anonymous_callers_pull_what_the_rules_give_everyone(
    registry: RunningRegistry,
) -> None:
    async with aiohttp.ClientSession() as http:
        token = await get_token(http, registry, "repository:library/tiny:pull",
                                "repository:ghcr.io/library/tiny:pull")  # fmt: skip
        assert granted(token) == ["docker.io/library/tiny"]
        assert (await status_of(http, registry.url + TINY, bearer(token)))[0] == 200
        # Without any token too: containerd asks before it has seen a challenge.
        assert (await status_of(http, registry.url + TINY, method="HEAD"))[0] == 200
        status, body, challenge = await status_of(http, registry.url + GHCR_TINY, bearer(token))
        assert status == 401, "an anonymous caller may log in: a challenge, not a 403"
        assert body["errors"][0]["code"] == "UNAUTHORIZED"
        assert 'scope="repository:ghcr.io/library/tiny:pull"' in challenge
    assert ("token_issued", "anonymous") in registry.guard.events.events


async def test_team_members_pull_their_repositories_and_others_are_denied(
    registry: RunningRegistry,
) -> None:
    scope = "repository:ghcr.io/library/tiny:pull"
    async with aiohttp.ClientSession() as http:
        alice = await get_token(http, registry, scope, headers=basic("alice"))
        assert granted(alice) == ["ghcr.io/library/tiny"]
        assert (await status_of(http, registry.url + GHCR_TINY, bearer(alice)))[0] == 200
        carol = await get_token(http, registry, scope, headers=basic("carol"))
        assert granted(carol) == [], "scopes the user may not have are left out"
        for headers in (bearer(carol), basic("carol")):
            status, body, _ = await status_of(http, registry.url + GHCR_TINY, headers)
            assert (status, body["errors"][0]["code"]) == (403, "DENIED")
        # Denied, not "unknown": the answer does not say whether the repository exists.
        missing = "/v2/ghcr.io/library/no-such-thing/manifests/latest"
        assert (await status_of(http, registry.url + missing, basic("carol")))[0] == 403
        assert (await status_of(http, registry.url + missing, basic("alice")))[0] == 404


async def test_a_token_is_good_only_for_the_repositories_it_names(
    registry: RunningRegistry,
) -> None:
    async with aiohttp.ClientSession() as http:
        token = await get_token(http, registry, "repository:ghcr.io/library/tiny:pull",
                                headers=basic("alice"))  # fmt: skip
        other = "/v2/ghcr.io/library/multi/manifests/latest"
        status, _, challenge = await status_of(http, registry.url + other, bearer(token))
        assert status == 401
        assert challenge == (
            f'Bearer realm="{registry.url}/auth/token",service="mirror.test",'
            'scope="repository:ghcr.io/library/multi:pull",error="insufficient_scope"'
        )


def _forged_tokens(tmp_path: Path) -> dict[str, str]:
    config = gate_config(tmp_path).security.auth
    assert config is not None
    assert config.token is not None
    key = read_signing_key(config.token.key)
    past = TokenAuthority(key, config.token, clock=lambda: 1_000_000_000.0)
    claims = jwt.decode(past.issue("alice", ["ghcr.io/library/tiny"]).token,
                        options={"verify_signature": False})  # fmt: skip
    now = int(time.time())
    fresh = {**claims, "exp": now + 300, "nbf": now, "iat": now}
    other = ec.generate_private_key(ec.SECP256R1())
    kid = {"kid": key.key_id}
    return {
        "expired": past.issue("alice", ["ghcr.io/library/tiny"]).token,
        "another key": jwt.encode(fresh, other, "ES256", headers=kid),
        "wrong audience": jwt.encode({**fresh, "aud": "other"}, key.private_key, "ES256",
                                     headers=kid),
        "alg none": jwt.encode(fresh, "", "none", headers=kid),
    }  # fmt: skip


async def test_refused_tokens_get_invalid_token(registry: RunningRegistry, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http:
        for name, token in _forged_tokens(tmp_path).items():
            status, _, challenge = await status_of(http, registry.url + GHCR_TINY, bearer(token))
            assert status == 401, name
            assert challenge.endswith(',error="invalid_token"'), name
    failures = registry.guard.events.named("auth_failed")
    assert (
        failures
        == [("auth_failed", "token", "expired_token")]
        + [("auth_failed", "token", "invalid_token")] * 3
    )


async def test_basic_credentials_on_every_request(
    registry: RunningRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    async with aiohttp.ClientSession() as http:
        assert (await status_of(http, registry.url + GHCR_TINY, basic("alice")))[0] == 200
        with caplog.at_level(logging.DEBUG):
            for headers in (basic("alice", "guess-1"), basic("mallory", "guess-2")):
                status, body, challenge = await status_of(http, registry.url + TINY, headers)
                assert (status, body["errors"][0]["code"]) == (401, "UNAUTHORIZED")
                assert challenge.startswith("Bearer realm=")
            status, *_ = await status_of(http, registry.url + TINY, {"Authorization": "Basic !!"})
            assert status == 401
            # podman and skopeo without a login answer a Basic challenge with ":".
            empty = {"Authorization": "Basic " + base64.b64encode(b":").decode()}
            assert (await status_of(http, registry.url + TINY, empty))[0] == 200
            assert (await status_of(http, registry.url + GHCR_TINY, empty))[0] == 401
    assert "failed login: user alice from 127.0.0.1 (password, wrong_password)" in caplog.text
    assert "failed login: user mallory from 127.0.0.1 (password, unknown_user)" in caplog.text
    for secret in ("guess-1", "guess-2", *PASSWORDS.values()):
        assert secret not in caplog.text
    assert registry.guard.events.named("auth_failed") == [
        ("auth_failed", "password", "wrong_password"),
        ("auth_failed", "password", "unknown_user"),
        ("auth_failed", "header", "malformed"),
    ]


async def test_logins_of_unknown_users_may_count_as_anonymous(
    tmp_path: Path, images: ImageSet
) -> None:
    # dockerd sends its Docker Hub login to a registry mirror (docs/security.md).
    config = gate_config(tmp_path)
    assert config.security.auth is not None
    auth = dataclasses.replace(config.security.auth, unknown_users="anonymous")
    config = dataclasses.replace(config, security=dataclasses.replace(config.security, auth=auth))
    async with run_registry(config, images) as registry, aiohttp.ClientSession() as http:
        hub_login = basic("hubuser", "my-docker-hub-password")
        scopes = ("repository:library/tiny:pull", "repository:ghcr.io/library/tiny:pull")
        token = await get_token(http, registry, *scopes, headers=hub_login)
        assert jwt.decode(token, options={"verify_signature": False})["sub"] == ""
        assert granted(token) == ["docker.io/library/tiny"]
        assert (await status_of(http, registry.url + "/v2/", hub_login))[0] == 200
        assert (await status_of(http, registry.url + TINY, hub_login))[0] == 200
        assert (await status_of(http, registry.url + GHCR_TINY, hub_login))[0] == 401
        # A known user with a wrong password is still refused.
        assert (await status_of(http, registry.url + TINY, basic("alice", "wrong")))[0] == 401
    assert registry.guard.events.named("auth_failed") == [
        ("auth_failed", "password", "wrong_password")
    ]
    assert registry.guard.events.named("token_issued") == [("token_issued", "anonymous")]


async def test_the_docker_login_flow_and_refresh_tokens(registry: RunningRegistry) -> None:
    scope = "repository:ghcr.io/library/tiny:pull"
    url = f"{registry.url}/auth/token"
    async with aiohttp.ClientSession() as http:
        # dockerd's login: GET with Basic, offline_token=true, client_id=docker.
        params = {"account": "alice", "client_id": "docker", "offline_token": "true",
                  "service": "mirror.test"}  # fmt: skip
        async with http.get(url, params=params, headers=basic("alice")) as resp:
            refresh = (await resp.json())["refresh_token"]
        # Later pulls: POST grant_type=refresh_token with the scope.
        form = {"grant_type": "refresh_token", "refresh_token": refresh, "service": "mirror.test",
                "scope": scope, "client_id": "docker"}  # fmt: skip
        async with http.post(url, data=form) as resp:
            token = (await resp.json())["access_token"]
        assert granted(token) == ["ghcr.io/library/tiny"]
        assert (await status_of(http, registry.url + GHCR_TINY, bearer(token)))[0] == 200
        # The password grant, as containers/image and the OAuth path of docker use it.
        form = {"grant_type": "password", "username": "alice", "password": PASSWORDS["alice"],
                "access_type": "offline", "scope": f"{scope} repository:library/tiny:pull",
                "service": "mirror.test", "client_id": "skopeo"}  # fmt: skip
        async with http.post(url, data=form) as resp:
            body = await resp.json()
        assert sorted(granted(body["token"])) == ["docker.io/library/tiny", "ghcr.io/library/tiny"]
        assert body["refresh_token"]
        # A new password ends every refresh token of the old one.
        write_htpasswd(
            registry_users(registry), ("alice", "a-new-password"), flags=("-B", "-C", "4")
        )
        form = {"grant_type": "refresh_token", "refresh_token": refresh, "scope": scope}
        async with http.post(url, data=form) as resp:
            assert resp.status == 401
            assert "invalid_token" in resp.headers["WWW-Authenticate"]


def registry_users(registry: RunningRegistry) -> Path:
    users = registry.guard.gate.users
    assert users is not None
    return users.path


async def test_containerd_with_ns_gets_a_scope_it_can_ask_for(registry: RunningRegistry) -> None:
    url = f"{registry.url}/v2/library/tiny/manifests/oci?ns=ghcr.io"
    async with aiohttp.ClientSession() as http:
        status, _, challenge = await status_of(http, url, method="HEAD")
        assert status == 401
        scope = challenge.split('scope="')[1].split('"')[0]
        assert scope == "repository:ghcr.io/library/tiny:pull"
        # containerd asks for the challenge's scope and the one of its reference.
        token = await get_token(http, registry, scope, "repository:library/tiny:pull",
                                headers=basic("alice"))  # fmt: skip
        assert sorted(granted(token)) == ["docker.io/library/tiny", "ghcr.io/library/tiny"]
        assert (await status_of(http, url, bearer(token), method="HEAD"))[0] == 200


async def test_repeated_failures_from_one_address_are_slowed_down(
    tmp_path: Path, images: ImageSet
) -> None:
    throttle = LoginThrottle(free_failures=2, base_delay=0.2, max_delay=0.5)
    config = gate_config(tmp_path)
    async with run_registry(config, images, throttle=throttle) as registry, \
            aiohttp.ClientSession() as http:  # fmt: skip
        assert (await status_of(http, registry.url + TINY, basic("alice")))[0] == 200
        for index in range(2):
            assert (await status_of(http, registry.url + TINY, basic("alice", f"g{index}")))[
                0
            ] == 401
        guesses = [status_of(http, registry.url + TINY, basic("alice", f"x{i}")) for i in range(8)]
        statuses = sorted(result[0] for result in await asyncio.gather(*guesses))
        assert 401 in statuses, "some guesses waited for their turn and were checked"
        assert 429 in statuses, "the ones beyond max_delay were refused at once"
        assert set(statuses) == {401, 429}
        # The real user's credentials, already checked, are never held up.
        assert (await status_of(http, registry.url + TINY, basic("alice")))[0] == 200
    events = registry.guard.events
    assert ("login_throttled", "delayed") in events.events
    assert ("login_throttled", "refused") in events.events


async def test_the_admin_api_takes_identities_and_its_static_token(
    registry: RunningRegistry,
) -> None:
    url = f"{registry.url}/admin/cache"
    async with aiohttp.ClientSession() as http:
        assert (await status_of(http, url, basic("olga")))[0] == 200
        assert (await status_of(http, url, basic("alice")))[0] == 403
        assert (await status_of(http, url))[0] == 401
        assert (await status_of(http, url, bearer("static-admin-token")))[0] == 200
        assert (await status_of(http, url, bearer("static-admin-token-not")))[0] == 401


async def test_a_client_over_its_rate_gets_429(tmp_path: Path, images: ImageSet) -> None:
    config = gate_config(tmp_path, rate_limit={"rate": 0.5, "burst": 2})
    async with run_registry(config, images) as registry, aiohttp.ClientSession() as http:
        statuses = [(await status_of(http, registry.url + TINY, basic("alice")))[0]
                    for _ in range(3)]  # fmt: skip
        assert statuses == [200, 200, 429]
        async with http.get(registry.url + TINY, headers=basic("alice")) as resp:
            assert resp.headers["Retry-After"] == "2"
            assert (await resp.json())["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert (await status_of(http, registry.url + TINY, basic("carol")))[0] == 200
        anonymous = [(await status_of(http, registry.url + TINY))[0] for _ in range(3)]
        assert anonymous == [200, 200, 429], "anonymous callers count by address"
    assert registry.guard.events.named("rate_limited") == [
        ("rate_limited", "user"), ("rate_limited", "user"), ("rate_limited", "address")
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "kwargs", "status"),
    [
        ("POST", {"json": {"grant_type": "password"}}, 400),
        ("POST", {"data": {"grant_type": "client_credentials"}}, 400),
        ("POST", {"data": {"grant_type": "password", "username": "alice", "password": "x"}}, 401),
        ("POST", {"data": {"grant_type": "refresh_token", "refresh_token": "x.y.z"}}, 401),
        ("POST", {"data": {"grant_type": "password", "junk": "x" * 20000}}, 400),
        ("GET", {"headers": {"Authorization": "Bearer abc"}}, 400),
        ("GET", {"headers": {"Authorization": "Basic bm9jb2xvbg=="}}, 401),
        ("GET", {"headers": basic("alice", "wrong")}, 401),
    ],
)
async def test_bad_token_requests(
    registry: RunningRegistry, method: str, kwargs: dict[str, Any], status: int
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, f"{registry.url}/auth/token", **kwargs) as resp:
            assert resp.status == status
            body = await resp.json()
    assert body["errors"][0]["code"] == ("UNSUPPORTED" if status == 400 else "UNAUTHORIZED")


async def test_over_tls_the_realm_is_https(tmp_path: Path, images: ImageSet) -> None:
    ca = PrivateCA.create(tmp_path / "pki")
    ca.issue_server("127.0.0.1").write(tmp_path / "tls.crt", tmp_path / "tls.key")
    config = gate_config(tmp_path, tls={"cert": str(tmp_path / "tls.crt"),
                                        "key": str(tmp_path / "tls.key")})  # fmt: skip
    context = ssl.create_default_context(cafile=ca.root_path)
    async with run_registry(config, images) as registry, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:  # fmt: skip
        assert registry.url.startswith("https://")
        _, _, challenge = await status_of(http, f"{registry.url}/v2/")
        assert challenge.startswith(f'Bearer realm="{registry.url}/auth/token"')
        token = await get_token(http, registry, "repository:ghcr.io/library/tiny:pull",
                                headers=basic("alice"))  # fmt: skip
        assert (await status_of(http, registry.url + GHCR_TINY, bearer(token)))[0] == 200
