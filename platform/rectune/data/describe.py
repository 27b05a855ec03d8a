"""``rectune data describe``: what is in a prepared dataset, as a dict and as tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from rich.console import Console
from rich.table import Table

from rectune.data.prepared import open_dataset
from rectune.data.schema import SPLITS


COLD_THRESHOLD = 5
"""An item is *cold* with fewer training positives (of the first task) than this: describe's
shares and the ``cold_auc`` metrics use the same rule."""


def item_positive_counts(train, schema) -> np.ndarray:
    """Positives of the first task per item code in the training table ``train``."""
    item = schema.item_field
    pos = train.column(item).to_numpy()[train.column(schema.tasks[0]).to_numpy() == 1]
    return np.bincount(pos, minlength=schema.field(item).vocab_size)


def item_row_counts(train, schema) -> np.ndarray:
    """Rows per item code in the training table ``train``: an item with none is *new*."""
    item = schema.item_field
    return np.bincount(train.column(item).to_numpy(), minlength=schema.field(item).vocab_size)


def describe(path: str | Path, cold_threshold: int = COLD_THRESHOLD) -> dict:
    """Rows, task rates, field cardinalities, relations and cold test rows of a prepared dataset.

    A test row's item is *cold* when it has fewer than ``cold_threshold`` positives of the first
    task in the training split; its user is *new* when the user has no training row.
    """
    ds = open_dataset(path)
    schema = ds.schema
    first_task = schema.tasks[0]
    splits: dict[str, dict] = {}
    tables = {}
    keys = [c for c in (schema.tasks + [schema.item_field, schema.user_field]) if c]
    row_fields = [f.name for f in schema.row_fields]
    for s in SPLITS:
        # train once with every row field (for the cardinalities), the others with the keys only
        t = ds.read_split(s, columns=list(dict.fromkeys(keys + row_fields)) if s == "train" else keys)
        tables[s] = t
        splits[s] = {"rows": t.num_rows}
        for task in schema.tasks:
            splits[s][f"{task}_rate"] = float(pc.mean(t.column(task).cast("float64")).as_py())

    train_full = tables["train"]
    fields = []
    for f in schema.fields:
        row = {"name": f.name, "kind": f.kind, "side": f.side, "vocab_size": f.vocab_size}
        if f.kind == "sparse":
            row["distinct_in_train"] = len(pc.unique(train_full.column(f.name)))
        elif f.kind == "sequence":
            row["distinct_in_train"] = len(pc.unique(pc.list_flatten(train_full.column(f.name))))
            row["mean_len"] = float(pc.mean(pc.list_value_length(train_full.column(f.name))).as_py() or 0.0)
            row["max_len"] = f.max_len
        elif f.kind == "dense":
            x = train_full.column(f.name).to_numpy().astype(np.float64)
            row["mean"], row["std"] = float(x.mean()), float(x.std())
        fields.append(row)

    out: dict = {
        "name": schema.name,
        "path": str(ds.path),
        "tasks": list(schema.tasks),
        "task_parents": dict(schema.task_parents),
        "splits": splits,
        "fields": fields,
        "cold_threshold": cold_threshold,
    }
    if schema.item_field:
        item = schema.item_field
        train, test = tables["train"], tables["test"]
        counts = item_positive_counts(train, schema)
        test_items = test.column(item).to_numpy()
        test_pos = test.column(first_task).to_numpy() == 1
        cold = counts[test_items] < cold_threshold
        out["cold_items"] = {
            "test_rows_cold_share": float(cold.mean()),
            "test_positives_cold_share": float(cold[test_pos].mean()) if test_pos.any() else 0.0,
            "items_cold_share": float((counts[1:] < cold_threshold).mean()),
        }
        out["new_items_test_share"] = float((item_row_counts(train, schema)[test_items] == 0).mean())
    if schema.user_field:
        seen = np.unique(tables["train"].column(schema.user_field).to_numpy())
        out["new_users_test_share"] = float(
            (~np.isin(tables["test"].column(schema.user_field).to_numpy(), seen)).mean()
        )
    rel = ds.relations()
    if rel is not None:
        counts = pc.value_counts(rel.column("relation")).to_pylist()
        heads = rel.column("head_item_id")
        out["relations"] = {
            "rows": rel.num_rows,
            "items_with_neighbors": len(pc.unique(heads)),
            "per_relation": {c["values"]: c["counts"] for c in sorted(counts, key=lambda c: c["values"])},
        }
    items = ds.items()
    out["items"] = {"rows": items.num_rows, "has_text": schema.text_field is not None or "title" in items.column_names,
                    "has_text_embedding": "text_emb" in items.column_names}
    return out


def render(desc: dict, console: Console | None = None) -> None:
    console = console or Console()
    console.print(f"[bold]{desc['name']}[/bold]  {desc['path']}")
    t = Table(title="splits")
    t.add_column("split")
    t.add_column("rows", justify="right")
    for task in desc["tasks"]:
        t.add_column(f"{task} rate", justify="right")
    for s, row in desc["splits"].items():
        t.add_row(s, f"{row['rows']:,}", *[f"{row[f'{task}_rate']:.4f}" for task in desc["tasks"]])
    console.print(t)

    f = Table(title="fields")
    for c in ("field", "kind", "side", "vocab", "distinct in train", "notes"):
        f.add_column(c, justify="right" if c in ("vocab", "distinct in train") else "left")
    for row in desc["fields"]:
        notes = ""
        if row["kind"] == "sequence":
            notes = f"mean length {row['mean_len']:.2f} of {row['max_len']}"
        elif row["kind"] == "dense":
            notes = f"mean {row['mean']:.4g}, std {row['std']:.4g}"
        elif row["kind"] == "text":
            notes = "in items.parquet" + (" (embedded)" if desc["items"]["has_text_embedding"] else "")
        f.add_row(row["name"], row["kind"], row["side"],
                  "" if row["vocab_size"] is None else f"{row['vocab_size']:,}",
                  f"{row['distinct_in_train']:,}" if "distinct_in_train" in row else "", notes)
    console.print(f)

    if "relations" in desc:
        r = Table(title="relations")
        r.add_column("relation")
        r.add_column("edges", justify="right")
        for name, n in desc["relations"]["per_relation"].items():
            r.add_row(name, f"{n:,}")
        console.print(r)
        console.print(f"{desc['relations']['items_with_neighbors']:,} of {desc['items']['rows']:,} items have neighbours")
    else:
        console.print("relations: none")
    if "cold_items" in desc:
        c = desc["cold_items"]
        console.print(
            f"cold items (fewer than {desc['cold_threshold']} training {desc['tasks'][0]} positives): "
            f"{c['test_rows_cold_share']:.1%} of test rows, {c['test_positives_cold_share']:.1%} of test "
            f"positives, {c['items_cold_share']:.1%} of all items"
        )
    if "new_items_test_share" in desc:
        console.print(f"test rows of items with no training row: {desc['new_items_test_share']:.1%}")
    if "new_users_test_share" in desc:
        console.print(f"test rows of users with no training row: {desc['new_users_test_share']:.1%}")
    if desc["task_parents"]:
        console.print("funnel: " + ", ".join(f"{c} only after {p}" for c, p in desc["task_parents"].items()))
