"""Task-loss weighting (``loss.weighting``; plug-ins of ``WEIGHTINGS``), orthogonal to the architecture.

A weighting turns the per-task losses ``[T]`` into the loss to minimise. ``loss.weights.<task>``
are the weights of ``fixed`` and a prior factor on each task for the learned schemes.

- ``fixed``: ``Σ w_t L_t``.
- ``uncertainty``: learned ``s_t = log σ_t²``: ``Σ exp(-s_t) w_t L_t + s_t / 2`` (Kendall et al. 2018).
- ``gradnorm``: learned task weights that equalise the gradient norms of the weighted losses at
  the shared representation (the fused tokens), pulled towards the tasks' relative training
  rates to the power ``alpha`` (Chen et al. 2018); renormalised to sum to T after every step.
- ``dwa``: dynamic weight average: ``T · softmax(r_t / temperature)`` with ``r_t`` the ratio of the
  task's mean loss over the last two epochs (Liu et al. 2019); equal weights for two epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rectune.config import Params, param
from rectune.registry import Registry

WEIGHTINGS: Registry[type["Weighting"]] = Registry("loss weighting")


class Weighting(nn.Module):
    Params = Params
    needs_shared = False
    """Whether ``combine`` needs the shared representation (to take gradients at it)."""

    def __init__(self, params, priors: list[float]):
        super().__init__()
        self.register_buffer("prior", torch.tensor(priors, dtype=torch.float32))

    def combine(self, losses: torch.Tensor, shared: torch.Tensor | None = None) -> torch.Tensor:
        return (self.prior * losses).sum()

    def after_step(self) -> None:
        pass

    def end_epoch(self, mean_losses: list[float]) -> None:
        pass

    def current(self) -> list[float]:
        return self.prior.tolist()


@WEIGHTINGS.register("fixed")
class Fixed(Weighting):
    pass


@WEIGHTINGS.register("uncertainty")
class Uncertainty(Weighting):
    def __init__(self, params, priors):
        super().__init__(params, priors)
        self.log_var = nn.Parameter(torch.zeros(len(priors)))

    def combine(self, losses, shared=None):
        return (torch.exp(-self.log_var) * self.prior * losses + self.log_var / 2).sum()

    def current(self):
        return (torch.exp(-self.log_var.detach()) * self.prior).tolist()


@WEIGHTINGS.register("gradnorm")
class GradNorm(Weighting):
    needs_shared = True

    @dataclass
    class Params(Params):
        alpha: float = param(1.0, "restoring force towards equal training rates (gradnorm)", low=0.0, high=5.0)

    def __init__(self, params, priors):
        super().__init__(params, priors)
        self.alpha = params.alpha
        self.w = nn.Parameter(torch.ones(len(priors)))
        self.register_buffer("initial", torch.zeros(len(priors)))

    def combine(self, losses, shared=None):
        if shared is None or not shared.requires_grad:
            return (self.w.detach() * self.prior * losses).sum()
        if not bool((self.initial > 0).all()):
            self.initial.copy_(losses.detach().clamp_min(1e-8))
        norms = []
        for t in range(len(losses)):
            (g,) = torch.autograd.grad(self.prior[t] * losses[t], shared, retain_graph=True, allow_unused=True)
            norms.append(torch.zeros((), device=losses.device) if g is None else g.detach().norm())
        g = torch.stack(norms)
        gw = self.w * g
        ratio = losses.detach() / self.initial
        target = (gw.mean() * (ratio / ratio.mean()) ** self.alpha).detach()
        return (self.w.detach() * self.prior * losses).sum() + (gw - target).abs().sum()

    @torch.no_grad()
    def after_step(self):
        self.w.clamp_(min=1e-3)
        self.w.mul_(len(self.w) / self.w.sum())

    def current(self):
        return (self.w.detach() * self.prior).tolist()


@WEIGHTINGS.register("dwa")
class DWA(Weighting):
    @dataclass
    class Params(Params):
        temperature: float = param(2.0, "softmax temperature (dwa)", low=0.05, high=100.0)

    def __init__(self, params, priors):
        super().__init__(params, priors)
        self.temperature = params.temperature
        self.register_buffer("history", torch.zeros(2, len(priors)))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("w", torch.ones(len(priors)))

    def combine(self, losses, shared=None):
        return (self.w * self.prior * losses).sum()

    @torch.no_grad()
    def end_epoch(self, mean_losses):
        self.history[0] = self.history[1]
        self.history[1] = torch.tensor(mean_losses, dtype=torch.float32, device=self.history.device)
        self.seen += 1
        if int(self.seen) >= 2:
            r = self.history[1] / self.history[0].clamp_min(1e-8)
            self.w.copy_(len(r) * torch.softmax(r / self.temperature, dim=0))

    def current(self):
        return (self.w * self.prior).tolist()
