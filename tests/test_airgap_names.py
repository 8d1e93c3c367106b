"""Pure parts of the air gap: names in index.json, selection flags, index.json, summaries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mirror.airgap.content import SourceImage, TagEntry, tag_needs_update
from mirror.airgap.descriptors import Descriptor, index_document, parse_index
from mirror.airgap.errors import LayoutError, SelectionError
from mirror.airgap.names import (
    REF_NAME,
    Defaults,
    ImageName,
    NamingError,
    annotations_for,
    name_entry,
)
from mirror.airgap.selection import parse_selection, select_images
from mirror.airgap.summary import parse_summary
from mirror.config import Config, build_config
from mirror.oci import OCI_MANIFEST, Digest, parse_digest

DIGEST = parse_digest("sha256:" + "ab" * 32)
OTHER = parse_digest("sha256:" + "cd" * 32)


def config() -> Config:
    """Docker Hub (the default upstream) and ghcr.io."""
    return build_config({"upstreams": [
        {"name": "docker.io", "url": "https://registry-1.docker.io"},
        {"name": "ghcr.io", "url": "https://ghcr.io"},
    ]})  # fmt: skip


@pytest.mark.parametrize(
    ("ref_name", "defaults", "expected"),
    [
        # skopeo's oci:DIR:TAG: the operator names the repository (and the upstream).
        ("3.20", Defaults(repository="alpine"), ImageName("docker.io", "library/alpine", "3.20")),
        ("v1", Defaults("ghcr.io", "org/app"), ImageName("ghcr.io", "org/app", "v1")),
        # Full references, read like pins: a configured upstream first, else the default.
        ("docker.io/library/alpine:3", Defaults(), ImageName("docker.io", "library/alpine", "3")),
        ("index.docker.io/alpine:3", Defaults(), ImageName("docker.io", "library/alpine", "3")),
        ("ghcr.io/org/app:v2", Defaults(), ImageName("ghcr.io", "org/app", "v2")),
        ("org/app:v2", Defaults(upstream="ghcr.io"), ImageName("ghcr.io", "org/app", "v2")),
        (f"ghcr.io/org/app@{DIGEST}", Defaults(), ImageName("ghcr.io", "org/app", None)),
    ],
)  # fmt: skip
def test_ref_name_in_both_forms(ref_name: str, defaults: Defaults, expected: ImageName) -> None:
    assert name_entry({REF_NAME: ref_name}, config(), defaults) == expected


@pytest.mark.parametrize(
    ("annotations", "defaults", "message"),
    [
        ({REF_NAME: "latest"}, Defaults(), "'latest' is a bare tag: give the repository"),
        ({}, Defaults(), "no org.opencontainers.image.ref.name annotation"),
        ({REF_NAME: "Bad/Name:1"}, Defaults(), "invalid repository name"),
        ({REF_NAME: "alpine"}, Defaults(repository="UPPER"), "invalid repository name"),
        ({REF_NAME: "docker.io/alpine"}, Defaults(), "needs :tag or @digest"),
        (
            {"org.registry-mirror.upstream": "quay.io", "org.registry-mirror.repository": "x/y"},
            Defaults(),
            "upstream 'quay.io' is not configured here",
        ),
    ],
)
def test_names_that_cannot_be_mapped_say_why(
    annotations: dict[str, str], defaults: Defaults, message: str
) -> None:
    with pytest.raises(NamingError, match=message) as caught:
        name_entry(annotations, config(), defaults)
    assert "cache.pins" not in str(caught.value)


def test_the_mirrors_annotations_win_and_round_trip() -> None:
    name = ImageName("ghcr.io", "org/app", "v1")
    confirmed = datetime(2026, 11, 1, 12, tzinfo=UTC)
    annotations = annotations_for(name, DIGEST, confirmed)
    assert annotations == {
        REF_NAME: "ghcr.io/org/app:v1",
        "org.registry-mirror.upstream": "ghcr.io",
        "org.registry-mirror.repository": "org/app",
        "org.registry-mirror.tag": "v1",
        "org.registry-mirror.confirmed": "2026-11-01T12:00:00Z",
    }
    annotations[REF_NAME] = "something/else:entirely"
    assert name_entry(annotations, config(), Defaults("docker.io", "x")) == name


def test_selection_flags_are_parsed_like_pins(tmp_path: Path) -> None:
    listing = tmp_path / "images.txt"
    listing.write_text(f"# weekly set\nalpine:3.20\n\nghcr.io/org/app@{DIGEST}  # pinned\n")
    selection = parse_selection(
        config(), images=["docker.io/library/busybox:1"], listing=listing,
        upstreams=["ghcr.io"], repositories=["library/*"],
    )  # fmt: skip
    assert [str(pin) for pin in selection.images] == [
        "docker.io/library/busybox:1", "docker.io/library/alpine:3.20", f"ghcr.io/org/app@{DIGEST}",
    ]  # fmt: skip
    listing.write_text("ok:1\nno-tag\n")
    with pytest.raises(SelectionError, match=r"images.txt:2: .*needs :tag or @digest"):
        parse_selection(config(), listing=listing)
    with pytest.raises(SelectionError, match=r"--upstream 'quay.io' is not configured"):
        parse_selection(config(), upstreams=["quay.io"])
    with pytest.raises(SelectionError, match=r"--image: .*invalid tag"):
        parse_selection(config(), images=["alpine:bad tag"])


async def listed(*images: SourceImage) -> AsyncIterator[SourceImage]:
    for image in images:
        yield image


async def test_selection_chooses_named_and_filtered_images() -> None:
    cache = [
        SourceImage("docker.io", "library/alpine", "3.20", DIGEST),
        SourceImage("docker.io", "library/busybox", "1", OTHER),
        SourceImage("ghcr.io", "org/app", "v1", OTHER),
    ]
    everything = await select_images(listed(*cache), parse_selection(config()))
    assert everything.images == sorted(cache, key=lambda i: (i.upstream, i.repository))
    pattern = parse_selection(config(), repositories=["library/b*"])
    assert [i.repository for i in (await select_images(listed(*cache), pattern)).images] == [
        "library/busybox"
    ]
    named = parse_selection(config(), images=["alpine:3.20", "alpine:3.21", f"org/x@{OTHER}"],
                            upstreams=["ghcr.io"])  # fmt: skip
    chosen = await select_images(listed(*cache), named)
    assert [str(i) for i in chosen.images] == [
        "docker.io/library/alpine:3.20", f"docker.io/org/x@{OTHER}", "ghcr.io/org/app:v1",
    ]  # fmt: skip
    assert chosen.unmatched == ["docker.io/library/alpine:3.21"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "index.json is not JSON"),
        (b'{"schemaVersion": 1}', "not an image index"),
        (b'{"schemaVersion": 2}', "no manifests list"),
        (b'{"schemaVersion": 2, "manifests": [{"mediaType": "x", "size": 1, "digest": "md5:1"}]}',
         r"manifests\[0\]: .*digest"),
        (b'{"schemaVersion": 2, "manifests": [{"mediaType": "x", "size": -1, "digest": "'
         + str(DIGEST).encode() + b'"}]}', "size is not a non-negative integer"),
    ],
)  # fmt: skip
def test_a_bad_index_json_is_named(body: bytes, message: str) -> None:
    with pytest.raises(LayoutError, match=message):
        parse_index(body)


def test_index_json_round_trips() -> None:
    entries = [Descriptor(OCI_MANIFEST, DIGEST, 12, {REF_NAME: "a/b:c"}, None, "x/y")]
    assert parse_index(index_document(entries)) == entries


def test_a_bad_summary_is_named() -> None:
    with pytest.raises(LayoutError, match=r"s.json: not a registry-mirror-export/1 summary"):
        parse_summary(b'{"format": "other"}', "s.json")
    with pytest.raises(LayoutError, match=r"s.json: unreadable summary"):
        parse_summary(b'{"format": "registry-mirror-export/1"}', "s.json")


def test_only_a_newer_confirmation_rewrites_a_tag() -> None:
    def entry(digest: Digest, day: int) -> TagEntry:
        moment = datetime(2026, 11, day, tzinfo=UTC)
        return TagEntry("docker.io", "library/alpine", "3", digest, OCI_MANIFEST, 10, moment)

    assert tag_needs_update(None, entry(DIGEST, 1))
    assert not tag_needs_update(entry(DIGEST, 1), entry(DIGEST, 1))  # imported twice
    assert tag_needs_update(entry(DIGEST, 1), entry(OTHER, 2))  # moved, newer
    assert not tag_needs_update(entry(OTHER, 3), entry(DIGEST, 2))  # the site knows better
