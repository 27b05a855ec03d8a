"""Multi-task architectures (``model.mtl``; plug-ins of ``ARCHITECTURES``).

Each takes the fused vector ``[B, F]`` and returns one logit per task ``[B, n_tasks]`` in the
order of the schema's tasks. A single-task dataset is a one-task case of each.

- ``shared_bottom``: one MLP shared by all tasks, one tower per task.
- ``mmoe``: ``experts`` expert MLPs mixed per task by a softmax gate (Ma et al. 2018).
- ``ple``: ``levels`` of CGC: ``experts`` task-specific and ``shared_experts`` shared experts per
  level, gated per task (Tang et al. 2020).
- ``esmm``: shared bottom; for a task with a parent in the funnel (conversion after click), the
  tower predicts the conditional pCVR and the task's output is pCTCVR = pCTR · pCVR over all
  impressions (Ma et al. 2018), so it is trained on all impressions. The funnel comes from the
  schema's ``task_parents`` or ``model.mtl.parents`` (``child:parent`` items). With
  ``model.mtl.cvr_weight`` > 0 the pCVR tower also gets its own loss on the parent's positive rows
  (the naive CVR term of ESCM², Wang et al. 2022), added at that weight to the weighted task losses.

An architecture may add a loss of its own (``auxiliary_loss``, a function of its output logits
and the labels); the trainer adds it after the task weighting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from rectune.config import Params, param
from rectune.errors import ConfigError
from rectune.registry import Registry

ARCHITECTURES: Registry[type["Architecture"]] = Registry("multi-task architecture")


NORMS = ("none", "batch", "layer")


@dataclass(frozen=True)
class LayerSpec:
    """What follows each hidden linear layer of every MLP (experts, bottoms, towers)."""

    dropout: float = 0.0
    norm: str = "none"
    """none, batch (BatchNorm1d, as torch-rechub's MLPs) or layer (LayerNorm), before the ReLU."""


def mlp(in_dim: int, sizes: list[int], layer: LayerSpec) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for s in sizes:
        layers.append(nn.Linear(in_dim, s))
        if layer.norm == "batch":
            layers.append(nn.BatchNorm1d(s))
        elif layer.norm == "layer":
            layers.append(nn.LayerNorm(s))
        layers.append(nn.ReLU())
        if layer.dropout:
            layers.append(nn.Dropout(layer.dropout))
        in_dim = s
    return nn.Sequential(*layers), in_dim


class Architecture(nn.Module):
    Params = Params

    def __init__(self, params, in_dim: int, tasks: list[str], hidden: list[int], tower: list[int],
                 layer: LayerSpec, parents: dict[str, str]):
        super().__init__()
        self.tasks = tasks

    def auxiliary_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """A loss the architecture adds to the weighted task losses, from its output ``logits``
        ``[B, n_tasks]`` and the ``labels`` (None: nothing; ESMM's ``cvr_weight``)."""
        return None

    def towers(self, in_dim: int, tower: list[int], layer: LayerSpec) -> nn.ModuleList:
        out = []
        for _ in self.tasks:
            body, width = mlp(in_dim, tower, layer)
            out.append(nn.Sequential(body, nn.Linear(width, 1)))
        return nn.ModuleList(out)


@ARCHITECTURES.register("shared_bottom")
class SharedBottom(Architecture):
    def __init__(self, params, in_dim, tasks, hidden, tower, layer, parents):
        super().__init__(params, in_dim, tasks, hidden, tower, layer, parents)
        self.bottom, width = mlp(in_dim, hidden, layer)
        self.heads = self.towers(width, tower, layer)

    def forward(self, h):
        z = self.bottom(h)
        return torch.cat([t(z) for t in self.heads], dim=1)


EXPERTS_HELP = "experts (mmoe: in all; ple: per task and level)"


@ARCHITECTURES.register("mmoe")
class MMoE(Architecture):
    @dataclass
    class Params(Params):
        experts: int = param(4, EXPERTS_HELP, low=1, high=32)

    def __init__(self, params, in_dim, tasks, hidden, tower, layer, parents):
        super().__init__(params, in_dim, tasks, hidden, tower, layer, parents)
        built = [mlp(in_dim, hidden, layer) for _ in range(params.experts)]
        self.experts = nn.ModuleList(b for b, _ in built)
        width = built[0][1]
        self.gates = nn.ModuleList(nn.Linear(in_dim, params.experts) for _ in tasks)
        self.heads = self.towers(width, tower, layer)

    def forward(self, h):
        e = torch.stack([x(h) for x in self.experts], dim=1)  # [B, E, w]
        outs = []
        for gate, head in zip(self.gates, self.heads):
            w = torch.softmax(gate(h), dim=-1).unsqueeze(-1)
            outs.append(head((e * w).sum(1)))
        return torch.cat(outs, dim=1)


@ARCHITECTURES.register("ple")
class PLE(Architecture):
    @dataclass
    class Params(Params):
        experts: int = param(4, EXPERTS_HELP, low=1, high=32)
        shared_experts: int = param(2, "shared experts per level (ple)", low=1, high=32)
        levels: int = param(1, "CGC levels (ple)", low=1, high=4)

    def __init__(self, params, in_dim, tasks, hidden, tower, layer, parents):
        super().__init__(params, in_dim, tasks, hidden, tower, layer, parents)
        n, es, ss = len(tasks), params.experts, params.shared_experts
        self.levels = nn.ModuleList()
        width = in_dim
        for level in range(params.levels):
            last = level == params.levels - 1
            specific = nn.ModuleList(nn.ModuleList(mlp(width, hidden, layer)[0] for _ in range(es)) for _ in range(n))
            shared = nn.ModuleList(mlp(width, hidden, layer)[0] for _ in range(ss))
            gates = nn.ModuleList(nn.Linear(width, es + ss) for _ in range(n))
            shared_gate = None if last else nn.Linear(width, n * es + ss)
            self.levels.append(nn.ModuleDict({"specific": specific, "shared": shared, "gates": gates,
                                              **({"shared_gate": shared_gate} if shared_gate is not None else {})}))
            width = hidden[-1] if hidden else width
        self.heads = self.towers(width, tower, layer)

    def forward(self, h):
        inputs = [h] * len(self.tasks)
        shared_in = h
        for lvl in self.levels:
            shared = [x(shared_in) for x in lvl["shared"]]
            specific = [[x(inputs[t]) for x in lvl["specific"][t]] for t in range(len(self.tasks))]
            outs = []
            for t, gate in enumerate(lvl["gates"]):
                e = torch.stack(specific[t] + shared, dim=1)
                w = torch.softmax(gate(inputs[t]), dim=-1).unsqueeze(-1)
                outs.append((e * w).sum(1))
            if "shared_gate" in lvl:
                e = torch.stack([x for s in specific for x in s] + shared, dim=1)
                w = torch.softmax(lvl["shared_gate"](shared_in), dim=-1).unsqueeze(-1)
                shared_in = (e * w).sum(1)
            inputs = outs
        return torch.cat([head(x) for head, x in zip(self.heads, inputs)], dim=1)


def log_sigmoid_to_logit(log_p: torch.Tensor) -> torch.Tensor:
    """The logit of a probability given by its log (stable near 0 and 1)."""
    log_p = log_p.clamp(max=-1e-6)
    return log_p - torch.log(-torch.expm1(log_p))


@ARCHITECTURES.register("esmm")
class ESMM(SharedBottom):
    @dataclass
    class Params(Params):
        parents: list[str] = param(None, "funnel for esmm as child:parent items (empty = the schema's task_parents)",
                                   default_factory=list)
        cvr_weight: float = param(0.0, "weight of a loss on each child tower's own output (pCVR) against the child "
                                  "label on the rows whose parent label is 1, added to the pCTCVR loss on all rows "
                                  "(ESCM2's naive CVR term; 0 = ESMM as published)", low=0.0, high=10.0)

    def __init__(self, params, in_dim, tasks, hidden, tower, layer, parents):
        funnel = dict(parents)
        for item in params.parents:
            child, sep, parent = item.partition(":")
            if not sep or child not in tasks or parent not in tasks or child == parent:
                raise ConfigError(f"model.mtl.parents: '{item}' is not child:parent with two different tasks of "
                                  f"{tasks}")
            funnel[child] = parent
        if not funnel:
            raise ConfigError(f"model.mtl: esmm needs a funnel (a task that follows another, such as conversion after "
                              f"click); the dataset's tasks {tasks} have none: set model.mtl.parents=[child:parent]")
        super().__init__(params, in_dim, tasks, hidden, tower, layer, parents)
        for child, parent in funnel.items():
            if funnel.get(parent) is not None:
                raise ConfigError(f"model.mtl.parents: chains of more than two tasks are not supported ({child} -> "
                                  f"{parent} -> {funnel[parent]})")
        self.parent_index = {tasks.index(c): tasks.index(p) for c, p in funnel.items()}
        self.cvr_weight = params.cvr_weight

    def forward(self, h):
        z = self.bottom(h)
        raw = [t(z) for t in self.heads]
        out = list(raw)
        for c, p in self.parent_index.items():
            out[c] = log_sigmoid_to_logit(F.logsigmoid(raw[p]) + F.logsigmoid(raw[c]))
        return torch.cat(out, dim=1)

    def auxiliary_loss(self, logits, labels):
        """``cvr_weight`` · Σ over child tasks of the BCE of the child tower's own pCVR against the
        child label, averaged over the rows whose parent label is 1 (none in the batch: 0). pCVR is
        read off the outputs: log pCVR = log pCTCVR − log pCTR."""
        if self.cvr_weight == 0:
            return None
        logits = logits.float()
        total = labels.new_zeros(())
        for c, p in self.parent_index.items():
            clicked = labels[:, p] > 0.5
            if clicked.any():
                cvr = log_sigmoid_to_logit(F.logsigmoid(logits[clicked, c]) - F.logsigmoid(logits[clicked, p]))
                total = total + F.binary_cross_entropy_with_logits(cvr, labels[clicked, c])
        return self.cvr_weight * total

    def conditional(self, h) -> torch.Tensor:
        """The towers' own logits (pCVR for a child task), for metrics on clicked rows."""
        z = self.bottom(h)
        return torch.cat([t(z) for t in self.heads], dim=1)
