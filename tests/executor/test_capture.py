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
