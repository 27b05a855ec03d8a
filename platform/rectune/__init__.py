"""rectune: sample augmentation and multi-task model tuning for e-commerce recommendation.

The public API is small on purpose:

- :mod:`rectune.data` — the prepared-dataset format (:class:`~rectune.data.Schema`,
  :func:`~rectune.data.read_dataset`, :func:`~rectune.data.write_dataset`), the synthetic
  world and the importers.
- :class:`rectune.RectuneError` — every error that is the user's input, not a bug.
"""

from rectune.errors import ConfigError, DataError, RectuneError

__version__ = "0.1.0"

__all__ = ["RectuneError", "DataError", "ConfigError", "__version__"]
