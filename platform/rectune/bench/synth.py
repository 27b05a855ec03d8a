"""``rectune bench synth``: how fast the synthetic world is generated and written."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rectune.data.synth import SynthConfig, generate


def run(rows: int = 1_000_000, users: int = 50_000, items: int = 20_000, repeat: int = 1,
        console: Console | None = None) -> list[dict]:
    console = console or Console()
    results = []
    for k in range(repeat):
        cfg = SynthConfig(users=users, items=items, rows=rows, seed=k)
        t0 = time.perf_counter()
        tables = generate(cfg)
        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            tables.write(Path(tmp) / "synth")
            t2 = time.perf_counter()
        results.append({"seed": k, "generate_s": t1 - t0, "write_s": t2 - t1, "total_s": t2 - t0,
                        "rows_per_s": rows / (t2 - t0)})
    table = Table(title=f"synthetic world: {rows:,} rows, {users:,} users, {items:,} items")
    for c in ("seed", "generate s", "write s", "total s", "rows/s"):
        table.add_column(c, justify="right")
    for r in results:
        table.add_row(str(r["seed"]), f"{r['generate_s']:.2f}", f"{r['write_s']:.2f}", f"{r['total_s']:.2f}",
                      f"{r['rows_per_s']:,.0f}")
    console.print(table)
    return results
