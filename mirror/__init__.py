"""registry-mirror: a pull-through caching mirror for OCI registries."""

from importlib.metadata import PackageNotFoundError, version

try:
    # The one source of the version is pyproject.toml, read back from the installed metadata.
    __version__ = version("registry-mirror")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
