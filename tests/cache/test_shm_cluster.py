"""Shared-memory values on a real cluster: a worker gets a read-only numpy view over the
cache's segment (no copy); segments are gone after a cache kill + restart and after stop."""

from __future__ import annotations

import os
import signal
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
            with CacheClient(cfg=cfg, address=address, kvs_addr=kvs, local_bytes=0) as cc:
                st = cc.stats()
                assert st is not None and st["shm_segments"] == 2 and st["shm_mapped"] >= 1

                def unpinned() -> bool:  # the worker released its pins after each call
                    return (cc.stats(timeout=0.5) or {}).get("shm_pinned_segments") == 0

                wait_until(unpinned, timeout=20, what="the worker to release its pins")
                pid = cc.info()["pid"]
                os.kill(pid, signal.SIGKILL)
                assert len(segments(shm)) == 2  # a killed cache leaves its segments...

                def restarted() -> bool:
                    info = cc.info(timeout=0.5)
                    return info is not None and info["pid"] != pid

                wait_until(restarted, timeout=30, what="the node to restart its cache")
                assert segments(shm) == []  # ...which the restarted cache sweeps

                def mapped_again() -> bool:
                    out = fn(*refs).get(timeout=30)
                    assert out["sum"] == float(big.sum())
                    return bool(out["over_mmap"])

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
