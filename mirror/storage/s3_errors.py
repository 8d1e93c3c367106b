"""Turning botocore and aiohttp failures into the storage contract's errors.

::

    StorageError                  any failed S3 call (HTTP error, bad bucket, timeout)
    ├── ObjectNotFound            the key does not exist (404, NoSuchKey)
    └── S3Unreachable             no HTTP answer at all (connection refused, timeout)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError

from mirror.storage.base import ObjectNotFound, StorageError

_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
# Connection refused, connect timeout, reset: no HTTP answer at all.
_UNREACHABLE = (BotoConnectionError, ReadTimeoutError)


class S3Unreachable(StorageError):
    """S3 did not answer (connection refused, reset or timed out)."""


def error_code(exc: ClientError) -> str:
    """The S3 error code of a ClientError (``NoSuchKey``, ``404``, ...)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def mapped_errors(action: str, key: str) -> Iterator[None]:
    """Re-raise S3 client failures inside the block as :class:`StorageError`."""
    try:
        yield
    except ClientError as exc:
        code = error_code(exc)
        if code in _NOT_FOUND:
            raise ObjectNotFound(key) from exc
        raise StorageError(f"s3 {action} {key!r}: {code or exc}") from exc
    except _UNREACHABLE as exc:
        raise S3Unreachable(f"s3 {action} {key!r}: {exc}") from exc
    except (TimeoutError, BotoCoreError, aiohttp.ClientError, OSError) as exc:
        raise StorageError(f"s3 {action} {key!r}: {type(exc).__name__}: {exc}") from exc
