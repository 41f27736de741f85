"""A minimal, read-only ISO9660 reader: just enough to find files by path.

Only the primary volume descriptor is used (Rock Ridge and Joliet are ignored,
but their presence is harmless). Reading never loads the image: the volume
descriptors and the directory extents on the looked-up path are read with
``os.pread``, and file contents only when asked for.

Name matching follows coreos-installer: a record name loses its ``;N`` version
suffix and a trailing ``.``; lookups compare case-insensitively, so
``coreos/igninfo.json`` finds ``COREOS/IGNINFO.JSO;1`` only if spelled as the
8.3 name (``COREOS/IGNINFO.JSO``) -- exactly what the embed-area JSON files
expect. Directory records whose identifier is the single byte ``0x00`` or
``0x01`` (``.`` and ``..``) are skipped; the s390x images have a ``..`` record
named ``0x00`` that stricter parsers reject.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator

from ..errors import BadImageError
from ._record import Record

SECTOR_SIZE = 2048
_FIRST_DESCRIPTOR_SECTOR = 16
_MAX_DESCRIPTORS = 64
_MAX_DIR_SIZE = 64 << 20  # sanity limit for one directory extent
_MAX_DEPTH = 64

_VD_BOOT, _VD_PRIMARY, _VD_SUPPLEMENTARY, _VD_TERMINATOR = 0, 1, 2, 255
_VERSION_SUFFIX = re.compile(rb";\d*$")


class IsoNotFound(BadImageError):
    """A path does not exist in the ISO9660 tree."""


class DirEntry(Record):
    """One directory record: where the data lives and how long it is."""

    name: str
    extent: int  # logical block (sector) number
    size: int
    is_dir: bool

    @property
    def offset(self) -> int:
        """Byte offset of the data in the image."""
        return self.extent * SECTOR_SIZE


class VolumeDescriptor(Record):
    type_id: int
    name: str  # "boot", "primary", "supplementary", "unknown"
    escape: bytes = b""  # a supplementary descriptor's escape sequences (Joliet: %/@ %/C %/E)


_JOLIET_ESCAPES = (b"%/@", b"%/C", b"%/E")


def _pvd_date(raw: bytes) -> int | None:
    """A volume descriptor date ('YYYYMMDDhhmmsscc' + offset in 15-min units) as Unix time."""
    digits = raw[:16].decode("ascii", "replace")
    if not digits.isdigit() or digits[:4] == "0000":
        return None
    import calendar
    import time

    try:
        t = time.strptime(digits[:14], "%Y%m%d%H%M%S")
    except ValueError:
        return None
    tz = int.from_bytes(raw[16:17], "little", signed=True)
    return calendar.timegm(t) - tz * 15 * 60


def normalize_name(name: str | bytes) -> str:
    """The comparison key of a record name or a path component."""
    if isinstance(name, str):
        name = name.encode("utf-8", "surrogateescape")
    name = _VERSION_SUFFIX.sub(b"", name)
    if name.endswith(b"."):
        name = name[:-1]
    return name.decode("latin-1").upper()


def _record_name(raw: bytes) -> str:
    raw = _VERSION_SUFFIX.sub(b"", raw)
    if raw.endswith(b"."):
        raw = raw[:-1]
    return raw.split(b"\0", 1)[0].decode("latin-1")


def _parse_record(buf: bytes, pos: int, length: int) -> tuple[DirEntry | None, bytes]:
    """Parse the record at buf[pos:pos+length]; returns (entry or None for ./.., raw name)."""
    if length < 34 or pos + length > len(buf):
        raise BadImageError("incomplete directory record; corrupt ISO?")
    extent = int.from_bytes(buf[pos + 2:pos + 6], "little")
    size = int.from_bytes(buf[pos + 10:pos + 14], "little")
    flags = buf[pos + 25]
    name_len = buf[pos + 32]
    if 33 + name_len > length:
        raise BadImageError("directory record name overruns the record; corrupt ISO?")
    raw = bytes(buf[pos + 33:pos + 33 + name_len])
    if name_len == 1 and raw[0] in (0, 1):
        return None, raw
    return DirEntry(_record_name(raw), extent, size, bool(flags & 2)), raw


class IsoFS:
    """An open ISO9660 image (read-only view through a file descriptor)."""

    def __init__(self, fd: int, *, path: str = "<iso>"):
        self.fd = fd
        self.path = path
        self.file_size = os.fstat(fd).st_size
        self._dir_cache: dict[int, list[DirEntry]] = {}
        self.descriptors: list[VolumeDescriptor] = []
        self.system_id = ""
        self.volume_id = ""
        self.volume_space_size = 0
        self._pvd_dates = (b"", b"")  # (modification, creation) date fields of the PVD
        self.root: DirEntry | None = None
        self._read_descriptors()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> IsoFS:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- low level ---------------------------------------------------------
    def pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.file_size:
            raise BadImageError(
                f"{self.path}: reading {length} bytes at {offset} runs past the end of the image "
                f"({self.file_size} bytes)")
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise BadImageError(f"{self.path}: short read of {length} bytes at {offset}")
        return data

    @property
    def volume_epoch(self) -> int | None:
        """The volume modification (else creation) date, as a Unix time."""
        return _pvd_date(self._pvd_dates[0]) or _pvd_date(self._pvd_dates[1])

    @property
    def has_joliet(self) -> bool:
        """A supplementary volume descriptor with a Joliet escape sequence."""
        return any(d.type_id == _VD_SUPPLEMENTARY and d.escape in _JOLIET_ESCAPES
                   for d in self.descriptors)

    def _read_descriptors(self) -> None:
        if self.file_size < (_FIRST_DESCRIPTOR_SECTOR + 1) * SECTOR_SIZE:
            raise BadImageError(f"{self.path}: too small to be an ISO9660 image "
                                f"({self.file_size} bytes)")
        for i in range(_MAX_DESCRIPTORS):
            off = (_FIRST_DESCRIPTOR_SECTOR + i) * SECTOR_SIZE
            if off + SECTOR_SIZE > self.file_size:
                break
            sec = self.pread(off, SECTOR_SIZE)
            if sec[1:6] != b"CD001":
                raise BadImageError(f"{self.path}: not an ISO9660 image (no volume descriptor "
                                    f"at sector {_FIRST_DESCRIPTOR_SECTOR + i})")
            t = sec[0]
            if t == _VD_TERMINATOR:
                break
            kind = {_VD_BOOT: "boot", _VD_PRIMARY: "primary",
                    _VD_SUPPLEMENTARY: "supplementary"}.get(t, "unknown")
            self.descriptors.append(VolumeDescriptor(t, kind, bytes(sec[88:91])))
            if t == _VD_PRIMARY and self.root is None:
                self.system_id = sec[8:40].decode("latin-1").rstrip(" \0")
                self.volume_id = sec[40:72].decode("latin-1").rstrip(" \0")
                self.volume_space_size = int.from_bytes(sec[80:84], "little")
                self._pvd_dates = (bytes(sec[830:847]), bytes(sec[813:830]))
                rec_len = sec[156]
                root, _ = _parse_record(sec, 156, rec_len if rec_len else 34)
                if root is None:  # the root record is named 0x00 by the standard
                    extent = int.from_bytes(sec[158:162], "little")
                    size = int.from_bytes(sec[166:170], "little")
                    root = DirEntry(".", extent, size, True)
                if not root.is_dir:
                    raise BadImageError(f"{self.path}: root directory record is not a directory")
                self.root = root
        if self.root is None:
            raise BadImageError(f"{self.path}: no primary volume descriptor found in ISO")
        if self.volume_space_size * SECTOR_SIZE > self.file_size:
            raise BadImageError(
                f"{self.path}: ISO image is incomplete ({self.file_size} bytes, volume needs "
                f"{self.volume_space_size * SECTOR_SIZE})")

    # -- directories -------------------------------------------------------
    def list_dir(self, d: DirEntry) -> list[DirEntry]:
        """The records of a directory, without '.' and '..'."""
        if not d.is_dir:
            raise BadImageError(f"{d.name} is not a directory")
        cached = self._dir_cache.get(d.extent)
        if cached is not None:
            return cached
        if d.size > _MAX_DIR_SIZE:
            raise BadImageError(f"{self.path}: directory {d.name} is implausibly large ({d.size})")
        buf = self.pread(d.offset, d.size)
        out: list[DirEntry] = []
        pos = 0
        while pos < len(buf):
            length = buf[pos]
            if length == 0:
                # records never span sectors: skip to the next sector
                pos = (pos // SECTOR_SIZE + 1) * SECTOR_SIZE
                continue
            entry, _ = _parse_record(buf, pos, length)
            if entry is not None:
                out.append(entry)
            pos += length
        self._dir_cache[d.extent] = out
        return out

    def lookup(self, path: str) -> DirEntry:
        """Resolve a path ('/' separated, '.'/'..' resolved, case-insensitive)."""
        assert self.root is not None
        comps: list[str] = []
        for c in path.split("/"):
            if c in ("", "."):
                continue
            if c == "..":
                if comps:
                    comps.pop()
                continue
            comps.append(c)
        cur = self.root
        for i, c in enumerate(comps):
            if not cur.is_dir:
                raise IsoNotFound(f"component {comps[i - 1]!r} in path {path} is not a directory")
            key = normalize_name(c)
            for e in self.list_dir(cur):
                if normalize_name(e.name) == key:
                    cur = e
                    break
            else:
                where = "/".join(comps[:i]) or "/"
                raise IsoNotFound(f"no record for {c} in directory {where}")
        return cur

    def try_lookup(self, path: str) -> DirEntry | None:
        try:
            return self.lookup(path)
        except IsoNotFound:
            return None

    def lookup_file(self, path: str) -> DirEntry:
        e = self.lookup(path)
        if e.is_dir:
            raise BadImageError(f"{path} is a directory in the ISO, expected a file")
        return e

    def read_file(self, e: DirEntry, offset: int = 0, length: int | None = None) -> bytes:
        if length is None:
            length = e.size - offset
        if offset < 0 or offset + length > e.size:
            raise BadImageError(f"reading {length} bytes at {offset} of {e.name} runs past its end")
        return self.pread(e.offset + offset, length)

    def walk(self, d: DirEntry | None = None, prefix: str = "") -> Iterator[tuple[str, DirEntry]]:
        """Every record under d (default: root), depth-first, in directory order.

        A directory that contains itself (a loop of extents) or a tree deeper than
        ``_MAX_DEPTH`` is a corrupt image."""
        d = d or self.root
        assert d is not None
        stack = [(iter(self.list_dir(d)), prefix)]
        seen = {d.extent}
        while stack:
            entries, pre = stack[-1]
            e = next(entries, None)
            if e is None:
                stack.pop()
                continue
            p = f"{pre}{e.name}"
            yield p, e
            if e.is_dir:
                if e.extent in seen:
                    raise BadImageError(f"{self.path}: directory loop at {p[:200]}; corrupt ISO?")
                if len(stack) >= _MAX_DEPTH:
                    raise BadImageError(f"{self.path}: directories nested deeper than "
                                        f"{_MAX_DEPTH} levels; corrupt ISO?")
                seen.add(e.extent)
                stack.append((iter(self.list_dir(e)), p + "/"))


def open_iso(path: str | os.PathLike[str], *, writable: bool = False,
             lock: bool = False, notify=None) -> IsoFS:
    """Open an ISO file (read-only unless writable) and parse its volume descriptors.

    ``lock``: hold a flock on it while open -- exclusive when writable (one read-modify-write
    at a time), shared otherwise (no reading while another process edits it in place).
    ``notify(message)`` is told once if that means waiting.
    """
    from ..errors import UserInputError

    try:
        fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UserInputError(f"{path}: ISO image not found") from None
    except IsADirectoryError:
        raise UserInputError(f"{path}: is a directory, expected an ISO image") from None
    except PermissionError:
        raise UserInputError(f"{path}: permission denied"
                             + (" (opening for writing)" if writable else "")) from None
    except OSError as e:
        raise UserInputError(f"{path}: cannot open: {e.strerror or e}") from None
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise UserInputError(f"{path}: is a directory, expected an ISO image")
        if lock:
            from ..fsutil import lock_fd

            lock_fd(fd, path, exclusive=writable, notify=notify)
        return IsoFS(fd, path=os.fspath(path))
    except BaseException:
        os.close(fd)
        raise


def is_iso(path: str | os.PathLike[str]) -> bool:
    """An ISO 9660 image? (a volume descriptor at sector 16; False if unreadable)."""
    try:
        with open(path, "rb") as f:
            f.seek(_FIRST_DESCRIPTOR_SECTOR * SECTOR_SIZE)
            return f.read(6)[1:6] == b"CD001"
    except OSError:
        return False
