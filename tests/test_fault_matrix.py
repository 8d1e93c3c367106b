"""The fault matrix: every fault x every client behaviour x disk and S3.

For each cell (see tests/support/fault_matrix.py): each client gets the exact
bytes, or a cut / an error status, within a bounded time; ``/healthz``
answers within 100 ms throughout and the event loop is never blocked for a
second; nothing wrong is kept (``verify`` clean, no partial, no upload) and
no file is left open; the next pull, with the fault gone, gets the exact
bytes and caches them.

One line per fault in ROWS. ``expect`` lists the outcomes a client may see:
``exact`` (every byte, verified), ``cut`` (the transfer broke before its
end), or a status code. A client that hangs up may also end as ``hangup``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.fault_clients import BEHAVIOURS
from tests.support.fault_matrix import Row, fault, nothing, row, run_cell, run_kill_cell, then
from tests.support.s3 import MotoS3

CUT = 700_001  # a third of the blob: the first answer breaks mid-body
SLOW_UPSTREAM = fault(chunk_size=128 * 1024, chunk_delay=0.03)  # ~0.5 s: clients follow it
BODYLESS = {
    "behaviours": ("fast", "followers"),
    "why": "the error comes before the body: nothing to read slowly or hang up on",
}
# Loopback is never a public address: the redirect policy must refuse it, unasked.
INTERNAL = "http://127.0.0.2:9/internal/blob"
CAPTIVE_PORTAL = b"<!doctype html><html><body><h1>Please log in</h1></body></html>"
S3_ONLY = {"backends": ("s3",), "why": "the disk backend has no S3"}
ONE_CLIENT = {
    "behaviours": ("slow",),
    "why": "the kill lands mid-body with one slow client; other clients add nothing",
}

ROWS = [
    row("cut once", fault(cut_after=CUT, times=1), "exact"),
    row("cut forever", then(fault(cut_after=CUT, times=1), fault(cut_after=0)), "cut"),
    row("stall", then(fault(stall_after=CUT, times=1), fault(stall_after=0)), "cut"),
    row("wrong bytes, Content-Length", fault(corrupt=True), "cut"),
    row("wrong bytes, chunked", fault(corrupt=True, chunked=True), "cut"),
    row("5xx", fault(status=503), "502", **BODYLESS),
    # Longer than retry_after_max: passed on at once, not waited out.
    row("429 + Retry-After", fault(status=429, retry_after=120), "429", **BODYLESS),
    row(
        "redirect to a disallowed host",
        fault(status=307, headers={"Location": INTERNAL}),
        "502",
        **BODYLESS,
    ),
    row(
        "HTML 200 as a manifest",
        fault(body=CAPTIVE_PORTAL, headers={"Content-Type": "text/html"}),
        "502",
        kind="manifest",
        **BODYLESS,
    ),
    row("disk full mid-fill", SLOW_UPSTREAM, "exact", storage="disk-full-mid"),
    row("disk 100% full", nothing, "exact", storage="disk-full"),
    row("S3 down mid-fill", SLOW_UPSTREAM, "exact", storage="s3-down-mid", **S3_ONLY),
    row("kill -9 mid-fill", nothing, "cut", kill=True, **ONE_CLIENT),
]


def cells() -> list[Any]:
    """Every (row, behaviour, backend); the meaningless ones skipped with the row's reason."""
    found = []
    for fault_row in ROWS:
        for behaviour in BEHAVIOURS:
            for backend in ("disk", "s3"):
                skip = behaviour not in fault_row.behaviours or backend not in fault_row.backends
                marks = [pytest.mark.skip(reason=fault_row.why)] if skip else []
                name = f"{fault_row.name}|{behaviour}|{backend}"
                found.append(pytest.param(fault_row, behaviour, backend, marks=marks, id=name))
    return found


@pytest.mark.parametrize(
    ("fault_row", "behaviour", "storage_settings"), cells(), indirect=["storage_settings"]
)
async def test_fault_matrix(
    fault_row: Row,
    behaviour: str,
    storage_settings: dict[str, Any],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    s3: MotoS3 | None = None
    if storage_settings.get("backend") == "s3":
        s3 = request.getfixturevalue("s3_server")
    if fault_row.kill:
        await run_kill_cell(fault_row, storage_settings, tmp_path, s3)
    else:
        await run_cell(fault_row, behaviour, storage_settings, tmp_path, s3)
