"""runtime: an asyncio-native multi-process runtime for Python servers."""

from .app import Runtime
from .config import Config
from .errors import ConfigError, RequestRefused
from .group import ProcessGroup
from .inspector import Inspector
from .start_methods import skip_start_method_setup

__all__ = [
    "Config",
    "ConfigError",
    "Inspector",
    "ProcessGroup",
    "RequestRefused",
    "Runtime",
    "skip_start_method_setup",
]
__version__ = "0.1.0"
