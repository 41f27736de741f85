"""OVA for vSphere (``govc import.ova``, the vSphere client): a ustar archive holding,
in this order, the OVF descriptor ``NAME.ovf``, the manifest ``NAME.mf`` (``SHA256(file)=
hex`` lines for the descriptor and the disk) and ``disk.vmdk`` (stream-optimized,
lsilogic, compat6: :mod:`.vmdk`).

The descriptor follows the elements coreos-assembler's vSphere template carries (OVF 1.0
envelope; References; DiskSection with the capacity in bytes and the streamOptimized
format URL; a VirtualSystem with OperatingSystemSection ``vmw:osType``, a
VirtualHardwareSection of type ``vmx-NN`` with CPU, memory, SCSI controller, the disk on
it and a VMXNET3 NIC; a ProductSection offering ``guestinfo.ignition.config.data`` and
its encoding, where Ignition's ``vmware`` platform reads its config). It is generated
from data, not a text template, and :func:`check` verifies an OVA against those rules.

Deterministic: the vmdk is (see :mod:`.vmdk`), the descriptor has no time stamps, and the
archive is written by Python's tarfile in ustar format with mtime = epoch, owner 0/0,
mode 0644. ustar stores sizes in 11 octal digits, so a vmdk above 8 GiB - 1 byte cannot
go into an OVA (an error once the vmdk is made, since its size is only known then).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadImageError, InvalidConfigError
from . import vmdk
from .common import Artifact, check_limit, named_temp_output, raw_size

FORMAT = "ova"
MAX_MEMBER = 8 ** 11 - 1  # ustar size field
DISK_FILE = "disk.vmdk"
STREAM_OPTIMIZED = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
NS = {
    "ovf": "http://schemas.dmtf.org/ovf/envelope/1",
    "rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",
    "vssd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData",
    "vmw": "http://www.vmware.com/schema/ovf",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
}
# CIM resource types used in the hardware section
RT_CPU, RT_MEMORY, RT_IDE, RT_SCSI, RT_NIC, RT_DISK = 3, 4, 5, 6, 10, 17
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class OvfSettings:
    """What the descriptor says about the VM (defaults as coreos-assembler's vSphere OVA)."""

    name: str
    hw_version: int = 17
    os_type: str = "otherLinux64Guest"
    cpus: int = 2
    memory_mb: int = 4096
    scsi: str = "lsilogic"
    nic: str = "VmxNet3"
    product: str = ""
    vendor: str = ""
    version: str = ""
    firmware: str | None = None  # "efi" or "bios"; None leaves vSphere's default

    def validate(self) -> None:
        if not _NAME_RE.match(self.name):
            raise InvalidConfigError(f"ova.name: {self.name!r} is not a valid name (letters, digits, ._-)")
        if not 4 <= self.hw_version <= 99:
            raise InvalidConfigError(f"ova.hw_version: {self.hw_version} is not a vSphere hardware version")
        if not re.fullmatch(r"[A-Za-z0-9_]+", self.os_type):
            raise InvalidConfigError(f"ova.os_type: {self.os_type!r} is not a vSphere guest id")
        if self.cpus < 1 or self.memory_mb < 4:
            raise InvalidConfigError("ova: cpus must be >= 1 and memory_mb >= 4")
        if self.firmware not in (None, "efi", "bios"):
            raise InvalidConfigError(f"ova.firmware: {self.firmware!r} is not efi or bios")


def _q(ns: str, tag: str) -> str:
    return f"{{{NS[ns]}}}{tag}"


def _sub(parent: ET.Element, ns: str, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, _q(ns, tag), {(_q(*k.split("_", 1)) if "_" in k else k): v
                                             for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def _item(hw: ET.Element, fields: list[tuple[str, str]], required: bool = True) -> ET.Element:
    item = _sub(hw, "ovf", "Item", **({} if required else {"ovf_required": "false"}))
    for tag, text in sorted(fields):  # rasd elements in alphabetical order, as the schema wants
        _sub(item, "rasd", tag, text)
    return item


def build_ovf(s: OvfSettings, *, capacity: int, vmdk_size: int) -> bytes:
    """The OVF descriptor (UTF-8 XML) for one stream-optimized disk of ``capacity`` bytes."""
    s.validate()
    for p, u in NS.items():
        ET.register_namespace(p, u)
    env = ET.Element(_q("ovf", "Envelope"))
    refs = _sub(env, "ovf", "References")
    _sub(refs, "ovf", "File", ovf_href=DISK_FILE, ovf_id="file1", ovf_size=str(vmdk_size))
    ds = _sub(env, "ovf", "DiskSection")
    _sub(ds, "ovf", "Info", "Virtual disk information")
    _sub(ds, "ovf", "Disk", ovf_capacity=str(capacity), ovf_capacityAllocationUnits="byte",
         ovf_diskId="vmdisk1", ovf_fileRef="file1", ovf_format=STREAM_OPTIMIZED)
    ns_ = _sub(env, "ovf", "NetworkSection")
    _sub(ns_, "ovf", "Info", "The list of logical networks")
    net = _sub(ns_, "ovf", "Network", ovf_name="VM Network")
    _sub(net, "ovf", "Description", "The VM Network network")
    vs = _sub(env, "ovf", "VirtualSystem", ovf_id=s.name)
    _sub(vs, "ovf", "Info", "A virtual machine")
    _sub(vs, "ovf", "Name", s.name)
    os_ = _sub(vs, "ovf", "OperatingSystemSection", ovf_id="101", vmw_osType=s.os_type)
    _sub(os_, "ovf", "Info", "The kind of installed guest operating system")
    hw = _sub(vs, "ovf", "VirtualHardwareSection")
    _sub(hw, "ovf", "Info", "Virtual hardware requirements")
    system = _sub(hw, "ovf", "System")
    _sub(system, "vssd", "ElementName", "Virtual Hardware Family")
    _sub(system, "vssd", "InstanceID", "0")
    _sub(system, "vssd", "VirtualSystemIdentifier", s.name)
    _sub(system, "vssd", "VirtualSystemType", f"vmx-{s.hw_version:02d}")
    _item(hw, [("AllocationUnits", "hertz * 10^6"), ("Description", "Number of Virtual CPUs"),
               ("ElementName", f"{s.cpus} virtual CPU(s)"), ("InstanceID", "1"),
               ("ResourceType", str(RT_CPU)), ("VirtualQuantity", str(s.cpus))])
    _item(hw, [("AllocationUnits", "byte * 2^20"), ("Description", "Memory Size"),
               ("ElementName", f"{s.memory_mb} MB of memory"), ("InstanceID", "2"),
               ("ResourceType", str(RT_MEMORY)), ("VirtualQuantity", str(s.memory_mb))])
    _item(hw, [("Address", "0"), ("Description", "SCSI Controller"), ("ElementName", "SCSI Controller 0"),
               ("InstanceID", "3"), ("ResourceSubType", s.scsi), ("ResourceType", str(RT_SCSI))])
    _item(hw, [("AddressOnParent", "0"), ("ElementName", "Hard disk 0"),
               ("HostResource", "ovf:/disk/vmdisk1"), ("InstanceID", "4"), ("Parent", "3"),
               ("ResourceType", str(RT_DISK))])
    _item(hw, [("AddressOnParent", "7"), ("AutomaticAllocation", "true"), ("Connection", "VM Network"),
                     ("Description", f'{s.nic} ethernet adapter on "VM Network"'),
                     ("ElementName", "Network adapter 1"), ("InstanceID", "5"),
                     ("ResourceSubType", s.nic), ("ResourceType", str(RT_NIC))])
    if s.firmware:
        _sub(hw, "vmw", "Config", ovf_required="false", vmw_key="firmware", vmw_value=s.firmware)
    ps = _sub(vs, "ovf", "ProductSection")
    _sub(ps, "ovf", "Info", "Information about the installed software")
    _sub(ps, "ovf", "Product", s.product or s.name)
    _sub(ps, "ovf", "Vendor", s.vendor or s.name)
    _sub(ps, "ovf", "Version", s.version or "0")
    for key, label in (("guestinfo.ignition.config.data", "Ignition config data"),
                       ("guestinfo.ignition.config.data.encoding", "Ignition config data encoding")):
        prop = _sub(ps, "ovf", "Property", ovf_key=key, ovf_type="string", ovf_userConfigurable="true",
                    ovf_value="")
        _sub(prop, "ovf", "Label", label)
        _sub(prop, "ovf", "Description", label.replace("Ignition config data", "Inline Ignition config")
             if key.endswith("data") else "Encoding of the Ignition config data (base64, gzip+base64)")
    ET.indent(env, "  ")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(env, encoding="utf-8",
                                                                    xml_declaration=False) + b"\n"


def manifest(files: list[tuple[str, bytes | Path]]) -> bytes:
    """``SHA256(name)= hex`` lines, one per file, in the given order."""
    lines = []
    for name, data in files:
        lines.append(f"SHA256({name})= {_sha256(data)}\n")
    return "".join(lines).encode()


def _sha256(data: bytes | Path) -> str:
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    h = hashlib.sha256()
    with open(data, "rb") as f:
        for chunk in iter(lambda: f.read(4 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tarinfo(name: str, size: int, epoch: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode = size, int(epoch), 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def convert(raw: str | os.PathLike[str], dest: str | os.PathLike[str], *, seed: str, epoch: int,
            settings: OvfSettings, force: bool = False) -> Artifact:
    raw, dest = Path(raw), Path(dest)
    settings.validate()
    size = raw_size(raw)
    check_limit(FORMAT, size, vmdk.MAX_SIZE)
    with named_temp_output(dest, force=force) as tmp:
        disk = tmp.parent / DISK_FILE
        vmdk.write(raw, disk, seed=seed, adapter_type="lsilogic", compat6=True)
        vmdk_size = disk.stat().st_size
        check_limit(FORMAT, vmdk_size, MAX_MEMBER, "stream-optimized disk (ustar member)")
        ovf_name, mf_name = f"{settings.name}.ovf", f"{settings.name}.mf"
        ovf = build_ovf(settings, capacity=size, vmdk_size=vmdk_size)
        mf = manifest([(ovf_name, ovf), (DISK_FILE, disk)])
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            tar.addfile(_tarinfo(ovf_name, len(ovf), epoch), io.BytesIO(ovf))
            tar.addfile(_tarinfo(mf_name, len(mf), epoch), io.BytesIO(mf))
            with open(disk, "rb") as f:
                tar.addfile(_tarinfo(DISK_FILE, vmdk_size, epoch), f)
    return Artifact(dest, FORMAT, size, patched=["vmdk descriptor CID"])


# --------------------------------------------------------------------------- check

def check(path: str | os.PathLike[str]) -> list[str]:
    """Problems of an OVA against what a vSphere import needs (empty list: fine):
    ustar members with the descriptor first and the manifest (same base name) next,
    every manifest digest right, every referenced file present with its declared size,
    a stream-optimized disk whose capacity matches the VMDK, and a hardware section with
    a vmx-NN system type, CPU, memory, a disk controller and the disk attached to it."""
    path = Path(path)
    problems: list[str] = []
    try:
        tar = tarfile.open(path, "r:")
    except (tarfile.TarError, OSError) as e:
        return [f"not a tar archive: {e}"]
    with tar:
        members = tar.getmembers()
        with open(path, "rb") as f:
            for m in members:
                f.seek(m.offset + 257)
                if f.read(8) != b"ustar\x0000":
                    problems.append(f"{m.name}: not a ustar (POSIX.1-1988) member")
        names = [m.name for m in members]
        if not names or not names[0].endswith(".ovf"):
            return problems + [f"the first member must be the .ovf descriptor, not {names[:1]}"]
        for m in members:
            if not m.isfile() or "/" in m.name or m.name in ("..", "."):
                problems.append(f"{m.name}: OVA members must be plain files at the top level")
        base = names[0][:-4]
        by_name = {m.name: m for m in members}
        ovf_bytes = tar.extractfile(members[0]).read()
        if f"{base}.mf" in by_name:
            if names[1] != f"{base}.mf":
                problems.append(f"the manifest {base}.mf must directly follow the descriptor")
            mf = tar.extractfile(by_name[f"{base}.mf"]).read().decode("utf-8", "replace")
            for line in mf.splitlines():
                mm = re.fullmatch(r"(SHA256|SHA1)\((.+)\)= ([0-9a-f]+)", line.strip())
                if not mm:
                    problems.append(f"manifest line not understood: {line!r}")
                    continue
                algo, fname, digest = mm.groups()
                if fname not in by_name:
                    problems.append(f"manifest names {fname}, which is not in the archive")
                    continue
                h = hashlib.new(algo.lower())
                src = tar.extractfile(by_name[fname])
                for chunk in iter(lambda: src.read(4 << 20), b""):
                    h.update(chunk)
                if h.hexdigest() != digest:
                    problems.append(f"manifest digest of {fname} does not match its content")
        problems += _check_ovf(ovf_bytes, tar, by_name)
    return problems


def _check_ovf(data: bytes, tar: tarfile.TarFile, by_name: dict) -> list[str]:
    out: list[str] = []
    try:
        env = ET.fromstring(data)
    except ET.ParseError as e:
        return [f"descriptor is not XML: {e}"]
    if env.tag != _q("ovf", "Envelope"):
        return [f"descriptor root is {env.tag}, not an OVF 1.x Envelope"]
    o = lambda a: _q("ovf", a)  # noqa: E731 - attribute names
    files = {}
    for fe in env.findall("ovf:References/ovf:File", NS):
        fid, href = fe.get(o("id")), fe.get(o("href"))
        files[fid] = href
        if href not in by_name:
            out.append(f"References/File {href}: not in the archive")
        elif fe.get(o("size")) is not None and int(fe.get(o("size"))) != by_name[href].size:
            out.append(f"References/File {href}: size {fe.get(o('size'))} != {by_name[href].size} in the archive")
    disks = {}
    for de in env.findall("ovf:DiskSection/ovf:Disk", NS):
        did, cap, ref = de.get(o("diskId")), de.get(o("capacity")), de.get(o("fileRef"))
        units = de.get(o("capacityAllocationUnits"), "byte")
        mu = re.fullmatch(r"byte(?:\s*\*\s*2\^(\d+))?", units.strip())
        if not (cap and cap.isdigit() and mu):
            out.append(f"DiskSection/Disk {did}: capacity {cap!r} {units!r} is not a byte count")
            continue
        capacity = int(cap) << int(mu.group(1) or 0)
        disks[did] = capacity
        if ref not in files:
            out.append(f"DiskSection/Disk {did}: fileRef {ref!r} is not in References")
            continue
        if de.get(o("format")) != STREAM_OPTIMIZED:
            out.append(f"DiskSection/Disk {did}: format must be the streamOptimized VMDK URL")
        member = by_name.get(files[ref])
        if member is not None:
            head = tar.extractfile(member).read(64 * 1024)
            vm_cap = _vmdk_capacity(head)
            if vm_cap is None:
                out.append(f"{files[ref]}: not a sparse VMDK")
            elif vm_cap != capacity:
                out.append(f"DiskSection/Disk {did}: capacity {capacity} != the VMDK's {vm_cap}")
    if not disks:
        out.append("no DiskSection/Disk")
    vs = env.find("ovf:VirtualSystem", NS)
    if vs is None:
        return out + ["no VirtualSystem"]
    if vs.find("ovf:OperatingSystemSection", NS) is None:
        out.append("VirtualSystem: no OperatingSystemSection")
    hw = vs.find("ovf:VirtualHardwareSection", NS)
    if hw is None:
        return out + ["VirtualSystem: no VirtualHardwareSection"]
    vst = hw.findtext("ovf:System/vssd:VirtualSystemType", default="", namespaces=NS)
    if not re.fullmatch(r"vmx-\d+( vmx-\d+)*", vst.strip()):
        out.append(f"VirtualHardwareSection: VirtualSystemType {vst!r} is not vmx-NN")
    items = []
    for it in hw.findall("ovf:Item", NS):
        items.append({c.tag.split("}")[1]: (c.text or "").strip() for c in it
                      if c.tag.startswith("{" + NS["rasd"])})
    for rt, what in ((RT_CPU, "CPU"), (RT_MEMORY, "memory")):
        it = next((i for i in items if i.get("ResourceType") == str(rt)), None)
        if it is None or not it.get("VirtualQuantity", "").isdigit() or int(it["VirtualQuantity"]) < 1:
            out.append(f"VirtualHardwareSection: no {what} Item with a VirtualQuantity")
    controllers = {i.get("InstanceID") for i in items if i.get("ResourceType") in (str(RT_SCSI), str(RT_IDE))}
    if not controllers:
        out.append("VirtualHardwareSection: no SCSI or IDE controller Item")
    attached = set()
    for i in items:
        if i.get("ResourceType") != str(RT_DISK):
            continue
        host = i.get("HostResource", "")
        did = host.rsplit("/", 1)[-1] if host.startswith(("ovf:/disk/", "/disk/")) else None
        if did not in disks:
            out.append(f"disk Item {i.get('InstanceID')}: HostResource {host!r} names no Disk")
        if i.get("Parent") not in controllers:
            out.append(f"disk Item {i.get('InstanceID')}: Parent {i.get('Parent')!r} is not a controller")
        attached.add(did)
    for did in disks:
        if did not in attached:
            out.append(f"Disk {did} is not attached by any Item")
    if len(set(i.get("InstanceID") for i in items)) != len(items):
        out.append("VirtualHardwareSection: duplicate InstanceID")
    return out


def _vmdk_capacity(head: bytes) -> int | None:
    import struct

    if head[:4] != b"KDMV":
        return None
    return struct.unpack_from("<Q", head, 12)[0] * 512
