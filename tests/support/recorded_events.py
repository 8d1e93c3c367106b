"""A stand-in for the metrics object: it records the front door's events in order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RecordedEvents:
    """Every security event, in order: ``(method name, *arguments)``."""

    events: list[tuple[Any, ...]] = field(default_factory=list)

    def auth_failed(self, credential: str, reason: str) -> None:
        self.events.append(("auth_failed", credential, reason))

    def login_throttled(self, outcome: str) -> None:
        self.events.append(("login_throttled", outcome))

    def access_refused(self, answer: str) -> None:
        self.events.append(("access_refused", answer))

    def rate_limited(self, client: str) -> None:
        self.events.append(("rate_limited", client))

    def token_issued(self, grant: str) -> None:
        self.events.append(("token_issued", grant))

    def tls_reloaded(self, ok: bool, not_after: float) -> None:
        self.events.append(("tls_reloaded", ok))

    def named(self, name: str) -> list[tuple[Any, ...]]:
        """The events of one kind."""
        return [e for e in self.events if e[0] == name]
