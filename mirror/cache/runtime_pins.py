"""Pins set by an admin while the mirror runs (from the web UI), kept across restarts.

``cache.pins`` in the configuration can only change with a restart. An admin
pins or unpins a tag from the UI instead; those pins live in one small JSON
object in the cache's storage (:data:`mirror.storage.layout.RUNTIME_PINS_KEY`)::

    {"version": 1, "pins": [{"upstream": "docker.io", "repository": "library/alpine",
                             "tag": "3.20"}]}

The object is rewritten whole on each change (a ``put`` is atomic: a reader
sees the old list or the new one), and memory changes only once storage took
it, so what eviction honours is what a restart will load. An unreadable
object is logged and read as no pins: eviction may then remove what they
protected, which only costs a re-download.
"""

from __future__ import annotations

import json
import logging

from mirror.cache.pins import Pin
from mirror.errors import MirrorError
from mirror.oci import validate_name, validate_tag
from mirror.storage import layout
from mirror.storage.base import Storage

log = logging.getLogger(__name__)

VERSION = 1
MAX_PINS = 10_000  # far more than an operator pins by hand; keeps the object small


class RuntimePins:
    """The tag pins admins set, in memory and in storage."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._pins: frozenset[Pin] = frozenset()

    @property
    def pins(self) -> frozenset[Pin]:
        """Every runtime pin."""
        return self._pins

    async def load(self) -> None:
        """Read the stored pins (none when there is no object, or it is unreadable)."""
        raw = await self._storage.get(layout.RUNTIME_PINS_KEY)
        self._pins = decode(raw) if raw is not None else frozenset()

    async def set(self, pin: Pin, pinned: bool) -> bool:
        """Pin or unpin a tag; False when it was so already. Raises StorageError unstored."""
        wanted = self._pins | {pin} if pinned else self._pins - {pin}
        if wanted == self._pins:
            return False
        if len(wanted) > MAX_PINS:
            raise ValueError(f"at most {MAX_PINS} runtime pins")
        await self._storage.put(layout.RUNTIME_PINS_KEY, encode(wanted))
        self._pins = wanted
        return True


def encode(pins: frozenset[Pin]) -> bytes:
    """The stored object, pins in a stable order."""
    listed = [{"upstream": p.upstream, "repository": p.repository, "tag": p.tag}
              for p in sorted(pins, key=str)]  # fmt: skip
    return json.dumps({"version": VERSION, "pins": listed}).encode()


def decode(raw: bytes) -> frozenset[Pin]:
    """The pins of a stored object; an unreadable object or entry is logged and skipped."""
    try:
        doc = json.loads(raw)
        entries = doc["pins"] if isinstance(doc, dict) and doc.get("version") == VERSION else None
    except (ValueError, KeyError, RecursionError):
        entries = None
    if not isinstance(entries, list):
        log.warning("ignoring unreadable runtime pins in %s", layout.RUNTIME_PINS_KEY)
        return frozenset()
    pins = set()
    for entry in entries[:MAX_PINS]:
        pin = _pin(entry)
        if pin is None:
            log.warning("ignoring a runtime pin that is not a tag of a repository: %.200r", entry)
        else:
            pins.add(pin)
    return frozenset(pins)


def _pin(entry: object) -> Pin | None:
    if not isinstance(entry, dict):
        return None
    upstream, repository, tag = entry.get("upstream"), entry.get("repository"), entry.get("tag")
    if not (isinstance(upstream, str) and isinstance(repository, str) and isinstance(tag, str)):
        return None
    if not layout.is_upstream_name(upstream):
        return None
    try:
        return Pin(upstream, validate_name(repository), validate_tag(tag))
    except MirrorError:
        return None
