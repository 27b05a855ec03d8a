"""Checkpoints: a folder with ``model.pt`` (last epoch's weights), ``best.pt`` (the best epoch's),
``optim.pt``, ``ema.pt`` (the weight average and its step count, under ``optim.ema`` only) and
``state.json`` (epoch loop state, resolved config, schema fingerprint, the side settings the model
was built with). ``train.core.Trainer.save`` / ``restore`` write and read one. Weights are loaded
with ``torch.load(weights_only=True)``: a checkpoint can hold tensors only, never code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rectune.errors import DataError

STATE = "state.json"


def save(folder: str | Path, model, optimizer, loop_state: dict, config: dict, fingerprint: str,
         best_weights: dict, extra: dict | None = None, ema: dict | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "model.pt")
    torch.save(optimizer.state_dict(), folder / "optim.pt")
    torch.save(best_weights, folder / "best.pt")
    if ema is not None:
        torch.save(ema, folder / "ema.pt")
    meta = {"loop": loop_state, "config": config, "schema_fingerprint": fingerprint, **(extra or {})}
    (folder / STATE).write_text(json.dumps(meta, indent=1, default=str))
    return folder


def read_state(folder: str | Path) -> dict:
    path = Path(folder) / STATE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError.at(path, "missing file: not a rectune checkpoint") from None
    except json.JSONDecodeError as exc:
        raise DataError.at(path, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None


def load_weights(folder: str | Path, which: str = "best") -> dict:
    path = Path(folder) / f"{which}.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError.at(path, "missing file: not a rectune checkpoint") from None
    except Exception as exc:  # a truncated or foreign file
        raise DataError.at(path, f"cannot be read as weights ({type(exc).__name__})") from None


def load_ema(folder: str | Path) -> dict | None:
    """``{"steps", "weights"}`` of ``ema.pt``, or None when the checkpoint has no weight average."""
    path = Path(folder) / "ema.pt"
    return load_weights(folder, "ema") if path.exists() else None


def load_optimizer(folder: str | Path) -> dict:
    return torch.load(Path(folder) / "optim.pt", map_location="cpu", weights_only=True)
