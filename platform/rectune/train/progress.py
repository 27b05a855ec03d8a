"""The live progress of a ``rectune train`` run: a tiny actor the rank-0 worker pushes to and the
driver polls. Its own module, so that the actor's process imports neither torch nor the model."""

from __future__ import annotations


class Progress:
    """A tiny actor the rank-0 worker pushes its progress to; the driver polls it."""

    def __init__(self):
        self.state = {"epoch": 0, "rows": 0, "history": []}

    def update(self, epoch=None, rows=None, metrics=None):
        if epoch is not None:
            self.state["epoch"] = epoch
        if rows is not None:
            self.state["rows"] = rows
        if metrics is not None:
            self.state["history"].append(metrics)

    def get(self):
        return self.state
