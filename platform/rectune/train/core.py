"""The training step and the epoch loop, shared by the Ray Train worker and the in-process runs.

One place owns how a batch is trained (losses per task, weighting, adversarial perturbation of
the embedding outputs, mixed precision) and how an epoch ends (metrics, best epoch, patience):
the Ray worker adds only sharding, all-gather and reporting around it.

Adversarial augmentation (``augment.adversarial.*``): FGM adds ``eps · g / ‖g‖`` to each row's
tokens, ``g`` the gradient of the clean loss at the tokens; PGD takes ``steps`` such steps of size
``2.5 · eps / steps`` projected onto the ``eps`` ball. The loss on the perturbed tokens, times
``weight``, is added to the clean loss; its gradient reaches the embeddings too.

Weight averaging (``optim.ema``): an exponential moving average of the model's state (parameters
and float buffers such as BatchNorm's statistics), updated after every optimiser step with decay
``min(ema, (1+t)/(10+t))`` at step t, so that the first steps' weights fade fast. Training goes on
from the weights as trained; ``predict`` scores the average, and the best epoch keeps it.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch
from torch.nn import functional as F

from rectune.models.model import FusedModel
from rectune.train import checkpoint as ckpt
from rectune.train.metrics import better, task_metrics, weighted
from rectune.train.tensors import NEW_ITEM, WARM_ITEM

Batch = dict[str, torch.Tensor]


def _per_row_normalise(g: torch.Tensor) -> torch.Tensor:
    norm = g.flatten(1).norm(dim=1).clamp_min(1e-12)
    return g / norm.view(-1, *([1] * (g.dim() - 1)))


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """The share of ``optim.lr`` that epoch ``epoch`` of ``epochs`` trains at."""
    t = min(epoch, epochs) / max(epochs, 1)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "linear":
        return 1.0 - t
    return 1.0


class Trainer:
    """Model + optimiser + the step.

    With several workers (``distributed``), gradients are averaged across them after each backward
    pass by one all-reduce of a flat buffer, instead of DDP: the adversarial step runs the model's
    head more than once per step, which DDP's one-forward-per-backward hooks do not allow.
    """

    def __init__(self, model: FusedModel, config, device: torch.device | str = "cpu", amp: bool = False,
                 distributed: bool = False):
        self.model = self.core = model
        self.distributed = distributed
        self.config = config
        self.device = torch.device(device)
        self.amp = amp and self.device.type == "cuda"
        self.tasks = self.core.tasks
        adv = config.section("augment.adversarial")
        self.adv_method = adv["augment.adversarial.method"]
        self.adv_eps = adv["augment.adversarial.eps"]
        self.adv_weight = adv["augment.adversarial.weight"]
        self.adv_steps = adv["augment.adversarial.steps"]
        emb = [p for n, p in self.core.named_parameters() if n.startswith("embeddings.")]
        rest = [p for n, p in self.core.named_parameters() if not n.startswith("embeddings.")]
        self.optimizer = torch.optim.Adam([{"params": emb, "weight_decay": 0.0},
                                           {"params": rest, "weight_decay": config["optim.weight_decay"]}],
                                          lr=config["optim.lr"])
        self.emb_l2 = config["optim.emb_l2"]
        self.base_lr = config["optim.lr"]
        self.schedule, self.epochs = config["optim.schedule"], config["train.epochs"]
        self.ema_decay = config["optim.ema"]
        self.ema_steps = 0
        self.ema: dict[str, torch.Tensor] | None = None
        """The weight average; starts at the first step's weights (after any broadcast or restore)."""

    def set_epoch(self, epoch: int) -> float:
        """The learning rate of ``epoch`` (``optim.schedule``) set on every parameter group; returns it.

        A function of the epoch alone, so that a run resumed from a checkpoint continues on the same curve."""
        lr = self.base_lr * lr_factor(self.schedule, epoch, self.epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    # ---- one batch -------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def _losses(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none").mean(0)

    def train_batch(self, batch: Batch) -> torch.Tensor:
        """One optimiser step; returns the clean per-task losses (detached)."""
        labels = torch.stack([batch[t] for t in self.tasks], dim=1).float()
        with self._autocast():
            tokens = self.core.embed(batch)
            logits = self.core.head(tokens)
        losses = self._losses(logits, labels)
        w = self.core.weighting
        total = w.combine(losses, tokens if w.needs_shared else None)
        aux = self.core.mtl.auxiliary_loss(logits, labels)
        if aux is not None:
            total = total + aux
        if self.emb_l2:
            total = total + self.emb_l2 * tokens.float().pow(2).sum() / len(labels)
        if self.adv_method != "none" and self.adv_weight > 0:
            total = total + self.adv_weight * w.combine(self._adversarial(tokens, labels, losses), None)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.distributed:
            self._sync_gradients()
        self.optimizer.step()
        w.after_step()
        if self.ema_decay > 0:
            self._update_ema()
        return losses.detach()

    @torch.no_grad()
    def _update_ema(self) -> None:
        self.ema_steps += 1
        if self.ema is None:
            self.ema = {k: v.detach().clone() for k, v in self.core.state_dict().items()}
            return
        d = min(self.ema_decay, (1 + self.ema_steps) / (10 + self.ema_steps))
        for k, v in self.core.state_dict().items():
            e = self.ema[k]
            if e.is_floating_point():
                e.lerp_(v.to(e.dtype), 1.0 - d)
            else:
                e.copy_(v)

    @contextlib.contextmanager
    def scored_weights(self):
        """Inside the block the model holds the weights that are scored: ``optim.ema``'s average, or
        the weights as trained when it is off; the weights as trained are back afterwards."""
        if self.ema is None:
            yield
            return
        trained = {k: v.detach().clone() for k, v in self.core.state_dict().items()}
        self.core.load_state_dict(self.ema)
        try:
            yield
        finally:
            self.core.load_state_dict(trained)

    def scored_state(self) -> dict[str, torch.Tensor]:
        """A copy (on the CPU) of the weights that ``predict`` scores: what the best epoch keeps."""
        state = self.ema if self.ema is not None else self.core.state_dict()
        return {k: v.detach().cpu().clone() for k, v in state.items()}

    # ---- checkpoints -----------------------------------------------------------------------
    def save(self, folder, loop: "LoopState", config: dict, fingerprint: str, best: dict | None,
             extra: dict | None = None) -> None:
        ema = None if self.ema is None else {"steps": torch.tensor(self.ema_steps), "weights": self.ema}
        ckpt.save(folder, self.core, self.optimizer, loop.to_dict(), config, fingerprint,
                  best if best is not None else self.scored_state(), extra=extra, ema=ema)

    def restore(self, folder) -> tuple["LoopState", dict]:
        """Load a checkpoint's weights, optimiser state and weight average; returns its loop state
        and best weights. Without an average in the checkpoint (saved with ``optim.ema`` off), the
        average starts at the next step."""
        meta = ckpt.read_state(folder)
        self.core.load_state_dict(ckpt.load_weights(folder, "model"))
        self.optimizer.load_state_dict(ckpt.load_optimizer(folder))
        saved = ckpt.load_ema(folder) if self.ema_decay > 0 else None
        if saved is not None:
            self.ema = {k: v.to(self.device) for k, v in saved["weights"].items()}
            self.ema_steps = int(saved["steps"])
        return LoopState.from_dict(meta["loop"]), ckpt.load_weights(folder, "best")

    def _sync_gradients(self) -> None:
        import torch.distributed as dist

        params = [p for p in self.core.parameters() if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(p)
            offset += n

    def _adversarial(self, tokens: torch.Tensor, labels: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        (g,) = torch.autograd.grad(losses.sum(), tokens, retain_graph=True)
        eps = self.adv_eps
        delta = eps * _per_row_normalise(g.float())
        if self.adv_method == "pgd" and self.adv_steps > 1:
            step = 2.5 * eps / self.adv_steps
            delta = torch.zeros_like(tokens, dtype=torch.float32)
            base = tokens.detach()
            for _ in range(self.adv_steps):
                delta.requires_grad_(True)
                with self._autocast():
                    adv_logits = self.core.head(base + delta.to(base.dtype))
                (gd,) = torch.autograd.grad(self._losses(adv_logits, labels).sum(), delta)
                delta = delta.detach() + step * _per_row_normalise(gd)
                norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (delta.dim() - 1)))
                delta = delta * torch.clamp(eps / norm, max=1.0)
        with self._autocast():
            adv_logits = self.core.head(tokens + delta.detach().to(tokens.dtype))
        return self._losses(adv_logits, labels)

    # ---- epochs ----------------------------------------------------------------------------
    def train_epoch(self, batches: Iterable[Batch], progress: Callable[[int], None] | None = None) -> list[float]:
        self.model.train()
        total = torch.zeros(len(self.tasks), dtype=torch.float64)
        rows = 0
        for b in batches:
            b = {k: v.to(self.device, non_blocking=True) for k, v in b.items()}
            n = len(b[self.tasks[0]])
            if n < 2 and not self.distributed:  # a last batch of one row: BatchNorm cannot train on it
                continue
            losses = self.train_batch(b)
            if not torch.isfinite(losses).all():
                raise FloatingPointError(f"loss is not finite ({losses.tolist()}) after {rows} rows of this epoch")
            total += losses.double().cpu() * n
            rows += n
            if progress is not None:
                progress(n)
        mean = (total / max(rows, 1)).tolist()
        self.core.weighting.end_epoch(mean)
        return mean

    @torch.no_grad()
    def predict(self, batches: Iterable[Batch]) -> dict[str, np.ndarray]:
        """Probabilities per task (and the funnel's conditional ones), labels, users and items of every row."""
        with self.scored_weights():
            return self._predict(batches)

    def _predict(self, batches: Iterable[Batch]) -> dict[str, np.ndarray]:
        self.model.eval()
        core = self.core
        out: dict[str, list] = {"probs": [], "labels": [], "users": [], "items": [], "conditional": [], "rows": []}
        user, item = core.user_column, core.item_column
        for b in batches:
            b = {k: v.to(self.device, non_blocking=True) for k, v in b.items()}
            with self._autocast():
                h = core.fusion(core.embed(b))
                logits = core.mtl(h)
                if core.mtl.has_funnel:
                    out["conditional"].append(torch.sigmoid(core.mtl.conditional(h).float()).cpu().numpy())
            out["probs"].append(torch.sigmoid(logits.float()).cpu().numpy())
            if all(t in b for t in core.tasks):
                out["labels"].append(torch.stack([b[t] for t in core.tasks], 1).float().cpu().numpy())
            if user and user in b:
                out["users"].append(b[user].cpu().numpy())
            if item and item in b:
                out["items"].append(b[item].cpu().numpy())
            if "_row" in b:
                out["rows"].append(b["_row"].cpu().numpy())
        return {k: np.concatenate(v) for k, v in out.items() if v}


def evaluate(split: str, pred: dict[str, np.ndarray], core: FusedModel, item_status: np.ndarray | None,
             weights: dict[str, float] | None = None) -> dict[str, float]:
    """The split's metrics; ``item_status``: ``tensors.train_item_status``; ``weights``
    (``train.metric_weights`` parsed) adds ``<split>/weighted``."""
    cold = new = None
    if item_status is not None and "items" in pred:
        status = item_status[pred["items"]]
        cold, new = status != WARM_ITEM, status == NEW_ITEM
    out = task_metrics(split, core.tasks, pred["labels"], pred["probs"], users=pred.get("users"), cold=cold,
                       new=new, parents=core.mtl.parents, conditional=pred.get("conditional"),
                       funnel=core.mtl.has_funnel)
    out.update(weighted(split, out, weights or {}))
    return out


@dataclass
class LoopState:
    """What the epoch loop carries from one epoch to the next (saved in every checkpoint)."""

    epoch: int = 0
    """The next epoch to run."""
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False

    def update(self, metric: str, metrics: dict, patience: int) -> bool:
        """Record an epoch's metrics; True when it is the best so far."""
        value = metrics.get(metric)
        improved = value is not None and better(metric, value, self.best)
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, self.epoch, 0
        else:
            self.bad_epochs += 1
        self.history.append(dict(metrics))
        self.epoch += 1
        if patience and self.bad_epochs >= patience:
            self.stopped_early = True
        return improved

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "history": self.history, "stopped_early": self.stopped_early}

    @classmethod
    def from_dict(cls, d: dict) -> "LoopState":
        return cls(**d)


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2 ** 31)
