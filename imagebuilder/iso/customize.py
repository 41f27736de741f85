"""The ``iso customize`` / ``pxe customize`` model: flags -> live Ignition config + initrd members.

Mirrors coreos-installer's ``LiveInitrd`` (src/live/customize.rs):

* ``--dest-*`` options become a generated installer config
  ``/etc/coreos/installer.d/NNNN-customize.yaml`` (always the last one) and, for
  ``--dest-ignition``, the file ``/etc/coreos/dest.ign`` (``ignition-file:`` points to it);
* ``--installer-config`` files are copied to ``/etc/coreos/installer.d/NNNN-<name>``;
* ``--pre-install``/``--post-install`` scripts become ``/usr/local/bin/{pre,post}-install-<name>``
  plus enabled oneshot units ordered around ``coreos-installer.service``;
* ``--ignition-ca`` goes to the live config's TLS CAs and, when there is a dest config, to it;
* ``--live-ignition`` configs are merged into the live config as gzip data URLs;
* ``--network-keyfile``/``--network-nmstate`` become initrd members
  ``etc/coreos-firstboot-network/<name>`` (not Ignition files), and make the installer
  copy the network config (``copy-network: true``) if it runs.

Everything here is pure (reads the input files, returns bytes) and deterministic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadImageError, InvalidConfigError, UserInputError
from .areas import OsFeatures, parse_features
from .image import IsoImage, embed_initrd_members
from .inputs import read_ignition
from .kargs import modify_kargs
from .flags import CUSTOMIZE_FLAGS, Customizations, Flag, normalize_console  # noqa: F401
from .paths import IGNITION_PATH, NETWORK_DIR

DEST_IGNITION_PATH = "/etc/coreos/dest.ign"
INSTALLER_DIR = "/etc/coreos/installer.d"
LIVE_SPEC_VERSION = "3.3.0"

# coreos-installer's messages for missing OS features
MSG_NO_NETWORK = "This OS image does not support customizing network settings."
MSG_NO_INSTALLER = "This OS image does not support customizing installer configuration."
MSG_NO_CONSOLE = "This OS image does not support customizing the destination console."
MSG_NO_LIVE_KARGS = "This OS image does not support customizing live kernel arguments."

# coreos-installer InstallConfig keys accepted in installer config files, in the order
# coreos-installer serializes them (serde field order)
INSTALL_CONFIG_KEYS: dict[str, str] = {
    "stream": "str",
    "image-url": "str",
    "image-file": "str",
    "ignition-file": "str",
    "ignition-url": "str",
    "ignition-hash": "str",
    "architecture": "str",
    "platform": "str",
    "console": "list",
    "append-karg": "list",
    "delete-karg": "list",
    "copy-network": "bool",
    "network-dir": "str",
    "save-partlabel": "list",
    "save-partindex": "list",
    "offline": "bool",
    "insecure": "bool",
    "insecure-ignition": "bool",
    "stream-base-url": "str",
    "preserve-on-error": "bool",
    "fetch-retries": "str",
    "secure-ipl": "bool",
    "dest-device": "str",
}

# ---------------------------------------------------------------------------
# OS features (/coreos/features.json in the ISO, etc/coreos/features.json in the initrd)


def features_from_json(data: bytes | None, *, where: str = "features.json") -> OsFeatures:
    """Parse features.json as found in a PXE initramfs (``etc/coreos/features.json``);
    ``None`` (file absent) means an old image without any of the features."""
    if data is None:
        return OsFeatures()
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, ValueError) as e:
        raise BadImageError(f"parsing OS features {where}: {e}") from None
    return parse_features(raw, where)


ALL_FEATURES = OsFeatures(installer_config=True, installer_config_directives={"console": True},
                          live_initrd_network=True, present=True)


def _is_console(spec: str) -> bool:
    try:
        normalize_console(spec)
    except UserInputError:
        return False
    return True


# ---------------------------------------------------------------------------
# Reading and checking inputs


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise UserInputError(f"reading {path}: {e.strerror or e}") from None


def _filename(path: str) -> str:
    name = Path(path).name
    if not name or name in (".", ".."):
        raise UserInputError(f"{path}: path has no file name")
    return name


def parse_user_ignition(data: bytes, where: str,
                        warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Parse and check a user's Ignition config (every spec version the toolkit knows).

    coreos-installer only parses; we also run imagebuilder's validator, so a config
    Ignition would reject at boot fails here instead. Errors say "parsing Ignition
    config <where>"; warnings (unused keys...) go to ``warn``.
    """
    from ..ignition import spec  # (heavy imports stay off the start-up path)
    from ..ignition.validate import validate_config

    known = ", ".join(str(v) for v in spec.SUPPORTED_VERSIONS)
    report = validate_config(data, source=where)
    if report.errors:
        first = report.errors[0]
        more = len(report.errors) - 1
        hint = f"run: imagebuilder ignition validate {where}"
        if first.kind == "version":
            hint = f"Ignition spec {known} is accepted, and Butane configs (*.bu)"
        raise UserInputError(
            f"parsing Ignition config {where}: {first.format()}"
            + (f" (and {more} more)" if more else ""), hint=hint)
    for w in report.warnings:
        if warn is not None:
            warn(f"Warning parsing {where}: {w.format()}")
    obj = json.loads(data)
    if not isinstance(obj, dict):  # (the validator has refused it already)
        raise UserInputError(f"parsing Ignition config {where}: expected a JSON object")
    return obj


def serialize_config(cfg: Mapping[str, Any]) -> bytes:
    """Compact JSON, key order kept (coreos-installer re-serializes with serde_json)."""
    return json.dumps(cfg, separators=(",", ":"), ensure_ascii=False).encode()


def parse_installer_config(data: bytes, where: str) -> dict[str, Any]:
    """Parse (don't validate) a coreos-installer config file: a YAML mapping of known keys."""
    import yaml

    try:
        obj = yaml.safe_load(data)
    except yaml.YAMLError as e:
        raise UserInputError(f"parsing installer config {where}: {e}") from None
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise UserInputError(f"parsing installer config {where}: expected a mapping of options")
    for key, value in obj.items():
        kind = INSTALL_CONFIG_KEYS.get(str(key))
        if kind is None:
            raise UserInputError(f"parsing installer config {where}: unknown field `{key}`",
                                 hint="keys are coreos-installer install's long option names")
        ok = {"str": lambda v: isinstance(v, (str, int)) and not isinstance(v, bool),
              "bool": lambda v: isinstance(v, bool),
              "list": lambda v: isinstance(v, list) and all(
                  isinstance(x, (str, int)) and not isinstance(x, bool) for x in v)}[kind](value)
        if not ok:
            want = {"str": "a string", "bool": "true or false", "list": "a list of strings"}[kind]
            raise UserInputError(f"parsing installer config {where}: `{key}` must be {want}")
    return obj


def installer_yaml(conf: Mapping[str, Any]) -> bytes:
    """Serialize our generated installer config, keys in coreos-installer's order."""
    import yaml

    ordered = {k: conf[k] for k in INSTALL_CONFIG_KEYS if k in conf and conf[k] not in (None, [], False)}
    return yaml.safe_dump(ordered, sort_keys=False, default_flow_style=False).encode()


# ---------------------------------------------------------------------------
# Assembly


@dataclass
class Plan:
    """The result of applying Customizations to an OS image with the given features."""

    live_config: dict[str, Any]
    live_config_empty: bool
    network: dict[str, bytes] = field(default_factory=dict)  # keyfile name -> contents
    notes: list[str] = field(default_factory=list)  # coreos-installer's stderr notes


def _hook_unit(typ: str, name: str) -> str:
    deps = {
        "pre": "After=coreos-installer-pre.target\nBefore=coreos-installer.service",
        "post": "After=coreos-installer.service\nBefore=coreos-installer.target",
    }[typ]
    target = {"pre": "coreos-installer.service", "post": "coreos-installer.target"}[typ]
    return (
        "# Generated by imagebuilder {iso|pxe} customize\n"
        "\n"
        "[Unit]\n"
        f"Description={typ.title()}-Install Script ({name})\n"
        "Documentation=https://coreos.github.io/coreos-installer/customizing-install/\n"
        f"{deps}\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"ExecStart=/usr/local/bin/{typ}-install-{name}\n"
        "RemainAfterExit=true\n"
        "StandardOutput=kmsg+console\n"
        "StandardError=kmsg+console\n"
        "\n"
        "[Install]\n"
        f"RequiredBy={target}"
    )


class _Config:
    """ConfigBuilder plus coreos-installer's duplicate checks and messages; file
    contents are gzip data URLs, as coreos-installer's ``make_resource`` writes them."""

    def __init__(self) -> None:
        from ..ignition.builder import ConfigBuilder

        self.b = ConfigBuilder(LIVE_SPEC_VERSION)
        self.paths: set[str] = set()
        self.units: set[str] = set()

    def add_file(self, path: str, data: bytes, mode: int) -> None:
        if path in self.paths:
            raise UserInputError(f"config already specifies path {path}")
        self.paths.add(path)
        self.b.add_file(path, data, mode=mode, compress="gzip")

    def add_unit(self, name: str, contents: str) -> None:
        if name in self.units:
            raise UserInputError(f"config already specifies unit {name}")
        self.units.add(name)
        self.b.add_unit(name, contents, enabled=True)

    def add_ca(self, data: bytes, where: str) -> None:
        try:
            self.b.add_ca(data)
        except InvalidConfigError as e:
            raise UserInputError(f"{where}: {e.message}") from None

    def merge_config(self, data: bytes) -> None:
        self.b.merge_config(data)

    def to_dict(self) -> dict[str, Any]:
        return self.b.to_dict()


def _check_not_repeated(cfg: dict[str, Any], seen: Sequence[tuple[dict[str, Any], str]],
                        path: str, flag: str) -> None:
    """Ignition rejects two identical ``merge`` entries ("duplicate entry defined")."""
    for other, other_path in seen:
        if other == cfg:
            raise UserInputError(f"{flag} {path}: same config as {other_path}; Ignition rejects "
                                 "duplicate merge entries")


def plan(c: Customizations, features: OsFeatures | None = None) -> Plan:
    """Apply the flags in coreos-installer's order; raise on the first problem.

    ``features=None`` means "assume the image supports everything" (used by unit tests
    and by callers that checked features themselves).
    """
    feats = features if features is not None else ALL_FEATURES
    live = _Config()
    user_dest: list[tuple[dict[str, Any], str]] = []
    installer: dict[str, Any] | None = None
    network: dict[str, bytes] = {}
    copy_network = False
    dest_ca: list[tuple[bytes, str]] = []
    serial = 0
    notes: list[str] = []

    def installer_conf() -> dict[str, Any]:
        nonlocal installer
        if installer is None:
            installer = {}
        return installer

    def add_installer_file(filename: str, data: bytes) -> None:
        nonlocal serial
        if not feats.installer_config:
            raise UserInputError(MSG_NO_INSTALLER)
        live.add_file(f"{INSTALLER_DIR}/{serial:04d}-{filename}", data, 0o600)
        serial += 1

    for path in c.dest_ignition:
        cfg = parse_user_ignition(read_ignition(path), path, notes.append)
        _check_not_repeated(cfg, user_dest, path, "--dest-ignition")
        user_dest.append((cfg, path))
    if c.dest_device is not None:
        installer_conf()["dest-device"] = c.dest_device
    for console in c.dest_console:
        if not feats.installer_config_directives.get("console", False):
            raise UserInputError(MSG_NO_CONSOLE)
        installer_conf().setdefault("console", []).append(normalize_console(console))
    for arg in c.dest_karg_append:
        installer_conf().setdefault("append-karg", []).append(arg)
    for arg in c.dest_karg_delete:
        installer_conf().setdefault("delete-karg", []).append(arg)
    console_args = [a[len("console="):] for a in c.dest_karg_append if a.startswith("console=")]
    if (console_args and all(_is_console(a) for a in console_args)
            and feats.installer_config_directives.get("console", False)):
        notes.append(
            "Note: consider using "
            + " ".join(f'"--dest-console {a}"' for a in console_args) + " instead of "
            + " ".join(f'"--dest-karg-append console={a}"' for a in console_args)
            + " to configure both kernel and bootloader consoles.")
    for path in c.network_keyfile:
        if not feats.live_initrd_network:
            raise UserInputError(MSG_NO_NETWORK)
        data = _read(path)
        name = _filename(path)
        if name in network:
            raise UserInputError(f"config already specifies keyfile {name}")
        network[name] = data
        copy_network = True
    for path in c.network_nmstate:
        from . import nmstate

        if not feats.live_initrd_network:
            raise UserInputError(MSG_NO_NETWORK)
        for name, data in nmstate.keyfiles_from_file(path):
            if name in network:
                raise UserInputError(f"config already specifies keyfile {name}")
            network[name] = data
        copy_network = True
    for path in c.ignition_ca:
        data = _read(path)
        live.add_ca(data, path)
        dest_ca.append((data, path))
    for typ, paths in (("pre", c.pre_install), ("post", c.post_install)):
        for path in paths:
            data = _read(path)
            name = _filename(path)
            live.add_file(f"/usr/local/bin/{typ}-install-{name}", data, 0o700)
            live.add_unit(f"{typ}-install-{name}.service", _hook_unit(typ, name))
    user_device = False
    for path in c.installer_config:
        data = _read(path)
        user_device |= bool(parse_installer_config(data, path).get("dest-device"))
        add_installer_file(_filename(path), data)
    seen_live: list[tuple[dict[str, Any], str]] = []
    for path in c.live_ignition:
        cfg = parse_user_ignition(read_ignition(path), path, notes.append)
        _check_not_repeated(cfg, seen_live, path, "--live-ignition")
        seen_live.append((cfg, path))
        live.merge_config(serialize_config(cfg))

    if user_dest:
        if len(user_dest) == 1 and not dest_ca:
            # exactly one user config and nothing of ours: embed it as-is
            dest_bytes = serialize_config(user_dest[0][0]) + b"\n"
        else:
            dest = _Config()
            for ca, ca_path in dest_ca:
                dest.add_ca(ca, ca_path)
            for cfg, _path in user_dest:
                dest.merge_config(serialize_config(cfg))
            dest_bytes = serialize_config(dest.to_dict()) + b"\n"
        live.add_file(DEST_IGNITION_PATH, dest_bytes, 0o600)
        installer_conf()["ignition-file"] = DEST_IGNITION_PATH

    if serial > 0 or installer is not None:
        device = (installer or {}).get("dest-device")
        notes.append(f"Boot media will automatically install to {device} without confirmation."
                     if device else "Boot media will automatically run installer.")
        if not device and not user_device:
            notes.append("Note: no destination device (--dest-device, or dest-device in an "
                         "--installer-config file); the install fails at boot unless the kernel "
                         "command line has coreos.inst.install_dev=DEVICE.")
        if copy_network:
            installer_conf()["copy-network"] = True
    if installer is not None:
        add_installer_file("customize.yaml", installer_yaml(installer))

    cfg = live.to_dict()
    empty = set(cfg) <= {"ignition"} and set(cfg.get("ignition", {})) <= {"version"}
    return Plan(live_config=cfg, live_config_empty=empty, network=network, notes=notes)


def build_live_config(c: Customizations, features: OsFeatures | None = None) -> bytes:
    """The generated live Ignition config (spec 3.3.0 JSON, trailing newline)."""
    return _live_bytes(plan(c, features).live_config)


def _live_bytes(cfg: Mapping[str, Any]) -> bytes:
    return serialize_config(cfg) + b"\n"


def build_initrd_members(c: Customizations, features: OsFeatures | None = None,
                         *, notes: Callable[[str], None] | None = None) -> dict[str, bytes]:
    """The initrd members for the customization: ``config.ign`` (only when the live config
    has content) and ``etc/coreos-firstboot-network/<keyfile>``. Notes (such as "Boot media
    will automatically install ...") go to ``notes`` -- a caller shows them only once the
    result is written."""
    p = plan(c, features)
    for n in p.notes if notes is not None else ():
        notes(n)
    members: dict[str, bytes] = {}
    if not p.live_config_empty:
        members[IGNITION_PATH] = _live_bytes(p.live_config)
    for name, data in p.network.items():
        members[f"{NETWORK_DIR}/{name}"] = data
    return members


def customize_iso(iso: IsoImage, c: Customizations, *, force: bool = False,
                  notes: Callable[[str], None]) -> None:
    """Apply ``c`` to an opened ISO in memory (write with ``iso.patches()`` afterwards).

    As coreos-installer: refuses an already customized ISO unless ``force``; the embedded
    initrd is replaced as a whole; live kargs are edited starting from the image's
    *default* kargs (so ``force`` on a customized ISO gives pristine + these flags). Areas
    whose contents are damaged count as customized and are rewritten with ``force``.
    """
    if not force and iso.is_customized:
        raise UserInputError("This ISO image is already customized; use -f to force.")
    if c.has_live_kargs and not iso.kargs_supported:
        raise UserInputError(MSG_NO_LIVE_KARGS)
    members = build_initrd_members(c, iso.features, notes=notes)
    damaged = iso.discard_damaged_area()
    current = {p: m.data for p, m in iso.members.items()}
    if damaged or members != current or iso.area_in_use != bool(members):
        embed_initrd_members(iso, members, replace=True)
    if iso.kargs_supported:
        kargs = modify_kargs(iso.default_kargs, append=c.live_karg_append,
                             delete=c.live_karg_delete, replace=c.live_karg_replace,
                             source=str(iso.path))
        if iso.kargs_damaged or kargs != iso.kargs:
            iso.set_kargs(kargs)
