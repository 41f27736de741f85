"""``IsoImage``: open -> parse the embed areas -> mutate in memory -> patches.

Nothing is written here. :meth:`IsoImage.patches` turns the in-memory state
into a list of :class:`Region` byte patches, each checked to fit its area
before it is returned; :mod:`imagebuilder.iso.write` applies them.

The areas' *locations* come from the ISO's metadata (igninfo.json, kargs.json, the
System Area headers); their *contents* may be damaged (a torn write, garbage, a
decompression bomb). Such contents are reported (:attr:`IsoImage.area_problem`,
:attr:`IsoImage.kargs_problem`) instead of making the ISO unusable: reading them
fails with the reason, and replacing them (``embed -f``, ``remove``, ``reset``,
``customize -f``) repairs the ISO.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from ..errors import BadImageError, InternalError, UserInputError
from . import cpio
from ._record import Record
from .areas import (IgnitionArea, KargsAreas, OsFeatures, locate_ignition_area,
                    locate_kargs_areas, read_features)
from .cpio import Member
from .iso9660 import IsoFS, open_iso
from .kargs import format_area, modify_kargs
from .paths import IGNITION_PATH, NETWORK_DIR

NO_KARGS_MSG = "No karg embed areas found; old or corrupted CoreOS ISO image."
REPAIR_HINT = "`iso ignition remove`, `iso reset` or `iso ignition embed -f` overwrite it"


def _nonzero(data: bytes) -> bool:
    return data.count(0) != len(data)


class InitrdTooLarge(UserInputError):
    """The compressed initrd does not fit the Ignition embed area."""


class Region(Record):
    """A byte patch: write ``data`` at ``offset``."""

    offset: int
    data: bytes

    @property
    def end(self) -> int:
        return self.offset + len(self.data)


class IsoImage:
    """A CoreOS live ISO's embed areas, parsed; mutations stay in memory."""

    def __init__(self, fs: IsoFS):
        self.fs = fs
        self.path = fs.path
        self.file_size = fs.file_size
        self.volume_id = fs.volume_id
        self.system_id = fs.system_id
        self.ignition_area: IgnitionArea = locate_ignition_area(fs)
        raw = fs.pread(self.ignition_area.offset, self.ignition_area.length)
        self.original_area_data = raw
        #: why the Ignition area's contents cannot be read (None: they can)
        self.area_problem: str | None = None
        self._members: dict[str, Member] = {}
        if _nonzero(raw):
            try:
                self._members = cpio.read_initrd(raw)
            except cpio.InitrdError as e:
                self.area_problem = (f"decoding initrd embed area at offset "
                                     f"{self.ignition_area.offset}: {e.message}")
        self._initrd_modified = False
        found = locate_kargs_areas(fs)
        self.kargs_areas: KargsAreas | None = found[0] if found else None
        self.original_kargs: str | None = found[1] if found else None
        #: why the kargs areas' contents cannot be read (None: they can)
        self.kargs_problem: str | None = found[2] if found else None
        self._kargs: str | None = self.original_kargs
        self._kargs_modified = False
        self.features: OsFeatures = read_features(fs)

    # -- life cycle -------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str], *, writable: bool = False, lock: bool = True,
             notify: Callable[[str], None] | None = None) -> IsoImage:
        """Open and parse. ``writable``: for an in-place edit (opened read-write, locked
        exclusively until closed); otherwise read-only under a shared lock, so nobody
        reads an ISO while another process rewrites its areas."""
        fs = open_iso(path, writable=writable, lock=lock, notify=notify)
        try:
            return cls(fs)
        except BaseException:
            fs.close()
            raise

    def close(self) -> None:
        self.fs.close()

    def __enter__(self) -> IsoImage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the initrd (Ignition config + network keyfiles + anything else) ---------
    def _check_area(self) -> None:
        if self.area_problem is not None and not self._initrd_modified:
            raise BadImageError(f"{self.path}: {self.area_problem}", hint=REPAIR_HINT)

    @property
    def area_damaged(self) -> bool:
        return self.area_problem is not None and not self._initrd_modified

    def discard_damaged_area(self) -> str | None:
        """Forget undecodable area contents (they will be overwritten); the reason, if any."""
        if not self.area_damaged:
            return None
        self._members = {}
        self._initrd_modified = True
        return self.area_problem

    @property
    def members(self) -> dict[str, Member]:
        """A copy of the embedded initrd members (path -> Member)."""
        self._check_area()
        return dict(self._members)

    def set_members(self, members: Mapping[str, Member]) -> None:
        self._members = dict(members)
        self._initrd_modified = True

    @property
    def has_ignition(self) -> bool:
        self._check_area()
        return IGNITION_PATH in self._members

    @property
    def ignition(self) -> bytes | None:
        self._check_area()
        m = self._members.get(IGNITION_PATH)
        return m.data if m else None

    def set_ignition(self, config: bytes) -> None:
        self._check_area()
        self._members[IGNITION_PATH] = Member(bytes(config))
        self._initrd_modified = True

    def remove_ignition(self) -> None:
        self._check_area()
        self._members.pop(IGNITION_PATH, None)
        self._initrd_modified = True

    @property
    def network_files(self) -> dict[str, bytes]:
        """Embedded NetworkManager keyfiles: basename -> contents (sorted)."""
        self._check_area()
        prefix = NETWORK_DIR + "/"
        return {p[len(prefix):]: m.data for p, m in sorted(self._members.items())
                if p.startswith(prefix) and "/" not in p[len(prefix):]}

    @property
    def has_network(self) -> bool:
        return bool(self.network_files)

    def remove_network(self) -> None:
        self._check_area()
        prefix = NETWORK_DIR + "/"
        self._members = {p: m for p, m in self._members.items()
                         if not (p.startswith(prefix) and "/" not in p[len(prefix):])}
        self._initrd_modified = True

    def add_network_keyfiles(self, keyfiles: Iterable[tuple[str, bytes]]) -> None:
        """Add keyfiles (name, contents) at etc/coreos-firstboot-network/NAME, mode 0600."""
        self._check_area()
        if not self.features.live_initrd_network:
            raise UserInputError("This OS image does not support customizing network settings.")
        seen: set[str] = set()
        for name, data in keyfiles:
            if not name or "/" in name or name in (".", ".."):
                raise UserInputError(f"invalid keyfile name {name!r}")
            if name in seen:
                raise UserInputError(f"multiple input files named '{name}'")
            seen.add(name)
            self._members[f"{NETWORK_DIR}/{name}"] = Member(bytes(data), 0o100600)
        self._initrd_modified = True

    # -- kernel arguments ---------------------------------------------------------
    @property
    def kargs_supported(self) -> bool:
        return self.kargs_areas is not None

    def _areas(self) -> KargsAreas:
        if self.kargs_areas is None:
            raise BadImageError(f"{self.path}: {NO_KARGS_MSG}")
        return self.kargs_areas

    @property
    def kargs_damaged(self) -> bool:
        return self.kargs_problem is not None and not self._kargs_modified

    @property
    def kargs(self) -> str:
        self._areas()
        if self.kargs_damaged:
            raise BadImageError(f"{self.path}: {self.kargs_problem}",
                                hint="`iso kargs reset` or `iso reset` rewrite the kargs areas")
        assert self._kargs is not None
        return self._kargs

    @property
    def default_kargs(self) -> str:
        return self._areas().default

    @property
    def kargs_max_length(self) -> int:
        return self._areas().size - 1

    def set_kargs(self, kargs: str) -> None:
        areas = self._areas()
        for r in areas.regions:  # validate now, so errors surface before any write
            format_area(kargs, size=r.length, pad=r.pad, end=r.end, source=str(self.path))
        self._kargs = kargs.strip()
        self._kargs_modified = True

    def modify_kargs(self, *, append: Iterable[str] = (), delete: Iterable[str] = (),
                     replace: Iterable[str] = ()) -> str:
        new = modify_kargs(self.kargs, append=list(append), delete=list(delete),
                           replace=list(replace), source=str(self.path))
        self.set_kargs(new)
        return new

    def reset_kargs(self) -> None:
        self.set_kargs(self.default_kargs)

    # -- whole-image ----------------------------------------------------------------
    def reset(self) -> None:
        """Back to pristine: empty initrd area, default kargs (damaged contents included)."""
        self.set_members({})
        if self.kargs_supported:
            self.reset_kargs()

    @property
    def is_customized(self) -> bool:
        """coreos-installer's definition: Ignition, network, or non-default kargs (damaged
        areas count: something was written there)."""
        if self.area_damaged or self.kargs_damaged:
            return True
        return (self.has_ignition or self.has_network
                or (self.kargs_supported and self.kargs != self.default_kargs))

    @property
    def area_in_use(self) -> bool:
        return _nonzero(self.original_area_data)

    def initrd_bytes(self) -> bytes:
        """The compressed initrd the area will hold (b"" = all zeros)."""
        if not self._members:
            return b""
        archive = cpio.newc_archive(self._members)
        if len(archive) > cpio.DEFAULT_LIMIT:
            raise InitrdTooLarge(
                f"the embedded files total {len(archive)} bytes; the limit is "
                f"{cpio.DEFAULT_LIMIT >> 20} MiB (what every reader accepts)")
        return cpio.xz_compress(archive)

    def patches(self) -> list[Region]:
        """Byte patches for every modified area, each checked to fit, sorted by offset."""
        out: list[Region] = []
        if self._initrd_modified:
            area = self.ignition_area
            data = self.initrd_bytes()
            if len(data) > area.length:
                raise InitrdTooLarge(
                    f"Compressed initramfs is too large: {len(data)} > {area.length}",
                    hint=f"the Ignition embed area of this ISO holds {area.length} bytes "
                         "(xz-compressed)")
            out.append(Region(area.offset, data + b"\0" * (area.length - len(data))))
        if self._kargs_modified:
            areas = self._areas()
            assert self._kargs is not None
            for r in areas.regions:
                out.append(Region(r.offset, format_area(self._kargs, size=r.length, pad=r.pad,
                                                        end=r.end, source=str(self.path))))
        out.sort(key=lambda r: r.offset)
        prev_end = 0
        for r in out:
            if r.offset < prev_end:
                raise InternalError(f"region starting at {r.offset} precedes current offset "
                                    f"{prev_end}")
            if r.end > self.file_size:
                raise BadImageError(f"patch at {r.offset} runs past the end of {self.path}")
            prev_end = r.end
        return out

    # -- reporting ------------------------------------------------------------------
    def inspect(self) -> dict:
        """Everything known about the ISO's embed areas, JSON-ready (no timestamps).

        Damaged area contents are reported (``problem`` keys), not raised."""
        import hashlib  # only here: the embed path should not load OpenSSL

        a = self.ignition_area
        files = []
        for p, m in sorted(self._members.items()):
            files.append({"path": p, "size": len(m.data), "mode": oct(m.file_mode),
                          "sha256": hashlib.sha256(m.data).hexdigest()})
        kargs: dict | None = None
        if self.kargs_areas is not None:
            ka = self.kargs_areas
            kargs = {
                "source": ka.source.value, "size": ka.size, "max_length": ka.size - 1,
                "default": ka.default, "current": self._kargs,
                "areas": [{"offset": r.offset, "length": r.length, "file": r.file,
                           "pad": r.pad, "end": r.end} for r in ka.regions],
            }
            if self.kargs_problem is not None:
                kargs["problem"] = self.kargs_problem
        f = self.features
        area = {"offset": a.offset, "length": a.length, "source": a.source.value,
                "file": a.file, "in_use": self.area_in_use}
        if self.area_problem is not None:
            area["problem"] = self.area_problem
        network = self._members if self.area_problem is None else {}
        prefix = NETWORK_DIR + "/"
        return {
            "path": str(self.path),
            "size": self.file_size,
            "volume_id": self.volume_id,
            "system_id": self.system_id,
            "ignition_area": area,
            "kargs": kargs,
            "features": {"present": f.present, "installer-config": f.installer_config,
                         "installer-config-directives": f.installer_config_directives,
                         "live-initrd-network": f.live_initrd_network},
            "embedded": {"ignition": IGNITION_PATH in self._members,
                         "network": sorted(p[len(prefix):] for p in network
                                           if p.startswith(prefix) and "/" not in p[len(prefix):]),
                         "files": files},
            "customized": self.is_customized,
        }


def open_image(path: str | os.PathLike[str]) -> IsoImage:
    return IsoImage.open(Path(path))


def embed_initrd_members(iso: IsoImage,
                         members: Mapping[str, bytes | tuple[bytes, int] | Member], *,
                         replace: bool = False) -> None:
    """Add (or with replace=True: set exactly) initrd members: {path: bytes | (bytes, mode)}.

    Paths are relative (a leading '/' is dropped); parent directories are created
    automatically when the archive is written. Call ``iso.patches()`` afterwards.
    """
    new = cpio.members_from(members.items())
    base = {} if replace else iso.members
    base.update(new)
    iso.set_members(base)


def read_embedded_members(iso: IsoImage) -> dict[str, tuple[bytes, int]]:
    """The embedded initrd members: {path: (bytes, st_mode)}."""
    return {p: (m.data, m.file_mode) for p, m in iso.members.items()}
