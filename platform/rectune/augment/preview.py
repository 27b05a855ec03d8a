"""``rectune augment preview``: a few rows before and after the augmentation plan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from rectune.augment import AugmentConfig, AugmentPlan
from rectune.batches import ROW_ID, table_to_batch
from rectune.data.prepared import open_dataset


def preview(path: str | Path, values: dict, rows: int = 5, epoch: int = 0, seed: int = 0,
            console: Console | None = None) -> tuple[dict, dict]:
    console = console or Console()
    ds = open_dataset(path)
    config = AugmentConfig(values)
    plan = AugmentPlan(config, ds, seed=seed)
    # augment a larger slice so that rare events (low rates) can show, then print the first rows
    batch = table_to_batch(ds.read_split("train").slice(0, max(rows, 1000)), ds.schema)
    after = plan.apply(batch, epoch)
    on = config.enabled()
    console.print(f"augmenters on: {', '.join(on) if on else 'none'}"
                  + (f" ({', '.join(n for n in on if n not in [a.name for a in plan.augmenters])} run in the "
                     f"training step)" if len(on) > len(plan.augmenters) else ""))
    table = Table(title=f"{ds.schema.name}: train rows 0-{rows - 1}, epoch {epoch}, seed {seed}")
    table.add_column("row", justify="right")
    table.add_column("field")
    table.add_column("before")
    table.add_column("after")
    for i in range(min(rows, len(batch[ROW_ID]))):
        for name in batch:
            if name == ROW_ID:
                continue
            b, a = batch[name][i], after[name][i]
            changed = not np.array_equal(b, a)
            fmt = (lambda x: " ".join(str(v) for v in x[x != 0]) if np.ndim(x) else f"{x:.4g}"
                   if isinstance(x, (float, np.floating)) else str(x))
            table.add_row(str(int(batch[ROW_ID][i])), name, fmt(b),
                          f"[bold yellow]{fmt(a)}[/bold yellow]" if changed else fmt(a))
        table.add_section()
    console.print(table)
    changed = {n: float(np.mean(np.any((batch[n] != after[n]).reshape(len(batch[n]), -1), axis=1)))
               for n in batch if n != ROW_ID}
    console.print("share of the first {:,} rows changed: ".format(len(batch[ROW_ID]))
                  + ", ".join(f"{n} {v:.1%}" for n, v in changed.items() if v > 0) or "none")
    return batch, after
