"""Every exception the runtime raises on purpose.

Messages say which rule was broken, show the offending value and name the fix.
Exit codes are chosen only at the edges (the CLI and the process entry points).
"""

from __future__ import annotations


class RuntimeErrorBase(Exception):
    """Raised when the runtime refuses something; the base of its own errors."""


class ConfigError(RuntimeErrorBase, ValueError):
    """Raised when a setting or a run() argument has a value the runtime rejects."""


class StartMethodError(RuntimeErrorBase, ValueError):
    """Raised when a start method is unknown or missing on this platform."""


class StartMethodConflictError(RuntimeErrorBase, RuntimeError):
    """Raised when the start method cannot be honoured or changed now."""


class SharedContextError(RuntimeErrorBase, RuntimeError):
    """Raised when a shared_ctx object cannot reach the worker processes."""


class UnguardedRunError(RuntimeErrorBase, RuntimeError):
    """Raised when run() is called while a worker process imports the main module."""


class BindError(RuntimeErrorBase, OSError):
    """Raised when the listening socket cannot be created (address in use...)."""


class PidFileError(RuntimeErrorBase):
    """Raised when the pid file names another running process, or cannot be
    written."""


class PrivilegeError(RuntimeErrorBase, PermissionError):
    """Raised when the manager may not switch to the user or group it was given."""


class AddressError(ConfigError):
    """Raised when the address to listen on is not valid here (bad host, path, fd)."""


class TargetError(RuntimeErrorBase, ValueError):
    """Raised when a MODULE:ATTR target cannot be found or is not servable."""


class RuntimeNotFoundError(RuntimeErrorBase, LookupError):
    """Raised when a worker process cannot find its Runtime after importing."""


class StartupError(RuntimeErrorBase):
    """Raised when a server could not start (lifespan failure, bad app)."""


class StartFailedError(RuntimeErrorBase):
    """Raised when the operating system or multiprocessing could not start a child."""


class GroupNotRunningError(RuntimeErrorBase, RuntimeError):
    """Raised when the group is asked to change while it is not serving."""


class RequestRefused(RuntimeErrorBase, ValueError):
    """Raised when the manager refused a request made through ``rt.m``."""
