"""What ``rectune results list`` and ``show`` print: campaign summaries and trial tables (and
the same as JSON-ready dicts for ``--json`` and the Python API)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from rectune.results.store import Campaign, TrialRecord, campaign_names, open_campaign, storage_of


def summary(c: Campaign) -> dict[str, Any]:
    """One campaign's line: status, trials by state, best objective, start and duration."""
    best = c.ranked()[:1]
    return {"name": c.name, "status": c.status, "dataset": c.meta.get("data"),
            "trials_target": c.meta.get("trials_target"),
            "done": c.count("complete"), "errored": c.count("errored"),
            "running": c.count("running"), "interrupted": c.count("interrupted"),
            "objective": c.objectives if len(c.objectives) > 1 else c.objectives[0],
            "best": (best[0].values if len(c.objectives) > 1 else best[0].value) if best else None,
            "best_trial": best[0].number if best else None,
            "started": c.meta.get("created"), "duration_s": c.duration_s()}


def list_campaigns(storage: str | None = None, study_db: str | None = None) -> list[dict[str, Any]]:
    """Every campaign in ``storage``. One that cannot be read (a damaged file, a study database
    out of reach) is listed as "unreadable" with the one-line reason, so that one broken campaign
    does not hide the others; ``results show NAME`` reports the same reason (or the traceback of
    an unexpected error) for that campaign alone."""
    from rectune.errors import RectuneError, first_line

    out = []
    for name in campaign_names(storage):
        try:
            out.append(summary(open_campaign(name, storage, study_db)))
        except RectuneError as err:
            out.append({"name": name, "status": "unreadable", "error": str(err)})
        except Exception as exc:  # noqa: BLE001 - an unforeseen damage of one campaign
            out.append({"name": name, "status": "unreadable",
                        "error": f"{type(exc).__name__}: {first_line(str(exc))} (rectune results show {name} tells more)"})
    return out


def trial_row(c: Campaign, t: TrialRecord) -> dict[str, Any]:
    row: dict[str, Any] = {"trial": t.number, "trial_id": t.trial_id, "state": t.state}
    if len(c.objectives) == 1:
        row[c.objectives[0]] = t.value
    else:
        row.update({m: (t.values[i] if t.values else None) for i, m in enumerate(c.objectives)})
    row.update({"epochs": t.epochs, "best_epoch": t.best_epoch, "duration_s": t.duration_s,
                "params": dict(t.params),
                "best": t.best, "error": t.error})
    return row


def show(c: Campaign, top: int = 5) -> dict[str, Any]:
    """The best ``top`` completed trials, and every errored trial with its reason."""
    if not c.trials:
        from rectune.errors import ConfigError

        raise ConfigError(f"campaign '{c.name}': no trials yet (status {c.status})")
    return {"campaign": summary(c),
            "best": [trial_row(c, t) for t in c.ranked()[:top]],
            "errored": [trial_row(c, t) for t in c.trials if t.state == "errored"],
            "in_progress": [trial_row(c, t) for t in c.trials if t.state in ("running", "interrupted")]}


# ---------------------------------------------------------------------------------------------
# rich tables


def _f(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    if isinstance(v, list):
        return ", ".join(_f(x, digits) for x in v)
    return str(v)


def _duration(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _within(error: str, storage: str | None, name: str) -> str:
    """An error about a campaign's file with the campaign's folder left out (its row names it):
    ``/.../campaigns/c1/space.yaml: ...`` -> ``space.yaml: ...``."""
    from rectune.errors import RectuneError
    from rectune.tune.folder import CampaignFolder

    try:
        root = CampaignFolder(storage_of(storage), name).root + "/"
    except RectuneError:
        return error
    return error[len(root):] if error.startswith(root) else error


def list_table(rows: list[dict], storage: str | None) -> Table:
    table = Table(title=f"campaigns in {storage_of(storage)}", title_justify="left")
    for col in ("campaign", "status", "done", "errored", "running", "objective", "best", "started", "duration"):
        table.add_column(col, justify="right" if col in ("done", "errored", "running", "best") else "left")
    for r in rows:
        if r["status"] == "unreadable":
            reason = escape(_within(r["error"], storage, r["name"]))
            table.add_row(r["name"], "[red]unreadable[/red]", "", "", "", reason, "", "", "")
            continue
        target = r.get("trials_target")
        table.add_row(r["name"], r["status"], f"{r['done']}/{target}" if target else str(r["done"]),
                      str(r["errored"]), str(r["running"] + r["interrupted"]),
                      _f(r["objective"]), _f(r["best"]), (r["started"] or "-").replace("T", " "),
                      _duration(r["duration_s"]))
    return table


def show_tables(c: Campaign, data: dict) -> list[Table]:
    tasks_auc = sorted({k for t in data["best"] for k in t["best"] if k.startswith("test/") and k.endswith("_auc")
                        and not k.endswith(("cold_auc", "new_auc", "mean_auc"))})
    s = data["campaign"]
    best = Table(title=f"campaign {c.name}: {s['status']}, {c.summary_counts()} (target {s['trials_target']}); "
                       f"best {len(data['best'])} by {', '.join(c.objectives)}", title_justify="left")
    best.add_column("#", justify="right")
    best.add_column("trial", no_wrap=True)
    for m in c.objectives:
        best.add_column(m, justify="right", no_wrap=True)
    for k in tasks_auc:
        best.add_column(k + " @best", justify="right", no_wrap=True)
    best.add_column("epochs", justify="right")
    best.add_column("parameters", overflow="fold", min_width=30)
    for i, r in enumerate(data["best"], 1):
        params = "\n".join(f"{k}={_f(v)}" for k, v in r["params"].items())
        best.add_row(str(i), f"{r['trial']} ({r['trial_id'] or '-'})", *[_f(r.get(m)) for m in c.objectives],
                     *[_f(r["best"].get(k)) for k in tasks_auc], str(r["epochs"]), params)
    tables = [best]
    if data["errored"]:
        err = Table(title=f"errored trials ({len(data['errored'])})", title_justify="left")
        err.add_column("trial", no_wrap=True)
        err.add_column("epochs", justify="right")
        err.add_column("reason")
        for r in data["errored"]:
            err.add_row(f"{r['trial']} ({r['trial_id'] or '-'})", str(r["epochs"]), r["error"] or "-")
        tables.append(err)
    if data["in_progress"]:
        run = Table(title=f"running or interrupted trials ({len(data['in_progress'])})", title_justify="left")
        run.add_column("trial", no_wrap=True)
        run.add_column("state")
        run.add_column("epochs", justify="right")
        for r in data["in_progress"]:
            run.add_row(f"{r['trial']} ({r['trial_id'] or '-'})", r["state"], str(r["epochs"]))
        tables.append(run)
    return tables
