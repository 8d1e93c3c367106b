"""A client's ``Accept`` header, reduced to what can change a registry's answer.

A tag's answer depends on which manifest media types the client takes: a
registry sends the multi-platform index only to a client that takes
indexes, and otherwise one platform's manifest (or an error). Everything
else in ``Accept`` is noise to a registry: order, case, parameters,
duplicates, line splitting, types that are not manifests. Used as it comes,
that noise made one tag cost one upstream GET and one tag record per
spelling of the header, without limit.

So the mirror reduces ``Accept`` to one of three *variants*, and the variant
is all that reaches a cache key, a single-flight key, or the upstream:

===============  ==================================================  =====================
variant          the client named                                    the mirror asks for
===============  ==================================================  =====================
``any``          an index type, or no manifest type the mirror knows  every known type
                 (no header, ``*/*`` alone, only unknown types)
``manifest``     image manifest types, but no index type             every non-index type
``schema1``      only Docker schema 1 types                          the schema 1 types
===============  ==================================================  =====================

A type with ``q=0`` counts as not named (RFC 9110); other parameters and
q-values are ignored, as distribution ignores them. ``*/*`` and
``application/*`` alongside named types do not change the variant, but let
the client take any manifest. Otherwise the manifest served must be one of
the types the client named, else the answer is 404 ``MANIFEST_UNKNOWN``, as
distribution answers a client that does not take what it has.

One tag therefore has at most three records, whatever clients send; docker,
containerd, podman and skopeo all land on ``any``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mirror.oci import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
)

_WILDCARDS = frozenset({"*/*", "application/*"})
_SCHEMA1_TYPES = (DOCKER_SCHEMA1_SIGNED, DOCKER_SCHEMA1)
_IMAGE_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST, *_SCHEMA1_TYPES)
# What the mirror asks the upstream for, per variant: always a fixed list,
# so the upstream's answer depends on nothing but the variant.
VARIANT_TYPES: dict[str, tuple[str, ...]] = {
    "any": (OCI_INDEX, DOCKER_LIST, *_IMAGE_TYPES),
    "manifest": _IMAGE_TYPES,
    "schema1": _SCHEMA1_TYPES,
}
ALL_TYPES = VARIANT_TYPES["any"]
_ZERO_Q = re.compile(r"0(?:\.0{0,3})?")


@dataclass(frozen=True, slots=True)
class Accepted:
    """The manifest media types a client takes, as far as the mirror can tell."""

    named: frozenset[str]  # known manifest types named with q > 0
    wildcard: bool  # */* or application/* with q > 0

    @property
    def variant(self) -> str:
        """``any``, ``manifest`` or ``schema1``: the part of a tag's cache key that Accept sets."""
        if not self.named or self.named & INDEX_MEDIA_TYPES:
            return "any"
        if self.named.isdisjoint((OCI_MANIFEST, DOCKER_MANIFEST)):
            return "schema1"
        return "manifest"

    @property
    def upstream_types(self) -> tuple[str, ...]:
        """The ``Accept`` lines to send upstream for this client's variant."""
        return VARIANT_TYPES[self.variant]

    def allows(self, media_type: str) -> bool:
        """Whether a manifest of ``media_type`` may be served to this client."""
        return self.wildcard or not self.named or media_type in self.named


ANY = Accepted(frozenset(), wildcard=True)


def parse_accept(lines: list[str]) -> Accepted:
    """Read every ``Accept`` line: comma-separated types, each with optional parameters."""
    named: set[str] = set()
    wildcard = False
    for line in lines:
        for item in line.split(","):
            media_type, _, parameters = item.partition(";")
            media_type = media_type.strip(" \t").lower()
            if _refused(parameters):
                continue
            if media_type in MANIFEST_MEDIA_TYPES:
                named.add(media_type)
            elif media_type in _WILDCARDS:
                wildcard = True
    return Accepted(frozenset(named), wildcard)


def _refused(parameters: str) -> bool:
    """Whether the parameters hold ``q=0`` (``0``, ``0.0``, ``0.00`` or ``0.000``)."""
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip(" \t").lower() == "q" and _ZERO_Q.fullmatch(value.strip(' \t"')):
            return True
    return False
