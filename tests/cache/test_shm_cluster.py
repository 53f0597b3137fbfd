"""Shared-memory values on a real cluster: a worker gets a read-only numpy view over the
cache's segment (no copy); segments are gone after a cache kill + restart and after stop."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np

from cache.client import CacheClient
from cache.protocol import ipc_address
from cloudburst.shared.processes import wait_until
from cloudburst.shared.reference import CloudburstReference


def probe(_lib, arr, small, dct):  # runs on an executor
    import mmap

    def over_mmap(a):
        b = a
        while isinstance(b, np.ndarray):
            b = b.base
        while isinstance(b, memoryview) and not isinstance(b.obj, mmap.mmap):
            b = b.obj if isinstance(b.obj, memoryview) else None
        return isinstance(b, memoryview)

    base = arr
    while isinstance(base, np.ndarray):
        base = base.base
    try:
        arr[0] = 1.0
        write_error = ""
    except ValueError as exc:
        write_error = str(exc)
    return {
        "writeable": bool(arr.flags.writeable),
        "base": type(base).__name__,
        "over_mmap": isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap),
        "sum": float(arr.sum()),
        "small_writeable": bool(small.flags.writeable),
        "write_error": write_error,
        "aligned": arr.ctypes.data % 64 == 0,
        "dict_over_mmap": over_mmap(dct["w"]) and not dct["w"].flags.writeable,
        "dict_aligned": dct["w"].ctypes.data % 64 == 0,
        "dict_sum": float(dct["w"].sum()),
    }


def putter(lib, n):  # runs on an executor: cb.put through an adopted segment
    return lib.put("shm/put", np.arange(n, dtype=np.float64))


def segments(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_worker_maps_large_array_read_only_and_segments_are_cleaned(tmp_path: Path) -> None:
    from tests.integration.conftest import start_cluster

    shm = Path("/dev/shm") / f"cbtest-{os.getpid()}-{os.urandom(4).hex()}"
    shm.mkdir()
    cluster = None
    try:
        cluster = start_cluster(tmp_path / "run", workers=1, cache={"shm_dir": str(shm)})
        cloud = cluster.connect()
        try:
            cfg = cluster.cfg
            (node,) = {e["node_id"] for e in cloud.status()["executor_list"]}
            address = ipc_address(cfg.cache.ipc_dir, node)
            kvs = f"{cfg.ip}:{cfg.kvs.routing_port}"
            big = np.arange(100_000, dtype=np.float64)  # 800 KB > 64 KiB threshold
            assert cloud.put_object("shm/big", big)
            assert cloud.put_object("shm/small", np.ones(10))
            assert cloud.put_object("shm/dict", {"w": big, "tag": "x"})  # out-of-band pickle
            fn = cloud.register(probe, "shm_probe")
            refs = (
                CloudburstReference("shm/big"),
                CloudburstReference("shm/small"),
                CloudburstReference("shm/dict"),
            )
            for _ in range(2):  # the first reads through a miss, the second is a hit
                out = fn(*refs).get(timeout=30)
                assert out["sum"] == float(big.sum())
                assert out["writeable"] is False
                assert out["over_mmap"] is True, out
                assert out["aligned"] is True
                assert "read-only" in out["write_error"]
                assert out["small_writeable"] is True  # small values: the socket path, a copy
                assert out["dict_over_mmap"] is True, out  # numpy inside a pickled dict
                assert out["dict_aligned"] is True and out["dict_sum"] == float(big.sum())
            assert len(segments(shm)) == 2
            # cb.put of a large array: written once into a segment the cache adopts.
            assert cloud.register(putter, "shm_putter")(200_000).get(timeout=30) is True
            expect = np.arange(200_000, dtype=np.float64)
            assert np.array_equal(cloud.get_object("shm/put"), expect)  # in the KVS
            assert len(segments(shm)) == 3  # the worker's file, renamed by the cache
            with CacheClient(cfg=cfg, address=address, kvs_addr=kvs, local_bytes=0) as cc:
                st = cc.stats()
                assert st is not None and st["shm_segments"] == 3 and st["shm_mapped"] >= 1
                assert st["shm_adopted"] == 1

                def unpinned() -> bool:  # the worker released its pins after each call
                    return (cc.stats(timeout=0.5) or {}).get("shm_pinned_segments") == 0

                wait_until(unpinned, timeout=20, what="the worker to release its pins")
                pid = cc.info()["pid"]
                os.kill(pid, signal.SIGKILL)
                assert len(segments(shm)) == 3  # a killed cache leaves its segments...

                def restarted() -> bool:
                    info = cc.info(timeout=0.5)
                    return info is not None and info["pid"] != pid

                wait_until(restarted, timeout=30, what="the node to restart its cache")
                assert segments(shm) == []  # ...which the restarted cache sweeps

                def mapped_again() -> bool:
                    out = fn(*refs).get(timeout=30)
                    if not out["over_mmap"]:  # (read from the KVS meanwhile: a writable
                        return False  # copy, which the probe's write changed)
                    assert out["sum"] == float(big.sum())
                    return True

                wait_until(mapped_again, timeout=30, what="the worker to map from the new cache")
                assert len(segments(shm)) == 2
        finally:
            cloud.close()
        cluster.group.stop_all()
        leaked = [p.name for p in cluster.group.procs.values() if p.alive()]
        assert not leaked
        assert segments(shm) == []  # nothing left after stop
    finally:
        if cluster is not None:
            cluster.group.stop_all()
        for p in shm.iterdir():
            p.unlink()
        shm.rmdir()


# ---- results between functions on one node (executor/handoff.py) -------------------------


def ho_src(_lib, n):  # runs on an executor
    import numpy as np

    return np.arange(n, dtype=np.float64)


def ho_look(_lib, arr):
    import mmap

    import numpy as np

    base = arr
    while isinstance(base, np.ndarray):
        base = base.base
    return {
        "over_mmap": isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap),
        "writeable": bool(arr.flags.writeable),
        "sum": float(arr.sum()),
    }


def ho_join(_lib, a, b):
    return [a, b]


def test_a_large_result_reaches_the_next_functions_through_shared_memory(tmp_path: Path) -> None:
    from executor.handoff import Handoff
    from tests.integration.conftest import start_cluster

    shm = Path("/dev/shm") / f"cbtest-ho-{os.getpid()}-{os.urandom(4).hex()}"
    shm.mkdir()
    cluster = None
    try:
        cluster = start_cluster(tmp_path / "run", workers=2, cache={"shm_dir": str(shm)})
        cloud = cluster.connect()
        try:
            for fn, name in ((ho_src, "ho_src"), (ho_look, "ho_l"), (ho_look, "ho_r")):
                cloud.register(fn, name)
            cloud.register(ho_join, "ho_join")
            # a fan-out and a fan-in: no link is a pure chain, every result is a trigger
            ok, err = cloud.register_dag(
                "ho",
                ["ho_src", "ho_l", "ho_r", "ho_join"],
                [("ho_src", "ho_l"), ("ho_src", "ho_r"), ("ho_l", "ho_join"), ("ho_r", "ho_join")],
            )
            assert ok, err
            n = 300_000  # 2.4 MB, over the 64 KiB threshold
            for _ in range(3):
                got = cloud.call_dag("ho", {"ho_src": [n]}).get(timeout=30)
                for side in got:
                    assert side == {"over_mmap": True, "writeable": False, "sum": n * (n - 1) / 2}
                # both consumers unlinked their links once done: what is left are the
                # producers' pooled files (reused for the next value)
                wait_until(lambda: links_gone(shm), timeout=20, what="the consumers' unlinks")
                assert len(segments(shm)) <= 2 * 2  # (2 workers x POOL_FILES)
            small = cloud.call_dag("ho", {"ho_src": [100]}).get(timeout=30)
            assert [s["over_mmap"] for s in small] == [False, False]  # inline, a copy
            assert [s["writeable"] for s in small] == [True, True]

            # A producer killed with a value in flight leaves a file named after its
            # pid: the node cache removes it within seconds.
            dead = subprocess_pid()
            cfg = cluster.cfg
            (node,) = {e["node_id"] for e in cloud.status()["executor_list"]}
            h = Handoff(
                cfg.ip, str(shm), ipc_address(cfg.cache.ipc_dir, node), 1, 60.0, time.monotonic
            )
            stale = shm / f"{h.prefix}{dead}-1"
            stale.write_bytes(b"x" * 1000)
            wait_until(lambda: not stale.exists(), timeout=20, what="the cache to sweep it")
        finally:
            cloud.close()
        cluster.group.stop_all()
        assert segments(shm) == []  # nothing left after stop
    finally:
        if cluster is not None:
            cluster.group.stop_all()
        for p in shm.iterdir():
            p.unlink()
        shm.rmdir()


def links_gone(d: Path) -> bool:
    return all(p.stat().st_nlink == 1 for p in d.iterdir())


def subprocess_pid() -> int:
    """The pid of a process that has exited."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid
