"""Storage backends by name, and opening the configured one.

A backend is one module implementing :class:`mirror.storage.base.Storage`
(it must pass ``tests/test_storage_contract.py``) plus one entry in
:data:`BACKENDS`: its ``storage.backend`` name and a function that opens it
from the configuration. Its settings, if it has any, are parsed with the rest
in :mod:`mirror.config`, which also accepts its name.

:func:`open_storage` is how the server and the ``gc`` and ``verify`` commands
open the cache: the backend under :class:`InstrumentedStorage`, so keys are
checked and every operation is timed and counted whoever calls it. A backend
that cannot be opened as configured (a cache directory that cannot be
created, an S3 region or endpoint botocore refuses) is a
:class:`mirror.lifecycle.StartupError` with exit status 2, naming the setting.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mirror.config import Config
from mirror.lifecycle import CONFIG_ERROR, StartupError
from mirror.storage.base import Storage
from mirror.storage.disk import DiskStorage
from mirror.storage.instrumented import InstrumentedStorage, StorageObserver

Opener = Callable[[Config], Awaitable[Storage]]


async def open_disk(config: Config) -> Storage:
    """Files under ``storage.path``, created if missing."""
    try:
        return DiskStorage(config.storage.path)
    except OSError as exc:
        raise StartupError(
            f"storage.path: cannot create the cache directory {str(config.storage.path)!r}: "
            f"{exc.strerror or exc}",
            CONFIG_ERROR,
        ) from None


async def open_s3(config: Config) -> Storage:
    """Objects in ``storage.s3.bucket``; no request is made, so a down S3 does not stop start-up."""
    # Imported only when used: aiobotocore and botocore take about 0.3 s to import.
    from botocore.exceptions import InvalidRegionError

    from mirror.storage.s3 import S3Storage

    # An upload younger than one fill's time limit may be another mirror's live fill.
    stale = config.fill.total_timeout + 600
    try:
        return await S3Storage.open(
            config.storage.s3, stale_upload_age=stale, part_dir=config.storage.path
        )
    except ValueError as exc:  # botocore refuses the region or the endpoint URL
        setting = "region" if isinstance(exc, InvalidRegionError) else "endpoint_url"
        raise StartupError(f"storage.s3.{setting}: {exc}", CONFIG_ERROR) from None


#: ``storage.backend`` name -> how to open it.
BACKENDS: dict[str, Opener] = {"disk": open_disk, "s3": open_s3}


async def open_storage(config: Config, observer: StorageObserver) -> Storage:
    """The configured backend, instrumented and ready for use."""
    opener = BACKENDS.get(config.storage.backend)
    if opener is None:
        raise StartupError(
            f"storage.backend: no backend named {config.storage.backend!r}", CONFIG_ERROR
        )
    return InstrumentedStorage(await opener(config), observer)
