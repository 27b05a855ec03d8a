"""The ``rectune`` command. Thin: it parses, calls the modules, prints; no logic of its own."""

from __future__ import annotations

import dataclasses
import functools
import sys
import typing
from pathlib import Path

import click

from rectune.errors import RectuneError, first_line, shorten

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Finite(click.FloatRange):
    """A float option that refuses nan and inf (click's FloatRange lets nan through its bounds)."""

    name = "finite float"

    def convert(self, value, param, ctx):
        import math

        value = super().convert(value, param, ctx)
        if not math.isfinite(value):
            self.fail(f"{value} is not a finite number", param, ctx)
        return value


ARGV = "rectune.argv"
"""ctx.meta key: the command line as given, for the line that reports an unexpected error."""


class Group(click.Group):
    """Turns every RectuneError into one line on stderr and exit code 2, and any other error into
    one line naming the command and its input, exit code 1 (the traceback with --debug)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta.setdefault(ARGV, list(args))  # the root group sees the whole command line
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RectuneError as exc:
            click.echo(f"rectune: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - a bug or an environment fault: one line unless --debug
            if ctx.find_root().params.get("debug"):
                raise
            command = " ".join(["rectune", *(a for a in ctx.meta.get(ARGV, []) if a != "--debug")])
            why = first_line(str(exc), 200)
            click.echo(f"rectune: error: {shorten(command)}: unexpected {type(exc).__name__}"
                       f"{': ' + why if why else ''} (rerun with --debug for the traceback)", err=True)
            ctx.exit(1)


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(package_name="rectune", prog_name="rectune")
@click.option("--debug", is_flag=True, help="show the traceback of an unexpected error instead of one line")
def main(debug: bool) -> None:
    """rectune: expand and enrich recommendation training samples, and tune fused multi-task models
    on Ray (Data, Train, Tune) with Optuna.

    \b
    Start with:   rectune quickstart
    Data:         rectune data --help
    Augmentation: rectune augment --help
    Training:     rectune train --help, rectune keys
    Tuning:       rectune tune --help
    Results:      rectune results --help
    Benchmarks:   rectune bench --help
    """


# ---------------------------------------------------------------------------------------------
@main.group(cls=Group, context_settings=CONTEXT)
def data() -> None:
    """Make, import, inspect and check prepared datasets.

    A prepared dataset is a folder of train/valid/test.parquet, items.parquet, optional
    users.parquet and relations.parquet, and schema.json: the one format every later stage reads.
    """


OUT = click.option("--out", "out", required=True, type=click.Path(path_type=Path),
                   help="folder to write the prepared dataset to (must not exist, unless --overwrite)")
OVERWRITE = click.option("--overwrite", is_flag=True, help="replace --out if it exists (atomically)")


@data.command("synth", context_settings=CONTEXT)
@OUT
@click.option("--users", default=2000, show_default=True, type=click.IntRange(min=10), help="number of users")
@click.option("--items", default=1000, show_default=True, type=click.IntRange(min=10), help="number of items")
@click.option("--rows", default=100_000, show_default=True, type=click.IntRange(min=100), help="impressions in all splits")
@click.option("--seed", default=0, show_default=True, type=int, help="the world is deterministic per seed")
@click.option("--new-items", default=0.0, show_default=True, type=Finite(),
              help="share of items launched late: absent from train, in valid and test only")
@click.option("--conversion-shift", default=0.0, show_default=True, type=Finite(),
              help="added to the conversion logit among clicks (negative: rarer conversions)")
@OVERWRITE
def data_synth(out: Path, users: int, items: int, rows: int, seed: int, new_items: float, conversion_shift: float,
               overwrite: bool) -> None:
    """Generate the synthetic e-commerce world (the embedded default dataset).

    Users with latent tastes and profiles; items with brand, category, shop, price band and a title
    whose words carry part of the item's character; item relations; impressions with a click ->
    conversion funnel, long-tail popularity and each user's behaviour history.
    """
    from rectune.data.synth import SynthConfig, generate
    from rectune.data.prepared import check_output_free

    check_output_free(out, overwrite)
    ds = generate(SynthConfig(users=users, items=items, rows=rows, seed=seed, new_items=new_items,
                               conversion_shift=conversion_shift)).write(
        out, overwrite=overwrite)
    click.echo(f"wrote {out} ({sum(ds.schema.rows.values()):,} rows)")


@data.group("import", cls=Group, context_settings=CONTEXT)
def data_import() -> None:
    """Import a public dataset format into a prepared dataset."""


def _param_of(decorator) -> click.Parameter:
    """The click parameter that an option decorator such as OUT would add."""

    def f() -> None: ...

    decorator(f)
    return f.__click_params__[0]  # type: ignore[attr-defined]


def _importer_command(name: str, cls: type) -> click.Command:
    """A click command whose options are the importer dataclass's fields."""
    hints = typing.get_type_hints(cls)

    def callback(src: Path, out: Path, overwrite: bool, **options) -> None:
        from rectune.data.importers import run_import

        ds = run_import(name, src, out, overwrite=overwrite, **options)
        rows = ", ".join(f"{k} {v:,}" for k, v in ds.schema.rows.items())
        click.echo(f"wrote {out} ({rows})")

    params: list[click.Parameter] = [
        click.Argument(["src"], type=click.Path(path_type=Path)),
    ]
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        typ = hints[f.name]
        opt = "--" + f.name.replace("_", "-")
        help_ = f.metadata.get("help", "")
        if typing.get_origin(typ) is tuple:
            params.append(click.Option([opt, f.name], multiple=True, type=str, help=help_))
        elif typ is bool:
            params.append(click.Option([opt, f.name], is_flag=True, default=f.default, help=help_))
        else:
            params.append(click.Option([opt, f.name], type=typ, default=f.default, show_default=True, help=help_))
    params += [_param_of(OUT), _param_of(OVERWRITE)]
    doc = (cls.__doc__ or name).strip()
    return click.Command(name, callback=callback, params=params, help=doc, short_help=doc.splitlines()[0],
                         context_settings=CONTEXT)


def _register_importers() -> None:
    from rectune.data.importers import IMPORTERS

    for name, cls in IMPORTERS.items():
        data_import.add_command(_importer_command(name, cls))


_register_importers()


@data.command("embed-text", context_settings=CONTEXT)
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1), help="titles per batch")
@click.option("--force", is_flag=True, help="recompute even if the cached embeddings match the titles")
def data_embed_text(dataset: Path, batch_size: int, force: bool) -> None:
    """Embed every item title with the pretrained all-MiniLM-L6-v2 (384-d, offline).

    The vectors are stored in items.parquet (column text_emb) and cached: a second run does nothing
    until the titles change.
    """
    from rectune.data.text import embed_text

    result = embed_text(dataset, batch_size=batch_size, force=force, progress=True)
    click.echo(result)


@data.command("describe", context_settings=CONTEXT)
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--cold-threshold", default=5, show_default=True, type=click.IntRange(min=1),
              help="an item with fewer training positives than this is cold")
@click.option("--json", "as_json", is_flag=True, help="print the description as JSON")
def data_describe(dataset: Path, cold_threshold: int, as_json: bool) -> None:
    """Rows per split, positive rate per task, field cardinalities, relations, cold test items."""
    from rectune.data.describe import describe, render

    desc = describe(dataset, cold_threshold=cold_threshold)
    if as_json:
        import json

        click.echo(json.dumps(desc, indent=1))
    else:
        render(desc)


@data.command("validate", context_settings=CONTEXT)
@click.argument("dataset", type=click.Path(path_type=Path))
def data_validate(dataset: Path) -> None:
    """Read every file of a prepared dataset and check it against its schema."""
    from rectune.data.prepared import open_dataset

    ds = open_dataset(dataset, validate=True)
    click.echo(f"{dataset}: valid ({', '.join(f'{k} {v:,}' for k, v in ds.schema.rows.items())} rows)")


# ---------------------------------------------------------------------------------------------
@main.group(cls=Group, context_settings=CONTEXT)
def augment() -> None:
    """Sample augmentation: see what the augmenters do to a dataset.

    Every augmenter's parameters are config keys augment.<name>.<param> (the same names in
    search spaces, --set and results tables); `rectune augment keys` lists them.
    """


SET = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                   help="a config value, e.g. --set augment.mask.prob=0.3 (repeatable)")


@augment.command("preview", context_settings=CONTEXT)
@click.argument("dataset", type=click.Path(path_type=Path))
@SET
@click.option("--rows", default=5, show_default=True, type=click.IntRange(min=1), help="rows to show")
@click.option("--epoch", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--seed", default=0, show_default=True, type=int)
def augment_preview(dataset: Path, sets: tuple[str, ...], rows: int, epoch: int, seed: int) -> None:
    """Print a few training rows before and after augmentation (changed values highlighted)."""
    from rectune.augment.preview import preview
    from rectune.config import parse_sets

    preview(dataset, parse_sets(sets), rows=rows, epoch=epoch, seed=seed)


@augment.command("keys", context_settings=CONTEXT)
def augment_keys() -> None:
    """List every augment.* key with its default and meaning."""
    import dataclasses

    from rectune.augment import AUGMENTERS

    for name, cls in AUGMENTERS.items():
        where = " (applied in the training step)" if cls.in_model else ""
        click.echo(f"{name}{where}")
        for f in dataclasses.fields(cls.Params):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            click.echo(f"  augment.{name}.{f.name} = {default!r}  {f.metadata.get('help', '')}")


# ---------------------------------------------------------------------------------------------
@main.group(cls=Group, context_settings=CONTEXT)
def bench() -> None:
    """Benchmarks that print figures measured side by side in one run."""


@bench.command("synth", context_settings=CONTEXT)
@click.option("--rows", default=1_000_000, show_default=True, type=click.IntRange(min=1000))
@click.option("--users", default=50_000, show_default=True, type=click.IntRange(min=10))
@click.option("--items", default=20_000, show_default=True, type=click.IntRange(min=10))
@click.option("--repeat", default=1, show_default=True, type=click.IntRange(min=1))
def bench_synth(rows: int, users: int, items: int, repeat: int) -> None:
    """Time the synthetic generator (generation and writing) at ROWS impressions."""
    from rectune.bench.synth import run

    run(rows=rows, users=users, items=items, repeat=repeat)


def _counts(ctx, param, value: str, allow_none: bool = False) -> tuple[int, ...]:
    """A comma-separated list of whole numbers >= 1 (with ``allow_none``, 'none' or nothing: an
    empty one)."""
    if allow_none and value.strip().lower() in ("", "none"):
        return ()
    try:
        counts = tuple(int(v) for v in value.split(","))
    except ValueError:
        counts = (0,)
    if min(counts) < 1:
        raise click.BadParameter(f"'{value}': expected whole numbers >= 1 separated by commas"
                                 + (", or none" if allow_none else ""))
    return counts


_COUNTS_OR_NONE = functools.partial(_counts, allow_none=True)


@bench.command("augment", context_settings=CONTEXT)
@click.argument("dataset", type=click.Path(path_type=Path))
@SET
@click.option("--batch-size", default=8192, show_default=True, type=click.IntRange(min=64))
@click.option("--repeat", default=3, show_default=True, type=click.IntRange(min=1), help="epochs timed (best kept)")
@click.option("--cpus", default="1,2", show_default=True, callback=_counts,
              help="CPU counts to give Ray, comma-separated")
def bench_augment(dataset: Path, sets: tuple[str, ...], batch_size: int, repeat: int, cpus: tuple[int, ...]) -> None:
    """Augmentation rows/s through Ray Data (1 and 2 CPUs) against numpy in one process.

    Default plan: --set augment.noise.std=0.1 --set augment.mask.prob=0.2.
    """
    from rectune.bench.augment import run
    from rectune.config import parse_sets

    run(dataset, parse_sets(sets) or None, batch_size=batch_size, repeat=repeat, cpus=cpus)


@bench.command("gan", context_settings=CONTEXT)
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--steps", default=600, show_default=True, type=click.IntRange(min=1), help="GAN training steps")
@click.option("--top", default=256, show_default=True, type=click.IntRange(min=2),
              help="codes kept per sparse field (the rest share one 'other' bucket)")
@click.option("--ratio", default=1.0, show_default=True, type=Finite(min=0.01, max=10))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--cached", is_flag=True, help="reuse a cached GAN instead of training one in a fresh cache")
def bench_gan(dataset: Path, steps: int, top: int, ratio: float, seed: int, cached: bool) -> None:
    """Synthetic generators (gan, interpolate, uniform) compared by their statistics against real rows."""
    from rectune.bench.gan import run

    run(dataset, steps=steps, top=top, ratio=ratio, seed=seed, fresh=not cached)


@bench.command("train", context_settings=CONTEXT)
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(min=1), help="seeds 0..N-1, every side")
@click.option("--epochs", default=5, show_default=True, type=click.IntRange(min=1),
              help="epochs per run (best epoch on valid)")
@click.option("--batch-size", default=1024, show_default=True, type=click.IntRange(min=8))
@click.option("--emb", default=16, show_default=True, type=click.IntRange(min=2), help="embedding width")
@click.option("--lr", default=1e-3, show_default=True, type=Finite(min=0, min_open=True), help="Adam lr")
@click.option("--peer-python", default=None, type=click.Path(path_type=Path),
              help="python of the peer environment (make bench-peers: .venv-peers/bin/python); without it the "
                   "torch-rechub side is skipped")
@click.option("--peer-without-history/--no-peer-without-history", default=True, show_default=True,
              help="also run torch-rechub without the behaviour history")
@SET
@click.option("--variant", "variants", multiple=True, metavar="KEY=VALUE[;KEY=VALUE]",
              help="an extra rectune configuration, run by the plain loop for its AUC (repeatable)")
@click.option("--no-ray", is_flag=True, help="skip the Ray Train side")
def bench_train(dataset: Path, seeds: int, epochs: int, batch_size: int, emb: int, lr: float, peer_python: Path | None,
                peer_without_history: bool, sets: tuple[str, ...], variants: tuple[str, ...], no_ray: bool) -> None:
    """MMoE training: Ray Train vs a plain PyTorch loop (epoch time) and vs torch-rechub (samples/s, test AUC).

    Same rows, settings and seeds on every side, no augmentation. --set changes every rectune side.
    """
    from rectune.bench.train import run
    from rectune.config import parse_sets

    extra = {v: parse_sets(v.split(";"), "--variant") for v in variants}
    run(dataset, seeds=seeds, epochs=epochs, batch_size=batch_size, emb=emb, lr=lr, peer_python=peer_python,
        sets=parse_sets(sets) or None, variants=extra or None, peer_without_history=peer_without_history,
        ray_side=not no_ray)


@bench.command("defaults", context_settings=CONTEXT)
@click.argument("datasets", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(min=1), help="seeds 0..N-1, every side")
@click.option("--peer-python", default=None, type=click.Path(path_type=Path),
              help="python of the peer environment (make bench-peers: .venv-peers/bin/python); without it the "
                   "torch-rechub side is skipped")
@click.option("--variant", "variants", multiple=True, metavar="KEY=VALUE[;KEY=VALUE]",
              help="a candidate: the defaults with these keys changed (repeatable)")
def bench_defaults(datasets: tuple[Path, ...], seeds: int, peer_python: Path | None, variants: tuple[str, ...]) -> None:
    """rectune with no settings against torch-rechub's MMoE + history at its defaults (test AUC per task)."""
    from rectune.bench.defaults import run
    from rectune.config import parse_sets

    extra = {v: parse_sets(v.split(";"), "--variant") for v in variants}
    run(list(datasets), seeds=seeds, peer_python=peer_python, variants=extra or None)


@bench.command("tune", context_settings=CONTEXT)
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--trials", default=12, show_default=True, type=click.IntRange(min=2))
@click.option("--epochs", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--concurrency", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--storage", default=None, help="keep both campaigns here (default: a temporary folder)")
def bench_tune(dataset: Path, trials: int, epochs: int, concurrency: int, seed: int, storage: str | None) -> None:
    """ASHA + Optuna against random search (same space and trial budget): compute to reach random's
    best, and the platform's overhead per trial."""
    from rectune.bench.tune import run

    run(dataset, trials=trials, epochs=epochs, concurrency=concurrency, seed=seed, storage=storage)


@bench.command("scale", context_settings=CONTEXT)
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--epochs", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--trials", default=4, show_default=True, type=click.IntRange(min=1), help="per campaign")
@click.option("--workers", default="1,2", show_default=True, callback=_COUNTS_OR_NONE,
              help="Train worker counts for one trial, comma-separated ('none': skip)")
@click.option("--concurrency", default="1,2,4", show_default=True, callback=_COUNTS_OR_NONE,
              help="trials at a time for the campaign, comma-separated ('none': skip)")
@click.option("--two-node", is_flag=True,
              help="also the campaign at 2 at a time on a two-node Ray cluster on this machine (the same CPUs split "
                   "between the nodes)")
@click.option("--memory-rows", default="none", callback=_COUNTS_OR_NONE, metavar="N[,N...]",
              help="for each N, a synthetic world of N rows and a campaign of 2 trials, 1 epoch, 2 at a time on it: "
                   "its peak memory (PSS summed over this process and its descendants)")
def bench_scale(dataset: Path, epochs: int, trials: int, workers: tuple[int, ...], concurrency: tuple[int, ...],
                two_node: bool, memory_rows: tuple[int, ...]) -> None:
    """One trial with 1 and 2 Train workers; a campaign with 1, 2 and 4 trials at a time; on request
    that campaign on two nodes, and a campaign's peak memory by dataset size."""
    from rectune.bench.scale import run

    run(dataset, epochs=epochs, trials=trials, workers=workers, concurrency=concurrency, two_node=two_node,
        memory_rows=memory_rows)


# ---------------------------------------------------------------------------------------------
def _run_config(config_file: Path | None, sets: tuple[str, ...]):
    from rectune.config import parse_sets
    from rectune.runconfig import RunConfig

    cfg = RunConfig.from_file(config_file) if config_file else RunConfig()
    return cfg.update(parse_sets(sets))


@main.command("train", context_settings=CONTEXT)
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path), help="a prepared dataset")
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="YAML of config keys (nested or dotted; `rectune keys` lists them)")
@SET
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Ray Train workers")
@click.option("--gpu", is_flag=True, help="one GPU per worker (mixed precision unless train.amp=false)")
@click.option("--address", default=None, help="a running Ray cluster (e.g. auto); default: start a local Ray")
@click.option("--out", default=None, type=click.Path(path_type=Path),
              help="run folder (default runs/<dataset>-<time>)")
@click.option("--resume", is_flag=True, help="continue the run in --out from its last checkpoint")
def train_cmd(data_dir: Path, config_file: Path | None, sets: tuple[str, ...], workers: int, gpu: bool,
              address: str | None, out: Path | None, resume: bool) -> None:
    """Train the fused multi-task model with Ray Train; per-epoch table; run folder with the
    checkpoint, config.yaml and metrics.json."""
    import time

    from rich.console import Console

    from rectune.data.prepared import open_dataset
    from rectune.train.run import train

    config = _run_config(config_file, sets)
    if out is None:
        out = Path("runs") / f"{open_dataset(data_dir).schema.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    result = train(data_dir, config, out, workers=workers, use_gpu=gpu, address=address, resume=resume)
    best = result.metrics["best"]
    console = Console()
    console.print(f"best epoch {result.metrics['best_epoch']}: " + ", ".join(
        f"{k} {v:.4f}" for k, v in best.items() if k.endswith("_auc") and k.startswith(("valid/", "test/"))))
    console.print(f"run folder: {result.out}")


@main.command("tune", context_settings=CONTEXT)
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path), help="a prepared dataset")
@click.option("--space", "space_file", default=None, type=click.Path(path_type=Path),
              help="a search space YAML (search_spaces/*.yaml); default: a space built from the dataset (its "
                   "tasks, fields, item graph and text) with a budget sized to its rows and the cluster's CPUs")
@click.option("--name", required=True, help="the campaign's name (its folder and its study)")
@click.option("--trials", default=None, type=click.IntRange(min=1), help="trial budget (default: the space's)")
@click.option("--minutes", default=None, type=Finite(min=1),
              help="time limit of the campaign in minutes (default: the space's; 60 for the built space)")
@click.option("--address", default=None, help="a running Ray cluster (auto or ray://...); default: start a local Ray")
@click.option("--storage", default=None,
              help="where campaigns live: a folder or a URI such as s3://bucket/campaigns "
                   "(default $RECTUNE_STORAGE or ./campaigns)")
@click.option("--study-db", default=None,
              help="SQLAlchemy URL of the Optuna study's database (default $RECTUNE_STUDY_DB or SQLite in the "
                   "campaign folder), e.g. postgresql://user@host:5432/db")
@click.option("--resume", is_flag=True, help="continue the campaign NAME where it stopped")
def tune_cmd(data_dir: Path, space_file: Path | None, name: str, trials: int | None, minutes: float | None,
             address: str | None, storage: str | None, study_db: str | None, resume: bool) -> None:
    """Run a tuning campaign: Ray Tune trials, each a Ray Train run, searched by Optuna, stopped
    early by ASHA; prints the best trials."""
    from rectune.tune.campaign import run_campaign

    result = run_campaign(data_dir, space_file, name, storage=storage, trials=trials, address=address,
                          study_db=study_db, resume=resume, minutes=minutes)
    if result.status != "finished":
        click.echo(f"campaign {name} {result.status}; continue it with --resume", err=True)
        sys.exit(1)


# ---------------------------------------------------------------------------------------------
@main.group(cls=Group, context_settings=CONTEXT)
def results() -> None:
    """Query campaigns: list, show, best, export, importance, plot, evaluate.

    Read-only: a campaign is never written to or locked, so these work on finished, interrupted
    and running campaigns. The same functions are the Python API `rectune.results`.
    """


STORAGE = click.option("--storage", default=None,
                       help="where campaigns live: a folder or a URI (default $RECTUNE_STORAGE or ./campaigns)")
STUDY_DB = click.option("--study-db", default=None,
                        help="the study's database URL when campaign.json cannot name it (a password-protected "
                             "server; default $RECTUNE_STUDY_DB)")
NAME = click.argument("name")


def CAMPAIGN(f):  # noqa: N802 - a decorator, named like the option constants above
    """NAME, --storage and --study-db: how every `results` verb finds its campaign."""
    return NAME(STORAGE(STUDY_DB(f)))


def _open(name: str, storage: str | None, study_db: str | None):
    from rectune.results import open_campaign

    return open_campaign(name, storage, study_db)


@results.command("list", context_settings=CONTEXT)
@STORAGE
@STUDY_DB
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def results_list(storage: str | None, study_db: str | None, as_json: bool) -> None:
    """Every campaign: status, trials done / errored / running, best objective, start, duration."""
    import json

    from rich.console import Console

    from rectune.errors import ConfigError
    from rectune.results.report import list_campaigns, list_table
    from rectune.results.store import storage_of

    rows = list_campaigns(storage, study_db)
    if not rows:
        raise ConfigError(f"--storage {storage_of(storage)}: holds no campaign (no sub-folder with a campaign.json)")
    if as_json:
        click.echo(json.dumps(rows, indent=1, default=str))
    else:
        Console(width=160).print(list_table(rows, storage))


@results.command("show", context_settings=CONTEXT)
@CAMPAIGN
@click.option("--top", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of tables")
def results_show(name: str, storage: str | None, study_db: str | None, top: int, as_json: bool) -> None:
    """The best trials with their parameters and metrics; errored trials with their reason."""
    import json

    from rich.console import Console

    from rectune.results.report import show, show_tables

    c = _open(name, storage, study_db)
    data = show(c, top)
    if as_json:
        click.echo(json.dumps(data, indent=1, default=str))
        return
    console = Console(width=160)
    for t in show_tables(c, data):
        console.print(t)


@results.command("best", context_settings=CONTEXT)
@CAMPAIGN
@click.option("--out", required=True, type=click.Path(path_type=Path), help="a .yaml file to write")
@click.option("--trial", default=None, type=int, help="this trial number instead of the best")
def results_best(name: str, storage: str | None, study_db: str | None, out: Path, trial: int | None) -> None:
    """The best trial's full configuration, as a file `rectune train --config` takes."""
    from rectune.results import write_best

    path, t = write_best(_open(name, storage, study_db), out, trial)
    click.echo(f"wrote {path}: trial {t.number} ({t.trial_id}), value(s) {t.values}")


@results.command("export", context_settings=CONTEXT)
@CAMPAIGN
@click.option("--out", required=True, type=click.Path(path_type=Path), help="FILE.csv, FILE.parquet or FILE.json")
def results_export(name: str, storage: str | None, study_db: str | None, out: Path) -> None:
    """One row per trial: state, objective, parameters, final and best-epoch metrics, error."""
    from rectune.results import export
    from rectune.results.export import FORMATS, check_out

    check_out(out, FORMATS)  # before the campaign is read
    c = _open(name, storage, study_db)
    export(c, out)
    click.echo(f"wrote {out}: {len(c.trials)} trial(s)")


@results.command("importance", context_settings=CONTEXT)
@CAMPAIGN
@click.option("--evaluator", default="ped-anova", show_default=True,
              type=click.Choice(["ped-anova", "fanova", "mdi"]), help="Optuna's importance evaluator")
@click.option("--json", "as_json", is_flag=True)
def results_importance(name: str, storage: str | None, study_db: str | None, evaluator: str, as_json: bool) -> None:
    """Parameter importances over the completed trials, per objective (Optuna's evaluators)."""
    import json

    from rich.console import Console
    from rich.table import Table

    from rectune.results import importance

    found = importance(_open(name, storage, study_db), evaluator)
    if as_json:
        click.echo(json.dumps([i.to_dict() for i in found], indent=1))
        return
    console = Console(width=160)
    for imp in found:
        table = Table(title=f"importance for {imp.objective} ({imp.evaluator}, {imp.trials} completed trials)",
                      title_justify="left")
        table.add_column("key")
        table.add_column("importance", justify="right")
        table.add_column("")
        for k, v in imp.importances.items():
            table.add_row(k, f"{v:.3f}", "█" * round(30 * v))
        for k, (v, n) in imp.branches.items():
            table.add_row(k, f"{v:.3f}", f"within its branch ({n} trials where it was searched)")
        for k, why in imp.not_assessed.items():
            table.add_row(k, "-", why)
        console.print(table)


@results.command("plot", context_settings=CONTEXT)
@CAMPAIGN
@click.option("--out", required=True, type=click.Path(path_type=Path), help="folder for the PNGs and report.html")
def results_plot(name: str, storage: str | None, study_db: str | None, out: Path) -> None:
    """Optimisation history, importances, parallel coordinates, learning curves: PNG and HTML."""
    from rectune.results import plot

    for f in plot(_open(name, storage, study_db), out):
        click.echo(f"wrote {f}")


@results.command("evaluate", context_settings=CONTEXT)
@CAMPAIGN
@click.option("--top", default=3, show_default=True, type=click.IntRange(min=1), help="best configurations to retrain")
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(min=1), help="seeds per configuration")
@click.option("--out", default=None, type=click.Path(path_type=Path), help="runs folder (default evaluations/NAME)")
@click.option("--data", "data_dir", default=None, type=click.Path(path_type=Path),
              help="the prepared dataset (default: the campaign's)")
@click.option("--address", default=None, help="a running Ray cluster; default: start a local Ray")
@click.option("--ablate", is_flag=True,
              help="also retrain the pick (the best mean valid objective of the top configurations over the seeds) "
                   "with each component off (augmentation, KG+text fusion, MTL weighting): "
                   "the share of its lift each one carries")
@click.option("--json", "as_json", is_flag=True)
def results_evaluate(name: str, storage: str | None, study_db: str | None, top: int, seeds: int, out: Path | None,
                     data_dir: Path | None, address: str | None, ablate: bool, as_json: bool) -> None:
    """Retrain the top configurations and the baseline (no augmentation, concat, equal weights)
    with several seeds: test metrics mean ± std and the lift over the baseline with its 95% CI."""
    import json

    from rich.console import Console

    from rectune.results import evaluate
    from rectune.results.evaluate import table

    console = Console(width=160, stderr=as_json)
    report = evaluate(_open(name, storage, study_db), top=top, seeds=seeds, out=out, data=data_dir, address=address,
                      ablate=ablate, console=console)
    if as_json:
        click.echo(json.dumps(report, indent=1, default=float))
    else:
        console.print(table(report))
        console.print(f"runs and evaluate.json in {report['out']}")


@bench.command("mission", context_settings=CONTEXT)
@CAMPAIGN
@click.option("--peer-python", default=None, type=click.Path(path_type=Path),
              help="python of the peer environment (make bench-peers: .venv-peers/bin/python)")
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(min=1), help="seeds per side")
@click.option("--peer-trials", default=None, type=click.IntRange(min=1),
              help="trials of each peer's own search (default: as many as the campaign completed)")
@click.option("--peer-jobs", default=1, show_default=True, type=click.IntRange(min=1),
              help="peer runs at once (one torch thread each)")
@click.option("--peer-epochs", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--top", default=1, show_default=True, type=click.IntRange(min=1),
              help="the campaign's best configurations to retrain; the one with the best mean valid objective "
                   "over the seeds is the pick, ablated and set against the peers")
@click.option("--out", default=None, type=click.Path(path_type=Path), help="runs folder (default evaluations/NAME)")
@click.option("--data", "data_dir", default=None, type=click.Path(path_type=Path),
              help="the prepared dataset (default: the campaign's)")
def bench_mission(name: str, storage: str | None, study_db: str | None, peer_python: Path | None, seeds: int,
                  peer_trials: int | None, peer_jobs: int, peer_epochs: int, top: int, out: Path | None,
                  data_dir: Path | None) -> None:
    """A campaign's best (or the pick of its --top best) against the baseline, its ablations
    (augmentation, KG+text fusion, MTL weighting off) and torch-rechub's tuned peers, on the same
    rows and seeds."""
    from rectune.bench.mission import run

    run(_open(name, storage, study_db), peer_python, seeds=seeds, out=out, data=data_dir,
        peer_trials=peer_trials, peer_jobs=peer_jobs, peer_epochs=peer_epochs, top=top)


@bench.command("peers", context_settings=CONTEXT)
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--peer-python", required=True, type=click.Path(path_type=Path),
              help="python of the peer environment (make bench-peers: .venv-peers/bin/python)")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="runs folder (finished runs in it are reused) and peers.json")
@click.option("--trials", default=10, show_default=True, type=click.IntRange(min=1), help="trials per peer")
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(min=1), help="seeds of the best")
@click.option("--first-seed", default=1, show_default=True, type=int,
              help="the search's seed (1: as `bench mission` after a campaign with seed 0)")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1), help="runs at once")
@click.option("--epochs", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--model", "models", multiple=True, help="peers to tune (default: by the dataset's tasks)")
@click.option("--without", multiple=True, help="a field the peers do not read (e.g. user_id; default: they read all)")
def bench_peers(dataset: Path, peer_python: Path, out: Path, trials: int, seeds: int, first_seed: int, jobs: int,
                epochs: int, models: tuple[str, ...], without: tuple[str, ...]) -> None:
    """torch-rechub's peers alone, each tuned by its own search (the peer side of `bench mission`)."""
    from rectune.bench.peer_search import run_peers

    run_peers(dataset, peer_python, out, trials=trials, seeds=list(range(first_seed, first_seed + seeds)),
              jobs=jobs, epochs=epochs, models=list(models) or None, without=list(without))


@main.command("predict", context_settings=CONTEXT)
@click.option("--run", "run_dir", required=True, type=click.Path(path_type=Path),
              help="a run folder of `rectune train` (or its checkpoint folder)")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path), help="a prepared dataset")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "valid", "test"]))
@click.option("--out", default=None, type=click.Path(path_type=Path), help="Parquet file for the scores")
def predict_cmd(run_dir: Path, data_dir: Path, split: str, out: Path | None) -> None:
    """Score a split with a saved checkpoint (loaded as weights only); print its metrics."""
    from rectune.train.predict import predict

    result = predict(run_dir, data_dir, split, out)
    for k, v in result["metrics"].items():
        click.echo(f"{k}\t{v:.4f}")
    if out:
        click.echo(f"{result['rows']:,} rows scored into {out}")


@main.command("keys", context_settings=CONTEXT)
def keys_cmd() -> None:
    """Every config key: default, when it applies, meaning (the names of YAML, --set and search spaces)."""
    from rectune.runconfig import TASK_WEIGHT_PREFIX, key_table

    for k in key_table().values():
        when = f"  [when {k.used_by[0]} in {', '.join(k.used_by[1])}]" if k.used_by else ""
        choices = f" (one of {', '.join(k.meta['choices'])})" if k.meta.get("choices") and not k.used_by else ""
        click.echo(f"{k.name} = {k.default!r}{choices}{when}  {k.help}")
    click.echo(f"{TASK_WEIGHT_PREFIX}<task> = 1.0  weight of each task's loss (fixed) or prior factor (learned)")


# ---------------------------------------------------------------------------------------------
@main.command("quickstart", context_settings=CONTEXT)
@click.option("--dir", "workdir", default=Path("rectune-quickstart"), show_default=True,
              type=click.Path(path_type=Path), help="where to put the dataset and the campaigns")
@click.option("--rows", default=200_000, show_default=True, type=click.IntRange(min=1000))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--trials", default=None, type=click.IntRange(min=1), help="trial budget (default: the quick space's)")
def quickstart(workdir: Path, rows: int, seed: int, trials: int | None) -> None:
    """The main job on the embedded default: synthesise a small world, describe it, run the quick
    tuning campaign on it and print the best trials."""
    from rectune.quickstart import run

    result = run(workdir, rows=rows, seed=seed, trials=trials)
    if result["campaign"].status != "finished":
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
