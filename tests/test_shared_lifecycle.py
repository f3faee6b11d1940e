"""StopSignals with real signals sent to real processes."""

from __future__ import annotations

import select
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = """
import signal, sys, time
from shared.lifecycle import StopSignals
interrupt = sys.argv[1] == "interrupt"
with StopSignals(interrupt=interrupt) as stop:
    try:
        print("ready", flush=True)
        while not stop.event.wait(0.05):
            pass
        print("stop requested by", stop.received, flush=True)
        if not interrupt:
            time.sleep(30)  # a slow clean-up: a second signal cuts it short
    except KeyboardInterrupt:
        print("interrupted by", stop.received, flush=True)
sys.exit(0)
"""


def start(mode: str, ignore_sigint: bool = False) -> subprocess.Popen:
    def ignore() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell's background job starts

    process = subprocess.Popen([sys.executable, "-c", PROGRAM, mode], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, preexec_fn=ignore if ignore_sigint else None)
    assert select.select([process.stdout], [], [], 30)[0], "the program did not start"
    assert process.stdout.readline() == "ready\n"
    return process


def finish(process: subprocess.Popen) -> tuple[int, str]:
    out, _ = process.communicate(timeout=30)
    return process.returncode, out


def test_sigterm_requests_a_stop_like_ctrl_c():
    for sig in (signal.SIGTERM, signal.SIGINT):
        process = start("interrupt")
        process.send_signal(sig)
        assert finish(process) == (0, f"interrupted by {sig.name}\n")


def test_without_interrupt_the_first_signal_only_sets_the_event_and_a_second_cuts_short():
    process = start("event")
    process.send_signal(signal.SIGTERM)
    assert process.stdout.readline() == "stop requested by SIGTERM\n"
    process.send_signal(signal.SIGTERM)
    assert finish(process) == (0, "interrupted by SIGTERM\n")


def test_an_inherited_ignored_sigint_stays_ignored():
    process = start("interrupt", ignore_sigint=True)
    process.send_signal(signal.SIGINT)
    assert not select.select([process.stdout], [], [], 0.5)[0]  # nothing happened
    process.send_signal(signal.SIGTERM)
    assert finish(process) == (0, "interrupted by SIGTERM\n")
