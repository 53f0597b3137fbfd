"""executor.capture: per-call stdout/stderr/logging capture, bounded (no sockets)."""

from __future__ import annotations

import logging
import sys

from executor import worker
from executor.capture import OutputCapture


def test_captures_print_stderr_and_user_logging() -> None:
    cap = OutputCapture()
    try:
        real = sys.stdout
        cap.start()
        print("hello")
        print("oops", file=sys.stderr)
        logging.getLogger("user.mod").warning("careful %d", 3)
        internal = logging.getLogger("executor.worker")
        record = internal.makeRecord(
            "executor.worker", logging.WARNING, worker.__file__, 1, "internal", (), None
        )
        internal.handle(record)  # a record of the worker's own code: not the user's
        text = cap.stop()
        assert sys.stdout is real
        assert text == "hello\noops\nWARNING user.mod: careful 3\n"
        logging.getLogger("user.mod").warning("after the call")  # not captured
        assert cap.text == text
        cap.reset()
        assert cap.text == ""
        cap.start()
        assert cap.stop() == ""  # nothing printed: nothing
    finally:
        cap.close()


def test_bounded_keeps_the_tail_and_marks_truncation() -> None:
    cap = OutputCapture(limit=100)
    try:
        cap.start()
        for i in range(50):
            print(f"line {i:03d}")  # 9 characters each
        cap.start()  # nested start (a chain run in place) keeps capturing
        print("end")
        text = cap.stop()
    finally:
        cap.close()
    head, body = text.split("\n", 1)
    assert head == "[... 354 earlier characters of output dropped ...]"
    assert len(body) == 100 and body.endswith("line 049\nend\n")


_FD_SCRIPT = r"""
import ctypes, logging, os, subprocess, sys
from executor.capture import OutputCapture

logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="LOG %(message)s")
cap = OutputCapture(limit=4096, fds=True)
libc = ctypes.CDLL(None)
for round in range(2):
    cap.reset()
    cap.start()
    print(f"py {round}")
    os.write(1, f"fd1 {round}\n".encode())
    os.write(2, f"fd2 {round}\n".encode())
    libc.printf(b"printf %d\n", round)          # C stdio: buffered, flushed at stop
    subprocess.run(["echo", f"child {round}"], check=True)
    logging.getLogger("executor.worker").info("internal %d", round)  # not the user's
    text = cap.stop()
    sys.__stdout__.write(repr(text) + "\n")
    sys.__stdout__.flush()
# bounded: a flood through fd 1 keeps the tail, marked
cap.reset()
cap.start()
for i in range(2000):
    os.write(1, f"line {i:05d}\n".encode())
text = cap.stop()
sys.__stdout__.write(repr(text[:60]) + "|" + str(len(text)) + "|" + repr(text[-11:]) + "\n")
os.write(1, b"after\n")   # between calls: passed on to the real fd 1
import time; time.sleep(1.0)
"""


def test_fd_level_output_is_captured_and_bounded() -> None:
    """What C code, a subprocess or os.write sends to fds 1/2 during a call is
    captured; the process's own log lines are not; the capture stays bounded."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", _FD_SCRIPT], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for rnd in (0, 1):
        text = eval(lines[rnd])  # noqa: S307 - our own repr()
        for part in (f"py {rnd}", f"fd1 {rnd}", f"fd2 {rnd}", f"printf {rnd}", f"child {rnd}"):
            assert part in text, (part, text)
        assert "LOG internal" not in text  # the log handler's line went to the real fd 2
        assert f"{1 - rnd}\n" not in text.replace(f"{rnd}\n", "")  # no other round's output
    head, size, tail = lines[2].split("|")
    assert "earlier characters of output dropped" in head
    assert int(size) < 4200 and "01999" in tail
    assert lines[3] == "after"
    assert "LOG internal 0" in out.stderr and "LOG internal 1" in out.stderr
