"""SPDX 2.3 SBOMs: the host's real dpkg database and a plain file tree, validated by the SPDX
project's own Python tools (spdx-tools: JSON parser + full SPDX 2.3 document validation)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from imagebuilder.repro.sbom import _map_license, build_sbom, write_sbom

spdx_parse = pytest.importorskip("spdx_tools.spdx.parser.parse_anything")
spdx_validate = pytest.importorskip("spdx_tools.spdx.validation.document_validator")

ART = [{"name": "x.x86_64.raw", "sha256": "ab" * 32, "format": "raw"}]


def validate(doc: dict, path: Path) -> None:
    write_sbom(path, doc, force=True)
    parsed = spdx_parse.parse_file(str(path))
    msgs = spdx_validate.validate_full_spdx_document(parsed)
    assert not msgs, [m.validation_message for m in msgs[:10]]


@pytest.fixture(scope="module")
def debian_tree(tmp_path_factory) -> Path:
    """A tree holding the host's real dpkg status database and copyright files."""
    status = Path("/var/lib/dpkg/status")
    if not status.is_file():
        pytest.skip("no dpkg database on this host")
    t = tmp_path_factory.mktemp("deb")
    (t / "usr/lib/sysimage/dpkg").mkdir(parents=True)  # where ostree.prepare moves it
    shutil.copy(status, t / "usr/lib/sysimage/dpkg/status")
    (t / "usr/lib").mkdir(exist_ok=True)
    shutil.copy("/etc/os-release", t / "usr/lib/os-release")
    for d in Path("/usr/share/doc").iterdir():
        c = d / "copyright"
        if c.is_file() and not c.is_symlink():
            (t / "usr/share/doc" / d.name).mkdir(parents=True)
            shutil.copy(c, t / "usr/share/doc" / d.name / "copyright")
    return t


def test_debian_packages_sbom_is_valid_spdx(debian_tree, tmp_path):
    doc = build_sbom(debian_tree, ART, name="debian", source_epoch=1700000000,
                     source={"type": "mmdebstrap", "suite": "bookworm"},
                     ostree={"ref": "debian/x86_64", "commit": "c" * 64, "version": "12.1"})
    validate(doc, tmp_path / "sbom.spdx.json")
    pkgs = {p["name"]: p for p in doc["packages"] if p["SPDXID"].startswith("SPDXRef-Package-deb")}
    installed = [ln.split(": ", 1)[1] for ln in Path("/var/lib/dpkg/status").read_text().splitlines()
                 if ln.startswith("Package: ")]
    assert len(pkgs) >= 0.9 * len(set(installed)) and "dpkg" in pkgs
    dpkg = pkgs["dpkg"]
    para = next(p for p in Path("/var/lib/dpkg/status").read_text().split("\n\n")
                if p.startswith("Package: dpkg\n"))
    ver = re.search(r"^Version: (.*)$", para, re.M).group(1)
    assert dpkg["versionInfo"] == ver
    purl = dpkg["externalRefs"][0]["referenceLocator"]
    assert purl.startswith("pkg:deb/debian/dpkg@") and "?arch=amd64" in purl
    assert dpkg["supplier"].startswith(("Person: ", "Organization: "))
    # licences come from machine-readable copyright files where they map to SPDX ids
    assert sum(p["licenseDeclared"] != "NOASSERTION" for p in pkgs.values()) > 20
    assert doc["creationInfo"]["created"] == "2023-11-14T22:13:20Z"
    rels = {(r["spdxElementId"], r["relationshipType"], r["relatedSpdxElement"])
            for r in doc["relationships"]}
    art = next(p["SPDXID"] for p in doc["packages"] if p["SPDXID"].startswith("SPDXRef-Artifact-"))
    root = next(p["SPDXID"] for p in doc["packages"] if p["SPDXID"].startswith("SPDXRef-RootFS-"))
    src = next(p["SPDXID"] for p in doc["packages"] if p["SPDXID"].startswith("SPDXRef-Source-"))
    assert {("SPDXRef-DOCUMENT", "DESCRIBES", art), (art, "CONTAINS", root),
            (art, "GENERATED_FROM", src), (root, "CONTAINS", dpkg["SPDXID"])} <= rels
    # deterministic, and the namespace follows the content
    again = build_sbom(debian_tree, ART, name="debian", source_epoch=1700000000,
                       source={"type": "mmdebstrap", "suite": "bookworm"},
                       ostree={"ref": "debian/x86_64", "commit": "c" * 64, "version": "12.1"})
    assert json.dumps(again) == json.dumps(doc)
    other = build_sbom(debian_tree, ART, name="debian", source_epoch=1700000001)
    assert other["documentNamespace"] != doc["documentNamespace"]


def test_file_tree_sbom_has_checksums_and_verification_code(tmp_path):
    t = tmp_path / "tree"
    (t / "bin").mkdir(parents=True)
    (t / "bin" / "busybox").write_bytes(b"\x7fELF" + bytes(1000))
    (t / "etc").mkdir()
    (t / "etc" / "os-release").write_text("ID=tinyos\n")
    (t / "bin" / "sh").symlink_to("busybox")
    (t / ".imagebuilder").mkdir()
    (t / ".imagebuilder" / "prepare.json").write_text("{}")
    doc = build_sbom(t, ART, name="tiny", source_epoch=0,
                     source={"type": "directory", "path": "/x", "fingerprint": "f" * 64})
    validate(doc, tmp_path / "sbom.spdx.json")
    files = {f["fileName"]: f for f in doc["files"]}
    assert set(files) == {"./bin/busybox", "./etc/os-release"}
    data = (t / "bin" / "busybox").read_bytes()
    sums = {c["algorithm"]: c["checksumValue"] for c in files["./bin/busybox"]["checksums"]}
    assert sums == {"SHA1": hashlib.sha1(data).hexdigest(), "SHA256": hashlib.sha256(data).hexdigest()}
    root = next(p for p in doc["packages"] if p["SPDXID"].startswith("SPDXRef-RootFS-"))
    code = hashlib.sha1("".join(sorted(c["checksums"][0]["checksumValue"]
                                       for c in doc["files"])).encode()).hexdigest()
    assert root["packageVerificationCode"]["packageVerificationCodeValue"] == code


def test_debian_license_names_map_to_spdx():
    assert _map_license("GPL-2+") == "GPL-2.0-or-later"
    assert _map_license("GPL-2+ or Artistic") == "GPL-2.0-or-later OR Artistic-1.0-Perl"
    assert _map_license("GPL-3+ with GCC-exception-3.1 exception") == "GPL-3.0-or-later"
    assert _map_license("Expat") == "MIT"
    assert _map_license("public-domain") is None
