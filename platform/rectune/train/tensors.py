"""Batches held in memory as tensors, iterated in a seeded order.

Used where the rows are already in memory: evaluation splits on a worker, the training split on
a worker when no augmentation runs per epoch (the stream then yields the same rows every epoch,
so they are pulled once and re-shuffled locally), ``rectune predict``, and the plain-PyTorch
reference loop of the benchmark.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch

from rectune.batches import ROW_ID, table_to_batch

Batch = dict[str, torch.Tensor]


class TensorRows:
    def __init__(self, columns: dict[str, torch.Tensor]):
        self.columns = columns
        self.n = len(next(iter(columns.values()))) if columns else 0

    @classmethod
    def from_batches(cls, batches: Iterable[Batch], sort_by_row: bool = True) -> "TensorRows":
        """Concatenate batches; rows sorted by their stable row id, so the content's order does not
        depend on the order in which a stream delivered them."""
        parts: dict[str, list] = {}
        for b in batches:
            for k, v in b.items():
                parts.setdefault(k, []).append(v.cpu() if isinstance(v, torch.Tensor) else torch.as_tensor(v))
        cols = {k: torch.cat(v) for k, v in parts.items()}
        if sort_by_row and ROW_ID in cols:
            order = torch.argsort(cols[ROW_ID], stable=True)
            cols = {k: v[order] for k, v in cols.items()}
        return cls(cols)

    @classmethod
    def from_split(cls, ds, split: str, columns: list[str] | None = None) -> "TensorRows":
        table = ds.read_split(split, columns=columns)
        return cls({k: torch.from_numpy(v) for k, v in table_to_batch(table, ds.schema).items()})

    def batches(self, batch_size: int, seed: int | None = None) -> Iterator[Batch]:
        """In row order (``seed`` None) or in the permutation drawn from ``seed``."""
        if seed is None:
            order = None
        else:
            g = torch.Generator().manual_seed(int(seed))
            order = torch.randperm(self.n, generator=g)
        for s in range(0, self.n, batch_size):
            if order is None:
                yield {k: v[s:s + batch_size] for k, v in self.columns.items()}
            else:
                idx = order[s:s + batch_size]
                yield {k: v[idx] for k, v in self.columns.items()}

    def __len__(self) -> int:
        return self.n


NEW_ITEM, COLD_ITEM, WARM_ITEM = 0, 1, 2


def train_item_status(ds) -> np.ndarray | None:
    """``int8[n_items]`` per item code: ``WARM_ITEM`` with at least ``COLD_THRESHOLD`` positives
    of the first task in the training split, ``COLD_ITEM`` with fewer (as in ``describe``),
    ``NEW_ITEM`` with no training row at all (new items are cold too)."""
    from rectune.data.describe import COLD_THRESHOLD, item_positive_counts, item_row_counts

    item = ds.schema.item_field
    if item is None:
        return None
    train = ds.read_split("train", columns=[item, ds.schema.tasks[0]])
    status = np.where(item_positive_counts(train, ds.schema) >= COLD_THRESHOLD, WARM_ITEM, COLD_ITEM)
    status[item_row_counts(train, ds.schema) == 0] = NEW_ITEM
    return status.astype(np.int8)
