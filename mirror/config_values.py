"""Parsing of single setting values, with errors that name the setting.

Used by :mod:`mirror.config`; every function takes ``where``, the dotted name
of the setting, for its error message.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mirror.numbers import parse_count, parse_decimal

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}  # fmt: skip
_DURATION_UNITS = {"": 1, "ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# A number (ASCII digits, bounded by mirror.numbers.parse_decimal) and a unit.
_QUANTITY_RE = re.compile(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*")


# Up to the last "@" of the URL: a password may hold "@" or "/" unescaped.
_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s'\"]*@")


def redact_url(text: str) -> str:
    """``text`` with the ``user:password@`` of every URL in it replaced by ``***@``."""
    return _USERINFO_RE.sub(r"\1***@", text)


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range.

    The message starts with the setting's name and a colon: ``tag_ttl: expected ...``.
    """

    @property
    def setting(self) -> str:
        """The name the message starts with."""
        return str(self).partition(": ")[0]

    def renamed(self, names: Mapping[str, str]) -> ConfigError:
        """This error naming its setting as in ``names``: ``upstreams[0].url`` -> ``upstream``."""
        if self.setting not in names:
            return self
        return ConfigError(names[self.setting] + str(self)[len(self.setting) :])

    def sourced(self, sources: Mapping[str, str]) -> ConfigError:
        """This error naming the flag or variable that set it: ``tag_ttl: ... (set by --tag-ttl)``.

        ``sources`` maps a setting to the flag or environment variable that set it.
        """
        source = sources.get(self.setting)
        if source is None or source == self.setting:
            return self
        return ConfigError(f"{self} (set by {source})")


def parse_size(value: object, where: str) -> int:
    """``"50GiB"``, ``"10GB"``, ``1024`` -> bytes."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a size such as '50GiB', got {value!r}")
    if isinstance(value, int):
        number, unit = float(value), ""
    else:
        match = _QUANTITY_RE.fullmatch(str(value))
        parsed = parse_decimal(match.group(1)) if match else None
        if match is None or parsed is None or match.group(2).lower() not in _SIZE_UNITS:
            raise ConfigError(f"{where}: expected a size such as '50GiB', got {value!r}")
        number, unit = parsed, match.group(2).lower()
    if not 0 <= number < math.inf:
        raise ConfigError(f"{where}: must be a finite, non-negative size, got {value!r}")
    return int(number * _SIZE_UNITS[unit])


def parse_duration(value: object, where: str) -> float:
    """``"5m"``, ``"7d"``, ``"250ms"``, ``30`` -> seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration such as '5m', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _QUANTITY_RE.fullmatch(str(value))
        parsed = parse_decimal(match.group(1)) if match else None
        if match is None or parsed is None or match.group(2) not in _DURATION_UNITS:
            raise ConfigError(f"{where}: expected a duration such as '5m', got {value!r}")
        seconds = parsed * _DURATION_UNITS[match.group(2)]
    if not 0 <= seconds < math.inf:  # TOML allows nan and inf
        raise ConfigError(f"{where}: must be finite and not negative, got {value!r}")
    return seconds


def parse_bool(value: object, where: str) -> bool:
    """TOML booleans, or the usual words from the environment."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{where}: expected true or false, got {value!r}")


def parse_listen(value: object, where: str) -> tuple[str, int]:
    """``"HOST:PORT"`` or ``":PORT"`` (all interfaces) -> (host, port)."""
    text = str(value)
    host, sep, port_text = text.rpartition(":")
    port = parse_count(port_text, max_digits=5)
    if not sep or port is None or port > 65535:
        raise ConfigError(f"{where}: expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, port


def parse_fraction(value: object, where: str) -> float:
    """A number from 0 to 1 such as ``0.95``."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number from 0 to 1, got {value!r}")
    number = float(value) if isinstance(value, int | float) else parse_decimal(str(value).strip())
    if number is None or not 0 <= number <= 1:
        raise ConfigError(f"{where}: expected a number from 0 to 1, got {value!r}")
    return number


def read_secret(path: object, where: str) -> str:
    """The contents of a secret file, trailing whitespace removed."""
    try:
        return Path(str(path)).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path!r}: {exc.strerror}") from None


def reject_unknown(raw: Mapping[str, Any], where: str, known: set[str]) -> None:
    """Fail on the first setting of ``raw`` that is not in ``known``: typos are errors."""
    unknown = sorted(set(raw) - known)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"{prefix}{unknown[0]}: unknown setting")


def sub_table(raw: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    """The sub-table ``key`` of ``raw`` (empty when absent)."""
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}{key}: expected a table, got {value!r}")
    return value
