"""Fixtures for the model and training tests: copies of the small world with extras."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pyarrow as pa
import pytest

from rectune.data.prepared import open_dataset, replace_files
from rectune.data.text import embedding_array


@pytest.fixture(scope="session")
def text_world(small_world, tmp_path_factory):
    """The small world with random (fixed-seed) item-text embeddings, so that text encoders run
    without loading the sentence model."""
    out = tmp_path_factory.mktemp("textworld") / "synth"
    shutil.copytree(small_world, out)
    ds = open_dataset(out)
    items = ds.items()
    vec = np.random.default_rng(0).normal(size=(items.num_rows, 384)).astype(np.float32)
    items = items.append_column("text_emb", embedding_array(vec))
    return replace_files(ds, ds.schema, {"items.parquet": items}).path


@pytest.fixture(scope="session")
def leaky_world(small_world, tmp_path_factory):
    """The small world with an extra context field 'clicked' that is the click label + 1."""
    from rectune.data.schema import Field

    out = tmp_path_factory.mktemp("leaky") / "synth"
    shutil.copytree(small_world, out)
    ds = open_dataset(out)
    tables = {}
    for split in ("train", "valid", "test"):
        t = ds.read_split(split)
        tables[f"{split}.parquet"] = t.append_column(
            "clicked", pa.array(t.column("click").to_numpy().astype(np.int32) + 1))
    schema = dataclasses.replace(ds.schema, fields=ds.schema.fields + [Field("clicked", "sparse", "context", vocab_size=3)])
    return replace_files(ds, schema, tables).path
