"""SPDX 2.3 SBOMs (``sbom.spdx.json``) for a built image.

:func:`build_sbom` describes a root filesystem tree and the image artifacts made from it:

- Debian trees (a dpkg status database at ``var/lib/dpkg/status`` or, after ``ostree.prepare``,
  ``usr/lib/sysimage/dpkg/status``): one package per installed package with name, version,
  architecture, supplier (the Maintainer), source package, homepage, the licences declared in
  a machine-readable ``usr/share/doc/PKG/copyright`` (Debian short names mapped to SPDX ids;
  anything else is NOASSERTION) and a purl ``pkg:deb/debian/NAME@VERSION?arch=ARCH``;
- other trees (directory, tarball, OCI sources): every regular file with its SHA1 and
  SHA256 and the package verification code;
- relationships: the document DESCRIBES each artifact, each artifact CONTAINS the root
  filesystem package and is GENERATED_FROM the build's source, the root filesystem
  CONTAINS its packages/files.

Deterministic: ``created`` is the build's source_epoch, everything is sorted, and the
``documentNamespace`` is derived from the document's own content.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .. import __version__
from ..errors import UserInputError

DPKG_STATUS = ("var/lib/dpkg/status", "usr/lib/sysimage/dpkg/status")
NAMESPACE_BASE = "https://spdx.org/spdxdocs/imagebuilder"
# Debian copyright-format short names -> SPDX license ids
DEBIAN_LICENSES = {
    "gpl-1": "GPL-1.0-only", "gpl-1+": "GPL-1.0-or-later", "gpl-2": "GPL-2.0-only",
    "gpl-2+": "GPL-2.0-or-later", "gpl-3": "GPL-3.0-only", "gpl-3+": "GPL-3.0-or-later",
    "lgpl-2": "LGPL-2.0-only", "lgpl-2+": "LGPL-2.0-or-later", "lgpl-2.1": "LGPL-2.1-only",
    "lgpl-2.1+": "LGPL-2.1-or-later", "lgpl-3": "LGPL-3.0-only", "lgpl-3+": "LGPL-3.0-or-later",
    "agpl-3": "AGPL-3.0-only", "agpl-3+": "AGPL-3.0-or-later", "gfdl-1.2": "GFDL-1.2-only",
    "gfdl-1.2+": "GFDL-1.2-or-later", "gfdl-1.3": "GFDL-1.3-only", "gfdl-1.3+": "GFDL-1.3-or-later",
    "apache-2.0": "Apache-2.0", "apache-2": "Apache-2.0", "artistic": "Artistic-1.0-Perl",
    "artistic-2.0": "Artistic-2.0", "bsd-2-clause": "BSD-2-Clause", "bsd-3-clause": "BSD-3-Clause",
    "bsd-4-clause": "BSD-4-Clause", "expat": "MIT", "mit": "MIT", "isc": "ISC", "zlib": "Zlib",
    "mpl-1.1": "MPL-1.1", "mpl-2.0": "MPL-2.0", "cc0-1.0": "CC0-1.0", "cc0": "CC0-1.0",
    "psf-2": "PSF-2.0", "python-2.0": "Python-2.0", "openssl": "OpenSSL", "curl": "curl",
    "ftl": "FTL", "x11": "X11", "unicode-dfs-2016": "Unicode-DFS-2016", "bsl-1.0": "BSL-1.0",
    "wtfpl": "WTFPL", "0bsd": "0BSD", "epl-1.0": "EPL-1.0", "epl-2.0": "EPL-2.0",
    "cc-by-4.0": "CC-BY-4.0", "cc-by-sa-4.0": "CC-BY-SA-4.0", "sleepycat": "Sleepycat",
    "bzip2-1.0.6": "bzip2-1.0.6", "libpng": "Libpng", "ofl-1.1": "OFL-1.1", "ijg": "IJG",
}


def _spdxid(kind: str, name: str, used: set[str]) -> str:
    base = f"SPDXRef-{kind}-" + (re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-") or "x")
    sid, n = base, 2
    while sid in used:
        sid, n = f"{base}-{n}", n + 1
    used.add(sid)
    return sid


def _paragraphs(text: str):
    """deb822 paragraphs as {Field: value} (continuation lines joined with newlines)."""
    para: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if not line.strip():
            if para:
                yield para
            para, key = {}, None
        elif line[0] in " \t" and key:
            para[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, v = line.partition(":")
            key = key.strip()
            para[key] = v.strip()
    if para:
        yield para


def _map_license(expr: str) -> str | None:
    """A Debian ``License:`` short-name expression as an SPDX expression (None if unknown)."""
    words = re.split(r"\s+(or|and)\s+", expr.strip().rstrip(","), flags=re.I)
    out: list[str] = []
    for i, w in enumerate(words):
        if i % 2:
            out.append(w.upper())
            continue
        w = re.sub(r"\s+with\s+.*$", "", w, flags=re.I).strip()  # exceptions: keep the base
        m = DEBIAN_LICENSES.get(w.lower())
        if m is None:
            return None
        out.append(m)
    return " ".join(out) if out else None


def package_license(tree: Path, package: str) -> str | None:
    """The SPDX expression of every licence a machine-readable copyright file declares."""
    p = tree / "usr/share/doc" / package / "copyright"
    try:
        if p.is_symlink() or not p.is_file() or p.stat().st_size > 4 << 20:
            return None
        text = p.read_text(errors="replace")
    except OSError:
        return None
    paras = list(_paragraphs(text))
    if not paras or "copyright-format" not in paras[0].get("Format", ""):
        return None
    found: set[str] = set()
    for para in paras[1:]:
        if "Files" in para and "License" in para:
            name = para["License"].split("\n", 1)[0]
            mapped = _map_license(name)
            if mapped is None:
                return None
            found.add(f"({mapped})" if " " in mapped else mapped)
    if not found:
        return None
    return " AND ".join(sorted(found))


def _supplier(maint: str) -> str:
    m = re.match(r"^\s*(.*?)\s*<([^>]*)>\s*$", maint)
    name, mail = (m.group(1), m.group(2)) if m else (maint.strip(), "")
    team = re.search(r"team|maintainers|packagers|@lists\.", maint, re.I)
    name = re.sub(r"[()]", "", name) or "unknown"
    return f"{'Organization' if team else 'Person'}: {name}" + (f" ({mail})" if mail else "")


def dpkg_packages(tree: Path) -> list[dict[str, Any]] | None:
    """Installed packages of a Debian tree, or None if it has no dpkg database."""
    status = next((tree / s for s in DPKG_STATUS if (tree / s).is_file()), None)
    if status is None:
        return None
    distro = None
    for rel in ("usr/lib/os-release", "etc/os-release"):
        try:
            osr = dict(re.findall(r'^([A-Z_]+)="?([^"\n]*)"?$', (tree / rel).read_text(), re.M))
        except OSError:
            continue
        if osr.get("ID") and osr.get("VERSION_ID"):
            distro = f"{osr['ID']}-{osr['VERSION_ID']}"
        break
    out = []
    for p in _paragraphs(status.read_text(errors="replace")):
        if not p.get("Package") or "installed" not in p.get("Status", "").split()[-1:]:
            continue
        name, ver, arch = p["Package"], p.get("Version", ""), p.get("Architecture", "")
        purl = f"pkg:deb/debian/{quote(name, safe='')}@{quote(ver, safe='.-_~')}?arch={quote(arch)}"
        if distro:
            purl += f"&distro={quote(distro)}"
        out.append({"name": name, "version": ver, "arch": arch, "purl": purl,
                    "maintainer": p.get("Maintainer", ""), "source": p.get("Source", ""),
                    "homepage": p.get("Homepage", ""), "license": package_license(tree, name)})
    return sorted(out, key=lambda x: (x["name"], x["arch"], x["version"]))


def tree_files(tree: Path) -> list[dict[str, Any]]:
    """Every regular file under tree (symlinks not followed) with its SHA1 and SHA256."""
    out = []
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        rel = Path(dirpath).relative_to(tree)
        if rel.parts[:1] == (".imagebuilder",):
            dirnames[:] = []
            continue
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            if p.is_symlink() or not p.is_file():
                continue
            s1, s256 = hashlib.sha1(), hashlib.sha256()
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    s1.update(chunk)
                    s256.update(chunk)
            out.append({"path": "./" + str(rel / fn) if str(rel) != "." else f"./{fn}",
                        "sha1": s1.hexdigest(), "sha256": s256.hexdigest()})
    return sorted(out, key=lambda x: x["path"])


def build_sbom(tree: str | os.PathLike[str] | None, artifacts: list[dict[str, Any]], *, name: str,
               source_epoch: int, source: dict[str, Any] | None = None,
               ostree: dict[str, Any] | None = None) -> dict[str, Any]:
    """The SPDX 2.3 document (a dict) for ``tree`` and the ``artifacts`` made from it
    (each ``{name, sha256, size?, format?}``, as meta.json lists them). ``source``: the
    build's source stage (``{type, path?, sha256?|digest?|fingerprint?}``)."""
    used: set[str] = {"SPDXRef-DOCUMENT"}
    packages: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    rels: list[dict[str, str]] = []

    def rel(a: str, kind: str, b: str) -> None:
        rels.append({"spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b})

    root_id = _spdxid("RootFS", name, used)
    root: dict[str, Any] = {"SPDXID": root_id, "name": f"{name} root filesystem",
                            "downloadLocation": "NOASSERTION", "filesAnalyzed": False,
                            "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION",
                            "copyrightText": "NOASSERTION", "primaryPackagePurpose": "OPERATING-SYSTEM"}
    if ostree:
        if ostree.get("version") is not None:
            root["versionInfo"] = str(ostree["version"])
        root["comment"] = f"OSTree ref {ostree.get('ref')} commit {ostree.get('commit')}"
    packages.append(root)
    debs = None
    if tree is not None:
        t = Path(tree)
        if not t.is_dir():
            raise UserInputError(f"{t}: not a directory (expected a root filesystem tree)")
        debs = dpkg_packages(t)
        if debs is not None:
            for d in debs:
                sid = _spdxid("Package-deb", f"{d['name']}-{d['arch']}", used)
                pkg: dict[str, Any] = {
                    "SPDXID": sid, "name": d["name"], "versionInfo": d["version"],
                    "downloadLocation": "NOASSERTION", "filesAnalyzed": False,
                    "licenseConcluded": "NOASSERTION",
                    "licenseDeclared": d["license"] or "NOASSERTION",
                    "copyrightText": "NOASSERTION",
                    "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER",
                                      "referenceType": "purl", "referenceLocator": d["purl"]}],
                }
                if d["maintainer"]:
                    pkg["supplier"] = _supplier(d["maintainer"])
                if d["source"]:
                    pkg["sourceInfo"] = f"built from Debian source package {d['source']}"
                if d["homepage"]:
                    pkg["homepage"] = d["homepage"]
                packages.append(pkg)
                rel(root_id, "CONTAINS", sid)
        else:
            fl = tree_files(t)
            for f in fl:
                sid = _spdxid("File", hashlib.sha256(f["path"].encode()).hexdigest()[:16], used)
                files.append({"SPDXID": sid, "fileName": f["path"],
                              "checksums": [{"algorithm": "SHA1", "checksumValue": f["sha1"]},
                                            {"algorithm": "SHA256", "checksumValue": f["sha256"]}],
                              "licenseConcluded": "NOASSERTION", "copyrightText": "NOASSERTION"})
                rel(root_id, "CONTAINS", sid)
            root["filesAnalyzed"] = True
            root["packageVerificationCode"] = {"packageVerificationCodeValue": hashlib.sha1(
                "".join(sorted(f["sha1"] for f in fl)).encode()).hexdigest()}
            root["licenseInfoFromFiles"] = ["NOASSERTION"]
            root["hasFiles"] = [f["SPDXID"] for f in files]
    src_id = None
    if source:
        src_id = _spdxid("Source", str(source.get("type", "source")), used)
        sp: dict[str, Any] = {"SPDXID": src_id, "name": f"{name} source ({source.get('type')})",
                              "downloadLocation": "NOASSERTION", "filesAnalyzed": False,
                              "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION",
                              "copyrightText": "NOASSERTION", "primaryPackagePurpose": "SOURCE"}
        digest = source.get("sha256") or source.get("digest")
        if isinstance(digest, str) and re.fullmatch(r"(sha256:)?[0-9a-f]{64}", digest):
            sp["checksums"] = [{"algorithm": "SHA256", "checksumValue": digest.split(":")[-1]}]
        details = {k: v for k, v in source.items() if k not in ("type",) and isinstance(v, (str, int))}
        if details:
            sp["comment"] = json.dumps(details, sort_keys=True)
        packages.append(sp)
    for a in sorted(artifacts, key=lambda x: str(x.get("name"))):
        sid = _spdxid("Artifact", str(a.get("name")), used)
        ap: dict[str, Any] = {"SPDXID": sid, "name": str(a.get("name")), "downloadLocation": "NOASSERTION",
                              "filesAnalyzed": False, "licenseConcluded": "NOASSERTION",
                              "licenseDeclared": "NOASSERTION", "copyrightText": "NOASSERTION",
                              "primaryPackagePurpose": "OPERATING-SYSTEM", "packageFileName": str(a.get("name"))}
        if isinstance(a.get("sha256"), str):
            ap["checksums"] = [{"algorithm": "SHA256", "checksumValue": a["sha256"]}]
        if a.get("format"):
            ap["description"] = f"{a['format']} disk image"
        packages.append(ap)
        rel("SPDXRef-DOCUMENT", "DESCRIBES", sid)
        rel(sid, "CONTAINS", root_id)
        if src_id:
            rel(sid, "GENERATED_FROM", src_id)
    if not artifacts:
        rel("SPDXRef-DOCUMENT", "DESCRIBES", root_id)
    created = datetime.fromtimestamp(int(source_epoch), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc: dict[str, Any] = {
        "spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{name} image SBOM",
        "documentNamespace": "",
        "creationInfo": {"created": created, "creators": [f"Tool: imagebuilder-{__version__}"]},
        "packages": packages, "files": files, "relationships": rels,
    }
    if not files:
        del doc["files"]
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    doc["documentNamespace"] = f"{NAMESPACE_BASE}/{name}-{uuid.UUID(digest[:32])}"
    return doc


def write_sbom(dest: str | os.PathLike[str], doc: dict[str, Any], *, force: bool = False) -> Path:
    from ..fsutil import write_atomic

    write_atomic(dest, json.dumps(doc, indent=2, sort_keys=False) + "\n", force=force)
    return Path(dest)


def sbom_for_outdir(outdir: str | os.PathLike[str], *, tree: str | os.PathLike[str] | None = None,
                    cache: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The SBOM of a build output directory. The tree is ``tree``, else the ``tree``
    pipeline's result in the build cache (meta.json's ``build.pipelines.tree``)."""
    from .outdir import OutDir

    od = OutDir.load(outdir)
    build = od.meta.get("build") if isinstance(od.meta.get("build"), dict) else {}
    if tree is None:
        from ..pipeline.store import Store, default_cache_dir

        tid = (build.get("pipelines") or {}).get("tree")
        store = Store(Path(cache) if cache else default_cache_dir())
        if not isinstance(tid, str) or not re.fullmatch(r"[0-9a-f]{64}", tid) or not store.contains(tid):
            raise UserInputError(
                f"{od.path}: the root filesystem tree ({tid or 'unrecorded'}) is not in the cache "
                f"{store.root}", hint="pass --tree DIR (the root filesystem) or --cache DIR")
        tree = store.object_tree(tid)
    source = None
    for p in (od.manifest or {}).get("pipelines") or []:
        if isinstance(p, dict) and p.get("name") == "tree" and p.get("stages"):
            s0 = p["stages"][0]
            if isinstance(s0, dict) and isinstance(s0.get("type"), str):
                source = {"type": s0["type"].rsplit(".", 1)[-1], **(s0.get("options") or {})}
    arts = [{"name": a.name, "sha256": a.sha256, "format": a.format} for a in od.artifacts()]
    epoch = build.get("source_epoch", (od.manifest or {}).get("source_epoch", 0))
    ostree = od.meta.get("ostree") if isinstance(od.meta.get("ostree"), dict) else None
    return build_sbom(tree, arts, name=str(od.meta.get("name") or od.path.name),
                      source_epoch=int(epoch or 0), source=source, ostree=ostree)
