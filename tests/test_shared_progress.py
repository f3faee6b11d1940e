"""Progress: a bar on a terminal, plain lines in a log, the same state on a Board."""

from __future__ import annotations

import fcntl
import io
import os
import select
import struct
import termios

from shared.progress import Board, Progress, TaskState, amount, duration, speed


def test_a_log_gets_plain_lines_not_a_bar():
    out = io.StringIO()  # not a terminal, like CI's log or a service manager's journal
    progress = Progress("embed", "{done} of {total} photos searchable", total=5000, done=1000,
                        unit="photos", every_s=0.0, out=out)
    progress.update(240)
    progress.finish()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("embed: 1,240 of 5,000 photos searchable (24%")
    assert lines[-1] == "embed: 1,240 of 5,000 photos searchable"


def test_lines_are_spaced_by_every_s():
    out = io.StringIO()
    progress = Progress("sync", "{done} of {total} files", total=100, every_s=3600, out=out)
    for _ in range(99):
        progress.update()
    assert out.getvalue() == ""  # nothing before the interval
    progress.finish("stopped")
    assert out.getvalue() == "sync: 99 of 100 files (stopped)\n"


def test_a_terminal_gets_a_bar():
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    terminal = os.fdopen(follower, "w")
    try:
        progress = Progress("model", "{done} of {total} downloaded", total=10 * 2**20, unit="B",
                            out=terminal)
        progress.set_done(5 * 2**20)
        progress.finish()
        terminal.flush()
        drawn = ""
        while select.select([leader], [], [], 0.2)[0]:
            drawn += os.read(leader, 65536).decode()
    finally:
        terminal.close()
        os.close(leader)
    assert "\r" in drawn and "model" in drawn and "10.0M" in drawn


def test_quiet_shows_nothing_but_the_board_still_knows():
    out, board = io.StringIO(), Board()
    progress = Progress("sync", "{done} of {total} files", total=3, show=False, every_s=0,
                        out=out, board=board)
    progress.update(2)
    assert board.get("sync").done == 2 and board.get("sync").state == "running"
    progress.finish()
    assert out.getvalue() == "" and board.get("sync").state == "done"


def test_the_line_says_rate_and_time_left():
    state = TaskState("embed", "{done} of {total} photos searchable", done=1240, total=5000,
                      unit="photos", rate=1.4)
    assert state.eta_s == (5000 - 1240) / 1.4
    assert state.line() == ("embed: 1,240 of 5,000 photos searchable "
                            "(24%, 84/min, about 45 min left)")
    assert state.as_dict()["percent"] == 24


def test_amounts_and_durations_read_well():
    assert amount(1_710_000_000, "B") == "1.71 GB" and amount(6_611_852, "B") == "7 MB"
    assert amount(1240, "photos") == "1,240"
    assert speed(35e6, "B") == "35 MB/s" and speed(0.5, "") == "30/min"
    assert [duration(s) for s in (0.2, 40, 150, 3600 * 2 + 60 * 20)] == [
        "1 s", "40 s", "2 min", "2 h 20 min"]
