"""skopeo as a subprocess that does not block the event loop (the mirror may run in it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

POLICY = Path(__file__).parent / "skopeo-policy.json"


async def skopeo_copy(source: str, destination: Path) -> None:
    """``skopeo copy --all`` into a dir: layout, failing the test on any error."""
    process = await asyncio.create_subprocess_exec(
        "skopeo", "copy", "--all", "--preserve-digests", "--src-tls-verify=false",
        "--policy", str(POLICY),
        source, f"dir:{destination}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, output.decode()
