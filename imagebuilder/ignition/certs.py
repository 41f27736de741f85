"""X.509 certificates inside Ignition configs: find them and check their validity window.

Certificates live in ``ignition.security.tls.certificateAuthorities`` (inline data
URLs) and in ``storage.files`` entries whose decoded contents hold PEM blocks.
Remote sources are never fetched.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidConfigError
from . import decode

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", re.S)

DEFAULT_WINDOW = dt.timedelta(hours=24)
MAX_BUNDLE_SIZE = 8 << 20  # a CA bundle (Mozilla's is ~250 KiB); larger files are not scanned


@dataclass(frozen=True)
class CertInfo:
    where: str  # JSON path of the resource holding it
    index: int  # position in its PEM bundle
    subject: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"where": self.where, "index": self.index, "subject": self.subject,
                "issuer": self.issuer, "notBefore": self.not_before.isoformat(),
                "notAfter": self.not_after.isoformat(), "sha256": self.sha256}


def has_pem_certificate(data: bytes) -> bool:
    return _PEM_CERT.search(data) is not None


def parse_pem_bundle(data: bytes, where: str) -> list[CertInfo]:
    """Every certificate in a PEM bundle; unparsable blocks raise InvalidConfigError."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    out: list[CertInfo] = []
    for i, m in enumerate(_PEM_CERT.finditer(data)):
        try:  # the certificate is parsed lazily: reading its fields can fail too
            cert = x509.load_pem_x509_certificate(m.group(0))
            out.append(CertInfo(
                where=where, index=i,
                subject=cert.subject.rfc4514_string(),
                issuer=cert.issuer.rfc4514_string(),
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                sha256=cert.fingerprint(hashes.SHA256()).hex(),
            ))
        except ValueError as e:
            raise InvalidConfigError(f"{where}: certificate #{i + 1} cannot be parsed: {e}") from None
    return out


def config_certificates(config: Mapping[str, Any], problems: list[str] | None = None) -> list[CertInfo]:
    """Certificates in CA entries and in inline files of a (3.x) config.

    Undecodable resources and unparsable certificates raise InvalidConfigError, or,
    when ``problems`` is given, are described there and skipped.
    """
    found: list[CertInfo] = []
    ign = config.get("ignition") or {}
    cas = ((ign.get("security") or {}).get("tls") or {}).get("certificateAuthorities") or []
    sources: list[tuple[str, Any, bool]] = [
        (f"ignition.security.tls.certificateAuthorities[{i}]", ca, True) for i, ca in enumerate(cas)]
    sources += [(f"storage.files[{i}] ({f.get('path')})", f.get("contents"), False)
                for i, f in enumerate((config.get("storage") or {}).get("files") or [])]
    for where, res, is_ca in sources:
        try:
            data = decode.decode_contents(res, where=where, limit=MAX_BUNDLE_SIZE)
            if data is not None and (is_ca or has_pem_certificate(data)):
                found += parse_pem_bundle(data, where)
        except decode.TooLargeError as e:
            if not is_ca:
                continue  # a file this large is not a certificate bundle: not looked at
            if problems is None:
                raise
            problems.append(f"{e.message} (certificate bundles are read up to that size)")
        except InvalidConfigError as e:
            if problems is None:
                raise
            problems.append(e.message)
    return found


def expiry_warnings(certs: list[CertInfo], *, now: dt.datetime | None = None,
                    window: dt.timedelta = DEFAULT_WINDOW) -> list[str]:
    """Warnings for certificates that are expired or expire within ``window``."""
    now = now or dt.datetime.now(dt.timezone.utc)
    out: list[str] = []
    for c in certs:
        label = f"{c.where}: certificate {c.subject!r}"
        if c.index:
            label += f" (#{c.index + 1} in bundle)"
        if c.not_after <= now:
            out.append(f"{label} expired on {c.not_after:%Y-%m-%d %H:%M:%S} UTC")
        elif c.not_after - now <= window:
            hours = (c.not_after - now).total_seconds() / 3600
            out.append(f"{label} expires within {_fmt_window(window)}: on "
                       f"{c.not_after:%Y-%m-%d %H:%M:%S} UTC (in {hours:.1f} h)")
        elif c.not_before > now:
            out.append(f"{label} is not valid yet (from {c.not_before:%Y-%m-%d %H:%M:%S} UTC)")
    return out


def _fmt_window(w: dt.timedelta) -> str:
    hours = w.total_seconds() / 3600
    return f"{hours:g} hours"
