"""The engine in this process as a front end's backend: each operation of
``master.front.ops`` is the ``MasterAPI`` method of the same name."""

from __future__ import annotations

from typing import Any

from common.errors import UsageError
from master.api import MasterAPI
from master.events import Event
from master.front.ops import OPS, ItemCallback, args_problem
from master.shared import SHARED_OPS


class LocalBackend:
    def __init__(self, api: MasterAPI) -> None:
        self.api = api

    def call(self, op: str, args: dict[str, Any], on_item: ItemCallback | None = None
             ) -> Any:
        if op not in OPS:
            raise ValueError(f"unknown operation {op!r}")
        if (problem := args_problem(op, args)) is not None:
            raise UsageError(problem)
        if op == "log":
            ended = False
            for chunk in self.api.log_chunks(**args):
                if on_item is not None:
                    on_item(chunk)
                ended = chunk.ended
            return ended
        if op in SHARED_OPS:
            return self.api.shared(op, args, on_item)
        if op in ("copy", "pull"):
            return getattr(self.api, op)(**args, progress=on_item)
        return getattr(self.api, op)(**args)

    def subscribe(self, listener: ItemCallback) -> None:
        """``listener`` hears every event, on the hub thread."""
        def hear(event: Event) -> None:
            listener(event)
        self.api.subscribe(hear)
