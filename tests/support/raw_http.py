"""HTTP over a raw socket: send exact bytes, read back whatever comes, parse it leniently.

aiohttp's client refuses to send most malformed requests, so the hostile-input
tests write their bytes themselves and read the answer here, until the server
closes the connection or a deadline passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field

# aiohttp echoes the request's version, so "HTTP/0.9" and "HTTP/2.0" status lines occur too.
_STATUS_LINE = re.compile(rb"HTTP/[0-9]\.[0-9] ([0-9]{3})[^\r\n]*\r\n")


@dataclass
class RawResponse:
    """One response parsed out of the bytes the server sent."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class RawExchange:
    """What came back for the bytes sent: responses, leftovers, how it ended."""

    responses: list[RawResponse] = field(default_factory=list)
    unparsed: bytes = b""
    timed_out: bool = False
    received: bytes = b""

    @property
    def statuses(self) -> list[int]:
        """The status of every response, in order."""
        return [r.status for r in self.responses]


async def exchange(
    host: str, port: int, data: bytes, *, wait: float = 5.0, head: bool = False
) -> RawExchange:
    """Send ``data`` and read until the server closes (or ``wait`` seconds pass)."""
    reader, writer = await asyncio.open_connection(host, port)
    chunks: list[bytes] = []
    timed_out = False
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
    except TimeoutError:
        timed_out = True
    except ConnectionError:
        pass  # a reset is a clean refusal as far as the tests are concerned
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    received = b"".join(chunks)
    result = parse_responses(received, head=head)
    result.timed_out = timed_out
    result.received = received
    return result


def parse_responses(data: bytes, *, head: bool = False) -> RawExchange:
    """Every complete response in ``data``; what does not parse is left in ``unparsed``."""
    result = RawExchange()
    while data:
        parsed = _one_response(data, head)
        if parsed is None:
            break
        response, data = parsed
        if response.status >= 200:  # 100 Continue is not an answer
            result.responses.append(response)
    result.unparsed = data
    return result


def _one_response(data: bytes, head: bool) -> tuple[RawResponse, bytes] | None:
    match = _STATUS_LINE.match(data)
    end = data.find(b"\r\n\r\n", match.end() - 2) if match else -1
    if match is None or end < 0:
        return None
    headers = {}
    for line in data[match.end() : end].split(b"\r\n") if end >= match.end() else []:
        name, sep, value = line.partition(b":")
        if not sep:
            return None
        headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    status = int(match.group(1))
    rest = data[end + 4 :]
    # aiohttp's own 400 for a request it could not parse has a body, even for HEAD.
    if head and len(rest) == int(headers.get("content-length", -1)):
        return RawResponse(status, headers, rest), b""
    if head or status in (204, 304) or status < 200:
        return RawResponse(status, headers, b""), rest
    if "content-length" in headers:
        length = int(headers["content-length"])
        if len(rest) < length:
            return None
        return RawResponse(status, headers, rest[:length]), rest[length:]
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return _chunked(status, headers, rest)
    return RawResponse(status, headers, rest), b""


def _chunked(status: int, headers: dict[str, str], data: bytes) -> tuple[RawResponse, bytes] | None:
    body = bytearray()
    while True:
        line_end = data.find(b"\r\n")
        if line_end < 0:
            return None
        size = int(data[:line_end].split(b";")[0], 16)
        data = data[line_end + 2 :]
        if size == 0:
            trailer_end = data.find(b"\r\n")
            return RawResponse(status, headers, bytes(body)), data[trailer_end + 2 :]
        body += data[:size]
        data = data[size + 2 :]
