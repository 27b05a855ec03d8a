"""``rectune results export`` (one row per trial) and ``rectune results best`` (the best
configuration as a file ``rectune train --config`` takes). Files are written whole or not at all."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import yaml

from rectune.errors import ConfigError
from rectune.results.store import Campaign, TrialRecord

FORMATS = (".csv", ".parquet", ".json")


def check_out(out: str | Path, formats: tuple[str, ...], option: str = "--out") -> Path:
    out = Path(out)
    if out.suffix.lower() not in formats:
        raise ConfigError(f"{option} {out}: expected a file ending in {', '.join(formats)}")
    if out.is_dir():
        raise ConfigError(f"{option} {out}: is a folder; expected a file name")
    if not out.parent.is_dir():
        raise ConfigError(f"{option} {out}: folder {out.parent} does not exist")
    return out


def write_atomic(out: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` then rename over ``out``: a reader never sees half a file, a failure leaves none."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def trial_rows(c: Campaign) -> list[dict[str, Any]]:
    """One flat row per trial: ids, state, objective value(s), every searched key (empty where a
    condition left it out), epochs, duration, ``final/<metric>`` (last epoch) and
    ``best/<metric>`` (at the best epoch), and the error reason."""
    keys = [d.key for d in c.space.params]
    rows = []
    for t in c.trials:
        row: dict[str, Any] = {"trial": t.number, "trial_id": t.trial_id, "state": t.state}
        for i, m in enumerate(c.objectives):
            row[f"objective/{m}"] = t.values[i] if t.values and i < len(t.values) else None
        row.update({k: t.params.get(k) for k in keys})
        row.update({"epochs": t.epochs, "best_epoch": t.best_epoch, "duration_s": t.duration_s,
                    "started": t.started.isoformat() if t.started else None,
                    "finished": t.finished.isoformat() if t.finished else None})
        row.update({f"final/{k}": v for k, v in t.final.items()})
        row.update({f"best/{k}": v for k, v in t.best.items()})
        row["error"] = t.error
        rows.append(row)
    return rows


def export(c: Campaign, out: str | Path) -> Path:
    out = check_out(out, FORMATS)
    rows = trial_rows(c)
    if not rows:
        raise ConfigError(f"campaign '{c.name}': no trials to export yet")
    import pandas as pd

    df = pd.DataFrame(rows)
    for k in (d.key for d in c.space.params):  # one type per column (categorical choices may mix)
        if k in df and df[k].map(type).nunique() > 1:
            df[k] = df[k].map(lambda v: None if v is None else str(v))
    suffix = out.suffix.lower()
    if suffix == ".csv":
        write_atomic(out, lambda p: df.to_csv(p, index=False))
    elif suffix == ".parquet":
        write_atomic(out, lambda p: df.to_parquet(p, index=False))
    else:
        write_atomic(out, lambda p: p.write_text(json.dumps(rows, indent=1, default=str)))
    return out


def best_config(c: Campaign, trial: int | None = None):
    """The run configuration of the best trial (or of trial number ``trial``)."""
    t: TrialRecord = c.trial(trial) if trial is not None else c.best_trial()
    return t, c.config_of(t)


def write_best(c: Campaign, out: str | Path, trial: int | None = None) -> tuple[Path, TrialRecord]:
    out = check_out(out, (".yaml", ".yml"))
    t, config = best_config(c, trial)
    header = (f"# campaign {c.name}, trial {t.number} ({t.trial_id}): "
              + ", ".join(f"{m} = {v:.6g}" for m, v in zip(c.objectives, t.values or []))
              + f"\n# dataset {c.meta.get('data')}; train it with: rectune train --data DIR --config {out.name}\n")
    write_atomic(out, lambda p: p.write_text(header + yaml.safe_dump(config.to_dict(), sort_keys=True)))
    return out, t
