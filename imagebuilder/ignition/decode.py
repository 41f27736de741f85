"""Decoding of Ignition resources: RFC 2397 data URLs, base64, gzip.

Used by ``ignition merge`` (inline child configs), ``ignition show`` (file
contents) and the ISO customizer (embedded configs). Nothing here fetches
remote sources: for http(s)/s3/gs/tftp/arn sources :func:`decode_contents`
returns ``None`` and the caller lists the reference instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from ..errors import InvalidConfigError

REMOTE_SCHEMES = ("http", "https", "s3", "gs", "tftp", "arn")

MiB = 1 << 20
# A config (a file given to us, or an inline child config) is never larger than this.
from .load import MAX_CONFIG_SIZE  # noqa: E402  (one cap, defined where configs are loaded)
# Hard cap on what one compressed resource may inflate to (a gzip bomb in a config).
MAX_DECOMPRESSED = 256 * MiB
_CHUNK = 256 * 1024


class TooLargeError(InvalidConfigError):
    """A resource or config is larger than the limit the caller set."""


def size_text(n: int) -> str:
    """``33554432`` -> ``32 MiB``; sizes below 1 MiB in KiB or bytes."""
    if n >= MiB and n % MiB == 0:
        return f"{n // MiB} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} bytes"


@dataclass(frozen=True)
class DataURL:
    """A parsed RFC 2397 data URL."""

    mediatype: str = "text/plain"
    params: dict[str, str] = field(default_factory=dict)
    base64: bool = False
    data: bytes = b""


def parse_data_url(url: str, *, where: str = "source") -> DataURL:
    """Parse ``data:[<mediatype>][;base64],<data>``; raise InvalidConfigError if malformed."""
    if not url.lower().startswith("data:"):
        raise InvalidConfigError(f"{where}: not a data URL: {_short(url)}")
    rest = url[5:]
    comma = rest.find(",")
    if comma < 0:
        raise InvalidConfigError(f"{where}: malformed data URL (no ',' before the data): {_short(url)}")
    header, payload = rest[:comma], rest[comma + 1:]
    parts = header.split(";") if header else [""]
    mediatype = parts[0].strip().lower() or "text/plain"
    is_b64 = False
    params: dict[str, str] = {}
    for p in parts[1:]:
        p = p.strip()
        if p.lower() == "base64":
            is_b64 = True
        elif "=" in p:
            k, v = p.split("=", 1)
            params[k.strip().lower()] = unquote_to_bytes(v).decode("utf-8", "replace")
        elif p:
            raise InvalidConfigError(f"{where}: malformed data URL parameter {p!r}")
    if not parts[1:] and mediatype == "text/plain" and not header:
        params.setdefault("charset", "US-ASCII")
    raw = unquote_to_bytes(payload)
    if is_b64:
        data = _b64decode(raw, where)
    else:
        data = raw
    return DataURL(mediatype=mediatype, params=params, base64=is_b64, data=data)


def _b64decode(raw: bytes, where: str) -> bytes:
    cleaned = b"".join(raw.split())  # tolerate line breaks inside the payload
    cleaned = cleaned.translate(bytes.maketrans(b"-_", b"+/"))  # and the URL-safe alphabet
    try:
        return base64.b64decode(cleaned.rstrip(b"=") + b"=" * (-len(cleaned.rstrip(b"=")) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidConfigError(f"{where}: data URL has invalid base64: {e}") from None


def decode_data_url(url: str, *, where: str = "source") -> bytes:
    """The payload of a data URL (base64 or percent-encoded)."""
    return parse_data_url(url, where=where).data


# characters left unescaped in percent-encoded data URLs (besides letters, digits and "_.-~");
# none of them is special to RFC 2397 after the first comma or to URL parsing
_SAFE = "/:@,="


def encode_data_url(data: bytes, *, base64_: bool | None = None, mediatype: str = "") -> str:
    """Encode bytes as a data URL: percent-encoding for short text, base64 otherwise.

    ``base64_`` forces the choice. The output is deterministic.
    """
    from urllib.parse import quote

    if base64_ is None:
        try:
            text = data.decode("utf-8")
            quoted = quote(text, safe=_SAFE)
            base64_ = len(quoted) > len(data) * 4 // 3 + 8
        except UnicodeDecodeError:
            base64_ = True
    if base64_:
        return f"data:{mediatype};base64,{base64.b64encode(data).decode('ascii')}"
    return f"data:{mediatype}," + quote(data.decode("utf-8"), safe=_SAFE)


def iter_gunzip(data: bytes, *, where: str = "contents", limit: int = MAX_DECOMPRESSED) -> Iterator[bytes]:
    """Decompress gzip data (possibly multi-member) as a stream of chunks of at most 256 KiB.

    Raises TooLargeError as soon as the output would exceed ``limit`` bytes, so memory
    stays bounded whatever the input (a gzip bomb), and InvalidConfigError for bad data.
    """
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    buf = data
    total = 0
    try:
        while True:
            before = len(buf)
            chunk = d.decompress(buf, _CHUNK)
            if chunk:
                total += len(chunk)
                if total > limit:
                    raise TooLargeError(f"{where}: decompressed size exceeds the {size_text(limit)} limit")
                yield chunk
            if d.eof:  # end of a member; what follows it (if anything) is the next member
                if not d.unused_data:
                    break
                buf = d.unused_data
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                continue
            buf = d.unconsumed_tail
            if not chunk and (not buf or len(buf) == before):
                break  # input exhausted (or no progress) before the end of the stream
    except zlib.error as e:
        raise InvalidConfigError(f"{where}: compression is gzip but the data is not valid gzip: {e}") from None
    if not d.eof:
        raise InvalidConfigError(f"{where}: compression is gzip but the gzip stream is truncated")


def gunzip(data: bytes, *, where: str = "contents", limit: int = MAX_DECOMPRESSED) -> bytes:
    """Decompress gzip data (possibly multi-member); TooLargeError beyond ``limit`` bytes."""
    out = bytearray()
    for chunk in iter_gunzip(data, where=where, limit=limit):
        out += chunk
    return bytes(out)


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip (mtime 0, no file name)."""
    import gzip

    return gzip.compress(data, compresslevel=9, mtime=0)


def source_scheme(source: str | None) -> str | None:
    if not source:
        return None
    head, sep, _ = source.partition(":")
    return head.lower() if sep else None


def is_remote(source: str | None) -> bool:
    return source_scheme(source) in REMOTE_SCHEMES


def iter_contents(resource: Mapping[str, Any] | None, *, where: str = "contents",
                  limit: int = MAX_DECOMPRESSED) -> Iterator[bytes] | None:
    """The decoded bytes of an inline Resource as a stream of chunks (see :func:`decode_contents`)."""
    if not resource:
        return None
    source = resource.get("source")
    if source is None or source_scheme(source) != "data":
        return None
    data = decode_data_url(source, where=f"{where}.source")
    compression = resource.get("compression") or ""
    if compression == "gzip":
        return iter_gunzip(data, where=where, limit=limit)
    if compression:
        raise InvalidConfigError(f"{where}.compression: unsupported compression {compression!r}")
    if len(data) > limit:
        raise TooLargeError(f"{where}: size exceeds the {size_text(limit)} limit")
    return iter((data,))


def decode_contents(resource: Mapping[str, Any] | None, *, where: str = "contents",
                    limit: int = MAX_DECOMPRESSED) -> bytes | None:
    """Decoded bytes of an Ignition Resource (``{source, compression, ...}``).

    ``None`` when there is no source or the source is remote (not fetched).
    ``compression: gzip`` is undone, at most ``limit`` bytes (TooLargeError beyond).
    Raises InvalidConfigError for malformed data.
    """
    chunks = iter_contents(resource, where=where, limit=limit)
    if chunks is None:
        return None
    out = bytearray()
    for chunk in chunks:
        out += chunk
    return bytes(out)


def verify_hash(data: bytes, spec: str, *, where: str = "verification.hash") -> None:
    """Check ``sha512-<hex>`` / ``sha256-<hex>`` against data; raise InvalidConfigError on mismatch."""
    algo, sep, want = spec.partition("-")
    if not sep or algo not in ("sha512", "sha256"):
        raise InvalidConfigError(f"{where}: unsupported hash {spec!r}")
    got = hashlib.new(algo, data).hexdigest()
    if got != want.lower():
        raise InvalidConfigError(f"{where}: hash mismatch: expected {algo}-{want}, got {algo}-{got}")


def _short(s: str, n: int = 60) -> str:
    return s if len(s) <= n else s[:n] + "…"
