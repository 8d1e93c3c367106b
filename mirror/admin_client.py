"""The CLI's side of the admin API: tell a running mirror that its cache changed.

``registry-mirror gc`` and ``verify`` delete objects behind a running
mirror's back; with ``--mirror URL`` they then ``POST /admin/cache/reindex``
so that its index, ``/admin/cache`` and ``mirror_cache_size_bytes`` follow.
The admin token is the one in the configuration (``admin.token``,
``admin.token_file`` or ``MIRROR_ADMIN_TOKEN``), as the mirror itself reads it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

TIMEOUT = 120.0  # seconds: a reindex lists the whole cache


@dataclass(frozen=True, slots=True)
class ReindexAnswer:
    """What the mirror's index holds after the reindex, or why it could not be asked."""

    url: str
    error: str | None = None
    removed: int = 0
    added: int = 0
    entries: int = 0
    size: int = 0


def reindex(mirror_url: str, token: str | None) -> ReindexAnswer:
    """Ask the mirror at ``mirror_url`` to reconcile its index with its storage."""
    url = mirror_url.rstrip("/")
    if not token:
        return ReindexAnswer(url, "no admin token configured (admin.token or MIRROR_ADMIN_TOKEN)")
    request = urllib.request.Request(
        url + "/admin/cache/reindex", method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    # No proxy: HTTP_PROXY in the environment is for the upstreams, not for this.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=TIMEOUT) as resp:
            body = json.loads(resp.read())
        counts = [int(body[k]) for k in ("removed", "added", "entries", "size")]
    except urllib.error.HTTPError as exc:
        return ReindexAnswer(url, f"answered {exc.code}: {_oci_message(exc)}")
    except (OSError, ValueError) as exc:
        return ReindexAnswer(url, str(getattr(exc, "reason", exc)))
    except (KeyError, TypeError):
        return ReindexAnswer(url, "answered something that is not a reindex report")
    return ReindexAnswer(url, None, *counts)


def _oci_message(exc: urllib.error.HTTPError) -> str:
    """The message of an OCI error document, or the HTTP reason."""
    try:
        return str(json.loads(exc.read())["errors"][0]["message"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return str(exc.reason)
