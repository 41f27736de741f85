"""Locating the embed areas of a CoreOS live ISO.

* Ignition/initrd area: ``/coreos/igninfo.json`` ``{file, offset?, length?}``
  (s390x points into ``images/cdboot.img``), else ``/images/ignition.img``,
  else the legacy ``coreiso+`` header at byte 32744 of the System Area.
* Kargs areas: ``/coreos/kargs.json`` ``{default, files[{path, offset, pad?,
  end?}], size}``, else the legacy ``coreKarg`` header at byte 32672 (default
  kargs in the area the header points at, i.e. ``/.cmdline``). Every area
  must hold the same kargs.
* ``/coreos/features.json``: what the OS image supports.
"""

from __future__ import annotations

import enum
import json

from ..errors import BadImageError
from ._record import Record, factory
from .iso9660 import IsoFS, IsoNotFound
from .kargs import _clip, parse_area
from .paths import (EMBED_AREA_MARKERS, FEATURES_PATH, IGNINFO_PATH, IGNITION_IMG_PATH,
                    KARGS_INFO_PATH)

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing costs ~3 ms to import at start-up
if TYPE_CHECKING:
    from typing import Any

LEGACY_INITRD_HEADER_OFFSET = 32768 - 24  # 32744: b"coreiso+", u64 offset, u64 length
LEGACY_KARGS_HEADER_OFFSET = 32768 - 24 - 72  # 32672: b"coreKarg", len, default, 6 offsets
LEGACY_KARGS_MAX_OFFSETS = 6
KARG_AREA_MAX_SIZE = 2048
REBUILD_ALTERNATIVES = ("an ISO without embed areas can be customized by rebuilding it: "
                        "iso customize --add-file SRC:DEST, --karg-append KARG, --karg-delete "
                        "KARG or --volume-id LABEL, with -o OUT")
_MAX_JSON = 1 << 20


class AreaSource(enum.Enum):
    IGNINFO_JSON = "igninfo.json"
    IGNITION_IMG = "ignition.img"
    LEGACY_HEADER = "legacy-header"
    KARGS_JSON = "kargs.json"


class IgnitionArea(Record):
    offset: int
    length: int
    source: AreaSource
    file: str | None  # ISO path the area lives in, if known


class KargsRegion(Record):
    offset: int
    length: int
    pad: str = "#"
    end: str = "\n"
    file: str | None = None


class KargsAreas(Record):
    size: int
    default: str
    regions: tuple[KargsRegion, ...]
    source: AreaSource


class OsFeatures(Record):
    installer_config: bool = False
    installer_config_directives: dict[str, bool] = factory(dict)
    live_initrd_network: bool = False
    present: bool = False
    raw: dict[str, Any] = factory(dict)


def _read_json(fs: IsoFS, path: str, what: str) -> Any | None:
    try:
        e = fs.lookup_file(path)
    except IsoNotFound:
        return None
    if e.size > _MAX_JSON:
        raise BadImageError(f"{fs.path}: {what} is implausibly large ({e.size} bytes)")
    try:
        return json.loads(fs.read_file(e).rstrip(b"\0 \n").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as ex:
        raise BadImageError(f"{fs.path}: decoding {what}: {_clip(str(ex))}") from None


def _u64(b: bytes, i: int) -> int:
    return int.from_bytes(b[i:i + 8], "little")


def _int(v: Any, what: str, fs: IsoFS) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadImageError(f"{fs.path}: {what} is not an integer: {_clip(str(v))}")
    return v


def _str(v: Any, what: str, fs: IsoFS) -> str:
    if not isinstance(v, str):
        raise BadImageError(f"{fs.path}: {what} is not a string: {_clip(str(v))}")
    return v


def locate_ignition_area(fs: IsoFS) -> IgnitionArea:
    info = _read_json(fs, IGNINFO_PATH, "igninfo.json")
    if info is not None:
        if not isinstance(info, dict) or not isinstance(info.get("file"), str):
            raise BadImageError(f"{fs.path}: igninfo.json lacks a 'file' string")
        try:
            e = fs.lookup_file(info["file"].upper())
        except IsoNotFound:
            raise BadImageError(f"{fs.path}: Unrecognized CoreOS ISO image: igninfo.json names "
                                f"{info['file']}, which does not exist") from None
        off = _int(info.get("offset") or 0, "igninfo.json offset", fs)
        length = info.get("length")
        length = (_int(length, "igninfo.json length", fs) if length is not None
                  else e.size - off)
        if off < 0 or length <= 0 or off + length > e.size:
            raise BadImageError(f"{fs.path}: igninfo.json area ({off}+{length}) lies outside "
                                f"{info['file']} ({e.size} bytes)")
        return IgnitionArea(e.offset + off, length, AreaSource.IGNINFO_JSON, info["file"])
    e = fs.try_lookup(IGNITION_IMG_PATH)
    if e is not None and not e.is_dir:
        return IgnitionArea(e.offset, e.size, AreaSource.IGNITION_IMG, "images/ignition.img")
    hdr = fs.pread(LEGACY_INITRD_HEADER_OFFSET, 24)
    if hdr[:8] == b"coreiso+":
        off, length = _u64(hdr, 8), _u64(hdr, 16)
        if length == 0 or off + length > fs.file_size:
            raise BadImageError(f"{fs.path}: coreiso+ header points outside the image")
        return IgnitionArea(off, length, AreaSource.LEGACY_HEADER, None)
    raise BadImageError(f"{fs.path}: Unrecognized CoreOS ISO image: no Ignition embed area "
                        "(no coreos/igninfo.json, images/ignition.img or coreiso+ header)",
                        hint=REBUILD_ALTERNATIVES)


def has_embed_areas(fs: IsoFS) -> bool:
    """Does the ISO carry CoreOS embed areas (by metadata file or System Area header)?"""
    if any(fs.try_lookup(p) is not None
           for p in (IGNINFO_PATH, IGNITION_IMG_PATH, KARGS_INFO_PATH, *EMBED_AREA_MARKERS)):
        return True
    return (fs.pread(LEGACY_INITRD_HEADER_OFFSET, 8) == b"coreiso+"
            or fs.pread(LEGACY_KARGS_HEADER_OFFSET, 8) == b"coreKarg")


def _check_kargs_agree(fs: IsoFS, areas: KargsAreas) -> tuple[str | None, str | None]:
    """(current kargs, None), or (None, what is wrong) for damaged areas."""
    current: str | None = None
    for r in areas.regions:
        try:
            k = parse_area(fs.pread(r.offset, r.length), pad=r.pad, end=r.end)
        except BadImageError as e:
            return None, f"{e.message} at offset {r.offset}"
        if "\n" in k or "\0" in k or (r.end in k and r.end != " "):
            return None, f"kargs area at offset {r.offset} holds more than one line: {_clip(k)}"
        if current is None:
            current = k
        elif k != current:
            return None, (f"kargs don't match at all offsets! (expected {_clip(current)}, but "
                          f"offset {r.offset} has: {_clip(k)})")
    return current, None


def locate_kargs_areas(fs: IsoFS) -> tuple[KargsAreas, str | None, str | None] | None:
    """(areas, current kargs, None), (areas, None, problem) when the areas' contents are
    damaged, or None if the ISO has no kargs embed areas."""
    info = _read_json(fs, KARGS_INFO_PATH, "kargs.json")
    if info is not None:
        if not isinstance(info, dict) or not {"size", "default", "files"} <= set(info):
            raise BadImageError(f"{fs.path}: kargs.json lacks size/default/files")
        size = _int(info["size"], "kargs.json size", fs)
        default = _str(info["default"], "kargs.json default", fs)
        files = info["files"]
        if not isinstance(files, list):
            raise BadImageError(f"{fs.path}: kargs.json files is not a list")
        if size > KARG_AREA_MAX_SIZE:
            raise BadImageError(f"{fs.path}: karg embed area size larger than "
                                f"{KARG_AREA_MAX_SIZE} (found {size})")
        if size < 1 or len(default.encode()) > size:
            raise BadImageError(f"{fs.path}: default kargs size {len(default.encode())} larger "
                                f"than embed areas ({size})")
        regions = []
        for loc in files:
            if not isinstance(loc, dict) or "path" not in loc or "offset" not in loc:
                raise BadImageError(f"{fs.path}: kargs.json files entry lacks path/offset")
            path = _str(loc["path"], "kargs.json path", fs)
            try:
                e = fs.lookup_file(path.upper())
            except IsoNotFound:
                raise BadImageError(f"{fs.path}: kargs.json names {_clip(path)}, which does not "
                                    "exist") from None
            off = _int(loc["offset"], "kargs.json offset", fs)
            if off < 0 or off + size > e.size:
                raise BadImageError(f"{fs.path}: kargs area {_clip(path)}+{off} runs past the "
                                    "file end")
            pad = _str(loc.get("pad") or "#", "kargs.json pad", fs)
            end = _str(loc.get("end") or "\n", "kargs.json end", fs)
            if len(pad.encode()) != 1 or len(end.encode()) != 1:
                raise BadImageError(f"{fs.path}: kargs.json pad/end must be one byte each")
            regions.append(KargsRegion(e.offset + off, size, pad, end, path))
        if not regions:
            raise BadImageError(f"{fs.path}: No karg embed areas found; corrupted CoreOS ISO "
                                "image.")
        regions.sort(key=lambda r: r.offset)
        areas = KargsAreas(size, default, tuple(regions), AreaSource.KARGS_JSON)
        return (areas, *_check_kargs_agree(fs, areas))
    hdr = fs.pread(LEGACY_KARGS_HEADER_OFFSET, 72)
    if hdr[:8] != b"coreKarg":
        return None
    size = _u64(hdr, 8)
    if size > KARG_AREA_MAX_SIZE or size < 1:
        raise BadImageError(f"{fs.path}: karg embed area length larger than "
                            f"{KARG_AREA_MAX_SIZE} (found {size})")
    default = parse_area(fs.pread(_u64(hdr, 16), size))
    regions = []
    for i in range(LEGACY_KARGS_MAX_OFFSETS):
        off = _u64(hdr, 24 + 8 * i)
        if off == 0:
            break
        fs.pread(off, size)  # bounds check
        regions.append(KargsRegion(off, size))
    if not regions:
        raise BadImageError(f"{fs.path}: No karg embed areas found; corrupted CoreOS ISO image.")
    areas = KargsAreas(size, default, tuple(regions), AreaSource.LEGACY_HEADER)
    return (areas, *_check_kargs_agree(fs, areas))


def parse_features(raw: Any, where: str) -> OsFeatures:
    """features.json (already JSON-decoded) of an ISO or a PXE initramfs."""
    if not isinstance(raw, dict):
        raise BadImageError(f"parsing OS features {where}: not a JSON object")
    directives = raw.get("installer-config-directives") or {}
    if not isinstance(directives, dict):
        raise BadImageError(f"parsing OS features {where}: installer-config-directives is "
                            "not an object")
    return OsFeatures(
        installer_config=bool(raw.get("installer-config", False)),
        installer_config_directives={str(k): bool(v) for k, v in directives.items()},
        live_initrd_network=bool(raw.get("live-initrd-network", False)),
        present=True,
        raw=raw,
    )


def read_features(fs: IsoFS) -> OsFeatures:
    raw = _read_json(fs, FEATURES_PATH, "features.json")
    return OsFeatures() if raw is None else parse_features(raw, f"{fs.path}:/coreos/features.json")
