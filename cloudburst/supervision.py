"""The restart policy every supervisor of a local cluster uses (pure: no I/O, no clock).

Three supervisors form the local supervision tree: ``cloudburst.supervisor`` (the KVS,
the scheduler, the executor node), ``anna.local`` (routing and shards) and
``executor.node`` (its cache and workers). Each keeps one :class:`Child` per process
and feeds it the events it sees; the child answers what to do::

    child = Child("scheduler", RestartPolicy())
    child.started(pid=4242, now=0.0)
    decision = child.exited(returncode=-9, now=12.0)   # killed by SIGKILL
    decision.action, decision.delay_s                  # ("restart", 0.2)
    child.due(12.1), child.due(12.2)                   # (False, True)

The back-off is exponential in the number of exits inside a sliding window (capped at
``max_delay_s``); the ``max_exits``-th exit inside the window marks the child FAILED:
it is reported (``status``, the state files), not restarted forever. A child that ran
for a whole window without exiting starts over at the initial delay. These are
systemd's ``Restart=on-failure`` + ``StartLimitBurst``/``StartLimitIntervalSec``
semantics with an exponential ``RestartSec``.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Any, Literal

#: What a supervised process is doing.
State = Literal["running", "backoff", "failed", "stopped"]


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential back-off with a cap, and crash-loop detection."""

    initial_delay_s: float = 0.2
    factor: float = 2.0
    max_delay_s: float = 5.0
    #: This many exits within ``window_s`` seconds mark the child FAILED.
    max_exits: int = 5
    window_s: float = 60.0

    def __post_init__(self) -> None:
        if self.initial_delay_s < 0 or self.max_delay_s < self.initial_delay_s:
            raise ValueError("need 0 <= initial_delay_s <= max_delay_s")
        if self.factor < 1 or self.max_exits < 1 or self.window_s <= 0:
            raise ValueError("need factor >= 1, max_exits >= 1, window_s > 0")

    def delay(self, recent_exits: int) -> float:
        """The wait before the restart that follows the ``recent_exits``-th exit
        inside the window (1 for the first)."""
        exponent = max(0, recent_exits - 1)
        # The cap keeps the float from overflowing on absurd exponents.
        if exponent > 64:
            return self.max_delay_s
        return float(min(self.max_delay_s, self.initial_delay_s * self.factor**exponent))


@dataclass(frozen=True)
class Decision:
    """What a supervisor does after a child exited."""

    action: Literal["restart", "fail", "ignore"]
    delay_s: float = 0.0
    reason: str = ""


def describe_exit(returncode: int | None) -> str:
    """``-9`` -> ``"killed by SIGKILL"``, ``1`` -> ``"exit status 1"`` (as Popen reports)."""
    if returncode is None:
        return "running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


@dataclass
class Child:
    """The supervision state of one process (the shell owns the process itself)."""

    name: str
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    state: State = "stopped"
    pid: int | None = None
    restarts: int = 0
    last_exit: str | None = None
    last_pid: int | None = None
    started_at: float | None = None
    restart_at: float | None = None
    exits: list[float] = field(default_factory=list)

    def started(self, pid: int, now: float) -> None:
        """The shell started (or restarted) the process."""
        if self.started_at is not None:
            self.restarts += 1
        self.pid = pid
        self.state = "running"
        self.started_at = now
        self.restart_at = None

    def exited(
        self, returncode: int | None, now: float, stopping: bool = False, why: str = ""
    ) -> Decision:
        """The process exited with ``returncode`` (Popen's: negative = signal), or could
        not be started (``why`` says why)."""
        self.last_exit = why or describe_exit(returncode)
        self.last_pid, self.pid = self.pid, None
        if stopping:
            self.state = "stopped"
            return Decision("ignore", reason="stopping")
        window = self.policy.window_s
        self.exits = [t for t in self.exits if now - t < window] + [now]
        if len(self.exits) >= self.policy.max_exits:
            self.state = "failed"
            self.restart_at = None
            return Decision(
                "fail",
                reason=f"{len(self.exits)} exits within {window:g}s (last: {self.last_exit})",
            )
        delay = self.policy.delay(len(self.exits))
        self.state = "backoff"
        self.restart_at = now + delay
        return Decision("restart", delay, self.last_exit)

    def due(self, now: float) -> bool:
        """Whether a child in back-off should be started again now."""
        return self.state == "backoff" and self.restart_at is not None and now >= self.restart_at

    def snapshot(self) -> dict[str, Any]:
        """What the state file records (JSON-ready)."""
        return {
            "pid": self.pid,
            "state": self.state,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "last_pid": self.last_pid,
        }
