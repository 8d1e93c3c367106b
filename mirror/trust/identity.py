"""Which image a simple-signing signature says it signed, and whether the policy accepts that.

cosign writes the reference it signed into the payload's
``critical.identity.docker-reference``. Like ``signedIdentity`` in
containers-policy.json, a policy chooses how that is compared with the image
being pulled (``registry/repository``, with the tag or digest the client asked
for):

- ``repository`` (default; containers' ``matchRepository``): the same
  registry and repository, whatever tag or digest the signature names;
- ``exact`` (``matchExact``): the same repository and the same tag (or
  digest) as the pull;
- ``any``: not compared. The digest in the payload still has to match.

``remap`` (containers' ``remapIdentity``): when the pulled name starts with
``prefix``, that part is replaced by ``signed_prefix`` before comparing, for
images signed under another name than the one the mirror pulls them from
(a registry's internal host name, a copy of another registry).

Names are normalised as docker does: ``alpine`` is
``docker.io/library/alpine``; ``index.docker.io`` and ``registry-1.docker.io``
are ``docker.io``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["IDENTITY_MATCHES", "IdentityRule", "normalize_reference", "split_reference"]

IDENTITY_MATCHES = ("repository", "exact", "any")
_DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


def split_reference(reference: str) -> tuple[str, str]:
    """``host/repo:tag`` -> (``host/repo``, ``:tag``); ``…@sha256:x`` -> (…, ``@sha256:x``)."""
    name, at, digest = reference.partition("@")
    if at:
        return name, "@" + digest
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon:]
    return name, ""


def normalize_reference(reference: str) -> str:
    """The fully qualified spelling of an image name or reference (docker's rules)."""
    name, suffix = split_reference(reference.strip())
    first, slash, rest = name.partition("/")
    if not slash or ("." not in first and ":" not in first and first != "localhost"):
        first, rest = _DOCKER_HUB, name
    host = first.lower()
    if host in _DOCKER_HUB_ALIASES:
        host = _DOCKER_HUB
        if "/" not in rest:
            rest = f"library/{rest}"
    return f"{host}/{rest}{suffix}"


@dataclass(frozen=True, slots=True)
class IdentityRule:
    """How a payload's ``docker-reference`` is compared with the pulled image."""

    match: str = "repository"
    prefix: str = ""
    signed_prefix: str = ""

    def accepts(self, signed: str | None, pulled_name: str, pulled_reference: str | None) -> bool:
        """Whether a signature naming ``signed`` may vouch for the pulled image.

        ``pulled_name`` is ``registry/repository``; ``pulled_reference`` the tag
        or digest (``sha256:…``) the client asked for, ``None`` if unknown.
        """
        if self.match == "any":
            return True
        if not signed:
            return False
        expected = self._remapped(normalize_reference(pulled_name))
        signed_name, signed_suffix = split_reference(normalize_reference(signed))
        if signed_name != expected:
            return False
        if self.match == "repository":
            return True
        if pulled_reference is None:
            return False
        separator = "@" if ":" in pulled_reference else ":"
        return signed_suffix == separator + pulled_reference

    def _remapped(self, name: str) -> str:
        if not self.prefix:
            return name
        prefix = self.prefix.rstrip("/")
        if name == prefix or name.startswith(prefix + "/"):
            return normalize_reference(self.signed_prefix.rstrip("/") + name[len(prefix) :])
        return name
