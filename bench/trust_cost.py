"""What content trust costs: a cold tag pull and a hit, under ``require`` against ``allow``.

One upstream (distribution 2.8, no referrers API: signatures are found by
the tag schema) holds ``--images`` small images, each signed with cosign's
simple signing. Two mirror processes run from this tree over their own disk
caches: one with an ``allow`` policy, one that ``require``\\ s the signing
key. Then, image by image and in alternating order, one cold ``GET`` of the
manifest by tag on each mirror (under ``require``: the signature's tag,
payload blob and the referrers tags are fetched too, and the signature
checked), and afterwards rounds of hits by tag (the verdict comes from the
verdict cache). Latency is measured by this client over a kept-alive
connection; medians are printed with the load average seen.

    python bench/trust_cost.py --images 20 --hits 200
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import peers as servers
from tests.support.cosign import CosignKey
from tests.support.cosign_cases import REGISTRY
from tests.support.mirror_process import toml_text
from tests.support.oci_content import fallback_tag, push_to_registry, small_image
from tests.support.processes import free_port, start_process, wait_for_http
from tests.support.registry import UpstreamRegistry
from tests.support.trust_mirror import signature_for

REPOSITORY = "acme/app"
ACCEPT = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"


def start_policy_mirror(workdir: Path, upstream_url: str, mode: str, key: Path) -> servers.Peer:
    """A mirror from this tree whose one policy is ``mode`` with ``key``."""
    root = workdir / mode
    root.mkdir(parents=True)
    port = free_port()
    settings = {
        "listen": f"127.0.0.1:{port}",
        "storage": {"path": str(root / "cache")},
        "upstreams": [{"name": REGISTRY, "url": upstream_url}],
        "trust": {"keys": {"acme": str(key)},
                  "default": {"mode": mode, "keys": ["acme"]}},
    }  # fmt: skip
    (root / "mirror.toml").write_text(toml_text(settings))
    argv = [sys.executable, "-m", "mirror", "serve", "--config", str(root / "mirror.toml")]
    env = {**os.environ, "PYTHONPATH": str(servers.REPO_ROOT)}
    process = start_process(mode, argv, log_path=root / "mirror.log", cwd=root, env=env)
    wait_for_http(f"http://127.0.0.1:{port}/v2/", process, timeout=30)
    return servers.Peer(mode, f"http://127.0.0.1:{port}", process, root)


def get_ms(connection: http.client.HTTPConnection, path: str) -> float:
    """One GET's latency in ms, body read; anything but 200 stops the benchmark."""
    start = time.perf_counter()
    connection.request("GET", path, headers={"Accept": ACCEPT})
    response = connection.getresponse()
    response.read()
    elapsed = (time.perf_counter() - start) * 1000
    if response.status != 200:
        raise RuntimeError(f"{path}: {response.status}")
    return elapsed


def push_signed(registry: UpstreamRegistry, key: CosignKey, images: int) -> list[str]:
    """Push ``images`` small images, each with its cosign ``.sig``; their tags."""
    client = registry.client()
    tags = []
    for number in range(images):
        image = small_image(f"trust-cost-{number}")
        tag = f"v{number}"
        push_to_registry(client, REPOSITORY, image, tag)
        signature = signature_for(key, REPOSITORY, image.digest)
        push_to_registry(client, REPOSITORY, signature, fallback_tag(image.digest) + ".sig")
        tags.append(tag)
    return tags


def measure(mirrors: list[servers.Peer], tags: list[str], hits: int) -> dict[str, dict[str, float]]:
    """Median cold and hit latency (ms) per mirror, cold pulls and hit rounds interleaved."""
    connections = {
        peer.name: http.client.HTTPConnection(peer.url.removeprefix("http://"), timeout=60)
        for peer in mirrors
    }
    cold: dict[str, list[float]] = {peer.name: [] for peer in mirrors}
    hit: dict[str, list[float]] = {peer.name: [] for peer in mirrors}
    for number, tag in enumerate(tags):
        order = mirrors if number % 2 == 0 else mirrors[::-1]
        for peer in order:
            cold[peer.name].append(
                get_ms(connections[peer.name], f"/v2/{REPOSITORY}/manifests/{tag}")
            )
    for number in range(hits):
        order = mirrors if number % 2 == 0 else mirrors[::-1]
        for peer in order:
            path = f"/v2/{REPOSITORY}/manifests/{tags[number % len(tags)]}"
            hit[peer.name].append(get_ms(connections[peer.name], path))
    for connection in connections.values():
        connection.close()
    return {
        name: {"cold": statistics.median(cold[name]), "hit": statistics.median(hit[name])}
        for name in cold
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=20, help="signed images, one cold pull each")
    parser.add_argument("--hits", type=int, default=200, help="hits per mirror")
    args = parser.parse_args()
    key = CosignKey.generate()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="trust-cost-") as tmp:
        workdir = Path(tmp)
        (workdir / "acme.pub").write_bytes(key.public_pem())
        upstream = servers.start_upstream(workdir)
        mirrors: list[servers.Peer] = []
        try:
            tags = push_signed(upstream, key, args.images)
            for mode in ("allow", "require"):
                mirrors.append(
                    start_policy_mirror(workdir, upstream.url, mode, workdir / "acme.pub")
                )
            figures = measure(mirrors, tags, args.hits)
        finally:
            for peer in mirrors:
                peer.stop()
            upstream.stop()
    load_after = os.getloadavg()
    cpus = os.cpu_count()
    print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after ({cpus} CPUs); "
          f"medians of {args.images} cold pulls, {args.hits} hits:")  # fmt: skip
    for name, found in figures.items():
        print(
            f"  {name:8} cold tag pull {found['cold']:7.2f} ms   hit by tag {found['hit']:6.2f} ms"
        )
    allow, require = figures["allow"], figures["require"]
    print(f"  require - allow: cold {require['cold'] - allow['cold']:+.2f} ms, "
          f"hit {require['hit'] - allow['hit']:+.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
