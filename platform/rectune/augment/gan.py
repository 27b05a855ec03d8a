"""A small conditional tabular GAN (CTGAN-style, Xu et al. 2019) over the encoded training row,
for the ``synthetic`` augmenter's ``generator=gan``. Written in PyTorch; no SDV / CTGAN package.

What is generated, and what is looked up (so that synthetic rows stay consistent):

- **labels** are never generated: they are the condition. Every synthetic row carries the label
  vector it was asked for, taken from a real row, so only label combinations that occur in the
  data appear and the funnel (``schema.task_parents``: no conversion without a click) holds.
- **entity fields** (``schema.user_field``, ``schema.item_field``) and every other sparse field are
  discrete GAN columns. A field with more than ``top`` distinct codes in the train split keeps its
  ``top`` most frequent codes as slots of their own plus one ``other`` slot; ``other`` is filled by
  a draw from the empirical tail of that field *given the row's label vector* (no one-hot over
  thousands of ids).
- **attributes of an entity** are not generated but looked up from the entity's code, so rows
  agree with the catalogue: an item-side field from ``items.parquet`` (``item_attribute_column``),
  a user-side field from ``users.parquet``; failing a table, a sparse field of that side that is
  a function of the entity in the train split (one value for at least 99% of its rows) follows
  the entity through that mapping. A table column that disagrees with the train rows (under 99%)
  is generated instead.
- **dense fields** that are not looked up are GAN columns with mode-specific normalisation: values
  that alone hold at least 1% of the rows (e.g. ``discount = 0``) are exact modes of their own,
  the rest is fitted by a small Bayesian Gaussian mixture (subsample); a value is encoded as
  (scalar within its mode in [-1, 1], one-hot mode) and decoded back exactly for exact modes,
  clipped to the train range otherwise.
- **sequence fields** (behaviour history) are not generated: the augmenter copies them from a real
  row of the same batch with the same label vector, of the same user when the batch has one.

Training (once per dataset and settings, cached): training-by-sampling on a subsample of at most
``rows`` train rows: every sample draws a label combination and, for a discrete column picked at
random, a value of it, both with log-frequency; the critic sees a real row having that label
vector and value; the generator is penalised with cross-entropy when its output for the column
does not match. WGAN-GP loss, PacGAN critic (``pac`` rows per critic sample; each row and its
condition are first projected linearly to 128 numbers, which keeps the critic small), residual
generator, Gumbel-softmax outputs (tau 0.2; straight-through one-hot measured no better), Adam 2e-4,
betas (0.5, 0.9).

One addition to CTGAN (``aux``, weight 1): the generator's softmax for every *other* discrete
column, and for every dense column's mode, is also fitted by cross-entropy to a real row drawn
under the same condition. Sampling draws from those softmaxes, so this is a likelihood term that
agrees with the adversarial one; within a budget of a few hundred steps it is what brings the
per-field distributions close. Measured on the quickstart world (160k train rows, 600 steps):
the largest total-variation distance over the low-cardinality fields for click=1 (click=0) rows was
0.11 (0.12) without it and 0.03 (0.04) with it (see ``rectune.bench.gan``).

Sampling: the condition is drawn like CTGAN's: the caller's label vector, a discrete column at
random and a value of it with its frequency among the train rows with that label vector (that
value is then kept exactly); every other value is a draw from the generator's softmax. All the
randomness comes from the caller's numpy generator, so samples are reproducible.

Cache: ``$RECTUNE_CACHE/gan/`` (default ``~/.cache/rectune/gan/``), one ``<fingerprint>.pt`` per
dataset and settings; the fingerprint hashes schema.json, the size and mtime of the train split and
of the item and user tables, the settings and the format version. Only tensors and a JSON string
are stored (``torch.load(weights_only=True)``); files are written to a temporary name and renamed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

FORMAT_VERSION = 1
ATOM_SHARE = 0.01
"""A dense value held by at least this share of the rows is an exact mode of its own."""
MAX_ATOMS = 8
FUNCTIONAL_SHARE = 0.99
"""An attribute follows its entity when at least this share of rows agrees with the mapping."""
GMM_ROWS = 5000


@dataclass(frozen=True)
class GanSettings:
    steps: int = 600
    """Training steps (one critic and one generator update each)."""
    top: int = 256
    """Codes of a high-cardinality field that get a slot of their own; the rest share 'other'."""
    rows: int = 50_000
    """Training rows at most (a uniform subsample of the train split)."""
    batch: int = 500
    pac: int = 10
    dim: int = 256
    noise: int = 64
    modes: int = 8
    hard: bool = False
    lr: float = 2e-4
    aux: float = 1.0
    """Weight of the auxiliary likelihood term (see ``train``); 0 is plain CTGAN."""
    """Straight-through one-hot (instead of soft Gumbel-softmax) discrete outputs in the critic input."""
    seed: int = 0


# ---------------------------------------------------------------------------------------------
# the cache
# ---------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    root = os.environ.get("RECTUNE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "rectune") / "gan"


def fingerprint(dataset, settings: GanSettings) -> str:
    h = hashlib.sha256()
    h.update((dataset.path / "schema.json").read_bytes())
    for name in ("train.parquet", "items.parquet", "users.parquet"):
        p = dataset.path / name
        if p.is_file():
            st = p.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(json.dumps({"format": FORMAT_VERSION, **dataclasses.asdict(settings)}, sort_keys=True).encode())
    return h.hexdigest()[:32]


def load_or_train(dataset, settings: GanSettings | None = None, log=None) -> "GanModel":
    """The generator of ``dataset`` under ``settings``: from the cache, or trained and cached."""
    settings = settings or GanSettings()
    path = cache_dir() / f"{fingerprint(dataset, settings)}.pt"
    t0 = time.perf_counter()
    if path.is_file():
        try:
            model = GanModel.load(path)
            model.from_cache, model.seconds = True, time.perf_counter() - t0
            return model
        except Exception as exc:  # a damaged or foreign file: train again and overwrite it
            warnings.warn(f"{path}: unreadable GAN cache ({exc}); training again")
    model = train(dataset, settings, log=log)
    model.from_cache, model.seconds = False, time.perf_counter() - t0
    try:
        model.save(path)
    except OSError as exc:  # a read-only cache does not stop the run
        warnings.warn(f"{path}: could not write the GAN cache ({exc})")
    return model


# ---------------------------------------------------------------------------------------------
# the networks
# ---------------------------------------------------------------------------------------------
def _nets():
    import torch
    from torch import nn

    class Generator(nn.Module):
        """Noise + condition embeddings (a linear layer over the one-hot condition), residual blocks."""

        def __init__(self, noise: int, n_cond: int, dim: int, out: int, blocks: int = 2):
            super().__init__()
            self.noise = nn.Linear(noise, dim)
            self.cond = nn.Embedding(n_cond, dim)
            self.blocks = nn.ModuleList(
                nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim), nn.ReLU()) for _ in range(blocks))
            self.out = nn.Linear(dim, out)

        def forward(self, z, combo, slot):
            h = self.noise(z) + self.cond(combo) + self.cond(slot)
            for b in self.blocks:
                h = h + b(h)
            return self.out(h)

    class Critic(nn.Module):
        """PacGAN critic: ``pac`` rows judged together. Each (row, condition) is first projected
        linearly to ``proj`` numbers (the one-hot input is wide: a first layer over the raw pack
        would hold pac x width x dim weights and dominate the step time)."""

        def __init__(self, width: int, pac: int, dim: int, proj: int = 128):
            super().__init__()
            self.pac = pac
            self.proj = nn.Linear(width, proj)
            self.net = nn.Sequential(
                nn.Linear(proj * pac, dim), nn.LeakyReLU(0.2), nn.Dropout(0.5),
                nn.Linear(dim, dim), nn.LeakyReLU(0.2), nn.Dropout(0.5), nn.Linear(dim, 1))

        def forward(self, x):
            h = self.proj(x)
            return self.net(h.reshape(-1, self.pac * h.shape[1]))

    return torch, Generator, Critic


# ---------------------------------------------------------------------------------------------
# the model: encoding metadata + arrays + generator weights
# ---------------------------------------------------------------------------------------------
class GanModel:
    """Everything sampling needs; pickles small (numpy arrays, the generator as its weights)."""

    def __init__(self, meta: dict, arrays: dict[str, np.ndarray], state: dict[str, np.ndarray]):
        self.meta, self.arrays, self.state = meta, arrays, state
        self.from_cache, self.seconds = False, 0.0
        self._prepare()

    # ---- layout --------------------------------------------------------------------------
    def _prepare(self) -> None:
        m, a = self.meta, self.arrays
        self.tasks = m["tasks"]
        self.combos = np.asarray(m["combos"], np.int64).reshape(-1, len(self.tasks))
        self.combo_code = self.combos @ (1 << np.arange(len(self.tasks), dtype=np.int64))
        self.discrete, self.dense, self.derived = m["discrete"], m["dense"], m["derived"]
        self.n_combos = len(self.combos)
        self.slot_offset = np.cumsum([0] + [c["slots"] for c in self.discrete])
        # output spans: each discrete column's logits, then each dense column's scalar + modes
        spans, o = [], 0
        for c in self.discrete:
            spans.append((o, o + c["slots"]))
            o += c["slots"]
        for c in self.dense:
            spans.append((o, o + 1 + c["modes"]))
            o += 1 + c["modes"]
        self.spans, self.out_dim = spans, o
        self.n_cond = self.n_combos + int(self.slot_offset[-1])
        # cumulative condition probabilities p(slot | combo) and tail p(code | combo) per column
        self._cond_cdf = [_cdf(a[f"cond:{c['name']}"]) for c in self.discrete]
        self._tail_cdf = {c["name"]: _cdf(a[f"tail_p:{c['name']}"]) for c in self.discrete if c["other"]}
        self._net = None

    def __getstate__(self):
        return {"meta": self.meta, "arrays": self.arrays, "state": self.state,
                "from_cache": self.from_cache, "seconds": self.seconds}

    def __setstate__(self, st):
        self.meta, self.arrays, self.state = st["meta"], st["arrays"], st["state"]
        self.from_cache, self.seconds = st["from_cache"], st["seconds"]
        self._prepare()

    @property
    def net(self):
        if self._net is None:
            torch, Generator, _ = _nets()
            s = self.meta["settings"]
            g = Generator(s["noise"], self.n_cond, s["dim"], self.out_dim)
            g.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in self.state.items()})
            g.eval()
            self._net = g
        return self._net

    # ---- storage ---------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        import torch

        path.parent.mkdir(parents=True, exist_ok=True)
        obj = {"meta": json.dumps(self.meta),
               "arrays": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.arrays.items()},
               "state": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.state.items()}}
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            torch.save(obj, tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    @classmethod
    def load(cls, path: Path) -> "GanModel":
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        meta = json.loads(obj["meta"])
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"format {meta.get('format')}, expected {FORMAT_VERSION}")
        return cls(meta, {k: v.numpy() for k, v in obj["arrays"].items()},
                   {k: v.numpy() for k, v in obj["state"].items()})

    # ---- sampling --------------------------------------------------------------------------
    def combo_index(self, labels: np.ndarray) -> np.ndarray:
        """Index of each label vector (rows of ``labels``) among the known combinations; -1 if unseen."""
        code = np.rint(labels).astype(np.int64) @ (1 << np.arange(len(self.tasks), dtype=np.int64))
        order = np.argsort(self.combo_code)
        pos = np.clip(np.searchsorted(self.combo_code[order], code), 0, len(order) - 1)
        hit = self.combo_code[order][pos] == code
        return np.where(hit, order[pos], -1)

    def sample(self, combo: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Rows for the label combinations ``combo`` (indices): sparse fields as codes (int64),
        dense fields as float32, derived attributes looked up, labels as float32."""
        import torch

        m = len(combo)
        combo = np.asarray(combo, np.int64)
        nd = len(self.discrete)
        col = rng.integers(0, nd, m)
        slot = np.zeros(m, np.int64)
        for j in range(nd):
            sel = np.flatnonzero(col == j)
            slot[sel] = _draw_rows(self._cond_cdf[j], combo[sel], rng)
        gslot = self.n_combos + self.slot_offset[col] + slot
        z = rng.standard_normal((m, self.meta["settings"]["noise"]), dtype=np.float32)
        with torch.no_grad():
            out = self.net(torch.from_numpy(z), torch.from_numpy(combo), torch.from_numpy(gslot))
        res: dict[str, np.ndarray] = {}
        for j, c in enumerate(self.discrete):
            lo, hi = self.spans[j]
            s = _draw_softmax(out[:, lo:hi], rng)
            fixed = col == j
            s[fixed] = slot[fixed]
            codes = self.arrays[f"codes:{c['name']}"][s]
            if c["other"]:
                oth = np.flatnonzero(codes < 0)
                tail = self.arrays[f"tail_codes:{c['name']}"]
                codes[oth] = tail[_draw_rows(self._tail_cdf[c["name"]], combo[oth], rng)]
            res[c["name"]] = codes
        for k, c in enumerate(self.dense):
            lo, hi = self.spans[nd + k]
            mode = _draw_softmax(out[:, lo + 1:hi], rng)
            name = c["name"]
            mu, sd = self.arrays[f"mu:{name}"], self.arrays[f"sd:{name}"]
            x = mu[mode] + np.tanh(out[:, lo].numpy().astype(np.float64)) * 4 * sd[mode]
            lo_v, hi_v = self.arrays[f"range:{name}"]
            res[name] = np.clip(x, lo_v, hi_v).astype(np.float32)
        for name, entity in self.derived.items():
            lut = self.arrays[f"lut:{name}"]
            res[name] = lut[res[entity]]
        for t, task in enumerate(self.tasks):
            res[task] = self.combos[combo, t].astype(np.float32)
        return res


def _cdf(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, np.float64)
    tot = p.sum(axis=1, keepdims=True)
    p = np.where(tot > 0, p / np.where(tot > 0, tot, 1), 1.0 / p.shape[1])
    c = np.cumsum(p, axis=1)
    c[:, -1] = 1.0
    return c


def _draw_rows(cdf: np.ndarray, row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per entry of ``row`` from the distribution whose cdf is ``cdf[row]``."""
    if len(row) == 0:
        return np.zeros(0, np.int64)
    k = cdf.shape[1]
    flat = (cdf + np.arange(len(cdf))[:, None]).ravel()  # rows made globally increasing
    pos = np.searchsorted(flat, row + rng.random(len(row)), side="right")
    return np.minimum(pos - row * k, k - 1)


def _draw_softmax(logits, rng: np.random.Generator) -> np.ndarray:
    """One draw per row from softmax(logits) (a torch tensor), by inverse cdf: what Gumbel-argmax
    samples too, with one uniform per row from ``rng``."""
    import torch

    c = torch.cumsum(torch.softmax(logits, dim=1), dim=1)
    u = torch.from_numpy(rng.random(len(logits), dtype=np.float32))[:, None] * c[:, -1:]
    return torch.searchsorted(c, u, right=True).clamp_(max=logits.shape[1] - 1)[:, 0].numpy().astype(np.int64)


# ---------------------------------------------------------------------------------------------
# encoding the train split
# ---------------------------------------------------------------------------------------------
def _label_codes(table: pa.Table, tasks: list[str]) -> np.ndarray:
    code = np.zeros(table.num_rows, np.int64)
    for t, task in enumerate(tasks):
        code |= table.column(task).to_numpy().astype(np.int64) << t
    return code


def _table_column(table: pa.Table | None, field: str) -> str | None:
    if table is None:
        return None
    for name in (f"{field}_code", field):
        if name in table.column_names:
            return name
    return None


def _derived(dataset, train: pa.Table) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Attributes that follow an entity: {field: entity field}, {field: lookup by entity code}."""
    schema = dataset.schema
    derived, luts = {}, {}
    entities = [(schema.item_field, "item", dataset.items), (schema.user_field, "user", dataset.users)]
    for entity, side, read in entities:
        if entity is None or entity not in train.column_names:
            continue
        vocab = schema.field(entity).vocab_size
        codes = train.column(entity).to_numpy().astype(np.int64)
        table = read()
        key = entity if table is not None and entity in table.column_names else f"{side}_id"
        if table is not None and key not in table.column_names:
            table = None
        for f in schema.row_fields:
            if f.side != side or f.name in (schema.item_field, schema.user_field) or f.kind not in ("sparse", "dense"):
                continue
            values = train.column(f.name).to_numpy()
            col = _table_column(table, f.name)
            lut = None
            if col is not None:
                ids = table.column(key).to_numpy().astype(np.int64)
                ok = (ids >= 0) & (ids < vocab)
                raw = table.column(col).to_numpy(zero_copy_only=False)
                if np.issubdtype(np.asarray(raw).dtype, np.number):
                    lut = np.zeros(vocab, np.float32 if f.kind == "dense" else np.int64)
                    lut[ids[ok]] = np.asarray(raw)[ok]
            if lut is None and f.kind == "sparse":
                lut = _mode_per_entity(codes, values.astype(np.int64), vocab)
            if lut is None:
                continue
            got = lut[codes]
            agree = np.isclose(got, values, rtol=1e-5, atol=1e-6) if f.kind == "dense" else got == values
            if agree.mean() >= FUNCTIONAL_SHARE:
                derived[f.name] = entity
                luts[f.name] = lut
    return derived, luts


def _mode_per_entity(entity: np.ndarray, value: np.ndarray, vocab: int) -> np.ndarray:
    width = int(value.max()) + 1 if len(value) else 1
    pair, count = np.unique(entity * width + value, return_counts=True)
    e, v = pair // width, pair % width
    order = np.lexsort((-count, e))  # per entity, the most frequent value first
    e, v = e[order], v[order]
    first = np.r_[True, e[1:] != e[:-1]]
    lut = np.zeros(vocab, np.int64)
    lut[e[first]] = v[first]
    return lut


def _fit_dense(x: np.ndarray, settings: GanSettings, rng: np.random.Generator):
    """Exact modes (atoms) + Gaussian mixture modes of one dense column: (mu, sd)."""
    vals, counts = np.unique(x, return_counts=True)
    big = np.argsort(-counts)[:MAX_ATOMS]
    atoms = np.sort(vals[big[counts[big] >= ATOM_SHARE * len(x)]])
    rest = x[~np.isin(x, atoms)]
    mu, sd = list(atoms.astype(np.float64)), [0.0] * len(atoms)
    if len(rest):
        sub = rest if len(rest) <= GMM_ROWS else rng.choice(rest, GMM_ROWS, replace=False)
        spread = float(np.std(sub))
        if len(np.unique(sub)) < 2 or spread == 0:
            mu.append(float(np.mean(sub)))
            sd.append(max(spread, 1e-6))
        else:
            from sklearn.mixture import BayesianGaussianMixture

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gm = BayesianGaussianMixture(
                    n_components=min(settings.modes, len(np.unique(sub))),
                    weight_concentration_prior_type="dirichlet_process", weight_concentration_prior=1e-3,
                    max_iter=100, random_state=settings.seed, reg_covar=1e-6 * max(spread, 1e-12) ** 2 + 1e-12,
                ).fit(sub.reshape(-1, 1))
            keep = gm.weights_ > 0.005
            mu += list(gm.means_[keep, 0])
            sd += list(np.sqrt(gm.covariances_[keep].reshape(-1)))
    return np.asarray(mu), np.asarray(sd), len(atoms)


def _encode_dense(x: np.ndarray, mu: np.ndarray, sd: np.ndarray, n_atoms: int, rng: np.random.Generator):
    """(mode, scalar) per value: atoms exactly, else a mode drawn from the mixture's posterior."""
    mode = np.zeros(len(x), np.int64)
    scalar = np.zeros(len(x), np.float32)
    is_atom = np.zeros(len(x), bool)
    for a in range(n_atoms):
        hit = x == mu[a]
        mode[hit], is_atom[hit] = a, True
    rest = np.flatnonzero(~is_atom)
    if len(rest) and len(mu) > n_atoms:
        g_mu, g_sd = mu[n_atoms:], sd[n_atoms:]
        z = (x[rest, None] - g_mu[None]) / g_sd[None]
        logp = -0.5 * z ** 2 - np.log(g_sd)[None]
        p = np.exp(logp - logp.max(axis=1, keepdims=True))
        k = _draw_rows(_cdf(p), np.arange(len(rest)), rng) if len(rest) else np.zeros(0, np.int64)
        mode[rest] = n_atoms + k
        scalar[rest] = np.clip((x[rest] - mu[n_atoms + k]) / (4 * sd[n_atoms + k]), -0.99, 0.99)
    return mode, scalar


@dataclass
class _Encoded:
    meta: dict
    arrays: dict
    combo: np.ndarray        # per pool row: combination index
    slots: np.ndarray        # (rows, discrete columns): slot index
    modes: np.ndarray        # (rows, dense columns)
    scalars: np.ndarray      # (rows, dense columns)


def encode(dataset, settings: GanSettings) -> _Encoded:
    from rectune.errors import ConfigError

    schema = dataset.schema
    tasks = list(schema.tasks)
    cols = [f.name for f in schema.row_fields if f.kind in ("sparse", "dense")] + tasks
    train = dataset.read_split("train", columns=cols)
    rng = np.random.default_rng(settings.seed)
    derived, luts = _derived(dataset, train)
    label_code = _label_codes(train, tasks)
    codes_present, combo_of_row = np.unique(label_code, return_inverse=True)
    combos = ((codes_present[:, None] >> np.arange(len(tasks))) & 1).tolist()
    n_combos = len(codes_present)
    n = train.num_rows
    pool = np.sort(rng.choice(n, settings.rows, replace=False)) if n > settings.rows else np.arange(n)

    arrays: dict[str, np.ndarray] = {f"lut:{k}": v for k, v in luts.items()}
    discrete, dense = [], []
    slots, modes, scalars = [], [], []
    for f in schema.row_fields:
        if f.name in derived:
            continue
        if f.kind == "sparse":
            v = train.column(f.name).to_numpy().astype(np.int64)
            uniq, cnt = np.unique(v, return_counts=True)
            order = np.argsort(-cnt, kind="stable")
            other = len(uniq) > settings.top
            kept = uniq[order[: settings.top]] if other else uniq[order]
            lookup = np.full(int(uniq.max()) + 1, len(kept), np.int64)  # other slot by default
            lookup[kept] = np.arange(len(kept))
            s = lookup[v]
            n_slots = len(kept) + int(other)
            arrays[f"codes:{f.name}"] = np.r_[kept, [-1] * int(other)].astype(np.int64)
            cond = np.zeros((n_combos, n_slots))
            np.add.at(cond, (combo_of_row, s), 1)
            arrays[f"cond:{f.name}"] = cond
            if other:
                tail = np.setdiff1d(uniq, kept)
                tail_p = np.zeros((n_combos, len(tail)))
                in_tail = s == len(kept)
                np.add.at(tail_p, (combo_of_row[in_tail], np.searchsorted(tail, v[in_tail])), 1)
                empty = tail_p.sum(axis=1) == 0
                tail_p[empty] = tail_p.sum(axis=0)  # a combination without tail rows: the overall tail
                arrays[f"tail_codes:{f.name}"], arrays[f"tail_p:{f.name}"] = tail, tail_p
            discrete.append({"name": f.name, "slots": n_slots, "other": other})
            slots.append(s[pool])
        elif f.kind == "dense":
            x = train.column(f.name).to_numpy().astype(np.float64)
            mu, sd, n_atoms = _fit_dense(x[pool], settings, rng)
            md, sc = _encode_dense(x[pool], mu, sd, n_atoms, rng)
            arrays[f"mu:{f.name}"], arrays[f"sd:{f.name}"] = mu, sd
            arrays[f"range:{f.name}"] = np.array([x.min(), x.max()])
            dense.append({"name": f.name, "modes": len(mu), "atoms": n_atoms})
            modes.append(md)
            scalars.append(sc)
    if not discrete:
        raise ConfigError("augment.synthetic.generator: 'gan' needs at least one sparse field in the dataset")
    meta = {"format": FORMAT_VERSION, "dataset": schema.name, "settings": dataclasses.asdict(settings),
            "tasks": tasks, "combos": combos, "discrete": discrete, "dense": dense, "derived": derived,
            "train_rows": n, "pool_rows": len(pool)}
    stack = lambda parts, dt: np.stack(parts, axis=1).astype(dt) if parts else np.zeros((len(pool), 0), dt)  # noqa: E731
    return _Encoded(meta, arrays, combo_of_row[pool].astype(np.int64), stack(slots, np.int64),
                    stack(modes, np.int64), stack(scalars, np.float32))


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
class _Sampler:
    """Training-by-sampling over the pool: (combo, column, slot) with log-frequency, and real rows."""

    def __init__(self, enc: _Encoded, model: GanModel):
        self.enc, self.model = enc, model
        C = model.n_combos
        p_combo = np.bincount(enc.combo, minlength=C).astype(np.float64)
        self.combo_cdf = _cdf(np.log1p(p_combo)[None])
        self.slot_cdf, self.order, self.start, self.count = [], [], [], []
        for j, c in enumerate(model.discrete):
            S = c["slots"]
            key = enc.combo * S + enc.slots[:, j]
            cnt = np.bincount(key, minlength=C * S)
            self.slot_cdf.append(_cdf(np.log1p(cnt.reshape(C, S))))
            self.order.append(np.argsort(key, kind="stable"))
            self.start.append(np.r_[0, np.cumsum(cnt)[:-1]])
            self.count.append(cnt)

    def draw(self, n: int, rng: np.random.Generator):
        model = self.model
        combo = _draw_rows(self.combo_cdf, np.zeros(n, np.int64), rng)
        col = rng.integers(0, len(model.discrete), n)
        slot = np.zeros(n, np.int64)
        rows = np.zeros(n, np.int64)
        for j, c in enumerate(model.discrete):
            sel = np.flatnonzero(col == j)
            if len(sel) == 0:
                continue
            s = _draw_rows(self.slot_cdf[j], combo[sel], rng)
            key = combo[sel] * c["slots"] + s
            pick = self.start[j][key] + (rng.random(len(sel)) * self.count[j][key]).astype(np.int64)
            rows[sel] = self.order[j][pick]
            slot[sel] = s
        return combo, col, slot, rows


def _real_matrix(enc: _Encoded, model: GanModel, rows: np.ndarray) -> np.ndarray:
    x = np.zeros((len(rows), model.out_dim), np.float32)
    r = np.arange(len(rows))
    nd = len(model.discrete)
    for j in range(nd):
        x[r, model.spans[j][0] + enc.slots[rows, j]] = 1
    for k in range(len(model.dense)):
        lo = model.spans[nd + k][0]
        x[:, lo] = enc.scalars[rows, k]
        x[r, lo + 1 + enc.modes[rows, k]] = 1
    return x


def _cond_matrix(model: GanModel, combo: np.ndarray, gslot: np.ndarray) -> np.ndarray:
    c = np.zeros((len(combo), model.n_cond), np.float32)
    r = np.arange(len(combo))
    c[r, combo] = 1
    c[r, gslot] = 1
    return c


def train(dataset, settings: GanSettings, log=None) -> GanModel:
    """Fit the generator on the train split of ``dataset`` (deterministic for given settings)."""
    torch, Generator, Critic = _nets()
    import torch.nn.functional as F

    t0 = time.perf_counter()
    enc = encode(dataset, settings)
    model = GanModel(enc.meta, enc.arrays, {})
    sampler = _Sampler(enc, model)
    rng = np.random.default_rng(settings.seed + 1)
    s = settings
    batch = max(s.pac, s.batch // s.pac * s.pac)
    nd = len(model.discrete)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        gen = Generator(s.noise, model.n_cond, s.dim, model.out_dim)
        critic = Critic(model.out_dim + model.n_cond, s.pac, s.dim)
        opt_g = torch.optim.Adam(gen.parameters(), lr=s.lr, betas=(0.5, 0.9), weight_decay=1e-6)
        opt_d = torch.optim.Adam(critic.parameters(), lr=s.lr, betas=(0.5, 0.9), weight_decay=1e-6)

        def gumbel_softmax(logits, noise):
            y = torch.softmax((logits + noise) / 0.2, dim=1)
            if s.hard:  # straight-through: one-hot forward, soft gradient
                hard = torch.zeros_like(y).scatter_(1, y.argmax(dim=1, keepdim=True), 1.0)
                y = hard - y.detach() + y
            return y

        def activate(out):
            # one Gumbel noise draw for the whole output (torch's per-call RNG cost dominates otherwise)
            g = -torch.log(-torch.log(torch.rand_like(out).clamp_(1e-10, 1 - 1e-7)))
            parts = []
            for j, (lo, hi) in enumerate(model.spans):
                if j < nd:
                    parts.append(gumbel_softmax(out[:, lo:hi], g[:, lo:hi]))
                else:
                    parts.append(torch.tanh(out[:, lo:lo + 1]))
                    parts.append(gumbel_softmax(out[:, lo + 1:hi], g[:, lo + 1:hi]))
            return torch.cat(parts, dim=1)

        def condition(n):
            combo, col, slot, rows = sampler.draw(n, rng)
            gslot = model.n_combos + model.slot_offset[col] + slot
            return combo, col, slot, gslot, rows

        for step in range(s.steps):
            # ---- critic ----
            combo, col, slot, gslot, rows = condition(batch)
            cvec = torch.from_numpy(_cond_matrix(model, combo, gslot))
            perm = rng.permutation(batch)
            real = torch.from_numpy(_real_matrix(enc, model, rows[perm]))
            real = torch.cat([real, cvec[perm]], dim=1)
            z = torch.randn(batch, s.noise)
            with torch.no_grad():
                fake = activate(gen(z, torch.from_numpy(combo), torch.from_numpy(gslot)))
            fake = torch.cat([fake, cvec], dim=1)
            alpha = torch.rand(batch // s.pac, 1, 1).expand(-1, s.pac, real.shape[1]).reshape(batch, -1)
            mix = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
            grad = torch.autograd.grad(critic(mix).sum(), mix, create_graph=True)[0]
            gp = ((grad.reshape(-1, s.pac * real.shape[1]).norm(2, dim=1) - 1) ** 2).mean() * 10
            loss_d = critic(fake).mean() - critic(real).mean() + gp
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            # ---- generator ----
            combo, col, slot, gslot, rows = condition(batch)
            cvec = torch.from_numpy(_cond_matrix(model, combo, gslot))
            out = gen(torch.randn(batch, s.noise), torch.from_numpy(combo), torch.from_numpy(gslot))
            y = critic(torch.cat([activate(out), cvec], dim=1))
            ce = 0.0
            for j in range(nd):
                sel = np.flatnonzero(col == j)
                if len(sel):
                    lo, hi = model.spans[j]
                    ce = ce + F.cross_entropy(out[torch.from_numpy(sel), lo:hi], torch.from_numpy(slot[sel]),
                                              reduction="sum")
            aux = 0.0
            if s.aux:
                # the other columns' softmax against a real row with the same condition
                for j in range(nd):
                    lo, hi = model.spans[j]
                    other = torch.from_numpy((col != j).astype(np.float32))
                    nll = F.cross_entropy(out[:, lo:hi], torch.from_numpy(enc.slots[rows, j]), reduction="none")
                    aux = aux + (nll * other).sum()
                for k in range(len(model.dense)):
                    lo, hi = model.spans[nd + k]
                    aux = aux + F.cross_entropy(out[:, lo + 1:hi], torch.from_numpy(enc.modes[rows, k]), reduction="sum")
            loss_g = -y.mean() + ce / batch + s.aux * aux / batch
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            if log is not None and (step + 1) % max(1, s.steps // 10) == 0:
                log(f"gan step {step + 1}/{s.steps}: critic {loss_d.item():.3f} generator {loss_g.item():.3f} "
                    f"({time.perf_counter() - t0:.1f}s)")
    state = {k: v.detach().numpy().copy() for k, v in gen.state_dict().items()}
    meta = {**enc.meta, "train_seconds": round(time.perf_counter() - t0, 2)}
    return GanModel(meta, enc.arrays, state)
