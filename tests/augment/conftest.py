"""The augmenters' fixtures: the session's small synthetic world and its train split as one batch."""

from __future__ import annotations

import pytest

from rectune.batches import table_to_batch
from rectune.data import open_dataset


@pytest.fixture(scope="module")
def world(small_world):
    return open_dataset(small_world)


@pytest.fixture(scope="module")
def batch(world):
    return table_to_batch(world.read_split("train"), world.schema)
