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
- the same funnel on the other architectures: ``model.mtl.funnel=true`` with ``mmoe``, ``ple`` or
  ``shared_bottom`` makes a child task's tower predict pCVR on that architecture's representation
  and its output pCTCVR (ESMM is ``shared_bottom`` with the funnel always on); ``model.mtl.parents``
  and ``model.mtl.cvr_weight`` then mean what they mean for ESMM.

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


PARENTS_HELP = "funnel for esmm (or model.mtl.funnel) as child:parent items (empty = the schema's task_parents)"
CVR_WEIGHT_HELP = ("weight of a loss on each child tower's own output (pCVR) against the child label on the rows whose "
                   "parent label is 1, added to the pCTCVR loss on all rows (ESCM2's naive CVR term; 0 = ESMM as "
                   "published)")


@dataclass
class FunnelParams(Params):
    """The funnel's keys, shared by every architecture (ESMM's funnel is always on)."""

    parents: list[str] = param(None, PARENTS_HELP, default_factory=list)
    cvr_weight: float = param(0.0, CVR_WEIGHT_HELP, low=0.0, high=10.0)


@dataclass
class OptionalFunnelParams(FunnelParams):
    funnel: bool = param(False, "ESMM's funnel on this architecture: a child task's tower predicts pCVR and its "
                         "output is pCTCVR = pCTR · pCVR (mmoe, ple, shared_bottom; esmm always has it)")


class Architecture(nn.Module):
    """Subclasses build their towers and return each task's tower logit from ``tower_logits``;
    with the funnel on, ``forward`` turns a child task's pCVR logit into pCTCVR's."""

    Params = OptionalFunnelParams
    always_funnel = False

    def __init__(self, params, in_dim: int, tasks: list[str], hidden: list[int], tower: list[int],
                 layer: LayerSpec, parents: dict[str, str]):
        super().__init__()
        self.tasks = tasks
        self.schema_parents = dict(parents)
        self.parent_index: dict[int, int] = {}
        self.cvr_weight = 0.0
        if self.always_funnel or params.funnel:
            self.parent_index = _funnel(params.parents, parents, tasks, self.always_funnel)
            self.cvr_weight = params.cvr_weight

    @property
    def has_funnel(self) -> bool:
        return bool(self.parent_index)

    @property
    def parents(self) -> dict[str, str]:
        """child -> parent task: the schema's ``task_parents`` and, with the funnel, its own (what
        ``<split>/<child>_cvr_auc`` is computed over)."""
        return {**self.schema_parents, **{self.tasks[c]: self.tasks[p] for c, p in self.parent_index.items()}}

    def tower_logits(self, h: torch.Tensor) -> list[torch.Tensor]:
        """Each task's tower output ``[B, 1]`` (pCVR's logit for a child task of the funnel)."""
        raise NotImplementedError

    def forward(self, h):
        raw = self.tower_logits(h)
        out = list(raw)
        for c, p in self.parent_index.items():
            out[c] = log_sigmoid_to_logit(F.logsigmoid(raw[p]) + F.logsigmoid(raw[c]))
        return torch.cat(out, dim=1)

    def conditional(self, h) -> torch.Tensor:
        """The towers' own logits (pCVR for a child task), for metrics on clicked rows."""
        return torch.cat(self.tower_logits(h), dim=1)

    def auxiliary_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """A loss the architecture adds to the weighted task losses, from its output ``logits``
        ``[B, n_tasks]`` and the ``labels`` (None: nothing).

        With the funnel and ``cvr_weight`` > 0: ``cvr_weight`` · Σ over child tasks of the BCE of
        the child tower's own pCVR against the child label, averaged over the rows whose parent
        label is 1 (none in the batch: 0). pCVR is read off the outputs: log pCVR = log pCTCVR −
        log pCTR."""
        if self.cvr_weight == 0 or not self.parent_index:
            return None
        logits = logits.float()
        total = labels.new_zeros(())
        for c, p in self.parent_index.items():
            clicked = labels[:, p] > 0.5
            if clicked.any():
                cvr = log_sigmoid_to_logit(F.logsigmoid(logits[clicked, c]) - F.logsigmoid(logits[clicked, p]))
                total = total + F.binary_cross_entropy_with_logits(cvr, labels[clicked, c])
        return self.cvr_weight * total

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

    def tower_logits(self, h):
        z = self.bottom(h)
        return [t(z) for t in self.heads]


EXPERTS_HELP = "experts (mmoe: in all; ple: per task and level)"


@ARCHITECTURES.register("mmoe")
class MMoE(Architecture):
    @dataclass
    class Params(OptionalFunnelParams):
        experts: int = param(4, EXPERTS_HELP, low=1, high=32)

    def __init__(self, params, in_dim, tasks, hidden, tower, layer, parents):
        super().__init__(params, in_dim, tasks, hidden, tower, layer, parents)
        built = [mlp(in_dim, hidden, layer) for _ in range(params.experts)]
        self.experts = nn.ModuleList(b for b, _ in built)
        width = built[0][1]
        self.gates = nn.ModuleList(nn.Linear(in_dim, params.experts) for _ in tasks)
        self.heads = self.towers(width, tower, layer)

    def tower_logits(self, h):
        e = torch.stack([x(h) for x in self.experts], dim=1)  # [B, E, w]
        outs = []
        for gate, head in zip(self.gates, self.heads):
            w = torch.softmax(gate(h), dim=-1).unsqueeze(-1)
            outs.append(head((e * w).sum(1)))
        return outs


@ARCHITECTURES.register("ple")
class PLE(Architecture):
    @dataclass
    class Params(OptionalFunnelParams):
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

    def tower_logits(self, h):
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
        return [head(x) for head, x in zip(self.heads, inputs)]


def log_sigmoid_to_logit(log_p: torch.Tensor) -> torch.Tensor:
    """The logit of a probability given by its log (stable near 0 and 1)."""
    log_p = log_p.clamp(max=-1e-6)
    return log_p - torch.log(-torch.expm1(log_p))


@ARCHITECTURES.register("esmm")
class ESMM(SharedBottom):
    Params = FunnelParams
    always_funnel = True


def _funnel(items: list[str], schema_parents: dict[str, str], tasks: list[str], esmm: bool) -> dict[int, int]:
    """``{child index: parent index}`` from the schema's ``task_parents`` and ``model.mtl.parents``."""
    funnel = dict(schema_parents)
    for item in items:
        child, sep, parent = item.partition(":")
        if not sep or child not in tasks or parent not in tasks or child == parent:
            raise ConfigError(f"model.mtl.parents: '{item}' is not child:parent with two different tasks of {tasks}")
        funnel[child] = parent
    if not funnel:
        what = "model.mtl: esmm" if esmm else "model.mtl.funnel"
        raise ConfigError(f"{what} needs a funnel (a task that follows another, such as conversion after click); the "
                          f"dataset's tasks {tasks} have none: set model.mtl.parents=[child:parent]")
    for child, parent in funnel.items():
        if funnel.get(parent) is not None:
            raise ConfigError(f"model.mtl.parents: chains of more than two tasks are not supported ({child} -> "
                              f"{parent} -> {funnel[parent]})")
    return {tasks.index(c): tasks.index(p) for c, p in funnel.items()}
