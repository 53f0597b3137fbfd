"""The supervisor shell with trivial children (``sleep``, ``false``): restarts, the
state file, crash loops, PR_SET_PDEATHSIG. Fast: no cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cloudburst.local import alive
from cloudburst.shared.processes import wait_until
from cloudburst.supervision import RestartPolicy
from cloudburst.supervisor import Spec, Supervised, read_json, write_json_atomic

FAST = RestartPolicy(initial_delay_s=0.05, max_delay_s=0.2, max_exits=3, window_s=30.0)


def test_a_killed_child_is_restarted_and_counted(tmp_path: Path) -> None:
    state = tmp_path / "state" / "t.json"
    sup = Supervised("t", state, FAST)
    sup.add("sleeper", Spec(["sleep", "30"], log_path=tmp_path / "sleeper.log"))
    try:
        sup.start_all()
        first = sup.procs["sleeper"].pid
        os.kill(first, signal.SIGKILL)

        def restarted() -> bool:
            sup.poll()
            proc = sup.procs.get("sleeper")
            return proc is not None and proc.pid != first

        wait_until(restarted, 10, "the restart")
        info = json.loads(state.read_text())["children"]["sleeper"]
        assert info["restarts"] == 1 and info["state"] == "running"
        assert info["last_exit"] == "killed by SIGKILL" and info["last_pid"] == first
        assert info["pid"] == sup.procs["sleeper"].pid
        assert info["log"] == str(tmp_path / "sleeper.log")
    finally:
        sup.stop(grace=2.0)
    assert not sup.live()
    assert json.loads(state.read_text())["children"]["sleeper"]["state"] == "stopped"


def test_a_crash_loop_is_reported_not_restarted_forever(tmp_path: Path) -> None:
    sup = Supervised("t", tmp_path / "t.json", FAST)
    sup.add("crasher", Spec(["false"]))
    sup.start_all()
    wait_until(lambda: (sup.poll() or True) and sup.failed() == ["crasher"], 10, "FAILED")
    info = read_json(tmp_path / "t.json")
    assert info is not None
    assert info["children"]["crasher"]["state"] == "failed"
    assert info["children"]["crasher"]["restarts"] == FAST.max_exits - 1
    time.sleep(0.3)
    sup.poll()
    assert not sup.live()  # not started again


def test_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    """A supervisor killed with SIGKILL takes its children along (PR_SET_PDEATHSIG)."""
    script = (
        "import time, sys\n"
        "from cloudburst.supervisor import Spec, Supervised\n"
        "sup = Supervised('t')\n"
        "sup.add('a', Spec(['sleep', '60']))\n"
        "sup.start_all()\n"
        "print(sup.procs['a'].pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=Path(__file__).parents[2]
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert alive(child)
        parent.kill()
        parent.wait(timeout=10)
        wait_until(lambda: not alive(child), 10, "the orphan to die")
    finally:
        parent.kill()
        parent.wait(timeout=10)
        if parent.stdout:
            parent.stdout.close()


def test_state_files_are_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "s" / "x.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"a": 2})
    assert read_json(path) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no temp file left
    path.write_text("{not json")
    assert read_json(path) is None
    assert read_json(tmp_path / "missing.json") is None
