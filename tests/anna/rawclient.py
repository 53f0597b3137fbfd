"""A raw KVS client written from PROTOCOL.md's field table only.

It hand-encodes protobuf wire bytes (varints and length-delimited fields) instead of
using our generated classes, exactly as a client compiled from Anna's own ``.proto``
files would put them on the wire.
"""

from __future__ import annotations

from typing import Any

import zmq

VARINT, LEN, I64 = 0, 2, 1


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num: int, value: int | bytes | str) -> bytes:
    if isinstance(value, int):
        return varint(num << 3 | VARINT) + varint(value)
    data = value.encode() if isinstance(value, str) else value
    return varint(num << 3 | LEN) + varint(len(data)) + data


def parse(data: bytes) -> dict[int, list[Any]]:
    """Field number -> values (ints for varints, bytes for length-delimited)."""
    out: dict[int, list[Any]] = {}
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        num, wt = key >> 3, key & 7
        if wt == VARINT:
            val, i = _read_varint(data, i)
        elif wt == LEN:
            n, i = _read_varint(data, i)
            val, i = data[i : i + n], i + n
        elif wt == I64:
            val, i = data[i : i + 8], i + 8
        else:
            raise ValueError(f"wire type {wt}")
        out.setdefault(num, []).append(val)
    return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, i


# PROTOCOL.md: RequestType GET 1, PUT 2; LatticeType LWW 1; AnnaError fields.
GET, PUT, LWW = 1, 2, 1


def key_address_request(response_address: str, keys: list[str], request_id: str) -> bytes:
    return field(1, response_address) + b"".join(field(2, k) for k in keys) + field(3, request_id)


def lww_value(timestamp: int, value: bytes) -> bytes:
    return field(1, timestamp) + field(2, value)


def key_tuple(key: str, lattice_type: int = 0, payload: bytes = b"") -> bytes:
    out = field(1, key)
    if lattice_type:
        out += field(2, lattice_type)
    if payload:
        out += field(4, payload)
    return out


def key_request(rtype: int, tuples: list[bytes], response_address: str, request_id: str) -> bytes:
    return (
        field(1, rtype)
        + b"".join(field(2, t) for t in tuples)
        + field(3, response_address)
        + field(4, request_id)
    )


class RawClient:
    """PUSH requests, PULL answers on its own ports (like Anna's client, offset 0)."""

    def __init__(self, ip: str = "127.0.0.1", timeout_ms: int = 10000) -> None:
        self.ctx = zmq.Context()
        self.resp = self.ctx.socket(zmq.PULL)
        self.addr = self.ctx.socket(zmq.PULL)
        self.resp_address = f"tcp://{ip}:{self.resp.bind_to_random_port(f'tcp://{ip}')}"
        self.addr_address = f"tcp://{ip}:{self.addr.bind_to_random_port(f'tcp://{ip}')}"
        self.timeout_ms = timeout_ms
        self.pushes: dict[str, zmq.Socket[Any]] = {}

    def send(self, address: str, data: bytes) -> None:
        if address not in self.pushes:
            sock = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(address)
            self.pushes[address] = sock
        self.pushes[address].send(data)

    def recv(self, sock: zmq.Socket[Any], timeout_ms: int | None = None) -> bytes | None:
        if not sock.poll(self.timeout_ms if timeout_ms is None else timeout_ms):
            return None
        return bytes(sock.recv())

    def close(self) -> None:
        for s in self.pushes.values():
            s.close(0)
        self.resp.close(0)
        self.addr.close(0)
        self.ctx.term()
