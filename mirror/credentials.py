"""Upstream credentials from a docker ``config.json`` ("auths file").

Pure parsing: :mod:`mirror.config` reads the file and hands its text here.
The format is what ``docker login`` and ``podman login`` write::

    {"auths": {"https://index.docker.io/v1/": {"auth": "<base64 user:password>"},
               "ghcr.io": {"username": "me", "password": "<token>"}}}

Keys may be bare hosts or URLs; they are reduced to ``host[:port]``, and
Docker Hub's spellings (``index.docker.io/v1/``, ``registry-1.docker.io``, ...;
see :mod:`mirror.docker_hub`) to ``docker.io``. Credential helpers
(``credsStore``, ``credHelpers``) run external programs and are not
supported; entries they manage carry no ``auth`` and are skipped.

:func:`resolve_credentials` picks one upstream's credentials from its config
table, the environment, its own ``docker_config`` file or the global
``auths_file``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mirror.docker_hub import registry_name


class CredentialError(ValueError):
    """An auths file is malformed, or a named credential source is missing."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and password (or token) for one registry."""

    username: str
    password: str = field(repr=False)


def registry_key(text: str) -> str:
    """``https://index.docker.io/v1/`` -> ``docker.io``; ``ghcr.io`` -> ``ghcr.io``."""
    raw = text.strip()
    return registry_name(urlsplit(raw if "://" in raw else "//" + raw).netloc)


def parse_auths(text: str) -> dict[str, Credentials]:
    """Map ``host[:port]`` to credentials; raise :class:`CredentialError` on bad input.

    Error messages name the registry key, never a secret.
    """
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CredentialError(f"not JSON ({exc.msg} at line {exc.lineno})") from None
    auths = document.get("auths", {}) if isinstance(document, dict) else None
    if not isinstance(auths, dict):
        raise CredentialError('expected {"auths": {...}}')
    result: dict[str, Credentials] = {}
    for key, entry in auths.items():
        if not isinstance(entry, dict):
            raise CredentialError(f"auths[{key!r}]: expected an object")
        credentials = _entry_credentials(str(key), entry)
        if credentials is not None:
            result.setdefault(registry_key(str(key)), credentials)
    return result


def _entry_credentials(key: str, entry: dict[str, object]) -> Credentials | None:
    username, password = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(password, str) and username:
        return Credentials(username, password)
    auth = entry.get("auth")
    if not auth:
        return None  # kept by a credential helper, or an identity token only
    try:
        decoded = base64.b64decode(str(auth), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise CredentialError(f"auths[{key!r}].auth: not base64 of user:password") from None
    user, sep, secret = decoded.partition(":")
    if not sep or not user:
        raise CredentialError(f"auths[{key!r}].auth: not base64 of user:password")
    return Credentials(user, secret)


@dataclass(frozen=True, slots=True)
class CredentialSources:
    """Where credentials may come from besides an upstream's own table."""

    environ: Mapping[str, str]
    auths: Mapping[str, Credentials]  # the global auths_file, already read
    #: reads a docker config.json: ``(path, where) -> auths``; raises with ``where`` in the message
    read_auths: Callable[[str, str], Mapping[str, Credentials]]


def resolve_credentials(
    raw: Mapping[str, Any], where: str, names: tuple[str, str], sources: CredentialSources
) -> Credentials | None:
    """One upstream's credentials, from the first source that has a username.

    Order: ``username``/``password`` in the table (``password_file`` already read
    into ``password``), ``username_env``/``password_env``, the table's
    ``docker_config``, the global auths file. ``names`` is (upstream name, URL);
    auths entries are matched against both.
    """
    username = _from_env(raw, "username_env", where, sources) or raw.get("username")
    password = _from_env(raw, "password_env", where, sources) or raw.get("password")
    if username:
        return Credentials(str(username), str(password or ""))
    keys = [registry_key(n) for n in names]
    if raw.get("docker_config"):
        path = str(raw["docker_config"])
        found = _lookup(sources.read_auths(path, f"{where}.docker_config"), keys)
        if found is None:
            raise CredentialError(
                f"{where}.docker_config: no credentials for {keys[0]!r} in {path!r}"
            )
        return found
    return _lookup(sources.auths, keys)


def _from_env(
    raw: Mapping[str, Any], key: str, where: str, sources: CredentialSources
) -> str | None:
    if key not in raw:
        return None
    variable = str(raw[key])
    value = sources.environ.get(variable)
    if not value:
        raise CredentialError(f"{where}.{key}: environment variable {variable!r} is not set")
    return value


def _lookup(auths: Mapping[str, Credentials], keys: list[str]) -> Credentials | None:
    for key in keys:
        if key in auths:
            return auths[key]
    return None
