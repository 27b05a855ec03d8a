"""``rectune results plot``: PNGs for reports and one interactive HTML page.

Per objective: the optimisation history (each trial's value and the best so far), the parameter
importances, parallel coordinates of the searched keys against the value; and the learning
curves of every trial (its objective metric per epoch: where ASHA stopped a trial shows). The
PNGs are drawn with matplotlib (Optuna's ``visualization.matplotlib``), the HTML page with plotly
(``visualization``), plotly.js embedded once so that the page opens offline.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

from rectune.errors import ConfigError
from rectune.results.importance import assessable
from rectune.results.store import Campaign

MIN_TRIALS = 2


def _suffix(c: Campaign, i: int) -> str:
    return "" if len(c.objectives) == 1 else f"-{i}"


def _target(c: Campaign, i: int):
    return (lambda t: t.values[i]) if len(c.objectives) > 1 else None


def curves(c: Campaign) -> list[tuple[str, str, list[int], list[float]]]:
    """(label, state, epochs, values) per trial with a history: the first objective's metric."""
    metric = c.objectives[0]
    out = []
    for t in c.trials:
        pts = [(int(r["epoch"]), float(r[metric])) for r in t.history if isinstance(r.get(metric), (int, float))
               and isinstance(r.get("epoch"), (int, float))]
        if pts:
            out.append((f"trial {t.number if t.number is not None else t.trial_id}", t.state,
                        [e + 1 for e, _ in pts], [v for _, v in pts]))
    return out


def _png_curves(c: Campaign, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    best = c.ranked()[:1]
    best_label = f"trial {best[0].number}" if best else None
    for label, state, x, y in curves(c):
        is_best = label == best_label
        ax.plot(x, y, marker="o", markersize=3, linewidth=2.5 if is_best else 1.0, alpha=1.0 if is_best else 0.55,
                color="tab:red" if is_best else None, label=f"{label} (best)" if is_best else None,
                linestyle="--" if state == "errored" else "-")
    ax.set_xlabel("epoch")
    ax.set_ylabel(c.objectives[0])
    ax.set_title(f"{c.name}: learning curves ({c.objectives[0]} per epoch, one line per trial;\n"
                 f"a lone point: a trial stopped after its first epoch; dashed: errored)", fontsize=10)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if best_label:
        ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _html_curves(c: Campaign):
    import plotly.graph_objects as go

    fig = go.Figure()
    for label, state, x, y in curves(c):
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=f"{label} ({state})"))
    fig.update_layout(title=f"Learning curves: {c.objectives[0]} per epoch", xaxis_title="epoch",
                      yaxis_title=c.objectives[0])
    return fig


def plot(c: Campaign, out: str | Path) -> list[Path]:
    """Write the PNGs and ``report.html`` into ``out`` (created); returns the files written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; expected a folder for the plots")
    study = c.study()
    n = len(study.get_trials(deepcopy=False))
    if n < MIN_TRIALS:
        raise ConfigError(f"campaign '{c.name}': plots need at least {MIN_TRIALS} completed trials, it has {n} "
                          f"({c.summary_counts()})")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization as ov
    import optuna.visualization.matplotlib as om

    params = assessable([d.key for d in c.space.params], study.get_trials(deepcopy=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    html_parts: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            for i, metric in enumerate(c.objectives):
                sfx, target = _suffix(c, i), _target(c, i)
                figures = {
                    f"history{sfx}": (om.plot_optimization_history, ov.plot_optimization_history, {}),
                    f"importance{sfx}": (om.plot_param_importances, ov.plot_param_importances,
                                         {"params": params} if params else None),
                    f"parallel{sfx}": (om.plot_parallel_coordinate, ov.plot_parallel_coordinate,
                                       {"params": params} if params else None),
                }
                for name, (png, html, kw) in figures.items():
                    if kw is None:  # no key varied over every completed trial
                        continue
                    ax = png(study, target=target, target_name=metric, **kw)
                    fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                    if name.startswith("history"):
                        ax.xaxis.get_major_locator().set_params(integer=True)
                    fig.set_size_inches(9, 5.5)
                    fig.suptitle(f"{c.name}: {name.split('-')[0]} ({metric})", fontsize=11)
                    fig.tight_layout()
                    fig.savefig(tmp / f"{name}.png", dpi=120)
                    plt.close(fig)
                    hf = html(study, target=target, target_name=metric, **kw)
                    hf.update_layout(title=f"{name.split('-')[0].capitalize()} ({metric})")
                    html_parts.append(hf.to_html(full_html=False, include_plotlyjs=not html_parts))
            _png_curves(c, tmp / "curves.png")
            html_parts.append(_html_curves(c).to_html(full_html=False, include_plotlyjs=not html_parts))
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>rectune campaign {c.name}</title></head>"
                f"<body><h1>Campaign {c.name}</h1><p>{c.summary_counts()}; objective: {', '.join(c.objectives)}</p>"
                + "\n".join(html_parts) + "</body></html>")
        (tmp / "report.html").write_text(page)
        out.mkdir(exist_ok=True)
        written = []
        for f in sorted(tmp.iterdir()):
            os.replace(f, out / f.name)
            written.append(out / f.name)
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
