"""Logging of the server processes: text (each role's own format) or, with
``log_format: json``, one JSON object per line::

    {"t": 1764578687.123, "time": "2026-12-01T08:44:47.123Z", "level": "INFO",
     "process": "worker0", "role": "worker", "pid": 4242, "logger": "executor.worker",
     "msg": "[3f2a-1] incr raised ValueError: ...", "call_id": "3f2a-1"}

``call_id`` is set for messages that start with ``[<call id>]`` (the executor's and
scheduler's convention) or that pass ``extra={"call_id": ...}``.
:mod:`cloudburst.logs` reads both forms back (merged follow, one call's lines).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Any

from cloudburst.shared.config import Config

CALL_ID = re.compile(r"^\[([^\]\s]+)\]")
#: The level of the per-call lines (a call placed, run, its cache requests): INFO with
#: ``log_calls: true``, else DEBUG (set by :func:`setup_logging`).
CALL_LEVEL = logging.DEBUG
#: The call a worker is running (``""``: none). The cache client appends it to its
#: request ids (``<rid>@<call id>``) so the cache can log the call's requests.
CURRENT_CALL = [""]


class JsonFormatter(logging.Formatter):
    def __init__(self, process: str, role: str) -> None:
        super().__init__()
        self.process = process
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        doc: dict[str, Any] = {
            "t": round(record.created, 6),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "process": self.process,
            "role": self.role,
            "pid": os.getpid(),
            "logger": record.name,
            "msg": msg,
        }
        call_id = getattr(record, "call_id", None)
        if call_id is None:
            m = CALL_ID.match(msg)
            call_id = m.group(1) if m else None
        if call_id:
            doc["call_id"] = str(call_id)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(cfg: Config, role: str, process: str, text_format: str) -> None:
    """Configure the root logger of a server process (replaces ``basicConfig``)."""
    handler = logging.StreamHandler()
    if cfg.log_format == "json":
        handler.setFormatter(JsonFormatter(process, role))
    else:
        handler.setFormatter(logging.Formatter(text_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(cfg.log_level)
    global CALL_LEVEL
    CALL_LEVEL = logging.INFO if cfg.log_calls else logging.DEBUG
