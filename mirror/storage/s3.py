"""S3-compatible storage (AWS S3, MinIO, Ceph RGW, Cloudflare R2) via aiobotocore.

Keys live under ``<prefix>/`` in one bucket, so several mirrors (or other
data) can share it; mirrors on the same bucket and prefix share their cache.
Writes are multipart uploads published on commit (:mod:`mirror.storage.s3_writer`).
Reads are ranged GetObject calls streamed in chunks.

When S3 stops answering at all, the backend fails fast for
:data:`UNREACHABLE_BACKOFF` seconds instead of making every request wait
through connection retries: the mirror then serves pulls straight from the
upstream until S3 is back.

``touch`` is a no-op: S3 cannot update a modification time without
rewriting (copying) the object, and access times are kept by the cache index.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from mirror.config import S3Config
from mirror.storage.base import ObjectInfo, ObjectNotFound
from mirror.storage.s3_errors import S3Unreachable, error_code, mapped_errors
from mirror.storage.s3_writer import S3Writer

log = logging.getLogger(__name__)

UNREACHABLE_BACKOFF = 5.0
_READ_CHUNK = 256 * 1024
# A live upload cannot be older than one fill's total_timeout; the caller adds it.
DEFAULT_STALE_UPLOAD_AGE = 2 * 3600.0


def _client_config(config: S3Config) -> AioConfig:
    s3: dict[str, Any] = {}
    if config.endpoint_url:
        # Path-style URLs work with every S3-compatible server behind a custom endpoint.
        s3["addressing_style"] = "path"
    if config.endpoint_url is None or urlsplit(config.endpoint_url).scheme == "https":
        # Without a checksum header botocore hashes every payload for its
        # signature, on the event loop: 5 ms per 8 MiB part, 0.6 s per GiB.
        # Over TLS, S3 accepts UNSIGNED-PAYLOAD and TLS protects the bytes in
        # transit. Over plain HTTP the signature is all that would catch a
        # changed body: there it stays.
        s3["payload_signing_enabled"] = False
    return AioConfig(
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=64,
        s3=s3 or None,
        # Checksum trailers (botocore >= 1.36) are not understood by many S3-compatible
        # servers; blobs are verified against their digest before they are written.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def stale_uploads(uploads: list[dict[str, Any]], cutoff: float) -> list[tuple[str, str]]:
    """``(key, upload id)`` of the ListMultipartUploads entries started before ``cutoff``."""
    return [
        (str(upload["Key"]), str(upload["UploadId"]))
        for upload in uploads
        if upload["Initiated"].timestamp() <= cutoff
    ]


class S3Storage:
    """Keys as objects under ``prefix/`` in ``bucket``."""

    def __init__(
        self,
        client: Any,
        stack: AsyncExitStack,
        config: S3Config,
        stale_upload_age: float,
        part_dir: Path,
    ) -> None:
        self._client = client
        self._part_dir = part_dir  # where writers collect their parts (s3_writer)
        self._stack = stack
        self._config = config
        self._bucket = config.bucket
        self._prefix = f"{config.prefix.strip('/')}/" if config.prefix.strip("/") else ""
        self._stale_upload_age = stale_upload_age
        self._down_until = 0.0

    @classmethod
    async def open(
        cls,
        config: S3Config,
        *,
        stale_upload_age: float = DEFAULT_STALE_UPLOAD_AGE,
        part_dir: Path | None = None,
    ) -> S3Storage:
        """A client for ``config``; makes no request, so a down S3 does not stop start-up.

        Credentials: ``access_key_id``/``secret_access_key`` when configured,
        else the standard AWS chain (environment, profile, instance role).
        ``stale_upload_age``: multipart uploads older than this are orphans.
        ``part_dir``: the local directory where uploads collect their parts
        (a few parts per upload at most); the system's temporary directory if None.
        """
        stack = AsyncExitStack()
        keys: dict[str, str] = {}
        if config.access_key_id and config.secret_access_key:
            keys = {
                "aws_access_key_id": config.access_key_id,
                "aws_secret_access_key": config.secret_access_key,
            }
        client = await stack.enter_async_context(
            get_session().create_client(
                "s3",
                region_name=config.region,
                endpoint_url=config.endpoint_url,
                config=_client_config(config),
                **keys,
            )
        )
        return cls(client, stack, config, stale_upload_age,
                   part_dir or Path(tempfile.gettempdir()))  # fmt: skip

    @property
    def backend(self) -> str:
        return "s3"

    def _object_key(self, key: str) -> str:
        # Keys arrive checked (mirror.storage.instrumented); the prefix keeps them apart.
        return self._prefix + key

    @contextlib.contextmanager
    def _calling(self, action: str, key: str) -> Iterator[None]:
        """Map errors, and fail fast while S3 is known to be unreachable."""
        if time.monotonic() < self._down_until:
            raise S3Unreachable(f"s3 {action} {key!r}: S3 was unreachable moments ago")
        try:
            with mapped_errors(action, key):
                yield
        except S3Unreachable:
            self._down_until = time.monotonic() + UNREACHABLE_BACKOFF
            raise

    async def stat(self, key: str) -> ObjectInfo | None:
        try:
            with self._calling("stat", key):
                head = await self._client.head_object(
                    Bucket=self._bucket, Key=self._object_key(key)
                )
        except ObjectNotFound:
            return None
        return ObjectInfo(key, int(head["ContentLength"]), head["LastModified"].timestamp())

    def local_path(self, key: str) -> Path | None:
        return None

    async def read(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        if length == 0:
            return
        last = "" if length is None else str(offset + length - 1)
        with self._calling("read", key):
            answer = await self._client.get_object(
                Bucket=self._bucket, Key=self._object_key(key), Range=f"bytes={offset}-{last}"
            )
        async with answer["Body"] as body:
            while True:
                with self._calling("read", key):
                    chunk = await body.read(_READ_CHUNK)
                if not chunk:
                    return
                yield chunk

    async def get(self, key: str) -> bytes | None:
        try:
            with self._calling("get", key):
                answer = await self._client.get_object(
                    Bucket=self._bucket, Key=self._object_key(key)
                )
                async with answer["Body"] as body:
                    data: bytes = await body.read()
        except ObjectNotFound:
            return None
        return data

    async def put(self, key: str, data: bytes) -> None:
        with self._calling("put", key):
            await self._client.put_object(Bucket=self._bucket, Key=self._object_key(key), Body=data)

    async def writer(self, key: str) -> S3Writer:
        object_key = self._object_key(key)
        with self._calling("write", key):
            pass  # no request yet; only refuse while S3 is known to be down
        part_size = self._config.part_size
        return S3Writer(self._client, self._bucket, object_key, key, part_size, self._part_dir)

    async def delete(self, key: str) -> None:
        # DeleteObject of a missing key succeeds in S3.
        with self._calling("delete", key):
            await self._client.delete_object(Bucket=self._bucket, Key=self._object_key(key))

    async def walk(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self._bucket, Prefix=self._prefix + prefix)
        with self._calling("walk", prefix):
            async for page in pages:
                for item in page.get("Contents", []):
                    key = str(item["Key"])[len(self._prefix) :]
                    yield ObjectInfo(key, int(item["Size"]), item["LastModified"].timestamp())

    async def redirect_url(self, key: str) -> str | None:
        """A presigned GET URL valid for ``presign_ttl``, when ``redirect`` is on."""
        if not self._config.redirect:
            return None
        with self._calling("presign", key):
            url: str = await self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self._bucket, "Key": self._object_key(key)},
                ExpiresIn=max(1, int(self._config.presign_ttl)),
            )
        return url

    async def touch(self, key: str) -> None:
        return None  # see the module docstring

    async def sweep_partials(self) -> int:
        """Abort multipart uploads under the prefix older than ``stale_upload_age``.

        Younger ones may belong to another mirror process filling right now.
        """
        cutoff = time.time() - self._stale_upload_age
        removed = 0
        paginator = self._client.get_paginator("list_multipart_uploads")
        with self._calling("sweep", self._prefix):
            async for page in paginator.paginate(Bucket=self._bucket, Prefix=self._prefix):
                for object_key, upload_id in stale_uploads(page.get("Uploads", []), cutoff):
                    if await self._abort_upload(object_key, upload_id):
                        removed += 1
        return removed

    async def _abort_upload(self, object_key: str, upload_id: str) -> bool:
        try:
            await self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=object_key, UploadId=upload_id
            )
        except ClientError as exc:
            if error_code(exc) == "NoSuchUpload":
                return False  # finished or aborted by its owner meanwhile
            raise
        return True

    async def close(self) -> None:
        await self._stack.aclose()
