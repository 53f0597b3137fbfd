"""The ``Dag`` message ``register_dag`` sends: functions, connections and the
original's DAG options. Pure (no I/O).

>>> dag = dag_message("d", ["f", ("g", [None])], [("f", "g")], colocated=["f", "g"])
>>> list(dag.functions), list(dag.multiexec), [list(g.functions) for g in dag.colocated]
(['f', 'g'], ['g'], [['f', 'g']])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from cloudburst.shared import serializer
from cloudburst.shared.errors import InvalidArgument, SerializationError
from cloudburst.shared.proto import cloudburst_pb2 as pb


def _names(what: str, names: Any) -> list[str]:
    if isinstance(names, str):
        names = [names]
    out = list(names)
    if not all(isinstance(n, str) for n in out):
        raise InvalidArgument(f"{what} must be a list of function names, not {names!r}")
    return out


def dag_message(
    name: str,
    functions: Sequence[Any],
    connections: Iterable[Sequence[str]],
    gpu_functions: Iterable[str] = (),
    batching_functions: Iterable[str] = (),
    colocated: Iterable[Any] = (),
) -> pb.Dag:
    """A function is a name, or ``(name, [invalid results])`` for a MULTIEXEC function.
    ``colocated`` is one group of names (as in the original) or a list of groups."""
    if isinstance(functions, str):
        functions = [functions]
    dag = pb.Dag(name=name)
    for fn in functions:
        if isinstance(fn, tuple | list):
            if len(fn) != 2 or not isinstance(fn[0], str):
                raise InvalidArgument(
                    f"a DAG function is a name or (name, [invalid results]), not {fn!r}"
                )
            fname, invalids = fn
            entry = dag.multiexec[fname]  # present even with no invalid value
            if isinstance(invalids, str | bytes) or not isinstance(invalids, Iterable):
                invalids = [invalids]
            for value in invalids:
                try:
                    entry.values.append(serializer.to_value(value))
                except SerializationError as exc:
                    raise InvalidArgument(
                        f"invalid result {value!r} of {fname!r} cannot be serialized: {exc}"
                    ) from exc
            dag.functions.append(fname)
        elif isinstance(fn, str):
            dag.functions.append(fn)
        else:
            raise InvalidArgument(
                f"a DAG function is a name or (name, [invalid results]), not {fn!r}"
            )
    try:
        links = [(str(src), str(dst)) for src, dst in connections]
    except (TypeError, ValueError):
        raise InvalidArgument("connections must be (source, sink) pairs") from None
    for src, dst in links:
        dag.connections.add(source=src, sink=dst)
    dag.gpu_functions.extend(_names("gpu_functions", gpu_functions))
    dag.batching_functions.extend(_names("batching_functions", batching_functions))
    groups = list(colocated) if not isinstance(colocated, str) else [colocated]
    if groups and all(isinstance(g, str) for g in groups):
        groups = [groups]  # the original's form: one group
    for group in groups:
        dag.colocated.add(functions=_names("colocated", group))
    return dag
