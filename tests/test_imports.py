"""Every module of the package imports on its own, first, in a fresh interpreter.

A test run imports modules in one order (conftest, then the test files alphabetically), which can
hide an import cycle that bites a user or a Ray worker importing another module first (one such
cycle failed CI: ``rectune.augment`` first, ``rectune.batches`` -> ``rectune.data`` ->
``rectune.data.prepared`` -> ``rectune.batches`` half-initialised). One subprocess per module would
cost a minute; one interpreter that forgets the package between modules checks the same thing.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import rectune

PACKAGE_DIR = Path(rectune.__file__).parent
# standalone scripts run by the peer environment's python (.venv-peers), never imported by rectune
OTHER_ENVIRONMENT = {"rectune.bench.peer_rechub"}

CHECK = r"""
import importlib, sys
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "rectune" or m.startswith("rectune.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print("\n".join(failed))
sys.exit(1 if failed else 0)
"""


def _modules() -> list[str]:
    names = ["rectune"]
    for info in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="rectune."):
        if info.name not in OTHER_ENVIRONMENT:
            names.append(info.name)
    return names


def test_the_package_has_its_modules():
    names = _modules()
    assert "rectune.batches" in names and "rectune.data.prepared" in names
    assert len(names) > 20


def test_each_module_imports_first_without_a_cycle():
    proc = subprocess.run(
        [sys.executable, "-c", CHECK, *_modules()],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"modules that fail to import first:\n{proc.stdout}{proc.stderr[-2000:]}"
