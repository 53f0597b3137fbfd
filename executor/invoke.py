"""Loading and invoking user functions: the one place a user function is called.

* :func:`load_function` turns a registered body (a cloudpickled function, a class, or
  ``(Class, init_args)``) into a :class:`LoadedFunction`; a class is built once as
  ``Class(user_lib, *init_args)`` and its ``run(user_lib, *args)`` is what is called.
* :func:`resolve_args` substitutes KVS values for references.
* :func:`invoke` calls the function with the user library first.

Special kinds of functions (generators as streaming producers) or arguments (streams)
hook in here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cloudpickle

from cloudburst.shared.errors import CloudburstTimeoutError, InvalidArgument
from cloudburst.shared.reference import CloudburstReference
from cloudburst.shared.values import from_lattice
from cloudburst.shared.wire import PendingReference

log = logging.getLogger(__name__)


class FunctionLoadError(Exception):
    """A registered body that cannot be turned into a callable."""


class KeysNotReady(Exception):
    """Results referenced by a call are not in the KVS yet (``resolve_args`` with
    ``timeout=0``): the caller parks the call and retries later."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(f"waiting for {keys}")
        self.keys = keys


@dataclass
class LoadedFunction:
    name: str
    call: Callable[..., Any]
    instance: Any = None  # the object of a registered class
    version: int = 0  # the registration it came from (funcs/<name> LWW timestamp)
    timeout_s: float = 0.0  # per-call limits set at registration (0 = config default)
    memory_bytes: int = 0


def missing_module_message(function: str, module: str) -> str:
    """What to do when a function needs a module the executors cannot import."""
    top = module.split(".")[0]
    return (
        f"function {function!r} needs the module {module!r}, which the executors cannot "
        f"import. If it is a third-party package, install it where the executors run: "
        f"local cluster: `.venv/bin/pip install <the package providing {top}>` in the "
        "cluster's environment, then restart it; containers/Kubernetes: add it to the "
        "executor image (requirements) and roll the executors. If it is your own code, "
        "the client ships it by value unless it looks installed (site-packages, an "
        "editable install): see 'Your modules and third-party packages' in docs/client.md"
    )


def load_function(name: str, body: bytes, user_lib: Any) -> LoadedFunction:
    """Unpickle a registered function (or build a registered class's instance)."""
    try:
        obj = cloudpickle.loads(body)
    except ModuleNotFoundError as exc:
        raise FunctionLoadError(missing_module_message(name, exc.name or str(exc))) from exc
    except Exception as exc:
        raise FunctionLoadError(f"cannot unpickle function {name!r}: {exc}") from exc
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], type):
        cls, init_args = obj
        if not isinstance(init_args, tuple | list):
            init_args = (init_args,)
        instance = cls(user_lib, *init_args)
        return LoadedFunction(name, instance.run, instance)
    if isinstance(obj, type):
        instance = obj(user_lib)
        return LoadedFunction(name, instance.run, instance)
    if callable(obj):
        return LoadedFunction(name, obj)
    raise FunctionLoadError(f"{name!r} is registered as a {type(obj).__name__}, not a function")


def resolve_args(
    args: list[Any],
    state: Any,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[Any]:
    """Replace references by what the KVS holds.

    A plain reference to a missing key is an error; a :class:`PendingReference` (the
    result of another call) is waited for, with backoff, up to ``timeout`` seconds;
    with ``timeout=0`` a missing one raises :class:`KeysNotReady` at once.
    """
    refs = [a for a in args if isinstance(a, CloudburstReference)]
    if not refs:
        return args
    keys = list(dict.fromkeys(r.key for r in refs))
    got: dict[str, Any] = {}
    deadline = clock() + timeout
    delay = 0.001
    while True:
        want = [k for k in keys if got.get(k) is None]
        if want:
            got.update(state.get(want))
        missing = [k for k in keys if got.get(k) is None]
        waiting = [r.key for r in refs if isinstance(r, PendingReference) and r.key in missing]
        plain = [r.key for r in refs if not isinstance(r, PendingReference) and r.key in missing]
        if plain:
            raise InvalidArgument(f"reference to key(s) {plain} which the KVS does not hold")
        if not waiting:
            break
        if timeout == 0:
            raise KeysNotReady(waiting)
        if clock() >= deadline:
            raise CloudburstTimeoutError(
                f"the result(s) {waiting} referenced by this call did not appear within {timeout}s"
            )
        sleep(delay)
        delay = min(delay * 2, 0.05)
    out = []
    for a in args:
        if isinstance(a, CloudburstReference):
            lattice = got[a.key]
            out.append(from_lattice(lattice) if a.deserialize else lattice)
        else:
            out.append(a)
    return out


def invoke(
    fn: LoadedFunction, user_lib: Any, args: list[Any], streams: Any = None, **call: Any
) -> Any:
    """Call a user function: the user library first, then its arguments.

    With ``streams`` (a :class:`cloudburst.ddt.dag.DagStreams`), DDT streams are wired
    in: ``cb.stream`` works, stream arguments become readers, and a generator with
    downstream functions becomes a streaming producer (``call`` describes the DAG call;
    the result is then ``cloudburst.ddt.dag.STREAMED``).
    """
    if streams is not None:
        return streams.invoke(fn.call, user_lib, args, **call)
    return fn.call(user_lib, *args)
