"""``rectune quickstart``: the main job on the embedded default, on any fresh machine.

Synthesises a small world (once; reused while its settings hold), describes it, runs the quick
campaign (``search_spaces/quick.yaml``) on it and prints the best trials.
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


QUICK_SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "quick.yaml"


def run(workdir: Path, rows: int = 200_000, seed: int = 0, console: Console | None = None,
        space: Path | None = None, trials: int | None = None) -> dict:
    import time

    from rectune.errors import ConfigError
    from rectune.tune.campaign import run_campaign

    console = console or Console()
    space = Path(space or QUICK_SPACE)
    if not space.is_file():
        raise ConfigError(f"{space}: the quick search space is missing (run from a checkout of rectune)")
    ds = prepare_data(Path(workdir), rows, seed, console)
    desc = describe(ds.path)
    render(desc, console)
    name = f"quick-{time.strftime('%Y%m%d-%H%M%S')}"
    result = run_campaign(ds.path, space, name, storage=str(Path(workdir) / "campaigns"), trials=trials,
                          console=console)
    console.print(
        f"\ncampaign folder: {result.folder.root}\n"
        f"its results: [bold]rectune results show {name} --storage {Path(workdir) / 'campaigns'}[/bold] "
        f"(also best, export, importance, plot, evaluate: rectune results --help)\n"
        f"next: [bold]rectune tune --data {ds.path} --name my-campaign[/bold] (an hour, the space built from the "
        f"data), [bold]rectune train --data {ds.path} --set model.history=attention[/bold], or import a real dataset with "
        "[bold]rectune data import --help[/bold]"
    )
    return {"describe": desc, "campaign": result}
