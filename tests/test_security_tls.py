"""The mirror's TLS listener: protocol settings, mutual TLS, and certificate reload.

Every test serves a real aiohttp site over TLS on loopback with the context
from :class:`mirror.security.tls.CertificateReloader`, with certificates from
a private CA made in the test (:mod:`tests.support.pki`).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509

from mirror.config_security import TlsConfig
from mirror.security.tls import CertificateReloader
from tests.support.pki import Issued, PrivateCA
from tests.support.recorded_events import RecordedEvents

BODY_CHUNK = b"x" * 65536
CHUNKS = 16


@dataclass
class Site:
    """A TLS site with a streaming endpoint whose second half waits for ``release``."""

    url: str
    port: int
    reloader: CertificateReloader
    release: asyncio.Event
    handled: list[str] = field(default_factory=list)


@pytest.fixture
def ca(tmp_path: Path) -> PrivateCA:
    return PrivateCA.create(tmp_path / "pki")


def tls_files(tmp_path: Path, issued: Issued, client_ca: Path | None = None) -> TlsConfig:
    issued.write(tmp_path / "tls.crt", tmp_path / "tls.key")
    return TlsConfig(tmp_path / "tls.crt", tmp_path / "tls.key", client_ca, reload_interval=0.1)


def replace_files(config: TlsConfig, issued: Issued) -> None:
    """Write new files beside the old ones and rename them over (as certbot does)."""
    issued.write(config.cert.with_suffix(".new-crt"), config.key.with_suffix(".new-key"))
    os.replace(config.cert.with_suffix(".new-crt"), config.cert)
    os.replace(config.key.with_suffix(".new-key"), config.key)


@asynccontextmanager
async def tls_site(config: TlsConfig, events: RecordedEvents | None = None) -> AsyncIterator[Site]:
    reloader = CertificateReloader(config, events)
    release = asyncio.Event()
    handled: list[str] = []

    async def stream(request: web.Request) -> web.StreamResponse:
        handled.append(request.path)
        response = web.StreamResponse()
        response.content_length = len(BODY_CHUNK) * CHUNKS
        await response.prepare(request)
        await response.write(BODY_CHUNK)
        await release.wait()
        for _ in range(CHUNKS - 1):
            await response.write(BODY_CHUNK)
        return response

    async def hello(request: web.Request) -> web.Response:
        handled.append(request.path)
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/stream", stream)
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=reloader.context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Site(f"https://127.0.0.1:{port}", port, reloader, release, handled)
    finally:
        release.set()
        await runner.cleanup()


def client_context(ca: PrivateCA, cert: Issued | None = None, tmp_path: Path | None = None,
                   ) -> ssl.SSLContext:  # fmt: skip
    context = ssl.create_default_context(cafile=ca.root_path)
    if cert is not None:
        assert tmp_path is not None
        cert.write(tmp_path / "client.crt", tmp_path / "client.key")
        context.load_cert_chain(tmp_path / "client.crt", tmp_path / "client.key")
    return context


async def served_serial(port: int, context: ssl.SSLContext) -> int:
    """The serial number of the certificate a new connection is shown."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        return x509.load_der_x509_certificate(ssl_object.getpeercert(True)).serial_number
    finally:
        writer.close()
        await writer.wait_closed()


async def test_tls_1_2_and_1_3_only_with_forward_secret_aead(tmp_path: Path, ca: PrivateCA) -> None:
    config = tls_files(tmp_path, ca.issue_server("127.0.0.1"))
    async with tls_site(config) as site:
        assert site.reloader.context.minimum_version == ssl.TLSVersion.TLSv1_2
        modern = client_context(ca)
        _reader, writer = await asyncio.open_connection("127.0.0.1", site.port, ssl=modern)
        assert writer.get_extra_info("ssl_object").version() == "TLSv1.3"
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() is None
        writer.close()
        await writer.wait_closed()
        tls12 = client_context(ca)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        tls12.set_alpn_protocols(["h2", "http/1.1"])
        _reader, writer = await asyncio.open_connection("127.0.0.1", site.port, ssl=tls12)
        ssl_object = writer.get_extra_info("ssl_object")
        name, version, _ = ssl_object.cipher()
        assert version == "TLSv1.2"
        assert name.startswith("ECDHE-")
        assert "GCM" in name or "CHACHA20" in name
        assert ssl_object.selected_alpn_protocol() == "http/1.1"  # never h2: aiohttp has none
        writer.close()
        await writer.wait_closed()
        # A client that offers only a TLS 1.2 CBC suite finds nothing in common.
        cbc = client_context(ca)
        cbc.maximum_version = ssl.TLSVersion.TLSv1_2
        cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA256")
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await asyncio.open_connection("127.0.0.1", site.port, ssl=cbc)


async def test_rotation_reaches_the_next_connection_and_spares_the_transfer_in_flight(
    tmp_path: Path, ca: PrivateCA
) -> None:
    old, new = ca.issue_server("127.0.0.1"), ca.issue_server("127.0.0.1")
    config = tls_files(tmp_path, old)
    events = RecordedEvents()
    async with tls_site(config, events) as site, aiohttp.ClientSession() as http:
        context = client_context(ca)
        async with http.get(f"{site.url}/stream", ssl=context) as response:
            first = await response.content.readexactly(len(BODY_CHUNK))
            assert response.connection is not None
            assert response.connection.transport is not None
            peer = response.connection.transport.get_extra_info("ssl_object")
            replace_files(config, new)
            assert site.reloader.reload_if_changed()
            assert await served_serial(site.port, context) == new.serial
            site.release.set()
            rest = await response.content.read()
            assert (
                x509.load_der_x509_certificate(peer.getpeercert(True)).serial_number == old.serial
            )
        assert len(first) + len(rest) == len(BODY_CHUNK) * CHUNKS
        assert not site.reloader.reload_if_changed(), "nothing changed since"
    assert events.named("tls_reloaded") == [("tls_reloaded", True)]


async def test_a_half_written_rotation_keeps_the_old_certificate(
    tmp_path: Path, ca: PrivateCA, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = ca.issue_server("127.0.0.1"), ca.issue_server("127.0.0.1")
    config = tls_files(tmp_path, old)
    events = RecordedEvents()
    async with tls_site(config, events) as site:
        context = client_context(ca)
        new.write(tmp_path / "next.crt", tmp_path / "next.key")
        os.replace(tmp_path / "next.crt", config.cert)  # the certificate first, no key yet
        assert not site.reloader.reload_if_changed()
        assert "tls.key: the key does not belong to certificate 1" in caplog.text
        assert await served_serial(site.port, context) == old.serial
        assert not site.reloader.reload_if_changed(), "the same bad files are not retried"
        os.replace(tmp_path / "next.key", config.key)
        assert site.reloader.reload_if_changed()
        assert await served_serial(site.port, context) == new.serial
    assert events.named("tls_reloaded") == [("tls_reloaded", False), ("tls_reloaded", True)]


async def test_the_watch_follows_a_swapped_symlink_by_itself(tmp_path: Path, ca: PrivateCA) -> None:
    # A Kubernetes Secret volume: tls.crt -> ..data/tls.crt, and ..data is swapped.
    old, new = ca.issue_server("127.0.0.1"), ca.issue_server("127.0.0.1")
    for name, issued in (("v1", old), ("v2", new)):
        (tmp_path / name).mkdir()
        issued.write(tmp_path / name / "tls.crt", tmp_path / name / "tls.key")
    (tmp_path / "..data").symlink_to("v1")
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).symlink_to(f"..data/{name}")
    config = TlsConfig(tmp_path / "tls.crt", tmp_path / "tls.key", reload_interval=0.05)
    async with tls_site(config) as site:
        watching = site.reloader.watching()
        await anext(watching)
        context = client_context(ca)
        assert await served_serial(site.port, context) == old.serial
        (tmp_path / "..data_tmp").symlink_to("v2")
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        for _ in range(200):  # up to 10 s, far above the 0.05 s interval
            if await served_serial(site.port, context) == new.serial:
                break
            await asyncio.sleep(0.05)
        assert await served_serial(site.port, context) == new.serial
        await watching.aclose()


async def test_mutual_tls_refuses_a_client_without_a_certificate_at_the_handshake(
    tmp_path: Path, ca: PrivateCA
) -> None:
    config = tls_files(tmp_path, ca.issue_server("127.0.0.1"), client_ca=ca.root_path)
    other_ca = PrivateCA.create(tmp_path / "other", name="someone else")
    async with tls_site(config) as site, aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            await http.get(f"{site.url}/hello", ssl=client_context(ca))
        tls12 = client_context(ca)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        # TLS 1.2: the server ends the handshake itself.
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await asyncio.open_connection("127.0.0.1", site.port, ssl=tls12)
        stranger = client_context(ca, other_ca.issue_client("mallory"), tmp_path)
        with pytest.raises(aiohttp.ClientError):
            await http.get(f"{site.url}/hello", ssl=stranger)
        assert site.handled == [], "no refused client ever reached the application"
        alice = client_context(ca, ca.issue_client("alice"), tmp_path)
        async with http.get(f"{site.url}/hello", ssl=alice) as response:
            assert await response.text() == "hello"


async def test_a_client_ca_removed_from_the_file_is_refused_on_the_next_connection(
    tmp_path: Path, ca: PrivateCA
) -> None:
    old_clients = PrivateCA.create(tmp_path / "old-clients", name="old clients")
    new_clients = PrivateCA.create(tmp_path / "new-clients", name="new clients")
    bundle = tmp_path / "clients-ca.crt"
    bundle.write_bytes(old_clients.root_path.read_bytes())
    config = tls_files(tmp_path, ca.issue_server("127.0.0.1"), client_ca=bundle)
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old_client = client_context(ca, old_clients.issue_client("old"), tmp_path / "old")
    new_client = client_context(ca, new_clients.issue_client("new"), tmp_path / "new")
    async with tls_site(config) as site, aiohttp.ClientSession() as http:
        async with http.get(f"{site.url}/hello", ssl=old_client) as response:
            assert response.status == 200
        bundle.write_bytes(new_clients.root_path.read_bytes())
        assert site.reloader.reload_if_changed()
        async with aiohttp.ClientSession() as fresh:  # no kept-alive connection
            with pytest.raises(aiohttp.ClientError):
                await fresh.get(f"{site.url}/hello", ssl=old_client)
            async with fresh.get(f"{site.url}/hello", ssl=new_client) as response:
                assert response.status == 200
