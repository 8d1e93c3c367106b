"""Hits through the front door: a cached manifest and a cached blob, with and without auth.

One upstream (distribution, no auth) with the small image; one mirror per
arm, each over its own disk cache; then, round after round, wrk on the
manifest by digest, by tag and on the 4 KiB layer against each mirror in turn
(the order rotates), with the mirror's CPU time read around each run. An arm
is ``NAME=TREE`` (that source tree, no ``[auth]``) or ``NAME=TREE:MODE``:

- ``basic``: ``[auth]`` with an htpasswd user (bcrypt cost 10), default
  ``authenticated-pull``; every request carries ``Authorization: Basic``
  (a client with a static header);
- ``token``: the same with ``[auth.token]``; every request carries the
  Bearer token the mirror's ``/auth/token`` issued for the repository
  (docker, podman, skopeo after their first round trip).

Small requests make the per-request cost of the front door (and of the
repository links a blob hit looks up) as visible as it can be::

    python bench/front_door_ab.py --rounds 5 --seconds 5 main=/work/main mine=.
    python bench/front_door_ab.py --rounds 5 open=. basic=.:basic token=.:token
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import peers as servers
from bench.load import LoadError, run_wrk
from bench.manifest_ab import warm
from bench.peers import cpu_times
from bench.seed import REPOSITORY, SmallImage, push_small_image

USER, PASSWORD = "bench", "bench-password"
MODES = ("open", "basic", "token")


@dataclass
class Arm:
    """One mirror under test and the header its clients send."""

    peer: servers.Peer
    headers: tuple[str, ...]


def auth_config(workdir: Path, mode: str) -> Path:
    """A ``mirror.toml`` with ``[auth]`` (and ``[auth.token]`` for ``token``)."""
    htpasswd = workdir / "htpasswd"
    subprocess.run(["htpasswd", "-c", "-b", "-B", "-C", "10", str(htpasswd), USER, PASSWORD],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    text = f'[auth]\nhtpasswd = "{htpasswd}"\ndefault = "authenticated-pull"\n'
    if mode == "token":
        text += f'\n[auth.token]\nkey = "{workdir / "token.key"}"\nexpires_in = "1h"\n'
    path = workdir / "mirror.toml"
    path.write_text(text)
    return path


def client_headers(url: str, mode: str) -> tuple[str, ...]:
    """What a client of ``mode`` sends on every request."""
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    if mode == "open":
        return ()
    if mode == "basic":
        return (f"Authorization: {basic}",)
    scope = f"repository:{REPOSITORY}:pull"
    request = urllib.request.Request(f"{url}/auth/token?scope={scope}",
                                     headers={"Authorization": basic})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as resp:
        token = json.load(resp)["token"]
    return (f"Authorization: Bearer {token}",)


def start_arm(workdir: Path, upstream_url: str, spec: str) -> Arm:
    """A mirror for ``NAME=TREE[:MODE]``."""
    name, _, rest = spec.partition("=")
    tree, _, mode = rest.partition(":")
    mode = mode or "open"
    if mode not in MODES:
        raise SystemExit(f"{spec}: the mode is one of {', '.join(MODES)}")
    root = workdir / name
    root.mkdir(parents=True)
    options = ("--config", str(auth_config(root, mode))) if mode != "open" else ()
    peer = servers.start_mirror(workdir, upstream_url, name=name,
                                source=Path(tree).resolve(), options=options)  # fmt: skip
    return Arm(peer, client_headers(peer.url, mode))


def measure(arm: Arm, url: str, seconds: float) -> tuple[float, float, int]:
    """Requests per second, the mirror's CPU µs per request and the failed requests
    (non-2xx answers and wrk's socket errors) of one wrk run."""
    user, system, _ = cpu_times(arm.peer.process.pid)
    result = run_wrk(url, seconds, headers=arm.headers)
    user_after, system_after, _ = cpu_times(arm.peer.process.pid)
    requests = result.rps * max(1, round(seconds))
    # wrk's 2 s timeouts happen on a loaded machine, and are reported; half is a broken arm.
    if result.errors > requests / 2:
        raise LoadError(f"{result.errors} failed requests of {requests:.0f} on {url}")
    return result.rps, (user_after + system_after - user - system) / requests * 1e6, result.errors


def targets(image: SmallImage) -> dict[str, str]:
    """The paths measured: the manifest by digest and by tag, the layer."""
    layer = json.loads(image.manifest.data)["layers"][0]["digest"]
    return {
        "digest": image.url_path(image.manifest.digest),
        "tag": image.url_path(image.tag),
        "blob": f"/v2/{REPOSITORY}/blobs/{layer}",
    }


def run_rounds(
    arms: dict[str, Arm], paths: dict[str, str], rounds: int, seconds: float
) -> dict[str, dict[str, list[float]]]:
    """Every arm's figures per round: ``<path>_rps`` and ``<path>_cpu_us``."""
    figures: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in arms}
    names = list(arms)
    for number in range(rounds):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            for kind, path in paths.items():
                rps, cpu, failed = measure(arms[name], arms[name].peer.url + path, seconds)
                figures[name][f"{kind}_rps"].append(rps)
                figures[name][f"{kind}_cpu_us"].append(cpu)
                figures[name]["failed"].append(failed)
        print(f"round {number + 1}: " + "  ".join(
            f"{name} " + "/".join(f"{f[f'{kind}_rps'][-1]:.0f}" for kind in paths) + " req/s "
            + "/".join(f"{f[f'{kind}_cpu_us'][-1]:.0f}" for kind in paths) + " us"
            for name, f in figures.items()
        ) + f" ({'/'.join(paths)})", flush=True)  # fmt: skip
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arms", nargs="+", metavar="NAME=TREE[:MODE]")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5, help="duration of each wrk run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="front-door-ab-") as tmp:
        workdir = Path(tmp)
        upstream = servers.start_upstream(workdir)
        arms: dict[str, Arm] = {}
        try:
            image = push_small_image(upstream, workdir / "blobs")
            paths = targets(image)
            for spec in args.arms:
                arm = start_arm(workdir, upstream.url, spec)
                arms[arm.peer.name] = arm
                for path in paths.values():  # cache everything: every measured request hits
                    warm_arm(arm, path)
            figures = run_rounds(arms, paths, args.rounds, args.seconds)
        finally:
            for arm in arms.values():
                arm.peer.stop()
            upstream.stop()
    print(f"medians of {args.rounds} rounds of {args.seconds:g} s:")
    for name, found in figures.items():
        median = {key: statistics.median(values) for key, values in found.items()}
        print(f"  {name}: " + "; ".join(
            f"{kind} {median[f'{kind}_rps']:.0f} req/s, {median[f'{kind}_cpu_us']:.0f} us CPU"
            for kind in paths
        ) + f"; {sum(found['failed']):.0f} failed requests")  # fmt: skip


def warm_arm(arm: Arm, path: str) -> None:
    """Fetch ``path`` once with the arm's credentials, so that it is cached."""
    if not arm.headers:
        warm(arm.peer, path)
        return
    name, _, value = arm.headers[0].partition(": ")
    request = urllib.request.Request(arm.peer.url + path, headers={name: value})
    with urllib.request.urlopen(request, timeout=60) as resp:
        resp.read()


if __name__ == "__main__":
    main()
