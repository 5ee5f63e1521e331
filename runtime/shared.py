"""``rt.shared_ctx``: objects built in the main process and handed to every worker."""

from __future__ import annotations

from typing import Any


class SharedContext:
    """A namespace of multiprocessing-safe objects (queues, locks, values...)."""

    def items(self) -> dict[str, Any]:
        """Every attached object, keyed as it appears in messages: shared_ctx.NAME."""
        return {f"shared_ctx.{k}": v for k, v in vars(self).items()}

    def attach_all(self, items: dict[str, Any]) -> None:
        for key, value in items.items():
            setattr(self, key.removeprefix("shared_ctx."), value)

    def __repr__(self) -> str:
        return f"SharedContext({', '.join(vars(self))})"
