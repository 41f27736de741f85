"""imagebuilder.kargs: parsing (the kernel's rules), validation, edits, renderers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagebuilder.errors import InvalidConfigError
from imagebuilder.kargs import (GRUB_VARIABLES, Karg, KargError, KernelArgs, grub_quote,
                                parse_cmdline, split_cmdline)


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text,key,value", [
    ("quiet", "quiet", None),
    ("root=LABEL=root", "root", "LABEL=root"),
    ("foo=", "foo", ""),
    ('x="a b"', "x", "a b"),
    ('"x=a b"', "x", "a b"),
    ('"quiet"', "quiet", None),
    ('x=""', "x", ""),
    ("  console=ttyS0,115200n8  ", "console", "ttyS0,115200n8"),
    ("x=$HOME", "x", "$HOME"),
    ("a;reboot", "a;reboot", None),
    ("#x", "#x", None),
    ("x}", "x}", None),
    ("$(reboot)", "$(reboot)", None),
    ("it's", "it's", None),
])
def test_parse_one(text, key, value):
    k = Karg.parse(text)
    assert (k.key, k.value) == (key, value)


def test_quoted_spellings_are_the_same_argument():
    assert Karg.parse('x="a b"') == Karg.parse('"x=a b"') == Karg("x", "a b")
    assert Karg.parse("foo") != Karg.parse("foo=")


def test_parse_cmdline_like_the_kernel():
    args = parse_cmdline('BOOT_IMAGE=/vmlinuz "x=a b" y="c  d" quiet root=LABEL=root rw')
    assert [(a.key, a.value) for a in args] == [
        ("BOOT_IMAGE", "/vmlinuz"), ("x", "a b"), ("y", "c  d"), ("quiet", None),
        ("root", "LABEL=root"), ("rw", None)]
    assert split_cmdline('a  "b c"  d="e f" ') == ["a", '"b c"', 'd="e f"']
    assert len(parse_cmdline("")) == 0 and len(parse_cmdline("   ")) == 0


@pytest.mark.parametrize("text,needle", [
    ('foo="bar', "unbalanced"),
    ('a"b', "unbalanced"),
    ('a"b"', "misplaced"),
    ('x=a"b"c', "misplaced"),
    ('"x=a"b', "misplaced"),
    ("a\0b", "NUL"),
    ("quiet\n  initrd /evil.img", "newline"),
    ("a\x01", "U+0001"),
    ("a\tb", "U+0009"),
    ("a\x7f", "U+007F"),
    ("a\x85", "U+0085"),
    ("x=\u00e0", "non-ASCII"),
    ("=foo", "empty key"),
    ("", "empty"),
    ("x=a b", "2 arguments"),
])
def test_parse_rejects(text, needle):
    with pytest.raises(KargError) as ei:
        Karg.parse(text, "img.yaml: kernel_args[3]")
    msg = str(ei.value)
    assert msg.startswith("img.yaml: kernel_args[3]: kernel argument "), msg
    assert needle in msg
    assert isinstance(ei.value, InvalidConfigError) and ei.value.exit_code == 3
    # the bad text is shown escaped, never raw
    assert "\0" not in msg and "\n" not in msg and "\x01" not in msg


def test_one_per_item_hint():
    with pytest.raises(KargError) as ei:
        Karg.parse("x=a b")
    assert ei.value.hint == 'quote a value with spaces: x="a b"'


def test_from_items_names_the_item():
    with pytest.raises(KargError, match=r"^d\.yaml: kernel_args\[1\]: kernel argument 'a\\x01'"):
        KernelArgs.from_items(["quiet", "a\x01"], "d.yaml: kernel_args")
    ka = KernelArgs.from_items(["quiet", 'x="a b"', Karg("y")], "src")
    assert ka.cmdline() == 'quiet x="a b" y'


def test_direct_construction_is_validated():
    for key, value in [("a b", None), ("a=b", None), ('a"', None), ("x", 'a"b'), ("", "v"),
                       ("x", "a\nb")]:
        with pytest.raises(KargError):
            Karg(key, value)


# ----------------------------------------------------------------------------- edits


BASE = parse_cmdline("root=LABEL=root rw console=tty0 console=ttyS0,115200n8 quiet "
                     "mitigations=auto,nosmt $ignition_firstboot")


def test_append_skips_duplicates():
    ka = BASE.append("quiet", 'x="a b"', '"x=a b"', "console=ttyS1")
    assert ka.cmdline().endswith('$ignition_firstboot x="a b" console=ttyS1')
    assert ka.cmdline().count("quiet") == 1


def test_delete_key_and_exact():
    assert "console" not in BASE.delete("console").keys()
    ka = BASE.delete("console=tty0")
    assert ka.values("console") == ["ttyS0,115200n8"]
    assert BASE.delete("nosuch") == BASE
    with pytest.raises(KargError, match="no such kernel argument"):
        BASE.delete("nosuch", must_exist=True, source="--karg-delete")
    with pytest.raises(KargError, match="no such kernel argument"):
        BASE.delete("quiet=1", must_exist=True)
    # a bare key also removes the key with an empty value
    assert parse_cmdline("a a= a=1 b").delete("a").cmdline() == "b"


def test_replace():
    ka = BASE.replace("mitigations=auto,nosmt=auto")
    assert ka.get("mitigations") == "auto"
    assert ka.keys() == BASE.keys()
    assert parse_cmdline('x="a b"').replace('x="a b"="c d"').cmdline() == 'x="c d"'
    with pytest.raises(KargError, match="KEY=OLD=NEW"):
        BASE.replace("mitigations=auto")
    with pytest.raises(KargError, match="KEY=OLD=NEW"):
        BASE.replace("root=LABEL=root=LABEL=x")
    assert BASE.replace("quiet=1=2") == BASE
    with pytest.raises(KargError, match="no such kernel argument"):
        BASE.replace("quiet=1=2", must_exist=True)


def test_edit_order_delete_append_replace():
    ka = parse_cmdline("a=1 b").edit(append=["a=1", "c=2"], delete=["a"], replace=["c=2=3"])
    assert ka.cmdline() == "b a=1 c=3"


def test_set_keeps_position_and_dedups():
    ka = parse_cmdline("a ignition.platform.id=metal b ignition.platform.id=x")
    assert ka.set("ignition.platform.id", "qemu").cmdline() == "a ignition.platform.id=qemu b"
    assert parse_cmdline("a").set("k", "v").cmdline() == "a k=v"
    with pytest.raises(KargError):
        parse_cmdline("a").set("k", "v;\n")


def test_sequence_api():
    assert len(BASE) == 7 and BASE[0] == Karg("root", "LABEL=root")
    assert isinstance(BASE[1:3], KernelArgs)
    assert "quiet" in BASE and Karg("rw") in BASE and "nosuch" not in BASE
    assert BASE.get("root") == "LABEL=root" and BASE.get("quiet") is None
    assert BASE.has("quiet") and not BASE.has("nosuch")
    assert (BASE + ["z"]).keys()[-1] == "z"


# ----------------------------------------------------------------------------- renderers


HOSTILE = ["a;reboot", "#x", "x=$HOME", "x}", "$(reboot)", "{", "a|b", "a&b", "<x>",
           "x=${prefix}", "menuentry", "!", "[[", 'y="a b; reboot"', "x=`id`"]


def test_cmdline_and_bls_render():
    ka = KernelArgs.from_items(['x="a b"', "quiet", "foo=", "$ignition_firstboot"])
    assert ka.cmdline() == 'x="a b" quiet foo= $ignition_firstboot'
    assert ka.bls_options() == ka.cmdline()
    assert str(Karg("x", "a b")) == 'x="a b"' and Karg("x", "a b").word == "x=a b"


def test_grub_words_quote_everything_but_known_variables():
    ka = KernelArgs.from_items([*HOSTILE, "$ignition_firstboot", "$other"])
    words = ka.grub_words()
    assert words.endswith(" $ignition_firstboot '$other'")
    assert "'a;reboot'" in words and "'#x'" in words and "'x=$HOME'" in words
    assert "'y=a b; reboot'" in words  # GRUB passes it on as "y=a b; reboot"
    assert "$ignition_firstboot" in GRUB_VARIABLES


@pytest.mark.parametrize("text", ["it's", "a\\b", "x='y'"])
def test_grub_refuses_what_linux_would_escape(text):
    with pytest.raises(KargError, match="cannot be passed through GRUB"):
        KernelArgs.from_items([text]).grub_words(source="d.yaml: kernel_args")


def test_grub_quote():
    assert grub_quote("it's") == "'it'\\''s'"
    assert grub_quote("") == "''"


def test_isolinux_append():
    ka = KernelArgs.from_items(['x="a b"', "initrd=/boot.ipxe"])
    assert ka.isolinux_append() == 'x="a b" initrd=/boot.ipxe'
    with pytest.raises(KargError, match="append -"):
        KernelArgs.from_items(["-"]).isolinux_append()
    long = KernelArgs.from_items([f"k{i}={'v' * 40}" for i in range(100)])
    with pytest.raises(KargError, match="too long for an ISOLINUX line"):
        long.isolinux_append()


# ----------------------------------------------------------------------------- properties

_key = st.text(st.sampled_from("abcxyz019._-,:/$;#{}|&<>()'\\`!*?[]~%@+^"), min_size=1,
               max_size=8)
_value = st.none() | st.text(st.sampled_from("abz09 ._-,:/=$;#{}|&<>()'\\`!*?[]~%@+^"),
                             max_size=10)
_karg = st.builds(Karg, _key, _value)


@given(st.lists(_karg, max_size=8))
def test_cmdline_roundtrip(kargs):
    ka = KernelArgs(tuple(kargs))
    assert parse_cmdline(ka.cmdline()) == ka
    assert parse_cmdline(ka.isolinux_append()) == ka if ka.cmdline() != "-" else True


@given(_karg)
def test_item_roundtrip(k):
    assert Karg.parse(str(k)) == k


@given(st.text(max_size=40))
def test_parse_never_crashes(text):
    try:
        ka = parse_cmdline(text)
    except KargError:
        return
    # whatever parses renders back to something that parses to the same arguments
    assert parse_cmdline(ka.cmdline()) == ka
