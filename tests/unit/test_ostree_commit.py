"""ostree.commit with the real ostree CLI: determinism, metadata, skip list, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from ostree_trees import make_rootfs

from imagebuilder.errors import InvalidConfigError
from imagebuilder.ostree import ostree_output
from imagebuilder.ostree.commit import CommitOptions, commit_tree, commit_version, iso_timestamp
from imagebuilder.ostree.prepare import PrepareOptions, prepare_tree

EPOCH = 1700000000


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    tree = make_rootfs(tmp_path_factory.mktemp("rootfs") / "t")
    prepare_tree(tree, PrepareOptions(initramfs="prebuilt"))
    (tree / ".imagebuilder").mkdir()
    (tree / ".imagebuilder/prepare.json").write_text("{}\n")
    return tree


def test_same_tree_same_checksum_in_fresh_repos(prepared: Path, tmp_path: Path) -> None:
    opts = CommitOptions(ref="testos/x86_64/base", version="1.0")
    a = commit_tree(prepared, tmp_path / "a", opts, EPOCH)
    b = commit_tree(prepared, tmp_path / "b", opts, EPOCH)
    assert a.commit == b.commit and len(a.commit) == 64
    assert a.to_record() == {"ref": "testos/x86_64/base", "commit": a.commit, "version": "1.0",
                             "timestamp": EPOCH}


def test_checksum_follows_epoch_ref_and_content(prepared: Path, tmp_path: Path) -> None:
    opts = CommitOptions(ref="testos/x86_64/base", version="1.0")
    base = commit_tree(prepared, tmp_path / "a", opts, EPOCH).commit
    assert commit_tree(prepared, tmp_path / "b", opts, EPOCH + 1).commit != base
    other_ref = CommitOptions(ref="testos/x86_64/other", version="1.0")
    assert commit_tree(prepared, tmp_path / "c", other_ref, EPOCH).commit != base
    # without ref bindings (and with a subject that does not name the ref) the ref is not in the commit
    unbound = CommitOptions(ref="testos/x86_64/other", version="1.0", subject="s", bindings=False)
    unbound2 = CommitOptions(ref="testos/x86_64/third", version="1.0", subject="s", bindings=False)
    assert commit_tree(prepared, tmp_path / "d", unbound, EPOCH).commit == \
        commit_tree(prepared, tmp_path / "e", unbound2, EPOCH).commit


def test_commit_metadata_and_mode(prepared: Path, tmp_path: Path) -> None:
    info = commit_tree(prepared, tmp_path / "r", CommitOptions(ref="t/x", version="42"), EPOCH)
    repo = tmp_path / "r"
    assert "mode=bare-user" in (repo / "config").read_text()
    assert ostree_output("rev-parse", "t/x", repo=repo) == info.commit
    assert commit_version(repo, info.commit) == "42"
    assert "Date:  2023-11-14 22:13:20 +0000" in ostree_output("show", info.commit, repo=repo)
    # no parent
    assert ostree_output("log", "t/x", repo=repo).count("commit ") == 1
    # the engine's records are not part of the commit
    ls = ostree_output("ls", "-R", info.commit, "/", repo=repo)
    assert ".imagebuilder" not in ls
    assert "/usr/etc/os-release" in ls


def test_archive_mode(prepared: Path, tmp_path: Path) -> None:
    bare_user = commit_tree(prepared, tmp_path / "a", CommitOptions(ref="t/x"), EPOCH)
    archive = commit_tree(prepared, tmp_path / "b", CommitOptions(ref="t/x", mode="archive"), EPOCH)
    assert archive.commit == bare_user.commit  # the mode is storage only
    assert "mode=archive" in (tmp_path / "b/config").read_text()


def test_unprepared_tree_refused(tmp_path: Path) -> None:
    tree = make_rootfs(tmp_path / "raw")
    with pytest.raises(InvalidConfigError, match="not prepared"):
        commit_tree(tree, tmp_path / "r", CommitOptions(ref="t/x"), EPOCH)


def test_existing_repo_refused(prepared: Path, tmp_path: Path) -> None:
    commit_tree(prepared, tmp_path / "r", CommitOptions(ref="t/x"), EPOCH)
    with pytest.raises(InvalidConfigError, match="already exists"):
        commit_tree(prepared, tmp_path / "r", CommitOptions(ref="t/x"), EPOCH)


def test_iso_timestamp() -> None:
    assert iso_timestamp(0) == "1970-01-01T00:00:00Z"
    assert iso_timestamp(EPOCH) == "2023-11-14T22:13:20Z"
