"""``rectune quickstart``: the main job on the embedded default, on any fresh machine.

Today it synthesises a small world and describes it; the tuning campaign joins it once the
campaign runner exists (issue 5).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from rectune.data.describe import describe, render
from rectune.data.prepared import PreparedDataset, open_dataset
from rectune.data.synth import SynthConfig, generate


def prepare_data(workdir: Path, rows: int, seed: int, console: Console) -> PreparedDataset:
    """The synthetic world under ``workdir/data``, generated once and reused while its settings hold."""
    target = workdir / "data"
    config = SynthConfig(rows=rows, seed=seed)
    if (target / "schema.json").is_file():
        ds = open_dataset(target)
        if (ds.schema.provenance or {}).get("config", {}).get("rows") == rows and ds.schema.seed == seed:
            console.print(f"reusing {target}")
            return ds
    console.print(f"synthesising {rows:,} impressions (seed {seed}) into {target}")
    return generate(config).write(target, overwrite=True)


def run(workdir: Path, rows: int = 200_000, seed: int = 0, console: Console | None = None) -> dict:
    console = console or Console()
    ds = prepare_data(Path(workdir), rows, seed, console)
    desc = describe(ds.path)
    render(desc, console)
    console.print(
        "\nnext: [bold]rectune data describe[/bold], [bold]rectune data embed-text[/bold] "
        f"{ds.path} (item-title embeddings), or import a real dataset with [bold]rectune data import --help[/bold]"
    )
    return desc
