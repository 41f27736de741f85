"""Files of a filesystem inside a qcow2/vmdk/... image, through libguestfs.

libguestfs reads every format QEMU does (and keeps the image's format, backing file and
options intact when writing), at the price of an appliance VM (~11 s here; this host
needs ``LIBGUESTFS_BACKEND_SETTINGS=force_tcg``, set unless the caller chose one).
Same interface as :class:`imagebuilder.image.ext4.Ext4Fs`; changes are applied
immediately but only land in the image file when :meth:`GuestFs.commit` syncs and
shuts the appliance down.
"""

from __future__ import annotations

import logging
import os

from ..errors import BadImageError, ToolMissingError
from .ext4 import DirEntry

log = logging.getLogger("imagebuilder.image.guestfs")


def _guestfs():
    try:
        import guestfs  # python3-guestfs (Debian), seen through the venv's system site-packages
    except ImportError:
        raise ToolMissingError("libguestfs Python bindings are not installed",
                               hint="apt-get install python3-guestfs libguestfs-tools") from None
    return guestfs


class Appliance:
    """One libguestfs handle on an image: partitions, filesystems, raw reads."""

    def __init__(self, image: str | os.PathLike[str], *, fmt: str, readonly: bool) -> None:
        os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
        g = _guestfs().GuestFS(python_return_dict=True)
        g.add_drive_opts(os.fspath(image), format=fmt, readonly=readonly)
        log.info("starting the libguestfs appliance for %s (%s)", image, fmt)
        g.launch()
        self.g = g
        self.device = g.list_devices()[0]
        self.readonly = readonly

    def partitions(self) -> list[str]:
        return list(self.g.list_partitions())

    def pread(self, offset: int, size: int) -> bytes:
        out = b""
        while len(out) < size:
            chunk = self.g.pread_device(self.device, min(size - len(out), 1 << 20), offset + len(out))
            if not chunk:
                break
            out += chunk
        return out

    def size(self) -> int:
        return int(self.g.blockdev_getsize64(self.device))

    def find_label(self, label: str) -> str | None:
        labels = self.g.list_filesystems()
        for dev in labels:
            try:
                if self.g.vfs_label(dev) == label:
                    return dev
            except RuntimeError:
                continue
        return None

    def close(self) -> None:
        try:
            if not self.readonly:
                self.g.sync()
            self.g.shutdown()
        finally:
            self.g.close()


class GuestFs:
    """A filesystem (by device, e.g. /dev/sda3) of an :class:`Appliance`, mounted at /."""

    def __init__(self, app: Appliance, device: str, *, readonly: bool) -> None:
        self.app = app
        self.g = app.g
        if readonly:
            self.g.mount_ro(device, "/")
        else:
            self.g.mount(device, "/")
        self.device = device

    def _exists(self, path: str) -> bool:
        return bool(self.g.exists(path)) or self.readlink(path) is not None

    def readlink(self, path: str) -> str | None:
        try:
            if self.g.is_symlink(path):
                return self.g.readlink(path)
        except RuntimeError:
            return None
        return None

    def resolve(self, path: str) -> str:
        try:
            return self.g.realpath(path)
        except RuntimeError:
            return path

    def exists(self, path: str) -> bool:
        return self._exists(path)

    def read(self, path: str) -> bytes | None:
        if not self.g.is_file(path):
            if self.g.exists(path):
                raise BadImageError(f"{path}: not a regular file")
            return None
        return self.g.read_file(path)

    def listdir(self, path: str) -> list[DirEntry]:
        if not self.g.is_dir(path):
            return []
        out = []
        for name in sorted(self.g.ls(path)):
            st = self.g.lstatns(f"{path.rstrip('/')}/{name}")
            out.append(DirEntry(name=name, mode=int(st["st_mode"]), size=int(st["st_size"])))
        return out

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.imagebuilder-tmp"
        self.g.write(tmp, data)
        self.g.chmod(mode, tmp)
        self.g.chown(0, 0, tmp)
        self.g.rename(tmp, path)

    def remove(self, path: str) -> None:
        self.g.rm_f(path)

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        if not self.g.is_dir(path):
            self.g.mkdir_mode(path, mode)

    def rmdir(self, path: str) -> None:
        if self.g.is_dir(path) and not self.g.ls(path):
            self.g.rmdir(path)

    pending = False

    def commit(self) -> None:
        self.g.sync()

    def fsck(self) -> None:
        pass  # the kernel in the appliance wrote the changes through the real ext4 driver

    def unmount(self) -> None:
        self.g.umount_all()

