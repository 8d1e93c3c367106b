"""No module imports from a layer above its own; routes never see storage.

Layers, bottom to top (docs/architecture.md): the vocabulary, config and
metrics; storage; the cache and the upstream client, side by side and apart;
the proxy; the routes; the app and the server; the command line. Imports are
read from the source with :mod:`ast`, including those inside functions and
under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mirror"

# The client-auth middleware and the token endpoint; the rest of mirror.security
# (TLS files, htpasswd, tokens, rules) is vocabulary, which the config checks with.
WEB_SECURITY = ("mirror.security.gate", "mirror.security.token_endpoint")
# (layer, rank, module prefixes). A module may import its own layer and any
# layer of a lower rank; two layers of one rank may not import each other.
LAYERS: list[tuple[str, int, tuple[str, ...]]] = [
    (
        "cli",
        7,
        (
            "mirror.cli",
            "mirror.cli_airgap",
            "mirror.cli_flags",
            "mirror.__main__",
            "mirror.healthcheck",
        ),
    ),
    ("app", 6, ("mirror.app", "mirror.server", "mirror.warm")),
    # The web UI and the front door's HTTP side are routes too.
    ("routes", 5, ("mirror.routes", "mirror.ui", *WEB_SECURITY)),
    ("proxy", 4, ("mirror.proxy", "mirror.routing", "mirror.readiness")),
    # The air-gap commands read and write the cache through their own protocols.
    ("airgap", 4, ("mirror.airgap",)),
    ("cache", 3, ("mirror.cache", "mirror.stats")),
    # Pure address rules, which the config also uses to check redirect_allow.
    ("vocabulary", 1, ("mirror.upstream.addresses",)),
    ("upstream", 3, ("mirror.upstream",)),
    ("storage", 2, ("mirror.storage",)),
    ("vocabulary", 1, ("mirror",)),  # oci, errors, config, metrics, stored, ...
]
# Routes hand over what the proxy answers; keys, descriptors and storage errors
# stay below them.
FORBIDDEN = [("mirror.routes", "mirror.storage")]
# Only these build or touch aiohttp's server side (requests, responses, apps).
AIOHTTP_WEB = ("mirror.routes", "mirror.ui", *WEB_SECURITY, "mirror.app", "mirror.server")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports (``from x import y`` counts ``x.y`` when that is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "mirror" or name.startswith("mirror.")}


def layer_of(module: str) -> tuple[str, int]:
    for name, rank, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name, rank
    raise AssertionError(f"{module} is in no layer")


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
KNOWN = set(MODULES) | {"mirror"}


def edges() -> list[tuple[str, str]]:
    return [
        (source, target)
        for source, path in MODULES.items()
        for target in sorted(imports(path))
        if target in KNOWN and target != source
    ]


@pytest.mark.parametrize(("source", "target"), edges())
def test_imports_point_down(source: str, target: str) -> None:
    source_layer, source_rank = layer_of(source)
    target_layer, target_rank = layer_of(target)
    assert source_layer == target_layer or target_rank < source_rank, (
        f"{source} ({source_layer}) imports {target} ({target_layer})"
    )
    for below, never in FORBIDDEN:
        assert not (source.startswith(below) and target.startswith(never)), (source, target)


def test_every_module_has_a_layer_and_the_table_is_read() -> None:
    assert len(MODULES) > 50
    for module in MODULES:
        layer_of(module)


def test_only_routes_and_the_app_touch_aiohttp_web() -> None:
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {
            f"{n.module}.{a.name}"
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module is not None
            for a in n.names
        }
        if any(name.startswith("aiohttp.web") for name in names):
            assert module.startswith(AIOHTTP_WEB), module
