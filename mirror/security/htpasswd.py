"""Users from an Apache ``htpasswd`` file with bcrypt entries (``htpasswd -B``).

Only bcrypt is accepted: the other formats ``htpasswd`` can write (MD5
``$apr1$``, ``{SHA}``, crypt, SHA-2 crypt, plain text) are fast to brute-force
from a leaked file, and a file that mixes them is refused with the line and
the format named, never the hash.

The file is re-read when it changes (looked at most every ``check_interval``
seconds, on use). A file that became unreadable or invalid is logged and
the users read before stay in force, so a bad edit does not lock everyone out.

Checking a password costs a bcrypt hash (tens of milliseconds at the usual
costs); it runs in a worker thread, never on the event loop. A user that is
not in the file is checked against a made-up hash of the file's usual cost,
so the answer takes as long as for a known user with a wrong password.
A successful check is remembered for ``remember`` seconds (as a SHA-256 of
user, password and entry, never the password), so clients that send Basic
credentials on every request pay the bcrypt cost once; changing a user's entry
forgets it.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import os
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import bcrypt
from cachetools import TTLCache

log = logging.getLogger(__name__)

# htpasswd -B writes $2y$; other bcrypt tools $2b$ or $2a$. 53 characters of salt and hash.
_BCRYPT_RE = re.compile(r"\$2[aby]\$(?P<cost>[0-9]{2})\$[./A-Za-z0-9]{53}")
_USER_RE = re.compile(r"[^\x00-\x20\x7f:]{1,255}")
# bcrypt reads 72 bytes; Apache's htpasswd silently cuts longer passwords there too.
_BCRYPT_MAX = 72
_OTHER_FORMATS = (
    ("$apr1$", "MD5 (htpasswd -m)"),
    ("{SHA}", "SHA-1 (htpasswd -s)"),
    ("$5$", "SHA-256 crypt (htpasswd -2)"),
    ("$6$", "SHA-512 crypt (htpasswd -5)"),
    ("$1$", "MD5 crypt"),
)


class HtpasswdError(ValueError):
    """The file cannot be used: a malformed line, a non-bcrypt entry, a repeated user."""


class Verdict(enum.Enum):
    """The outcome of a password check."""

    OK = "ok"
    UNKNOWN_USER = "unknown_user"
    WRONG_PASSWORD = "wrong_password"


def _format_of(entry: str) -> str:
    for prefix, name in _OTHER_FORMATS:
        if entry.startswith(prefix):
            return name
    return "crypt or plain text (htpasswd -d or -p)"


def parse_htpasswd(text: str) -> dict[str, bytes]:
    """``user -> bcrypt hash`` of an htpasswd file's text; blank and ``#`` lines are skipped."""
    users: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, entry = line.rstrip("\r").partition(":")
        if not sep or _USER_RE.fullmatch(user) is None:
            raise HtpasswdError(f"line {number}: expected USER:HASH, as htpasswd -B writes")
        if _BCRYPT_RE.fullmatch(entry) is None:
            raise HtpasswdError(
                f"line {number} (user {user!r}): only bcrypt entries are accepted "
                f"(htpasswd -B); this one is {_format_of(entry)}"
            )
        if user in users:
            raise HtpasswdError(f"line {number}: user {user!r} appears twice")
        users[user] = entry.encode("ascii")
    return users


def read_htpasswd(path: Path) -> dict[str, bytes]:
    """Read and parse the file; :class:`HtpasswdError` names what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HtpasswdError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise HtpasswdError(f"{str(path)!r} is not UTF-8 text") from None
    return parse_htpasswd(text)


def _cost(entry: bytes) -> int:
    return int(entry[4:6])


def _state(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class Htpasswd:
    """The users of one htpasswd file, re-read when it changes."""

    def __init__(
        self,
        path: Path,
        *,
        check_interval: float = 2.0,
        remember: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Read the file now; :class:`HtpasswdError` if it cannot be used."""
        self._path = path
        self._interval = check_interval
        self._clock = clock
        self._state = _state(path)
        self._users = read_htpasswd(path)
        self._checked = clock()
        self._dummy: bytes | None = None
        self._remembered: TTLCache[bytes, bool] = TTLCache(4096, remember, timer=clock)

    @property
    def path(self) -> Path:
        """The file the users come from."""
        return self._path

    @property
    def users(self) -> frozenset[str]:
        """The user names in the file."""
        return frozenset(self._users)

    def reload_if_changed(self) -> None:
        """Re-read the file if it changed (looked at most every ``check_interval``)."""
        now = self._clock()
        if now - self._checked < self._interval:
            return
        self._checked = now
        state = _state(self._path)
        if state == self._state:
            return
        self._state = state
        try:
            users = read_htpasswd(self._path)
        except HtpasswdError as exc:
            log.error("auth.htpasswd: %s; the users read before stay in force", exc)
            return
        self._users, self._dummy = users, None
        log.info("auth.htpasswd re-read: %d users", len(users))

    def has_user(self, user: str) -> bool:
        """Whether ``user`` is in the file (as it is now)."""
        self.reload_if_changed()
        return user in self._users

    def fingerprint(self, user: str) -> str | None:
        """A short digest of the user's entry: it changes when the password does."""
        self.reload_if_changed()
        entry = self._users.get(user)
        return hashlib.sha256(entry).hexdigest()[:16] if entry is not None else None

    def _memo_key(self, user: str, password: str, entry: bytes) -> bytes:
        return hashlib.sha256(b"\0".join((user.encode(), password.encode(), entry))).digest()

    def known_good(self, user: str, password: str) -> bool:
        """Whether these credentials passed a check recently (no bcrypt run)."""
        self.reload_if_changed()
        entry = self._users.get(user)
        return entry is not None and self._memo_key(user, password, entry) in self._remembered

    async def verify(self, user: str, password: str) -> Verdict:
        """Check a password (bcrypt in a worker thread unless recently checked)."""
        if self.known_good(user, password):
            return Verdict.OK
        entry = self._users.get(user)
        secret = password.encode()[:_BCRYPT_MAX]
        if entry is None:
            await asyncio.to_thread(self._check_unknown, secret)
            return Verdict.UNKNOWN_USER
        if not await asyncio.to_thread(bcrypt.checkpw, secret, entry):
            return Verdict.WRONG_PASSWORD
        self._remembered[self._memo_key(user, password, entry)] = True
        return Verdict.OK

    def _check_unknown(self, secret: bytes) -> None:
        # Against a hash of the file's most common cost, made once per file version.
        if self._dummy is None:
            costs = Counter(_cost(entry) for entry in self._users.values())
            cost = costs.most_common(1)[0][0] if costs else 10
            self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(cost))
        bcrypt.checkpw(secret, self._dummy)
