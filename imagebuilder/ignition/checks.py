"""Checks of single values in Ignition configs, as Ignition does them: paths,
URLs (schemes per spec version, data URLs, S3 ARNs) and verification hashes.
Each returns Ignition's message for the problem, or None if the value is fine."""

from __future__ import annotations

import base64
import binascii
import posixpath
import re
import string
from urllib.parse import unquote_to_bytes, urlsplit

from . import spec
from .spec import SpecVersion


def check_path(p: str | None) -> str | None:
    """Ignition's validatePath: the message, or None if the path is fine."""
    if not p:
        return "path not specified"
    if not p.startswith("/"):
        return "path not absolute"
    if posixpath.normpath(p) != p or p.startswith("//"):
        return "path is not fully simplified"
    return None


_HEX = set(string.hexdigits)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NOT_URIC = re.compile(r"[^A-Za-z0-9;/?:@&=+$,\-_.!~*'()%]")
# _NOT_URIC: outside RFC 2396 "uric", i.e. what a data URL's payload may not contain unescaped
_S3_ARN = re.compile(r"arn:aws:s3:::[^/]+/.+")
_S3_AP_ARN = re.compile(r"arn:aws:s3:[a-z0-9-]+:\d{12}:accesspoint/[^/]+/object/.+")
_DATA_MEDIATYPE = re.compile(r"[!#$&^_.+\w-]+/[!#$&^_.+\w-]+(;[!#$&^_.+\w-]+=([!#$&^_.+\w%-]+|\"[^\"]*\"))*|"
                             r"(;[!#$&^_.+\w-]+=([!#$&^_.+\w%-]+|\"[^\"]*\"))*")


def check_data_url(url: str) -> str | None:
    body = url[len("data:"):]
    if "," not in body:
        return "invalid data url: missing comma"
    header, payload = body.split(",", 1)
    is_b64 = header.endswith(";base64")
    if is_b64:
        header = header[: -len(";base64")]
    if not _DATA_MEDIATYPE.fullmatch(header):
        return "invalid data url: malformed media type"
    if _NOT_URIC.search(payload):
        return "invalid data character"
    try:
        raw = unquote_to_bytes(payload)
    except ValueError:
        return "invalid data url: bad percent-encoding"
    if is_b64:
        try:
            base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
        except (binascii.Error, ValueError):
            return "invalid data character"
    return None


def url_scheme(url: str) -> str:
    """The scheme of a URL, lower-cased ("" when it has none or does not parse)."""
    try:
        return urlsplit(url).scheme.lower()
    except ValueError:  # e.g. an unbalanced "[" (an invalid IPv6 host)
        return ""


def check_url(url: str, version: SpecVersion, schemes: list[str] | None = None) -> str | None:
    """Ignition's URL validation for resource sources; None if fine."""
    if _CONTROL.search(url) or url.startswith(":"):
        return "unable to parse url"
    if re.search(r"%(?![0-9A-Fa-f]{2})", url):
        return "unable to parse url"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "unable to parse url"
    scheme = parts.scheme.lower()
    allowed = schemes if schemes is not None else spec.UrlScheme.allowed(version)
    if scheme not in allowed:
        return "invalid url scheme"
    if scheme == "data":
        return check_data_url(url)
    if scheme == "arn" and not (_S3_ARN.fullmatch(url) or _S3_AP_ARN.fullmatch(url)):
        return "invalid S3 ARN format"
    if scheme == "s3" and not parts.netloc:
        return "invalid S3 URL: no bucket"
    return None


def check_hash(h: str, version: SpecVersion) -> str | None:
    if "-" not in h:
        return "malformed hash specifier"
    func, _, digest = h.partition("-")
    if func not in spec.HashFunction.allowed(version):
        return "unrecognized hash function"
    if len(digest) != spec.HashFunction(func).hex_length:
        return "incorrect size for hash sum"
    if not set(digest) <= _HEX:
        return "hash sum is not hexadecimal"
    return None
