"""Finding what to serve: ``MODULE:ATTR`` targets, and a worker's Runtime by name."""

from __future__ import annotations

import importlib
import sys
import traceback
from typing import TYPE_CHECKING, Any

from .app import Runtime, importing_target
from .errors import RuntimeErrorBase, RuntimeNotFoundError, TargetError

if TYPE_CHECKING:
    from .worker import WorkerSpec


def import_target(target: str) -> Any:
    """Import ``MODULE:ATTR`` (ATTR may be dotted) and return the object."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise TargetError(
            f"target {target!r} must look like MODULE:ATTR, for example myapp:app"
        )
    try:
        with importing_target(module_name):
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise TargetError(_import_failed(module_name, exc)) from exc
        raise TargetError(
            f"module {module_name!r} of target {target!r} was not found; run from "
            f"the directory that holds it or pass --app-dir"
        ) from None
    except RuntimeErrorBase:
        raise  # the runtime's own one-line errors, a bad rt.config value say
    except Exception as exc:
        raise TargetError(_import_failed(module_name, exc)) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(
                f"module {module_name!r} has no attribute {attr!r} (target {target!r})"
            ) from None
    return obj


def _import_failed(module_name: str, exc: Exception) -> str:
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename}:{exc.lineno}"
    else:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{frame.filename}:{frame.lineno}"
    return (
        f"importing {module_name!r} failed at {where}: {type(exc).__name__}: {exc}; "
        f"python -c 'import {module_name}' shows the whole traceback"
    )


def runtime_for(obj: Any, name: str) -> Runtime:
    """The Runtime a target names: itself, or a new one serving a bare ASGI app."""
    if isinstance(obj, Runtime):
        return obj
    existing = Runtime.lookup(name)
    if existing is not None:
        return existing
    if callable(obj):
        return Runtime(name, app=obj)
    raise TargetError(
        f"{obj!r} is neither a Runtime nor an ASGI app; point the target at one"
    )


def owner_of(target: str, app: Any) -> str | None:
    """``MODULE:ATTR`` of a Runtime in the target's module that serves ``app``."""
    module_name = target.partition(":")[0]
    for attr, value in vars(sys.modules[module_name]).items():
        if isinstance(value, Runtime) and value.target is app:
            return f"{module_name}:{attr}"
    return None


def find_runtime(spec: WorkerSpec) -> Runtime:
    """The Runtime a worker process serves, importing what is needed to find it."""
    found = Runtime.lookup(spec.runtime_name)
    if found is not None:
        return found
    if spec.target is not None:
        return runtime_for(import_target(spec.target), spec.runtime_name)
    if spec.module not in ("__main__", "__mp_main__"):
        importlib.import_module(spec.module)
        found = Runtime.lookup(spec.runtime_name)
        if found is not None:
            return found
    main = sys.modules.get("__main__")
    where = getattr(main, "__file__", None) or spec.module
    raise RuntimeNotFoundError(
        f"Runtime {spec.runtime_name!r} was not found after importing {where}. A "
        f"worker process imports that module again without running its "
        f"`if __name__ == '__main__':` block: create the Runtime at module level "
        f"and keep only rt.run() under the guard"
    )
