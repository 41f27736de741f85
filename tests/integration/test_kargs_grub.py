"""Kernel arguments rendered for GRUB pass GRUB's own parser (grub-script-check)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from imagebuilder.kargs import KernelArgs, grub_quote

GRUB_SCRIPT_CHECK = shutil.which("grub-script-check")

HOSTILE = ["a;reboot", "#x", "x=$HOME", "x}", "$(reboot)", "{", "}", "a|b", "a&&b", "<x>",
           "x=${prefix}", "menuentry", "!", "[[", "fi", 'y="a b; reboot"', "x=`id`", "\\x41"]


def grub_check(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    assert GRUB_SCRIPT_CHECK, "grub-script-check missing (apt-get install grub-common)"
    p = tmp_path / "grub.cfg"
    p.write_text(text)
    return subprocess.run([GRUB_SCRIPT_CHECK, str(p)], capture_output=True, text=True)


def test_hostile_kargs_are_valid_grub(tmp_path):
    ok = [k for k in HOSTILE if "\\" not in k]
    ka = KernelArgs.from_items([*ok, "$ignition_firstboot"])
    cfg = (f"menuentry {grub_quote('t')} {{\n  linux /vmlinuz {ka.grub_words()}\n"
           "  initrd /initrd.img\n}\n")
    r = grub_check(tmp_path, cfg)
    assert r.returncode == 0, (r.stdout, r.stderr, cfg)


def test_unquoted_would_fail(tmp_path):
    """The check is not vacuous: the same arguments written raw are a syntax error."""
    cfg = "menuentry 't' {\n  linux /vmlinuz it's x}\n}\n"
    assert grub_check(tmp_path, cfg).returncode != 0


@pytest.mark.parametrize("text", ["it's", "don't 'x'", "a'b'c'", "'"])
def test_grub_quote_of_single_quotes(tmp_path, text):
    r = grub_check(tmp_path, f"echo {grub_quote(text)}\nset t={grub_quote(text)}\n")
    assert r.returncode == 0, r.stderr
