"""Folders and files are written whole, and nothing of the user's is replaced or removed."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from aiayn import files
from aiayn.errors import InputError
from aiayn.files import building, recover_hidden, write_output


def test_a_new_folder_appears_whole_and_an_empty_one_is_filled(tmp_path: Path) -> None:
    with building(tmp_path / "new") as staged:
        (staged / "a").write_text("1")
        assert not (tmp_path / "new").exists()  # nothing under the name until it is complete
    (tmp_path / "empty").mkdir()
    with building(tmp_path / "empty") as staged:
        (staged / "b").write_text("2")
    assert (tmp_path / "new" / "a").read_text() == "1" and (tmp_path / "empty" / "b").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "new"]


def test_only_a_dead_writers_leftovers_of_that_very_name_are_removed(tmp_path: Path) -> None:
    dead = 2**22 + 12345  # above the largest pid Linux allows: no process has it
    killed, other = tmp_path / f".run[1].partial-{dead}-a", tmp_path / f".run1.partial-{dead}-b"  # [1] is no pattern
    odd = tmp_path / ".run[1].partial-\u00b2-c"  # not an ASCII pid: skipped, not a crash
    running = tmp_path / f".run[1].partial-{os.getpid()}-d"
    for leftover in (killed, other, odd, running):
        leftover.mkdir()
    with building(tmp_path / "run[1]") as staged:
        (staged / "a").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["run[1]", other.name, odd.name, running.name])


def test_a_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with building(tmp_path / "run") as staged:
            (staged / "half").write_text("x")
            raise RuntimeError("bad input found late")
    assert list(tmp_path.iterdir()) == []


def test_files_that_appear_in_an_empty_target_meanwhile_are_kept(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(InputError, match="not empty"):
        with building(target) as staged:
            (staged / "ours").write_text("ours")
            (target / "theirs.txt").write_text("the user's")  # written while aiayn worked
    assert [p.name for p in target.iterdir()] == ["theirs.txt"]
    # ... or in the instant between the swap and removing the emptied folder: swapped back.
    (target / "theirs.txt").unlink()
    real_swap = files._swap

    def swap_and_race(a: Path, b: Path) -> None:
        real_swap(a, b)
        if not (a / "theirs.txt").exists() and not (b / "theirs.txt").exists():
            (a / "theirs.txt").write_text("the user's")  # `a` is now the user's folder

    monkeypatch.setattr(files, "_swap", swap_and_race)
    with pytest.raises(InputError, match="files appeared"):
        with building(target) as staged:
            (staged / "ours").write_text("ours")
    assert [p.name for p in target.iterdir()] == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_folder_not_ours_is_never_replaced(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match="not empty"):
        with building(target, owned=lambda path: False) as staged:
            (staged / "ours").write_text("ours")
    assert [p.name for p in target.iterdir()] == ["notes.txt"]


def test_a_symlinked_target_is_filled_and_the_link_kept(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with building(tmp_path / "link") as staged:
        (staged / "a").write_text("1")
    assert (tmp_path / "link").is_symlink() and (tmp_path / "link" / "a").read_text() == "1"


def test_a_copy_moved_aside_by_a_crash_is_restored(tmp_path: Path) -> None:
    (tmp_path / ".best.old-12345").mkdir()
    (tmp_path / ".best.old-12345" / "w").write_text("the one good copy")
    (tmp_path / ".step_9.partial-abc").mkdir()
    (tmp_path / ".my_hidden_folder").mkdir()  # not aiayn's: left alone
    recover_hidden(tmp_path)
    assert (tmp_path / "best" / "w").read_text() == "the one good copy"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".my_hidden_folder", "best"]


def test_outputs_go_through_links_and_into_pipes(tmp_path: Path) -> None:
    (tmp_path / "target.txt").write_text("old")
    (tmp_path / "link.txt").symlink_to(tmp_path / "target.txt")
    write_output(tmp_path / "link.txt", "new\n")
    assert (tmp_path / "link.txt").is_symlink() and (tmp_path / "target.txt").read_text() == "new\n"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    write_output(fifo, "through the pipe\n")
    reader.join(timeout=10)
    assert received == ["through the pipe\n"] and fifo.is_fifo()
