"""Butane's sugar, rendered as Ignition: data URLs for inline and local contents,
files from ``--files-dir`` (confined to it), directory trees, mount and swap units,
the ``boot_device`` storage layout (LUKS and mirroring) and GRUB users.

Every generator returns Ignition JSON values plus *provenance*: pairs of
(JSON path prefix in what it generated, YAML path it came from), so problems found
later in the generated config can be reported at the line that caused them.
"""

from __future__ import annotations

import base64
import os
import posixpath
import re
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..ignition.decode import MiB, size_text
from .schema import V1_4, V1_5, V1_6, YamlPath

JsonPath = tuple[str | int, ...]
MAX_LOCAL_FILE = 64 * MiB  # one local file (contents_local, local, a tree member)


class SugarError(Exception):
    """A problem with one sugar field; reported at ``path`` (a YAML path)."""

    def __init__(self, message: str, path: YamlPath = ()):
        super().__init__(message)
        self.message = message
        self.path = path


# --------------------------------------------------------------------------- data URLs

_UNRESERVED = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()")


def url_escape(data: bytes) -> str:
    """RFC 2397 escaping as Butane does it: unreserved characters as is, the rest ``%XX``."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in data)


def gzip_best(data: bytes) -> bytes:
    """gzip at the best compression with the header Butane's Go writer emits (mtime 0,
    OS 255 "unknown"; Python's gzip module writes OS 3)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = c.compress(data) + c.flush()
    trailer = (zlib.crc32(data) & 0xFFFFFFFF).to_bytes(4, "little") + (len(data) & 0xFFFFFFFF).to_bytes(4, "little")
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + body + trailer


def make_data_url(contents: bytes, compression: str | None, *, allow_compression: bool = True
                  ) -> tuple[str, str | None]:
    """Encode contents as the shortest of: URL-escaped, base64, base64 of gzip.

    Returns ``(url, compression)``. When the config set no compression, the returned
    compression is ``"gzip"`` or ``""`` (explicit, so a parent config's compression is
    never inherited through a merge). When it did (the contents are already
    compressed), it returns None: keep the config's value.
    """
    user_set = bool(compression)
    out_comp: str | None = None if user_set else ""
    opaque = "," + url_escape(contents)
    b64 = ";base64," + base64.b64encode(contents).decode("ascii")
    if len(b64) < len(opaque):
        opaque = b64
    if not user_set and allow_compression:
        gz = ";base64," + base64.b64encode(gzip_best(contents)).decode("ascii")
        if len(gz) + len("gzip") < len(opaque):
            opaque, out_comp = gz, "gzip"
    return "data:" + opaque, out_comp


def legacy_inline_url(text: str) -> str:
    """fcos 1.0.0: inline contents are always URL-escaped, without a compression field."""
    return "data:," + url_escape(text.encode("utf-8", "surrogateescape"))


# --------------------------------------------------------------------------- local files

NO_FILES_DIR = ("local file paths are relative to a files directory that must be specified "
                "with -d/--files-dir")
ESCAPE = "local file path traverses outside the files directory"


class FilesDir:
    """Reads ``local`` references, confined to one directory.

    A reference must be relative; after resolving ``..`` and symbolic links it must
    stay inside the directory. Only regular files are read (never a FIFO or device),
    at most :data:`MAX_LOCAL_FILE` bytes each.
    """

    def __init__(self, root: str | os.PathLike[str] | None):
        self.root = None if root is None else Path(root)
        self._real = None if root is None else Path(os.path.realpath(root))

    def resolve(self, rel: str, path: YamlPath) -> Path:
        if self.root is None or self._real is None:
            raise SugarError(NO_FILES_DIR, path)
        if rel.startswith("/") or "\0" in rel:
            raise SugarError(f"local path {rel!r} must be relative to the files directory", path)
        norm = posixpath.normpath(rel) if rel else "."
        if norm == ".." or norm.startswith("../"):
            raise SugarError(ESCAPE, path)
        target = self.root / norm
        real = Path(os.path.realpath(target))
        if real != self._real and self._real not in real.parents:
            raise SugarError(f"{ESCAPE} (through a symbolic link)", path)
        return target

    def read(self, rel: str, path: YamlPath) -> bytes:
        target = self.resolve(rel, path)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        except OSError as e:
            raise SugarError(f"cannot read local file {rel!r}: {e.strerror.lower()}", path) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
                raise SugarError(f"cannot read local file {rel!r}: {kind}", path)
            if st.st_size > MAX_LOCAL_FILE:
                raise SugarError(f"local file {rel!r} is larger than the {size_text(MAX_LOCAL_FILE)} limit", path)
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(MAX_LOCAL_FILE + 1)
            if len(data) > MAX_LOCAL_FILE:
                raise SugarError(f"local file {rel!r} is larger than the {size_text(MAX_LOCAL_FILE)} limit", path)
            return data
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- trees

NODE_EXISTS = "matching filesystem node has existing contents or different type"


@dataclass
class Generated:
    """Ignition values generated from sugar, with where each came from."""

    config: dict[str, Any] = field(default_factory=dict)
    provenance: list[tuple[JsonPath, YamlPath]] = field(default_factory=list)


def _owner(o: dict | None) -> dict | None:
    if not o:
        return None
    return {k: o[k] for k in ("id", "name") if o.get(k) is not None} or None


def _node(path: str, user: dict | None, group: dict | None) -> dict[str, Any]:
    node: dict[str, Any] = {"path": path}
    if _owner(group):
        node["group"] = _owner(group)
    if _owner(user):
        node["user"] = _owner(user)
    return node


def add_trees(config: dict[str, Any], trees: list[dict], files_dir: FilesDir,
              provenance: list[tuple[JsonPath, YamlPath]], errors: list[SugarError]) -> None:
    """Add ``storage.trees`` to config's files, links and directories (in place)."""
    storage = config.setdefault("storage", {})
    lists = {kind: storage.setdefault(kind, []) for kind in ("files", "links", "directories")}
    index = {kind: {n.get("path"): i for i, n in enumerate(lst)} for kind, lst in lists.items()}

    def exists(p: str) -> bool:
        return any(p in m for m in index.values())

    def add(kind: str, node: dict, ypath: YamlPath) -> int:
        i = len(lists[kind])
        lists[kind].append(node)
        index[kind][node["path"]] = i
        provenance.append((("storage", kind, i), ypath))
        return i

    for t, tree in enumerate(trees):
        ypath: YamlPath = ("storage", "trees", t)
        if files_dir.root is None:
            errors.append(SugarError(NO_FILES_DIR, ypath))
            break
        local = tree.get("local") or ""
        try:
            base = files_dir.resolve(local, ypath) if local not in ("", ".") else files_dir.root
        except SugarError as e:
            errors.append(e)
            continue
        if not base.is_dir():
            errors.append(SugarError("root of tree must be a directory" if base.exists() else
                                     f"cannot read tree {local!r}: no such file or directory", ypath))
            continue
        dest_base = tree.get("path") or "/"
        user, group = tree.get("user"), tree.get("group")
        file_mode, dir_mode = tree.get("file_mode"), tree.get("dir_mode")
        want_dirs = dir_mode is not None or bool(user) or bool(group)
        for src, rel in _walk(base):
            dest = posixpath.join(dest_base, rel) if rel != "." else posixpath.normpath(dest_base)
            try:
                st = os.lstat(src)
            except OSError as e:
                errors.append(SugarError(f"cannot read {rel!r} in tree {local!r}: {e.strerror.lower()}", ypath))
                continue
            if stat.S_ISDIR(st.st_mode):
                if not want_dirs:
                    continue
                if exists(dest):
                    errors.append(SugarError(NODE_EXISTS, ypath))
                    continue
                node = _node(dest, user, group)
                node["mode"] = dir_mode if dir_mode is not None else 0o755
                add("directories", node, ypath)
            elif stat.S_ISREG(st.st_mode):
                i = index["files"].get(dest)
                if i is not None:
                    node = lists["files"][i]
                    if (node.get("contents") or {}).get("source"):
                        errors.append(SugarError(NODE_EXISTS, ypath))
                        continue
                    provenance.append((("storage", "files", i, "contents"), ypath))
                elif exists(dest):
                    errors.append(SugarError(NODE_EXISTS, ypath))
                    continue
                else:
                    node = _node(dest, user, group)
                    i = add("files", node, ypath)
                if st.st_size > MAX_LOCAL_FILE:
                    errors.append(SugarError(f"{rel!r} in tree {local!r} is larger than the "
                                             f"{size_text(MAX_LOCAL_FILE)} limit", ypath))
                    continue
                with open(src, "rb") as f:
                    data = f.read()
                contents = node.setdefault("contents", {})
                url, comp = make_data_url(data, contents.get("compression"))
                contents["source"] = url
                if comp is not None:
                    contents["compression"] = comp
                if node.get("mode") is None:
                    node["mode"] = file_mode if file_mode is not None else (
                        0o755 if st.st_mode & 0o111 else 0o644)
            elif stat.S_ISLNK(st.st_mode):
                i = index["links"].get(dest)
                if i is not None:
                    node = lists["links"][i]
                    if node.get("target"):
                        errors.append(SugarError(NODE_EXISTS, ypath))
                        continue
                elif exists(dest):
                    errors.append(SugarError(NODE_EXISTS, ypath))
                    continue
                else:
                    node = _node(dest, user, group)
                    add("links", node, ypath)
                node["target"] = os.readlink(src)
            else:
                errors.append(SugarError("trees may only contain files, directories, and symlinks", ypath))
    for kind in ("files", "links", "directories"):
        if not storage[kind]:
            del storage[kind]
    if not storage:
        del config["storage"]


def _walk(base: Path):
    """(path, relative path) in the order Go's filepath.Walk uses: the root, then each
    directory's entries sorted by name, depth first. Symbolic links are not followed."""
    todo: list[tuple[Path, str]] = [(base, ".")]
    while todo:
        path, rel = todo.pop()
        yield path, rel
        if rel == "." or (path.is_dir() and not path.is_symlink()):
            try:
                names = sorted(os.listdir(path))
            except OSError:
                continue
            for name in reversed(names):
                todo.append((path / name, name if rel == "." else f"{rel}/{name}"))


QUADLET_EXTENSIONS = (".container", ".volume", ".network", ".kube", ".image", ".build", ".pod", ".artifact")


def quadlet_template(name: str) -> str | None:
    """``foo@.container`` for a template instance ``foo@100.container``, else None."""
    at, dot = name.find("@"), name.rfind(".")
    if at < 0 or dot < 0 or at + 1 == dot:
        return None
    return f"{name[:at]}@.{name[dot + 1:]}"


def add_quadlets(config: dict[str, Any], quadlets: list[dict], files_dir: FilesDir,
                 provenance: list[tuple[JsonPath, YamlPath]], errors: list[SugarError]) -> None:
    """``systemd.quadlets`` (fcos 1.8.0-experimental): Podman Quadlet files (and drop-ins)
    under /etc/containers/systemd (rootful) or .../users; template instances as symlinks."""
    storage = config.setdefault("storage", {})
    files, links = storage.setdefault("files", []), storage.setdefault("links", [])
    taken = {n.get("path") for kind in ("files", "links", "directories") for n in storage.get(kind) or []}

    def add_file(dest: str, q: dict, ypath: YamlPath) -> None:
        if dest in taken:
            errors.append(SugarError(NODE_EXISTS, ypath))
            return
        if q.get("contents_local"):
            try:
                data = files_dir.read(q["contents_local"], (*ypath, "contents_local"))
            except SugarError as e:
                errors.append(e)
                return
        else:
            data = (q.get("contents") or "").encode("utf-8")
        url, comp = make_data_url(data, None)
        taken.add(dest)
        provenance.append((("storage", "files", len(files)), ypath))
        files.append({"path": dest, "contents": {"compression": comp, "source": url}, "mode": 0o644})

    for i, q in enumerate(quadlets):
        ypath: YamlPath = ("systemd", "quadlets", i)
        name = q.get("name") or ""
        base = posixpath.join("/etc/containers/systemd" if q.get("rootful") else
                              "/etc/containers/systemd/users", name)
        template = quadlet_template(name)
        if template is not None:
            if base in taken:
                errors.append(SugarError(NODE_EXISTS, ypath))
            else:
                taken.add(base)
                provenance.append((("storage", "links", len(links)), ypath))
                links.append({"path": base, "target": template})
        else:
            add_file(base, q, ypath)
        for j, d in enumerate(q.get("dropins") or []):
            add_file(f"{base}.d/{d.get('name') or ''}", d, (*ypath, "dropins", j))
    for kind in ("files", "links"):
        if not storage[kind]:
            del storage[kind]
    if not storage:
        del config["storage"]


# --------------------------------------------------------------------------- mount units

_UNIT_ALLOWED = frozenset(b":_.abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def unit_path_escape(path: str) -> str:
    """``systemd-escape --path`` as go-systemd does it (``/var/lib/x-y`` -> ``var-lib-x\\x2dy``)."""
    out: list[str] = []
    in_slashes, start = False, True
    for c in path.encode("utf-8", "surrogateescape"):
        if c == ord("/"):
            in_slashes = True
            continue
        if in_slashes:
            in_slashes = False
            if not start:
                out.append("-")
        if (start and c == ord(".")) or c not in _UNIT_ALLOWED:
            out.append(f"\\x{c:x}")
        else:
            out.append(chr(c))
        start = False
    return "".join(out) or "-"


def mount_unit(fs: dict[str, Any], *, remote: bool, swap_units: bool) -> dict[str, Any]:
    """The unit Butane generates for a filesystem with ``with_mount_unit: true``."""
    device = fs.get("device") or ""
    opts = list(fs.get("mount_options") or [])
    if remote:
        opts.append("_netdev")
    options = f"\nOptions={','.join(opts)}" if opts else ""
    if swap_units and fs.get("format") == "swap":
        contents = (f"# Generated by Butane\n[Swap]\nWhat={device}{options}\n\n"
                    "[Install]\nRequiredBy=swap.target")
        name = unit_path_escape(device) + ".swap"
    else:
        esc = unit_path_escape(device)
        contents = (f"# Generated by Butane\n[Unit]\nRequires=systemd-fsck@{esc}.service\n"
                    f"After=systemd-fsck@{esc}.service\n\n[Mount]\nWhere={fs.get('path') or ''}\n"
                    f"What={device}\nType={fs.get('format') or ''}{options}\n\n[Install]\n"
                    f"RequiredBy={'remote-fs.target' if remote else 'local-fs.target'}")
        name = unit_path_escape(fs.get("path") or "") + ".mount"
    return {"name": name, "enabled": True, "contents": contents}


def mount_units(storage: dict[str, Any], version) -> Generated:
    """Units for ``storage.filesystems[*].with_mount_unit`` (a remote mount when the
    filesystem is on a LUKS volume unlocked by Tang)."""
    out = Generated()
    units: list[dict] = []
    tang_luks = {lk.get("name") for lk in storage.get("luks") or []
                 if ((lk.get("clevis") or {}).get("tang"))}
    for i, fs in enumerate(storage.get("filesystems") or []):
        if not fs.get("with_mount_unit"):
            continue
        device = fs.get("device") or ""
        remote = any(device in (f"/dev/mapper/{n}", f"/dev/disk/by-id/dm-name-{n}") for n in tang_luks)
        out.provenance.append((("systemd", "units", len(units)), ("storage", "filesystems", i, "with_mount_unit")))
        units.append(mount_unit(fs, remote=remote, swap_units=version >= V1_4))
    if units:
        out.config = {"systemd": {"units": units}}
    return out


# --------------------------------------------------------------------------- boot_device

RESERVED_GUID = "8DA63339-0007-60C0-C436-083AC8230908"
BIOS_GUID = "21686148-6449-6E6F-744E-656564454649"
PREP_GUID = "9E1A2D38-C612-4316-AA26-8B49521E5A8B"
ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
# the partition layout of the FCOS image (never change these: they replicate its offsets)
BIOS_MIB, PREP_MIB, RESERVED_MIB, ESP_MIB, BOOT_MIB = 1, 4, 1, 127, 384


def boot_device(bd: dict[str, Any], version) -> Generated:
    """The storage layout for ``boot_device.luks`` / ``boot_device.mirror``."""
    out = Generated()
    luks = bd.get("luks") or {}
    cex = bool((luks.get("cex") or {}).get("enabled")) and version >= V1_6
    want_luks = bool(luks.get("tpm2")) or bool(luks.get("tang")) or cex
    devices = (bd.get("mirror") or {}).get("devices") or []
    if not want_luks and not devices:
        return out
    layout = bd.get("layout") or "x86_64"
    bios, efi, prep = layout == "x86_64", layout in ("x86_64", "aarch64"), layout == "ppc64le"
    storage: dict[str, Any] = {}
    filesystems: list[dict] = []
    prov = out.provenance
    if devices:
        disks = []
        for i, device in enumerate(devices):
            n = i + 1
            if bios:
                first = {"label": f"bios-{n}", "sizeMiB": BIOS_MIB, "typeGuid": BIOS_GUID}
            elif prep:
                first = {"label": f"prep-{n}", "sizeMiB": PREP_MIB, "typeGuid": PREP_GUID}
            else:
                first = {"label": f"reserved-{n}", "sizeMiB": RESERVED_MIB, "typeGuid": RESERVED_GUID}
            second = ({"label": f"esp-{n}", "sizeMiB": ESP_MIB, "typeGuid": ESP_GUID} if efi else
                      {"label": f"reserved-{n}", "sizeMiB": RESERVED_MIB, "typeGuid": RESERVED_GUID})
            prov.append((("storage", "disks", len(disks)), ("boot_device", "mirror", "devices", i)))
            disks.append({"device": device, "partitions": [
                first, second, {"label": f"boot-{n}", "sizeMiB": BOOT_MIB}, {"label": f"root-{n}"}],
                "wipeTable": True})
            if efi:
                prov.append((("storage", "filesystems", len(filesystems)), ("boot_device", "mirror", "devices", i)))
                filesystems.append({"device": f"/dev/disk/by-partlabel/esp-{n}", "format": "vfat",
                                    "label": f"esp-{n}", "wipeFilesystem": True})
        storage["disks"] = disks
        members = range(1, len(devices) + 1)
        storage["raid"] = [
            # the superblock at the end of the partition, so BIOS GRUB needs no RAID support
            {"devices": [f"/dev/disk/by-partlabel/boot-{n}" for n in members], "level": "raid1",
             "name": "md-boot", "options": ["--metadata=1.0"]},
            {"devices": [f"/dev/disk/by-partlabel/root-{n}" for n in members], "level": "raid1",
             "name": "md-root"}]
        prov.append((("storage", "raid"), ("boot_device", "mirror")))
        prov.append((("storage", "filesystems", len(filesystems)), ("boot_device", "mirror")))
        filesystems.append({"device": "/dev/md/md-boot", "format": "ext4", "label": "boot",
                            "wipeFilesystem": True})
    if want_luks:
        if layout == "s390x-eckd":
            device = (luks.get("device") or "") + "2"
        elif layout == "s390x-zfcp":
            device = (luks.get("device") or "") + "4"
        elif devices:
            device = "/dev/md/md-root"
        else:
            device = "/dev/disk/by-partlabel/root"
        entry: dict[str, Any] = {}
        if cex:
            entry["cex"] = {"enabled": True}
        else:
            clevis = {k: luks[k] for k in ("tang", "threshold", "tpm2") if luks.get(k) is not None}
            if clevis.get("tang") is not None:
                clevis["tang"] = [_tang(t) for t in clevis["tang"]]
            entry["clevis"] = clevis
        entry["device"] = device
        if version >= V1_5 and luks.get("discard") is not None:
            entry["discard"] = luks["discard"]
        entry.update({"label": "luks-root", "name": "root", "wipeVolume": True})
        storage["luks"] = [entry]
        lp, yp = ("storage", "luks", 0), ("boot_device", "luks")
        prov.append((lp, yp))
        for key in ("threshold", "tpm2", "tang"):
            prov.append(((*lp, "clevis", key), (*yp, key)))
        for i, t in enumerate(luks.get("tang") or []):
            prov.append(((*lp, "clevis", "tang", i), (*yp, "tang", i)))
            prov += [((*lp, "clevis", "tang", i, k), (*yp, "tang", i, k)) for k in t]
        prov += [((*lp, key), (*yp, key)) for key in ("discard", "cex", "device") if key in luks]
    prov.append((("storage", "filesystems", len(filesystems)), ("boot_device",)))
    filesystems.append({"device": "/dev/mapper/root" if want_luks else "/dev/md/md-root",
                        "format": "xfs", "label": "root", "wipeFilesystem": True})
    storage["filesystems"] = filesystems
    prov.append((("storage",), ("boot_device",)))
    out.config = {"storage": storage}
    return out


def _tang(t: dict[str, Any]) -> dict[str, Any]:
    return {k: t[k] for k in ("advertisement", "thumbprint", "url") if t.get(k) is not None}


# --------------------------------------------------------------------------- grub.users

_GRUB_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_GRUB_HASH = re.compile(r"grub\.pbkdf2\.sha(?:256|512)\.[0-9]+\.[0-9A-Fa-f]+\.[0-9A-Fa-f]+")


def grub_users(users: list[dict[str, Any]]) -> Generated:
    """``/boot/grub2/user.cfg`` (appended) with superusers and their password hashes,
    and the ``/boot`` filesystem it lives on."""
    out = Generated()
    if not users:
        return out
    names = [u.get("name") or "" for u in users]
    lines = [f"password_pbkdf2 {u.get('name')} {u.get('password_hash')}" for u in users]
    text = "# Generated by Butane\n\n" + f'set superusers="{" ".join(names)}"\n' + "\n".join(lines) + "\n"
    url, comp = make_data_url(text.encode(), None)
    out.config = {"storage": {
        "filesystems": [{"device": "/dev/disk/by-label/boot", "format": "ext4", "path": "/boot"}],
        "files": [{"path": "/boot/grub2/user.cfg", "append": [{"source": url, "compression": comp}]}]}}
    out.provenance.append((("storage",), ("grub", "users")))
    return out


def check_grub_user(user: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, message) problems of one grub user: Butane's required fields, plus what keeps
    user.cfg a valid GRUB script (names and hashes are written into it unquoted)."""
    out = []
    name, pw = user.get("name"), user.get("password_hash")
    if not name:
        out.append(("name", 'field "name" is required'))
    elif not _GRUB_USER.fullmatch(name):
        out.append(("name", "a GRUB user name may only contain letters, digits, '_', '.' and '-'"))
    if not pw:
        out.append(("password_hash", 'field "password_hash" is required'))
    elif not _GRUB_HASH.fullmatch(pw):
        out.append(("password_hash", "must be a hash made by grub2-mkpasswd-pbkdf2 "
                                     "(grub.pbkdf2.sha512.ITERATIONS.SALT.HASH)"))
    return out
