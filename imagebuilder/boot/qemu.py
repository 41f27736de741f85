"""Boot a disk image or ISO under QEMU with the serial console attached.

The model is ``cosa run`` / ``mkosi qemu``: one guest, its serial console
streamed to the caller (and optionally a log file), an optional Ignition config
passed through fw_cfg (``opt/com.coreos/config``, where Ignition's ``qemu``
platform reads it) and an optional regular expression that ends the boot as
soon as it shows up on the console.

Acceleration: ``auto`` uses KVM only if a guest kernel *actually runs* under
it. ``/dev/kvm`` can exist and still be unusable (nested PVM hypervisors run
SeaBIOS and GRUB but hang stock kernels), so the first ``auto`` boot on a host
probes KVM with the host's own kernel and a tiny busybox initramfs and caches
the verdict (keyed by host kernel, probe kernel and QEMU version) in
``$XDG_CACHE_HOME/imagebuilder/accel.json``. Anything doubtful means TCG
(``-accel tcg,thread=multi``).

External programs are started through :func:`imagebuilder.run.run` only: QEMU
runs in a helper thread with its stdout connected to a pipe we read here; when
the expectation is met or the timeout passes we stop it by the pid it wrote to
its ``-pidfile``.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import gzip
import hashlib
import json
import logging
import os
import re
import select
import shutil
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from ..errors import BadImageError, ToolError, UserInputError
from ..iso.cpio import write_newc
from ..iso.iso9660 import is_iso
from ..run import output, require, run, which

log = logging.getLogger("imagebuilder.boot")

QEMU = "qemu-system-x86_64"
OVMF_CODE_CANDIDATES = ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd",
                        "/usr/share/qemu/OVMF.fd")
OVMF_VARS_CANDIDATES = ("/usr/share/OVMF/OVMF_VARS_4M.fd", "/usr/share/OVMF/OVMF_VARS.fd")
IGNITION_FW_CFG = "opt/com.coreos/config"
ACCELS = ("auto", "kvm", "tcg")
PROBE_MARKER = "IMAGEBUILDER-KVM-PROBE-OK"
PROBE_TIMEOUT = 30.0

# CSI / OSC escape sequences and other terminal noise (SeaBIOS, GRUB, iPXE paint the screen)
_ANSI_RE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_c]|[()][0-9A-Za-z])")


@dataclasses.dataclass
class BootResult:
    """What a boot produced.

    ``matched``: the ``expect`` regex appeared on the console (without ``expect``:
    the guest powered off by itself before the timeout with QEMU exiting 0).
    ``output``: the console text with terminal escape sequences and ``\\r`` removed.
    ``duration``: seconds from starting QEMU to the verdict.
    ``reason``: ``matched`` | ``timeout`` | ``guest-exited`` | ``powered-off``.
    """

    matched: bool
    output: str
    duration: float
    reason: str = ""
    accel: str = ""
    returncode: int | None = None
    match: str | None = None
    argv: list[str] = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:  # pragma: no cover - convenience
        return self.matched


# --------------------------------------------------------------------------- images

def disk_format(path: str | os.PathLike[str]) -> str:
    """The image format as ``qemu-img info`` detects it (raw, qcow2, vmdk, ...)."""
    require("qemu-img")
    try:
        info = json.loads(output(["qemu-img", "info", "--output=json", os.fspath(path)]))
    except ToolError as e:
        raise BadImageError(f"{path}: not a disk image qemu-img can read ({e.message})") from None
    return str(info.get("format", "raw"))


# --------------------------------------------------------------------------- initramfs

def busybox_initramfs(init_script: str, *, extra: Sequence[tuple[str, int, bytes]] = (),
                      compress: bool = True) -> bytes:
    """A tiny initramfs: static busybox, a /dev/console node and ``init_script`` as /init."""
    bb = which("busybox")
    require("busybox")
    data = Path(bb).read_bytes()  # type: ignore[arg-type]
    if b"/ld-linux" in data[:4096]:  # has a PT_INTERP: would need its libraries too
        raise UserInputError(f"{bb} is dynamically linked", hint="apt-get install busybox-static")
    dirs = ["bin", "dev", "etc", "proc", "run", "sys", "tmp"]
    entries: list[tuple[str, int, bytes | tuple[int, int]]] = [
        (d, stat.S_IFDIR | 0o755, b"") for d in dirs]
    entries += [
        ("bin/busybox", stat.S_IFREG | 0o755, data),
        ("bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
        ("dev/console", stat.S_IFCHR | 0o600, (5, 1)),
        ("dev/null", stat.S_IFCHR | 0o666, (1, 3)),
        ("init", stat.S_IFREG | 0o755, init_script.encode()),
    ]
    entries += list(extra)
    entries.sort(key=lambda e: e[0])
    raw = write_newc(entries, first_ino=1, trailer_ino=None, block=512)
    if not compress:
        return raw
    return gzip.compress(raw, compresslevel=6, mtime=0)


def host_kernel() -> Path | None:
    """The newest kernel in /boot (the running one if present)."""
    running = Path(f"/boot/vmlinuz-{os.uname().release}")
    if running.is_file() and os.access(running, os.R_OK):
        return running
    kernels = sorted(Path("/boot").glob("vmlinuz-*"), key=_kver_key)
    kernels = [k for k in kernels if os.access(k, os.R_OK)]
    return kernels[-1] if kernels else None


def _kver_key(p: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


# --------------------------------------------------------------------------- accel

def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "imagebuilder"


def qemu_version() -> str:
    from ..run import tool_version

    return tool_version(QEMU) or "unknown"


def _kvm_usable_device() -> bool:
    return os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK)


def probe_kvm(*, timeout: float = PROBE_TIMEOUT, use_cache: bool = True) -> bool:
    """Can KVM run a Linux guest kernel here? Boots the host kernel + busybox once; cached."""
    if not _kvm_usable_device():
        log.debug("accel: /dev/kvm missing or not accessible -> tcg")
        return False
    kernel = host_kernel()
    if kernel is None:
        log.debug("accel: no readable kernel in /boot to probe KVM with -> tcg")
        return False
    st = kernel.stat()
    key = "|".join([os.uname().release, os.uname().version, str(kernel), str(st.st_size),
                    str(int(st.st_mtime)), qemu_version()])
    key = hashlib.sha256(key.encode()).hexdigest()[:32]
    cache = cache_dir() / "accel.json"
    verdicts: dict = {}
    if use_cache:
        with contextlib.suppress(OSError, ValueError):
            verdicts = json.loads(cache.read_text())
        if isinstance(verdicts.get(key), dict) and "kvm" in verdicts[key]:
            log.debug("accel: cached KVM verdict %s", verdicts[key])
            return bool(verdicts[key]["kvm"])
    init = ("#!/bin/sh\n/bin/busybox mount -t proc proc /proc\n"
            f"echo {PROBE_MARKER}\n/bin/busybox poweroff -f\n")
    with tempfile.TemporaryDirectory(prefix="imagebuilder-kvmprobe-") as td:
        initrd = Path(td) / "initrd.gz"
        initrd.write_bytes(busybox_initramfs(init))
        argv = [QEMU, *accel_args("kvm"), "-m", "256", "-smp", "1",
                "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
                "-serial", "mon:stdio", "-kernel", str(kernel), "-initrd", str(initrd),
                "-append", "console=ttyS0 panic=-1 quiet"]
        t0 = time.monotonic()
        try:
            res = _run_console(argv, expect=re.compile(re.escape(PROBE_MARKER)), timeout=timeout,
                               workdir=Path(td))
            ok = res.matched
        except ToolError as e:  # QEMU refused or crashed under KVM: not usable
            log.debug("accel: KVM probe failed: %s", e.message)
            ok = False
    log.info("accel: KVM probe %s in %.1f s", "passed" if ok else "failed", time.monotonic() - t0)
    verdicts[key] = {"kvm": ok, "kernel": str(kernel), "qemu": qemu_version(),
                     "host": os.uname().release, "probed": int(time.time())}
    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(verdicts, indent=2) + "\n")
        os.replace(tmp, cache)
    return ok


def resolve_accel(accel: str = "auto") -> str:
    """``auto`` -> ``kvm`` if a probe boot works under KVM, else ``tcg``.

    ``IMAGEBUILDER_ACCEL`` (kvm|tcg) overrides ``auto``.
    """
    if accel not in ACCELS:
        raise UserInputError(f"unknown accelerator {accel!r}", hint="use auto, kvm or tcg")
    if accel == "auto":
        env = os.environ.get("IMAGEBUILDER_ACCEL", "").strip()
        if env in ("kvm", "tcg"):
            return env
        return "kvm" if probe_kvm() else "tcg"
    if accel == "kvm" and not _kvm_usable_device():
        raise UserInputError("--accel kvm: /dev/kvm is missing or not accessible",
                             hint="use --accel tcg (or auto)")
    return accel


def accel_args(accel: str) -> list[str]:
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg,thread=multi"]


# --------------------------------------------------------------------------- firmware

def _first(paths: Sequence[str]) -> str | None:
    return next((p for p in paths if os.path.isfile(p)), None)


def ovmf_paths() -> tuple[str, str]:
    code, vars_ = _first(OVMF_CODE_CANDIDATES), _first(OVMF_VARS_CANDIDATES)
    if not code or not vars_:
        raise UserInputError("UEFI boot needs OVMF firmware (OVMF_CODE*.fd) and it is not installed",
                             hint="apt-get install ovmf")
    return code, vars_


# --------------------------------------------------------------------------- argv

def build_argv(image: str | os.PathLike[str] | None, *, workdir: Path, uefi: bool = False,
               accel: str = "tcg", memory: int = 2048, smp: int | None = None,
               ignition: str | os.PathLike[str] | None = None, cdrom: bool | None = None,
               hybrid_disk: bool = False, snapshot: bool = False,
               kernel: str | os.PathLike[str] | None = None,
               initrds: Sequence[str | os.PathLike[str]] = (), kargs: Sequence[str] = (),
               network: bool = False, block_size: int | None = None,
               extra_args: Sequence[str] = ()) -> list[str]:
    """The QEMU command line (without starting anything). ``accel`` must be resolved."""
    if smp is None:
        smp = max(1, min(2, os.cpu_count() or 1))
    argv = [QEMU, *accel_args(accel), "-smp", str(smp), "-m", str(int(memory)),
            "-nographic", "-no-reboot", "-serial", "mon:stdio",
            "-pidfile", str(workdir / "qemu.pid")]
    if uefi:
        code, vars_src = ovmf_paths()
        vars_copy = workdir / "OVMF_VARS.fd"
        shutil.copyfile(vars_src, vars_copy)
        argv += ["-machine", "q35",
                 "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
    else:
        argv += ["-machine", "pc"]
    if image is not None:
        img = os.path.abspath(os.fspath(image))
        if "," in img:
            raise UserInputError(f"{image}: QEMU cannot take paths with commas",
                                 hint="rename or symlink the image")
        as_cd = cdrom if cdrom is not None else (is_iso(img) and not hybrid_disk)
        if hybrid_disk and cdrom:
            raise UserInputError("--cdrom and --hybrid-disk exclude each other")
        if as_cd:
            argv += ["-drive", f"file={img},format=raw,media=cdrom,readonly=on,index=2"]
            if not uefi:
                argv += ["-boot", "order=d"]
        else:
            fmt = "raw" if is_iso(img) else disk_format(img)
            opts = f"file={img},format={fmt},if=none,id=disk0"
            if is_iso(img) and not snapshot:
                opts += ",readonly=on"
            if snapshot:
                opts += ",snapshot=on"
            dev = "virtio-blk-pci,drive=disk0,bootindex=0"
            if block_size:
                if block_size not in (512, 4096):
                    raise UserInputError(f"--block-size {block_size}: use 512 or 4096")
                dev += f",logical_block_size={block_size},physical_block_size={block_size}"
            argv += ["-drive", opts, "-device", dev]
    if kernel is not None:
        argv += ["-kernel", os.fspath(kernel)]
        if len(initrds) == 1:
            argv += ["-initrd", os.fspath(initrds[0])]
        elif initrds:
            # QEMU's Linux loader takes one initrd: concatenate them like a boot loader
            # loading several does (each 4-byte aligned; the kernel unpacks them in order)
            argv += ["-initrd", str(concat_initrds(initrds, workdir / "initrd.cat"))]
        if kargs:
            argv += ["-append", " ".join(kargs)]
    elif kargs or initrds:
        raise UserInputError("--karg/--initrd need --kernel (direct kernel boot), or an ISO",
                             hint="to change an ISO's kernel arguments for good use `imagebuilder iso customize`")
    if ignition is not None:
        ign = os.path.abspath(os.fspath(ignition))
        if not os.path.isfile(ign):
            raise UserInputError(f"{ignition}: Ignition config not found")
        if "," in ign:
            raise UserInputError(f"{ignition}: QEMU cannot take paths with commas")
        argv += ["-fw_cfg", f"name={IGNITION_FW_CFG},file={ign}"]
    if network:
        argv += ["-nic", "user,model=virtio-net-pci"]
    else:
        argv += ["-nic", "none"]
    argv += [str(a) for a in extra_args]
    return argv


def concat_initrds(initrds: Sequence[str | os.PathLike[str]], dest: Path) -> Path:
    with open(dest, "wb") as out:
        for i in initrds:
            with open(i, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
            out.write(b"\0" * (-out.tell() % 4))
    return dest


def iso_boot_entry(iso: str | os.PathLike[str], workdir: Path) -> tuple[Path, list[Path], list[str]]:
    """The default boot entry of a live ISO, extracted for a direct kernel boot.

    Reads ISOLINUX's (else GRUB's) config from the ISO: the default (else first) label's
    kernel, its initrds and its kernel arguments (for a CoreOS ISO these include the kargs
    embed area, so customized kargs and the Ignition area come along). Returns
    (kernel, initrds, kargs) as files extracted into ``workdir``.
    """
    from ..iso.rebuild import list_files

    files = list_files(Path(iso))
    cfgs = [p for p in files if re.search(r"(?i)/(isolinux|syslinux)\.cfg$", p)]
    cfgs += [p for p in files if p.lower().endswith("/grub.cfg")]
    if not cfgs:
        raise BadImageError(f"{iso}: no ISOLINUX or GRUB config found to take the kernel from")
    cfg_local = workdir / "boot.cfg"
    run(["xorriso", "-no_rc", "-osirrox", "on", "-indev", os.fspath(iso), "-extract", cfgs[0],
         str(cfg_local)])
    text = cfg_local.read_text(errors="replace")
    base = cfgs[0].rsplit("/", 1)[0] or "/"
    kernel = None
    initrds: list[str] = []
    args: list[str] = []
    if re.search(r"(?i)(isolinux|syslinux)\.cfg$", cfgs[0]):
        default = (re.search(r"(?im)^[ \t]*default[ \t]+(\S+)", text) or [None, None])[1]
        labels = re.split(r"(?im)^[ \t]*label[ \t]+", text)[1:]
        chosen = next((lb for lb in labels if default and lb.split(None, 1)[0] == default), None)
        chosen = chosen or (labels[0] if labels else "")
        k = re.search(r"(?im)^[ \t]*(?:kernel|linux)[ \t]+(\S+)", chosen)
        a = re.search(r"(?im)^[ \t]*append[ \t]+(.*)$", chosen)
        kernel = k.group(1) if k else None
        for tok in (a.group(1).split() if a else []):
            if tok.startswith("initrd="):
                initrds += [x for x in tok[len("initrd="):].split(",") if x]
            else:
                args.append(tok)
    else:
        entry = re.split(r"(?m)^[ \t]*menuentry\b", text)
        body = entry[1] if len(entry) > 1 else text
        k = re.search(r"(?m)^[ \t]*linux(?:efi)?[ \t]+(\S+)(.*)$", body)
        i = re.search(r"(?m)^[ \t]*initrd(?:efi)?[ \t]+(.*)$", body)
        if k:
            kernel, args = k.group(1), k.group(2).split()
        initrds = i.group(1).split() if i else []
    if not kernel:
        raise BadImageError(f"{iso}: no kernel line in {cfgs[0]}")

    def iso_path(p: str) -> str:
        return p if p.startswith("/") else f"{base.rstrip('/')}/{p}"

    wanted = [iso_path(kernel), *(iso_path(p) for p in initrds)]
    cmd = ["xorriso", "-no_rc", "-osirrox", "on", "-indev", os.fspath(iso)]
    local = []
    for n, p in enumerate(wanted):
        local.append(workdir / f"boot{n}")
        cmd += ["-extract", p, str(local[-1])]
    run(cmd)
    return local[0], local[1:], args


# --------------------------------------------------------------------------- console loop

class _Cleaner:
    """Incrementally turn console bytes into plain text (no escapes, no \\r)."""

    def __init__(self) -> None:
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""

    def feed(self, data: bytes, final: bool = False) -> str:
        text = self._held + self._dec.decode(data, final)
        self._held = ""
        if not final:
            esc = text.rfind("\x1b")
            if esc != -1 and len(text) - esc < 64 and not _ANSI_RE.match(text, esc):
                self._held, text = text[esc:], text[:esc]
        text = _ANSI_RE.sub("", text)
        text = text.replace("\r\n", "\n").replace("\r", "")
        # drop backspace-erase pairs (iPXE's countdown) and other C0 controls except \n \t
        text = re.sub(r"[^\n](?:\x08)|\x08", "", text)
        return re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text)


def _kill_qemu(pidfile: Path, sig: int = signal.SIGTERM) -> None:
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        os.kill(pid, sig)


def _run_console(argv: list[str], *, expect: re.Pattern | None, timeout: float, workdir: Path,
                 console: BinaryIO | None = None, log_file: BinaryIO | None = None,
                 accel: str = "") -> BootResult:
    """Start QEMU (via run() in a thread), read its serial console until expect/timeout/exit."""
    pidfile = workdir / "qemu.pid"
    if "-pidfile" not in argv:
        argv = [*argv, "-pidfile", str(pidfile)]
    rfd, wfd = os.pipe()
    state: dict = {}

    def runner() -> None:
        try:
            # the timeout is a backstop only: we stop QEMU ourselves via its pidfile
            state["proc"] = run(argv, capture=True, check=False, stdout=wfd, timeout=timeout + 120)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            state["error"] = e
        finally:
            os.close(wfd)

    t0 = time.monotonic()
    th = threading.Thread(target=runner, name="qemu", daemon=True)
    th.start()
    cleaner = _Cleaner()
    text = ""
    searched = 0
    reason = ""
    match = None
    deadline = t0 + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                reason = "timeout"
                break
            ready, _, _ = select.select([rfd], [], [], min(left, 0.5))
            if not ready:
                continue
            chunk = os.read(rfd, 65536)
            if not chunk:
                break  # qemu exited
            if console is not None:
                with contextlib.suppress(OSError, ValueError):
                    console.write(chunk)
                    console.flush()
            if log_file is not None:
                log_file.write(chunk)
                log_file.flush()
            piece = cleaner.feed(chunk)
            text += piece
            if expect is not None and text:
                m = expect.search(text, max(0, searched - 4096))
                searched = len(text)
                if m:
                    reason, match = "matched", m.group(0)
                    break
    finally:
        if th.is_alive():
            _kill_qemu(pidfile)
            th.join(15)
            if th.is_alive():
                _kill_qemu(pidfile, signal.SIGKILL)
                th.join(10)
        # drain what is left in the pipe (the writer end is closed once run() returned)
        with contextlib.suppress(OSError):
            while True:
                r, _, _ = select.select([rfd], [], [], 0)
                if not r:
                    break
                chunk = os.read(rfd, 65536)
                if not chunk:
                    break
                if log_file is not None:
                    log_file.write(chunk)
                text += cleaner.feed(chunk)
        os.close(rfd)
    text += cleaner.feed(b"", final=True)
    duration = time.monotonic() - t0
    if "error" in state:
        raise state["error"]
    proc = state.get("proc")
    rc = proc.returncode if proc is not None else None
    if not reason:
        reason = "powered-off" if rc == 0 else "guest-exited"
        stderr = (proc.stderr or b"").decode(errors="replace") if proc is not None else ""
        if rc not in (0, None) and not text.strip():
            last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
            raise ToolError(f"{os.path.basename(argv[0])} failed with exit status {rc}"
                            + (f": {last}" if last else ""), argv=argv, returncode=rc,
                            stderr=stderr)
    matched = reason == "matched" or (expect is None and reason == "powered-off")
    return BootResult(matched=matched, output=text, duration=duration, reason=reason,
                      accel=accel, returncode=rc, match=match, argv=list(argv))


# --------------------------------------------------------------------------- API

def boot(image: str | os.PathLike[str] | None, *, uefi: bool = False, accel: str = "auto",
         memory: int = 2048, ignition: str | os.PathLike[str] | None = None,
         expect: str | re.Pattern | None = None, timeout: float = 600,
         extra_args: Sequence[str] = (), log_path: str | os.PathLike[str] | None = None,
         cdrom: bool | None = None, hybrid_disk: bool = False, snapshot: bool = False,
         kernel: str | os.PathLike[str] | None = None,
         initrds: Sequence[str | os.PathLike[str]] = (), kargs: Sequence[str] = (),
         smp: int | None = None, network: bool = False, block_size: int | None = None,
         console: BinaryIO | None = None) -> BootResult:
    """Boot ``image`` (disk image or ISO; None with ``kernel``) and watch the serial console.

    Returns when ``expect`` matches (``matched=True``), the guest exits (QEMU
    ends, e.g. ``poweroff`` with ``-no-reboot``) or ``timeout`` seconds pass.
    ``console``: a binary stream the raw console is copied to as it arrives.
    ``log_path``: also write the raw console there. ISOs boot as a CD unless
    ``hybrid_disk``; disk formats come from ``qemu-img info``. ``kargs``/``initrds``
    with an ISO and no ``kernel``: the ISO's default boot entry is booted directly
    (its kernel, initrds and kargs, plus these), with the ISO still attached.
    ``block_size``: 4096 presents the disk with 4K logical sectors.
    """
    require(QEMU)
    if image is not None and not os.path.exists(image):
        raise UserInputError(f"{image}: image not found")
    if image is None and kernel is None:
        raise UserInputError("nothing to boot: give an image or a kernel")
    if kernel is not None and not os.path.isfile(kernel):
        raise UserInputError(f"{kernel}: kernel not found")
    for i in initrds:
        if not os.path.isfile(i):
            raise UserInputError(f"{i}: initrd not found")
    if timeout <= 0:
        raise UserInputError("timeout must be positive")
    pattern = None
    if expect is not None:
        try:
            pattern = re.compile(expect) if isinstance(expect, str) else expect
        except re.error as e:
            raise UserInputError(f"--expect: invalid regular expression: {e}") from None
    acc = resolve_accel(accel)
    with tempfile.TemporaryDirectory(prefix="imagebuilder-boot-") as td:
        workdir = Path(td)
        if kernel is None and (kargs or initrds) and image is not None and is_iso(image):
            # an ISO with extra kargs: boot its default entry's kernel directly (the ISO
            # stays attached), with the entry's kargs + ours
            kernel, iso_initrds, iso_kargs = iso_boot_entry(image, workdir)
            initrds = [*iso_initrds, *initrds]
            kargs = [*iso_kargs, *kargs]
        argv = build_argv(image, workdir=workdir, uefi=uefi, accel=acc, memory=memory, smp=smp,
                          ignition=ignition, cdrom=cdrom, hybrid_disk=hybrid_disk,
                          snapshot=snapshot, kernel=kernel, initrds=initrds, kargs=kargs,
                          network=network, block_size=block_size, extra_args=extra_args)
        log_cm = open(log_path, "wb") if log_path is not None else contextlib.nullcontext(None)
        with log_cm as log_file:
            res = _run_console(argv, expect=pattern, timeout=timeout, workdir=workdir,
                               console=console, log_file=log_file, accel=acc)
    log.info("boot: %s after %.1f s (accel %s)", res.reason, res.duration, acc)
    return res
