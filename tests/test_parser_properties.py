"""Property-based tests of every parser that reads what clients and upstreams write.

Hypothesis generates the inputs; each test states what must hold for all of
them. Example counts are kept small so the whole file runs in a few seconds;
tests/conftest.py turns off the example database and the deadline.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import aiohttp
from hypothesis import given, settings
from hypothesis import strategies as st

from mirror.accept import VARIANT_TYPES, parse_accept
from mirror.config import build_config
from mirror.errors import ManifestRejected, MirrorError, RangeNotSatisfiable
from mirror.manifest_check import check_manifest
from mirror.metrics import Metrics
from mirror.numbers import parse_count
from mirror.oci import (
    MANIFEST_MEDIA_TYPES,
    Digest,
    parse_digest,
    parse_range,
    parse_reference,
    validate_name,
)
from mirror.routing import Router
from mirror.storage import layout
from mirror.upstream.auth import parse_challenge
from mirror.upstream.client import UpstreamClient

FEW = settings(max_examples=100)
SOME = settings(max_examples=60)

# ----------------------------------------------------------------------------- Range

digits = st.text(alphabet="0123456789", max_size=40)
sizes = st.integers(min_value=0, max_value=2**40)


def model_range(first: str, last: str, size: int) -> tuple[int, int] | str | None:
    """RFC 9110 with Python's unbounded integers: (start, end), None (whole), or "416"."""
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0:
            return "416"
        return None if size == 0 else (max(size - suffix, 0), size - 1)
    start, end = int(first), int(last) if last else None
    if start >= size or (end is not None and end < start):
        return "416"
    return start, size - 1 if end is None else min(end, size - 1)


@FEW
@given(header=st.text(max_size=60), size=sizes)
def test_range_never_fails_but_with_416_and_stays_inside(header: str, size: int) -> None:
    try:
        found = parse_range(header, size)
    except RangeNotSatisfiable as exc:
        found, refused = None, exc
        assert refused.size == size
    if found is not None:
        assert 0 <= found.start <= found.end < size


@FEW
@given(first=digits, last=digits, size=sizes, zeros=st.integers(0, 30), long=st.integers(0, 4000))
def test_range_agrees_with_a_model_at_any_length(
    first: str, last: str, size: int, zeros: int, long: int
) -> None:
    """Leading zeros and thousands of digits mean what they say, without int() of the text."""
    if first and long:
        first = first + "0" * long  # far beyond any size
    padded_first = "0" * zeros + first if first else ""
    expected = model_range(first, last, size)
    try:
        found = parse_range(f"bytes={padded_first}-{last}", size)
    except RangeNotSatisfiable:
        assert expected == "416"
        return
    assert expected == (None if found is None else (found.start, found.end))


# ---------------------------------------------------------------- digests, references

hex_digests = st.one_of(
    st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(lambda h: "sha256:" + h),
    st.text(alphabet="0123456789abcdef", min_size=128, max_size=128).map(lambda h: "sha512:" + h),
)
tags = st.from_regex(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}", fullmatch=True)
components = st.from_regex(r"[a-z0-9]{1,8}(?:(?:\.|_|__|-{1,2})[a-z0-9]{1,8}){0,2}", fullmatch=True)
names = st.lists(components, min_size=1, max_size=4).map("/".join)


@FEW
@given(digest=hex_digests)
def test_digests_round_trip(digest: str) -> None:
    parsed = parse_digest(digest)
    assert isinstance(parsed, Digest)
    assert str(parsed) == digest
    assert str(parse_reference(digest)) == digest


@FEW
@given(text=st.text(max_size=200))
def test_references_are_parsed_or_refused_with_an_oci_error(text: str) -> None:
    try:
        reference = parse_reference(text)
    except MirrorError:
        return
    assert str(reference) == text
    assert (reference.tag is None) != (reference.digest is None)


@FEW
@given(tag=tags)
def test_every_tag_of_the_grammar_round_trips(tag: str) -> None:
    assert parse_reference(tag).tag == tag


@FEW
@given(text=st.one_of(st.text(max_size=300), names))
def test_a_valid_name_is_a_safe_key_part(text: str) -> None:
    try:
        name = validate_name(text)
    except MirrorError:
        return
    assert name == text
    parts = name.split("/")
    assert all(part and part not in (".", "..") and "\\" not in part for part in parts)
    assert layout.parse_tag_key(layout.tag_key("up", name, "latest", "any")) == (
        "up", name, "latest",
    )  # fmt: skip


# ------------------------------------------------------------------------ ns / routing

_HOSTS = ["127.0.0.2:5000", "127.1", "2130706434", "[::1]:80", "0x7f.1", "user@10.0.0.1", ""]
host_like = st.one_of(
    st.sampled_from(_HOSTS),
    st.from_regex(r"[a-zA-Z0-9.:@\[\]%_-]{1,40}", fullmatch=True),
    st.text(max_size=40),
)
configured = ["docker.io", "ghcr.io", "registry.example:5000"]


async def test_routing_only_ever_selects_a_configured_upstream(tmp_path: Path) -> None:
    raw = {
        "storage": {"path": str(tmp_path)},
        "upstreams": [{"name": n, "url": "http://127.0.0.1:9"} for n in configured],
    }
    config = build_config(raw)
    async with aiohttp.ClientSession() as session:
        metrics = Metrics()
        clients = {u.name: UpstreamClient(u, session, metrics) for u in config.upstreams}
        router = Router(config, clients)
        check_routing(router, set(map(id, clients.values())))


def check_routing(router: Router, known: set[int]) -> None:
    @SOME
    @given(
        prefix=st.one_of(st.none(), host_like, st.sampled_from(configured)),
        rest=st.one_of(names, st.text(max_size=60)),
        ns=st.one_of(st.none(), host_like, st.sampled_from([*configured, "DOCKER.IO"])),
    )
    def resolve(prefix: str | None, rest: str, ns: str | None) -> None:
        name = rest if prefix is None else f"{prefix}/{rest}"
        try:
            target = router.resolve(name, ns)
        except MirrorError:
            return
        assert id(target.upstream) in known
        if ns is not None:
            assert ns.lower() in configured or ns.lower() == "docker.io"
        assert validate_name(target.repository) == target.repository
        key = layout.tag_key(target.upstream.name, target.repository, "latest", "any")
        assert key.startswith(f"{target.upstream.name}/tags/{target.repository}/")
        assert ".." not in key.split("/")
        assert "" not in key.split("/")

    resolve()


# --------------------------------------------------------------- WWW-Authenticate

param_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_-]{0,15}", fullmatch=True)
param_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\x7f"),
    max_size=40,
)


def quote(value: str) -> str:
    return '"' + re.sub(r'(["\\])', r"\\\1", value) + '"'


@FEW
@given(header=st.text(max_size=200))
def test_challenge_parsing_never_fails(header: str) -> None:
    challenge = parse_challenge(header)
    assert challenge.scheme == challenge.scheme.lower()


@FEW
@given(
    scheme=st.sampled_from(["Bearer", "bearer", "Basic"]),
    params=st.dictionaries(param_names, param_values, max_size=5),
    space=st.sampled_from(["", " ", "  "]),
)
def test_challenge_quoted_values_round_trip(
    scheme: str, params: dict[str, str], space: str
) -> None:
    """Commas, quotes and backslashes inside quoted values (RFC 9110 quoted-pair) survive."""
    unique = {k.lower(): v for k, v in params.items()}
    header = scheme + " " + f",{space}".join(f"{k}={quote(v)}" for k, v in unique.items())
    challenge = parse_challenge(header)
    assert challenge.scheme == scheme.lower()
    assert challenge.params == unique


# ------------------------------------------------------------------------- Accept

accept_items = st.one_of(
    st.sampled_from([*sorted(MANIFEST_MEDIA_TYPES), "*/*", "application/json", "text/html"]),
    st.text(alphabet=string.printable, max_size=30),
)


@FEW
@given(items=st.lists(accept_items, max_size=10), data=st.data())
def test_accept_depends_on_the_set_only(items: list[str], data: st.DataObject) -> None:
    """Order, case, repetition and line splitting never change the variant or what is allowed."""
    items = [item.replace(",", "") for item in items]
    shuffled = data.draw(st.permutations(items + items[:2]))
    mangled = [item.upper() if data.draw(st.booleans()) else item for item in shuffled]
    one_line = parse_accept([", ".join(items)])
    many_lines = parse_accept(mangled)
    assert one_line.variant == many_lines.variant
    assert one_line.upstream_types == many_lines.upstream_types
    assert one_line.upstream_types in VARIANT_TYPES.values()
    for media_type in MANIFEST_MEDIA_TYPES:
        assert one_line.allows(media_type) == many_lines.allows(media_type)


@FEW
@given(lines=st.lists(st.text(max_size=80), max_size=5))
def test_accept_parsing_never_fails(lines: list[str]) -> None:
    assert parse_accept(lines).variant in VARIANT_TYPES


# -------------------------------------------------------------- manifests, numbers

_FIELDS = ["schemaVersion", "mediaType", "config", "layers", "manifests", "digest", "size", "x"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(_FIELDS), children)
    ),
    max_leaves=20,
)
content_types = st.one_of(st.sampled_from([*MANIFEST_MEDIA_TYPES, "", "text/html"]), st.text())


@FEW
@given(
    body=st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())),
    content_type=content_types,
)
def test_manifest_check_rejects_or_names_a_known_type(body: bytes, content_type: str) -> None:
    try:
        media_type = check_manifest(body, content_type)
    except ManifestRejected:
        return
    assert media_type in MANIFEST_MEDIA_TYPES


@FEW
@given(text=st.text(max_size=30), max_digits=st.integers(1, 25))
def test_counts_are_ascii_digits_of_bounded_length(text: str, max_digits: int) -> None:
    value = parse_count(text, max_digits)
    ascii_digits = text.isascii() and text.isdecimal()
    assert (value is not None) == (ascii_digits and len(text) <= max_digits)
    if value is not None:
        assert value == int(text)
