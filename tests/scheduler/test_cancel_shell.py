"""The scheduler's handling of a cancel (``future.cancel()``): a call waiting for an
executor is dropped, and the cancel goes to the control socket of every executor the
call was placed on (from the client's addresses and the scheduler's own record).
The shell in-process on a free port; no KVS, no executors (a PULL socket stands in)."""

from __future__ import annotations

import time
from typing import Any

import zmq

from cloudburst.shared.config import Config, replace
from cloudburst.shared.processes import free_port
from cloudburst.shared.proto import cloudburst_pb2 as pb
from scheduler.server import SchedulerServer, _Waiting


def test_cancel_drops_a_waiting_call_and_reaches_the_executors() -> None:
    cfg = replace(Config(), scheduler={"port": free_port()})
    server = SchedulerServer(cfg)
    ctx: zmq.Context[Any] = zmq.Context()
    control = ctx.socket(zmq.PULL)
    control.setsockopt(zmq.LINGER, 0)
    control_address = f"tcp://127.0.0.1:{control.bind_to_random_port('tcp://127.0.0.1')}"
    try:
        now = time.monotonic()
        # An executor, known from a heartbeat, and a call the scheduler placed there.
        server.state.on_heartbeat(
            pb.ExecutorStatus(
                address="tcp://127.0.0.1:1", node_id="n", pid=1, control_address=control_address
            ),
            now,
        )
        server.placed["placed-call"] = ["tcp://127.0.0.1:1"]
        # A call waiting for an executor.
        waiting = pb.SchedulerRequest(request_id="waiting-call")
        server.waiting.append(_Waiting(now + 10, waiting, lambda reply: None))

        def cancel(call_id: str, addresses: list[str]) -> None:
            req = pb.SchedulerRequest(request_id="r-" + call_id)
            req.cancel.call_id = call_id
            req.cancel.addresses.extend(addresses)
            server.handle(req.SerializeToString())

        cancel("waiting-call", [])
        assert server.waiting == []
        cancel("placed-call", [])  # the client did not know where: the record does
        assert control.poll(5000)
        msg = pb.ExecutorMessage.FromString(control.recv())
        assert msg.WhichOneof("kind") == "cancel" and msg.cancel.call_id == "placed-call"
        cancel("direct-call", ["tcp://127.0.0.1:1", "tcp://127.0.0.1:9"])  # 9: unknown
        assert control.poll(5000)
        assert pb.ExecutorMessage.FromString(control.recv()).cancel.call_id == "direct-call"
        assert not control.poll(300)  # one message per known executor, no answer
    finally:
        control.close()
        ctx.term()
        server.close()
