"""``registry-mirror serve`` with ``[tls]``: HTTPS, mutual TLS, rotation, the healthcheck.

Every test runs the mirror as its own process (``python -m mirror serve``) in
front of a fake upstream on a real socket, with certificates from a private CA
made in the test (:mod:`tests.support.pki`), and talks to it over real TLS
connections: aiohttp, curl, the ``healthcheck`` command.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import random
import signal
import ssl
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from mirror.oci import OCI_MANIFEST
from tests.support.fake_upstream import FakeUpstream
from tests.support.mirror_process import ROOT, MirrorProcess, start_mirror_process, toml_text
from tests.support.pki import Issued, PrivateCA
from tests.support.processes import free_port

MIB = 1024 * 1024
REPOSITORY = "team/app"
# Far above the 1 s reload interval: the machine is shared and loaded.
RELOAD_WAIT = 60.0


@pytest.fixture
def ca(tmp_path: Path) -> PrivateCA:
    return PrivateCA.create(tmp_path / "pki")


def client_context(ca: PrivateCA, cert: Issued | None = None, where: Path | None = None,
                   ) -> ssl.SSLContext:  # fmt: skip
    """Trusts ``ca``; shows ``cert`` (written under ``where``) when given."""
    context = ssl.create_default_context(cafile=ca.root_path)
    if cert is not None:
        assert where is not None
        where.mkdir(parents=True, exist_ok=True)
        cert.write(where / "client.crt", where / "client.key")
        context.load_cert_chain(where / "client.crt", where / "client.key")
    return context


def tls_settings(tmp_path: Path, issued: Issued, up: FakeUpstream, **tls: Any) -> dict[str, Any]:
    """A mirror of ``up`` serving ``issued`` (written to tmp_path/tls.crt, tls.key)."""
    issued.write(tmp_path / "tls.crt", tmp_path / "tls.key")
    return {
        "storage": {"path": str(tmp_path / "cache")},
        "upstreams": [{"url": up.url, "retries": 0}],
        "tls": {"cert": str(tmp_path / "tls.crt"), "key": str(tmp_path / "tls.key"),
                "reload_interval": "1s", **tls},
    }  # fmt: skip


def add_image(up: FakeUpstream, layer: bytes) -> tuple[str, str]:
    """An image with ``layer`` as ``REPOSITORY:latest``: (manifest digest, layer digest)."""
    config = b"{}"
    layer_digest, config_digest = up.add_blob(layer), up.add_blob(config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": len(layer)}],
    }).encode()  # fmt: skip
    return up.add_manifest(REPOSITORY, manifest, OCI_MANIFEST, tag="latest"), layer_digest


def start_with_metrics(
    tmp_path: Path, settings: dict[str, Any], context: ssl.SSLContext
) -> tuple[MirrorProcess, str]:
    """The mirror, not waited for, with a plain-HTTP metrics listener: (it, /metrics URL)."""
    port = free_port()
    settings["metrics"] = {"listen": f"127.0.0.1:{port}"}
    mirror = start_mirror_process(tmp_path, settings, wait=False, tls_client=context)
    return mirror, f"http://127.0.0.1:{port}/metrics"


async def served_serial(mirror: MirrorProcess, context: ssl.SSLContext) -> int:
    """The serial number of the certificate a new connection to ``mirror`` is shown."""
    port = int(mirror.url.rsplit(":", 1)[1])
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(True)
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        writer.close()
        await writer.wait_closed()


async def serial_becomes(mirror: MirrorProcess, context: ssl.SSLContext, serial: int) -> None:
    """Wait until new connections are shown the certificate ``serial``."""
    for _ in range(int(RELOAD_WAIT / 0.2)):
        if await served_serial(mirror, context) == serial:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the mirror still serves {await served_serial(mirror, context)}")


async def metric(url: str, name: str) -> float:
    """One unlabelled-or-labelled sample of the plain-HTTP metrics listener."""
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m mirror ARGS`` from the worktree."""
    return subprocess.run(
        [sys.executable, "-m", "mirror", *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip


async def curl_sha256(url: str, *options: str) -> str:
    """GET ``url`` with curl (``options`` first): the body's ``sha256:`` digest."""
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--fail", *options, url,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return "sha256:" + hashlib.sha256(out).hexdigest()


async def test_pulls_over_https_with_aiohttp_and_curl_and_a_plain_metrics_listener(
    up: FakeUpstream, tmp_path: Path, ca: PrivateCA
) -> None:
    server = ca.issue_server("127.0.0.1")
    manifest, layer = add_image(up, random.Random(15).randbytes(2 * MIB))
    context = client_context(ca)
    mirror, metrics = start_with_metrics(tmp_path, tls_settings(tmp_path, server, up), context)
    await asyncio.to_thread(mirror.wait_ready)
    try:
        async with aiohttp.ClientSession() as http:
            url = f"{mirror.url}/v2/{REPOSITORY}/manifests/latest"
            async with http.get(url, ssl=context) as resp:
                assert resp.status == 200
                assert resp.headers["Docker-Content-Digest"] == manifest
            async with http.get(f"{mirror.url}/v2/{REPOSITORY}/blobs/{layer}", ssl=context) as r:
                assert "sha256:" + hashlib.sha256(await r.read()).hexdigest() == layer
        blob_url = f"{mirror.url}/v2/{REPOSITORY}/blobs/{layer}"
        assert await curl_sha256(blob_url, "--cacert", str(ca.root_path)) == layer
        # Plain HTTP to the TLS port is not served.
        with pytest.raises(aiohttp.ClientError):
            async with aiohttp.ClientSession() as http:
                await http.get(mirror.url.replace("https:", "http:") + "/v2/")
        expiry = await metric(metrics, "mirror_tls_certificate_expiry_timestamp_seconds")
        assert expiry == server.cert.not_valid_after_utc.timestamp()
        assert await metric(metrics, 'mirror_tls_reloads_total{result="ok"}') == 0
    finally:
        mirror.process.popen.send_signal(signal.SIGTERM)
        await asyncio.to_thread(mirror.process.popen.wait, 60)
    assert mirror.process.popen.returncode == 0, "the file watch ended with the app"
    log = mirror.log()
    assert f"listening on https://127.0.0.1:{mirror.url.rsplit(':', 1)[1]}" in log
    assert log.rstrip().endswith("mirror.shutdown: stopped")


def old_protocol_client(ca: PrivateCA, version: str) -> ssl.SSLContext:
    """A client that offers only TLS ``version`` (``TLSv1``, ``TLSv1_1``)."""
    context = client_context(ca)
    with warnings.catch_warnings():  # the old versions are deprecated in ssl too
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = getattr(ssl.TLSVersion, version)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that OpenSSL lets the client offer them
    return context


async def negotiated_version(port: int, context: ssl.SSLContext) -> str:
    """The TLS version of a new connection to ``port``."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    version = writer.get_extra_info("ssl_object").version()
    writer.close()
    await writer.wait_closed()
    return str(version)


async def test_tls_1_0_and_1_1_are_refused(up: FakeUpstream, tmp_path: Path, ca: PrivateCA) -> None:
    settings = tls_settings(tmp_path, ca.issue_server("127.0.0.1"), up)
    mirror = start_mirror_process(tmp_path, settings, wait=False, tls_client=client_context(ca))
    # A control server that accepts anything: the old clients do offer the old versions.
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        permissive.minimum_version = ssl.TLSVersion.TLSv1
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    permissive.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    control = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=permissive)
    try:
        await asyncio.to_thread(mirror.wait_ready)
        port = int(mirror.url.rsplit(":", 1)[1])
        control_port = control.sockets[0].getsockname()[1]
        for version, name in (("TLSv1", "TLSv1"), ("TLSv1_1", "TLSv1.1")):
            old = old_protocol_client(ca, version)
            assert await negotiated_version(control_port, old) == name
            with pytest.raises((ssl.SSLError, ConnectionResetError)):
                await negotiated_version(port, old)
        modern = client_context(ca)
        modern.maximum_version = ssl.TLSVersion.TLSv1_2
        assert await negotiated_version(port, modern) == "TLSv1.2"
    finally:
        control.close()
        mirror.process.stop()


async def test_mutual_tls_admits_only_clients_of_the_configured_ca(
    up: FakeUpstream, tmp_path: Path, ca: PrivateCA
) -> None:
    _, layer = add_image(up, b"layer for mutual TLS")
    alice = client_context(ca, ca.issue_client("alice"), tmp_path / "alice")
    settings = tls_settings(tmp_path, ca.issue_server("127.0.0.1"), up,
                            client_ca=str(ca.root_path))  # fmt: skip
    mirror = start_mirror_process(tmp_path, settings, wait=False, tls_client=alice)
    other = PrivateCA.create(tmp_path / "other", name="someone else")
    stranger = client_context(ca, other.issue_client("mallory"), tmp_path / "mallory")
    url = f"{mirror.url}/v2/{REPOSITORY}/blobs/{layer}"
    try:
        await asyncio.to_thread(mirror.wait_ready)
        for refused in (client_context(ca), stranger):
            async with aiohttp.ClientSession() as http:
                with pytest.raises(aiohttp.ClientError):
                    await http.get(url, ssl=refused)
        tls12 = client_context(ca)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2  # the server ends the handshake itself
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await asyncio.open_connection("127.0.0.1", int(mirror.url.rsplit(":", 1)[1]),
                                          ssl=tls12)  # fmt: skip
        assert up.count("GET", layer) == 0, "no refused client reached the proxy"
        async with aiohttp.ClientSession() as http, http.get(url, ssl=alice) as resp:
            assert await resp.read() == b"layer for mutual TLS"
        curl = ("--cacert", str(ca.root_path), "--cert", str(tmp_path / "alice" / "client.crt"),
                "--key", str(tmp_path / "alice" / "client.key"))  # fmt: skip
        assert await curl_sha256(url, *curl) == layer
    finally:
        mirror.process.stop()


async def ready_and_cached(mirror: MirrorProcess, url: str, context: ssl.SSLContext) -> int:
    """Wait for ``mirror``, then pull ``url`` once so that it is cached: its length."""
    await asyncio.to_thread(mirror.wait_ready)
    async with aiohttp.ClientSession() as http, http.get(url, ssl=context) as resp:
        return len(await resp.read())


def read_calls(pid: int) -> int:
    """How many read(2)-family calls process ``pid`` made (socket receives are not counted)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("syscr:"):
            return int(line.split()[1])
    raise AssertionError("no syscr in /proc/PID/io")


async def test_a_cached_blob_goes_out_over_tls_in_large_reads_and_survives_a_vanishing_client(
    up: FakeUpstream, tmp_path: Path, ca: PrivateCA
) -> None:
    # sendfile cannot encrypt; asyncio's fallback for TLS reads 16 KiB per worker-thread
    # hop, which served a cached blob at 12 MiB/s (bench/tls_cost.py).
    big = random.Random(18).randbytes(64 * MIB)
    _, layer = add_image(up, big)
    context = client_context(ca)
    settings = tls_settings(tmp_path, ca.issue_server("127.0.0.1"), up)
    mirror = start_mirror_process(tmp_path, settings, wait=False, tls_client=context)
    url = f"{mirror.url}/v2/{REPOSITORY}/blobs/{layer}"
    try:
        assert await ready_and_cached(mirror, url, context) == len(big)
        async with aiohttp.ClientSession() as http:
            before = read_calls(mirror.process.pid)
            async with http.get(url, ssl=context) as resp:
                assert hashlib.sha256(await resp.read()).digest() == hashlib.sha256(big).digest()
            reads = read_calls(mirror.process.pid) - before
            assert reads < len(big) // (64 * 1024), f"{reads} reads for 64 MiB"
            async with http.get(url, ssl=context, headers={"Range": "bytes=100-199"}) as resp:
                assert resp.status == 206
                assert await resp.read() == big[100:200]
        # A client that leaves after 1 MiB: the mirror goes on serving.
        async with aiohttp.ClientSession() as http:
            resp = await http.get(url, ssl=context)
            await resp.content.readexactly(MIB)
            resp.close()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{mirror.url}/healthz", ssl=context) as resp:
                assert resp.status == 200
            async with http.get(url, ssl=context) as resp:
                assert len(await resp.read()) == len(big)
    finally:
        mirror.process.stop()
    assert "Traceback" not in mirror.log()


def client_hello() -> bytes:
    """The first flight of a TLS client (its ClientHello), as bytes."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="x.test")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def send_raw(port: int, data: bytes) -> bytes:
    """Send ``data`` and end the sending side; whatever comes back before the close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        writer.write_eof()
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_hostile_bytes_on_the_tls_port_are_dropped_quietly(
    up: FakeUpstream, tmp_path: Path, ca: PrivateCA
) -> None:
    context = client_context(ca)
    settings = tls_settings(tmp_path, ca.issue_server("127.0.0.1"), up)
    mirror = start_mirror_process(tmp_path, settings, wait=False, tls_client=context)
    try:
        await asyncio.to_thread(mirror.wait_ready)
        port = int(mirror.url.rsplit(":", 1)[1])
        # A client that connects and says nothing holds no one else up.
        _silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)
        hello = client_hello()
        for data in (
            b"GET /v2/ HTTP/1.1\r\nHost: mirror\r\n\r\n",  # plain HTTP on the TLS port
            b"\x00" * 4096,  # not TLS at all
            b"\x16\x03\x01\xff\xff" + b"\x01" * 64,  # a TLS record header announcing 64 KiB
            hello[: len(hello) // 2],  # a ClientHello cut in half, then the close
            hello + b"\x15\x03\x03\x00\x02\x02\x28",  # a ClientHello, then an alert
        ):
            answer = await send_raw(port, data)
            assert b"HTTP/" not in answer, "nothing in the clear, no HTTP answer"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{mirror.url}/healthz", ssl=context) as resp:
                assert resp.status == 200
        silent.close()
    finally:
        mirror.process.stop()
    log = mirror.log()
    assert "Traceback" not in log
    assert " ERROR " not in log


async def rotate(config_dir: Path, issued: Issued) -> None:
    """Write new files beside the old ones and rename them over (as certbot does)."""
    issued.write(config_dir / "next.crt", config_dir / "next.key")
    (config_dir / "next.crt").replace(config_dir / "tls.crt")
    (config_dir / "next.key").replace(config_dir / "tls.key")


async def test_rotation_reaches_new_connections_and_spares_a_slow_pull_in_flight(
    up: FakeUpstream, tmp_path: Path, ca: PrivateCA
) -> None:
    old, new = ca.issue_server("127.0.0.1"), ca.issue_server("127.0.0.1")
    big = random.Random(16).randbytes(64 * MIB)
    _, layer = add_image(up, big)
    context = client_context(ca)
    mirror, metrics = start_with_metrics(tmp_path, tls_settings(tmp_path, old, up), context)
    url = f"{mirror.url}/v2/{REPOSITORY}/blobs/{layer}"
    try:
        assert await ready_and_cached(mirror, url, context) == len(big)
        async with aiohttp.ClientSession() as http:
            async with http.get(url, ssl=context) as slow:  # from the cache, read slowly
                first = await slow.content.readexactly(MIB)
                await rotate(tmp_path, new)
                await serial_becomes(mirror, context, new.serial)
                rest = await slow.read()
        assert hashlib.sha256(first + rest).hexdigest() == layer.removeprefix("sha256:")
        assert await metric(metrics, 'mirror_tls_reloads_total{result="ok"}') == 1
        expiry = await metric(metrics, "mirror_tls_certificate_expiry_timestamp_seconds")
        assert expiry == new.cert.not_valid_after_utc.timestamp()
        assert mirror.process.alive(), "no restart"
    finally:
        mirror.process.stop()


async def test_a_broken_replacement_keeps_the_old_certificate_logged_and_counted(
    up: FakeUpstream, tmp_path: Path, ca: PrivateCA
) -> None:
    old, new, other = (ca.issue_server("127.0.0.1") for _ in range(3))
    context = client_context(ca)
    mirror, errors = start_with_metrics(tmp_path, tls_settings(tmp_path, old, up), context)

    async def refused(count: int) -> None:
        async def counted() -> bool:
            return await metric(errors, 'mirror_tls_reloads_total{result="error"}') == count

        for _ in range(int(RELOAD_WAIT / 0.2)):
            if await counted():
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"no {count}th refused reload")

    try:
        await asyncio.to_thread(mirror.wait_ready)
        # A rotation caught half-way: the new certificate, the old key.
        new.write(tmp_path / "next.crt", tmp_path / "next.key")
        (tmp_path / "next.crt").replace(tmp_path / "tls.crt")
        await refused(1)
        assert await served_serial(mirror, context) == old.serial
        # A certificate file cut short (in the middle of its first certificate).
        other.write(tmp_path / "other.crt", tmp_path / "other.key")
        pem = (tmp_path / "other.crt").read_bytes()
        (tmp_path / "cut.crt").write_bytes(pem[: len(pem) // 4])
        (tmp_path / "cut.crt").replace(tmp_path / "tls.crt")
        await refused(2)
        assert await served_serial(mirror, context) == old.serial
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{mirror.url}/healthz", ssl=context) as resp:
                assert resp.status == 200
        await rotate(tmp_path, new)  # then the files agree
        await serial_becomes(mirror, context, new.serial)
    finally:
        mirror.process.stop()
    log = mirror.log()
    assert "TLS certificate not reloaded, the old one stays in use: tls.key: the key " in log
    assert "TLS certificate not reloaded, the old one stays in use: tls.cert: " in log
    assert "TLS certificate reloaded: CN=127.0.0.1" in log


@pytest.mark.parametrize(
    ("breakage", "error"),
    [
        ("key of another certificate", "tls.key: the key does not belong to certificate 1"),
        ("expired", "tls.cert: certificate 1 of 2 (CN=127.0.0.1) expired on "),
        ("missing", "tls.cert: cannot read "),
        ("client CA not a CA", "tls.client_ca: certificate 1 (CN=127.0.0.1) is not a CA"),
    ],
)
def test_serve_refuses_a_bad_tls_configuration_naming_the_field(
    tmp_path: Path, ca: PrivateCA, breakage: str, error: str
) -> None:
    server = ca.issue_server("127.0.0.1")
    server.write(tmp_path / "tls.crt", tmp_path / "tls.key")
    tls = {"cert": str(tmp_path / "tls.crt"), "key": str(tmp_path / "tls.key")}
    if breakage == "key of another certificate":
        ca.issue_server("127.0.0.1").write(tmp_path / "other.crt", tmp_path / "tls.key")
    elif breakage == "expired":
        now = datetime.datetime.now(datetime.UTC)
        day = datetime.timedelta(days=1)
        expired = ca.issue_server("127.0.0.1", not_before=now - 3 * day, not_after=now - day)
        expired.write(tmp_path / "tls.crt", tmp_path / "tls.key")
    elif breakage == "missing":
        (tmp_path / "tls.crt").unlink()
    else:
        tls["client_ca"] = str(tmp_path / "tls.crt")
    config = tmp_path / "mirror.toml"
    config.write_text(toml_text({
        "listen": f"127.0.0.1:{free_port()}", "storage": {"path": str(tmp_path / "cache")},
        "tls": tls,
    }))  # fmt: skip
    done = cli("serve", "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.startswith(f"registry-mirror: configuration error: {error}"), done.stderr
    assert not (tmp_path / "cache").exists(), "refused before anything was opened"


async def test_healthcheck_speaks_https_and_verifies_the_certificate(
    up: FakeUpstream, tmp_path: Path, ca: PrivateCA
) -> None:
    settings = tls_settings(tmp_path, ca.issue_server("localhost"), up)
    context = client_context(ca)
    context.check_hostname = False  # dialled as 127.0.0.1, certified for localhost
    mirror = start_mirror_process(tmp_path, settings, wait=False, tls_client=context)
    config = tmp_path / "mirror.toml"
    try:
        await asyncio.to_thread(mirror.wait_ready)
        done = await asyncio.to_thread(cli, "healthcheck", "--config", str(config))
        assert done.returncode == 0, done.stderr
        # Another CA's certificate in the file: the served one cannot be verified.
        elsewhere = PrivateCA.create(tmp_path / "elsewhere", name="elsewhere")
        probe = tmp_path / "probe"
        probe.mkdir()
        elsewhere.issue_server("localhost").write(probe / "tls.crt", probe / "tls.key")
        probe_settings = {**settings, "tls": {"cert": str(probe / "tls.crt"),
                                              "key": str(probe / "tls.key")}}  # fmt: skip
        probe_settings["listen"] = mirror.url.removeprefix("https://")
        (probe / "mirror.toml").write_text(toml_text(probe_settings))
        done = await asyncio.to_thread(cli, "healthcheck", "--config", str(probe / "mirror.toml"))
        assert done.returncode == 1
        assert "CERTIFICATE_VERIFY_FAILED" in done.stderr
    finally:
        mirror.process.stop()


async def test_healthcheck_with_mutual_tls_asks_the_metrics_listener(
    up: FakeUpstream, tmp_path: Path, ca: PrivateCA
) -> None:
    alice = client_context(ca, ca.issue_client("alice"), tmp_path / "alice")
    settings = tls_settings(tmp_path, ca.issue_server("127.0.0.1"), up,
                            client_ca=str(ca.root_path))  # fmt: skip
    mirror, _ = start_with_metrics(tmp_path, settings, alice)
    try:
        await asyncio.to_thread(mirror.wait_ready)
        done = await asyncio.to_thread(
            cli, "healthcheck", "--config", str(tmp_path / "mirror.toml")
        )
        assert done.returncode == 0, done.stderr
        without = {k: v for k, v in settings.items() if k != "metrics"}
        without["listen"] = mirror.url.removeprefix("https://")
        (tmp_path / "alone.toml").write_text(toml_text(without))
        done = await asyncio.to_thread(cli, "healthcheck", "--config", str(tmp_path / "alone.toml"))
        assert done.returncode == 1
        assert "tls.client_ca: " in done.stderr
        assert "configure metrics.listen" in done.stderr
    finally:
        mirror.process.stop()
