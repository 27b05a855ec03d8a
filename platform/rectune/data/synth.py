"""The synthetic e-commerce world: rectune's embedded default dataset.

Deterministic per seed, vectorised (a million impressions in seconds). What carries signal, so
that later ablations know where each component should help:

- every user has a latent taste over ``TRAITS`` (organic/conventional, spicy/mild, ...) and a
  price sensitivity; the profile (age bucket, gender, city tier) is correlated with them;
- every item's latent character is its category's centroid + its brand's offset + its own part;
  its title names its brand, its category and the words of its two strongest traits (right with
  probability ``title_fidelity``), so the text carries part of the latent character;
- item popularity is long-tailed (Zipf over a random order), so many items get too few
  impressions for their id embedding to learn: for those, only brand, category, shop, title and
  graph neighbours (same brand / category / shop, complement) carry the signal;
- click = Bernoulli(sigmoid(affinity(user, item) + item quality + user propensity + discount));
  conversion can only follow a click: Bernoulli(sigmoid(affinity - price sensitivity x price
  band + discount)) among clicks, 0 otherwise;
- users join at different times, so the later test split holds users with little history;
  ``hist_items`` is the user's last clicked items strictly before the impression;
- with ``new_items`` > 0, that share of the items launches late (between the 85% and 95%
  quantiles of the impressions' times): no impression of them before their launch, so they are
  absent from the training split and appear in valid and test only. Their id has no training row:
  a model can score them by their title and graph neighbours, and by the unknown id's embedding
  when it embeds ids it never trained as the unknown id (``model.min_id_count`` >= 1) and trains
  that embedding with sample augmentation (item-id masking): the one place in this world where the
  generator says masking should help;
- ``conversion_shift`` is added to the conversion logit (0: the world as it was). Negative values
  make conversion rarer; the draws are the same, so the shifted world's conversions are a subset
  of the unshifted world's, and everything else is identical. Rare conversions set the two tasks'
  losses far apart: the world where the task weighting has the most to change (BENCHMARKS.md
  measures which weights it rewards).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from rectune.data.importers.common import history_at
from rectune.data.prepared import DatasetTables
from rectune.data.schema import SPLITS, Field, Schema
from rectune.errors import ConfigError

TRAITS = [
    ("organic", "conventional"), ("spicy", "mild"), ("premium", "value"), ("sweet", "savory"),
    ("fresh", "shelf-stable"), ("vegan", "classic"), ("family-size", "single-serve"), ("imported", "local"),
]
# (category noun, department)
CATEGORIES = [
    ("coffee", "beverages"), ("tea", "beverages"), ("juice", "beverages"), ("sparkling water", "beverages"),
    ("milk", "dairy"), ("yogurt", "dairy"), ("cheese", "dairy"), ("butter", "dairy"),
    ("pasta", "pantry"), ("pasta sauce", "pantry"), ("rice", "pantry"), ("olive oil", "pantry"),
    ("honey", "pantry"), ("peanut butter", "pantry"), ("jam", "pantry"), ("bread", "bakery"),
    ("potato chips", "snacks"), ("salsa", "snacks"), ("crackers", "snacks"), ("popcorn", "snacks"),
    ("granola", "breakfast"), ("cereal", "breakfast"), ("chocolate", "sweets"), ("cookies", "sweets"),
]
COMPLEMENTS = [
    ("coffee", "milk"), ("tea", "honey"), ("pasta", "pasta sauce"), ("pasta", "olive oil"),
    ("potato chips", "salsa"), ("crackers", "cheese"), ("granola", "yogurt"), ("cereal", "milk"),
    ("bread", "peanut butter"), ("bread", "jam"), ("bread", "butter"), ("cookies", "milk"),
    ("popcorn", "sparkling water"), ("chocolate", "coffee"), ("rice", "olive oil"),
]
_BRAND_A = ["Green", "Sun", "Blue", "Golden", "River", "Maple", "Stone", "Silver", "Oak", "Wild",
            "Red", "North", "Bright", "Honey", "Cedar", "Pine"]
_BRAND_B = ["field", "vale", "brook", "ridge", "wood", "farm", "crest", "leaf", "harvest", "mill",
            "grove", "meadow", "bay", "hill", "garden", "acre"]
_VARIANTS = ["original", "classic recipe", "new", "value pack", "8 oz", "16 oz", "twin pack", "limited edition"]
AGE_BUCKETS = ["<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"]
GENDERS = ["F", "M"]
CITY_TIERS = ["tier 1", "tier 2", "tier 3", "tier 4"]
PRICE_BANDS = ["budget", "low", "mid", "high", "luxury"]


@dataclass(frozen=True)
class SynthConfig:
    users: int = 2000
    items: int = 1000
    rows: int = 100_000
    seed: int = 0
    brands: int = 0
    """0: items // 20, at least 5 and at most 256."""
    shops: int = 0
    """0: items // 50, at least 3."""
    hist_len: int = 20
    popularity_exponent: float = 1.1
    title_fidelity: float = 0.85
    affinity_scale: float = 1.6
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    max_neighbors: int = 20
    new_items: float = 0.0
    """the share of items that launch late (valid and test only); 0 leaves the world as it was"""
    conversion_shift: float = 0.0
    """added to the conversion logit among clicks; negative: rarer conversions; 0: the world as it was"""

    def resolved(self) -> "SynthConfig":
        for name in ("users", "items", "rows"):
            if getattr(self, name) < 10:
                raise ConfigError(f"--{name} {getattr(self, name)}: expected at least 10")
        brands = self.brands or int(np.clip(self.items // 20, 5, len(_BRAND_A) * len(_BRAND_B)))
        shops = self.shops or max(3, self.items // 50)
        if not 0.0 <= self.new_items < 1.0:
            raise ConfigError(f"--new-items {self.new_items}: expected a share in [0, 1)")
        if not -10.0 <= self.conversion_shift <= 10.0:
            raise ConfigError(f"--conversion-shift {self.conversion_shift}: expected a logit offset in [-10, 10]")
        if brands > len(_BRAND_A) * len(_BRAND_B):
            raise ConfigError(f"brands {brands}: expected at most {len(_BRAND_A) * len(_BRAND_B)}")
        return SynthConfig(**{**asdict(self), "brands": brands, "shops": shops})


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _codes(n: int) -> np.ndarray:
    return np.arange(1, n + 1, dtype=np.int32)


def generate(config: SynthConfig | None = None) -> DatasetTables:
    cfg = (config or SynthConfig()).resolved()
    rng = np.random.default_rng(cfg.seed)
    d = len(TRAITS)
    n_cat = len(CATEGORIES)

    # ---- items -----------------------------------------------------------------------------
    cat_centroid = rng.normal(0, 1, (n_cat, d))
    brand_offset = rng.normal(0, 0.7, (cfg.brands, d))
    brand_cat = rng.integers(0, n_cat, cfg.brands)  # a brand's home category
    item_brand = rng.integers(0, cfg.brands, cfg.items)
    # most items sit in their brand's home category
    item_cat = np.where(rng.random(cfg.items) < 0.7, brand_cat[item_brand], rng.integers(0, n_cat, cfg.items))
    item_shop = rng.integers(0, cfg.shops, cfg.items)
    own = rng.normal(0, 0.6, (cfg.items, d))
    v = 0.8 * cat_centroid[item_cat] + 0.6 * brand_offset[item_brand] + own
    quality = rng.normal(0, 0.5, cfg.items)
    premium = TRAITS.index(("premium", "value"))
    price_score = 0.8 * v[:, premium] + rng.normal(0, 0.6, cfg.items)
    price_band = np.clip(np.digitize(price_score, [-1.2, -0.4, 0.4, 1.2]), 0, 4)
    price = np.exp(1.0 + 0.45 * price_band + rng.normal(0, 0.15, cfg.items)).astype(np.float32)
    titles = _titles(rng, v, item_brand, item_cat, cfg.title_fidelity)
    # popularity: Zipf over a random order of the items
    rank = rng.permutation(cfg.items) + 1
    pop = rank.astype(np.float64) ** -cfg.popularity_exponent
    pop /= pop.sum()

    # ---- users -----------------------------------------------------------------------------
    u = rng.normal(0, 1, (cfg.users, d))
    sensitivity = np.clip(0.6 - 0.4 * u[:, premium] + rng.normal(0, 0.3, cfg.users), 0.0, None)
    propensity = rng.normal(0, 0.4, cfg.users)
    age = np.clip(np.round(3 + 0.8 * u[:, premium] + rng.normal(0, 1.2, cfg.users)), 0, 6).astype(np.int32)
    sweet = TRAITS.index(("sweet", "savory"))
    gender = (rng.random(cfg.users) < _sigmoid(0.8 * u[:, sweet])).astype(np.int32)
    tier = np.clip(np.round(1.5 + 0.6 * sensitivity + rng.normal(0, 0.8, cfg.users)), 0, 3).astype(np.int32)
    activity = rng.pareto(1.5, cfg.users) + 1.0
    activity /= activity.sum()
    horizon = 90 * 86400
    join = (rng.random(cfg.users) ** 1.5 * 0.97 * horizon).astype(np.int64)

    # ---- impressions -------------------------------------------------------------------------
    n = cfg.rows
    ru = _draw(rng, activity, n)
    ri = _draw(rng, pop, n)
    ts = join[ru] + (rng.random(n) * (horizon - join[ru])).astype(np.int64)
    if cfg.new_items > 0:  # late launches: an impression before its item's launch shows an older item
        new = rng.random(cfg.items) < cfg.new_items
        new[np.argmax(pop)] = False  # at least one item is there from the start
        lo, hi = np.quantile(ts, [0.85, 0.95])
        launch = np.where(new, rng.uniform(lo, hi, cfg.items), -1.0)
        early = ts < launch[ri]
        old = np.where(new, 0.0, pop)
        ri[early] = _draw(rng, old / old.sum(), int(early.sum()))
    order = np.lexsort((np.arange(n), ts))
    ru, ri, ts = ru[order], ri[order], ts[order]
    discount = np.where(rng.random(n) < 0.3, rng.uniform(0.05, 0.5, n), 0.0).astype(np.float32)
    affinity = cfg.affinity_scale * np.einsum("nd,nd->n", u[ru], v[ri]) / np.sqrt(d)
    click_p = _sigmoid(affinity + quality[ri] + propensity[ru] + 2.0 * discount - 2.2)
    click = (rng.random(n) < click_p).astype(np.int8)
    conv_p = _sigmoid(0.8 * affinity - sensitivity[ru] * (price_band[ri] - 2.0) + 2.5 * discount - 3.0
                      + cfg.conversion_shift)
    conversion = (click.astype(bool) & (rng.random(n) < conv_p)).astype(np.int8)

    user_codes, item_codes = ru.astype(np.int32) + 1, ri.astype(np.int32) + 1
    clicked = click == 1
    hist = history_at(user_codes[clicked], ts[clicked], np.arange(n)[clicked], item_codes[clicked],
                      user_codes, ts, cfg.hist_len)

    columns = {
        "user_id": pa.array(user_codes),
        "age_bucket": pa.array(age[ru] + 1),
        "gender": pa.array(gender[ru] + 1),
        "city_tier": pa.array(tier[ru] + 1),
        "item_id": pa.array(item_codes),
        "brand": pa.array(item_brand[ri].astype(np.int32) + 1),
        "category": pa.array(item_cat[ri].astype(np.int32) + 1),
        "shop": pa.array(item_shop[ri].astype(np.int32) + 1),
        "price_band": pa.array(price_band[ri].astype(np.int32) + 1),
        "price": pa.array(price[ri]),
        "discount": pa.array(discount),
        "hist_items": hist,
        "click": pa.array(click),
        "conversion": pa.array(conversion),
        "ts": pa.array(ts),
    }
    table = pa.table(columns)
    n_train = int(round(n * cfg.split[0]))
    n_valid = int(round(n * cfg.split[1]))
    bounds = [0, n_train, n_train + n_valid, n]
    splits = {s: table.slice(bounds[k], bounds[k + 1] - bounds[k]) for k, s in enumerate(SPLITS)}

    items = pa.table({
        "item_id": pa.array(_codes(cfg.items)),
        "brand": pa.array(item_brand.astype(np.int32) + 1),
        "category": pa.array(item_cat.astype(np.int32) + 1),
        "shop": pa.array(item_shop.astype(np.int32) + 1),
        "price_band": pa.array(price_band.astype(np.int32) + 1),
        "price": pa.array(price),
        "title": pa.array(titles, pa.string()),
    })
    users = pa.table({
        "user_id": pa.array(_codes(cfg.users)),
        "age_bucket": pa.array(age + 1),
        "gender": pa.array(gender + 1),
        "city_tier": pa.array(tier + 1),
    })
    relations = _relations(rng, v, item_brand, item_cat, item_shop, cfg.max_neighbors)

    brand_names = [_brand_name(b) for b in range(cfg.brands)]
    fields = [
        Field("user_id", "sparse", side="user", vocab_size=cfg.users + 1),
        Field("age_bucket", "sparse", side="user", vocab_size=len(AGE_BUCKETS) + 1, values=AGE_BUCKETS),
        Field("gender", "sparse", side="user", vocab_size=len(GENDERS) + 1, values=GENDERS),
        Field("city_tier", "sparse", side="user", vocab_size=len(CITY_TIERS) + 1, values=CITY_TIERS),
        Field("item_id", "sparse", side="item", vocab_size=cfg.items + 1),
        Field("brand", "sparse", side="item", vocab_size=cfg.brands + 1, values=brand_names),
        Field("category", "sparse", side="item", vocab_size=n_cat + 1, values=[c for c, _ in CATEGORIES]),
        Field("shop", "sparse", side="item", vocab_size=cfg.shops + 1),
        Field("price_band", "sparse", side="item", vocab_size=len(PRICE_BANDS) + 1, values=PRICE_BANDS),
        Field("price", "dense", side="item"),
        Field("discount", "dense", side="context"),
        Field("hist_items", "sequence", side="user", vocab_size=cfg.items + 1, max_len=cfg.hist_len,
              shares_vocab_with="item_id"),
        Field("title", "text", side="item"),
    ]
    schema = Schema(
        name=f"synth-s{cfg.seed}",
        tasks=["click", "conversion"],
        task_parents={"conversion": "click"},
        fields=fields,
        meta_columns=["ts"],
        user_field="user_id",
        item_field="item_id",
        source="rectune synthetic e-commerce world (rectune.data.synth)",
        derivation=(__doc__ or "").split("\n\n", 1)[1].strip().replace("\n", " "),
        seed=cfg.seed,
        provenance={"generator": "rectune.data.synth", "config": asdict(cfg)},
    )
    return DatasetTables(schema, splits, items, users, relations)


def _draw(rng: np.random.Generator, p: np.ndarray, n: int) -> np.ndarray:
    """n draws from a categorical distribution (inverse CDF: faster than rng.choice with p)."""
    cdf = np.cumsum(p)
    cdf[-1] = 1.0
    return np.searchsorted(cdf, rng.random(n), side="right").astype(np.int64)


def _brand_name(b: int) -> str:
    return _BRAND_A[b % len(_BRAND_A)] + _BRAND_B[(b // len(_BRAND_A)) % len(_BRAND_B)]


def _titles(rng: np.random.Generator, v: np.ndarray, brand: np.ndarray, cat: np.ndarray, fidelity: float) -> list[str]:
    n, d = v.shape
    top2 = np.argsort(-np.abs(v), axis=1)[:, :2]
    sign = v[np.arange(n)[:, None], top2] > 0
    # with probability 1 - fidelity a word is replaced by a random trait word
    wrong = rng.random((n, 2)) > fidelity
    rand_trait = rng.integers(0, d, (n, 2))
    rand_sign = rng.random((n, 2)) < 0.5
    trait = np.where(wrong, rand_trait, top2)
    sign = np.where(wrong, rand_sign, sign)
    variant = rng.integers(0, len(_VARIANTS) * 3, n)  # most titles have no variant
    out = []
    for i in range(n):
        w1 = TRAITS[trait[i, 0]][0 if sign[i, 0] else 1]
        w2 = TRAITS[trait[i, 1]][0 if sign[i, 1] else 1]
        title = f"{_brand_name(brand[i])} {w1} {w2} {CATEGORIES[cat[i]][0]}"
        if variant[i] < len(_VARIANTS):
            title += f", {_VARIANTS[variant[i]]}"
        out.append(title)
    return out


def _relations(rng: np.random.Generator, v: np.ndarray, brand: np.ndarray, cat: np.ndarray, shop: np.ndarray,
               max_neighbors: int) -> pa.Table:
    """same_brand, same_category, same_shop (random members, at most max_neighbors) and complement
    (items of a complementary category with the most similar latent character)."""
    n = len(v)
    heads, rels, tails = [], [], []

    def add(rel: str, h: np.ndarray, t: np.ndarray) -> None:
        heads.append(h + 1)
        tails.append(t + 1)
        rels.append(np.full(len(h), rel, dtype=object))

    for rel, group in (("same_brand", brand), ("same_category", cat), ("same_shop", shop)):
        order = np.lexsort((rng.random(n), group))
        g = group[order]
        starts = np.searchsorted(g, g, side="left")
        ends = np.searchsorted(g, g, side="right")
        sizes = ends - starts
        k = np.minimum(sizes - 1, max_neighbors)
        h = np.repeat(order, k)
        # each member takes the next k members of its group, wrapping around
        pos = np.arange(n) - starts
        first = np.repeat(np.cumsum(k) - k, k)
        step = np.arange(int(k.sum())) - first + 1
        t = order[np.repeat(starts, k) + (np.repeat(pos, k) + step) % np.repeat(sizes, k)]
        add(rel, h, t)

    names = [c for c, _ in CATEGORIES]
    partners: dict[int, list[int]] = {}
    for a, b in COMPLEMENTS:
        ia, ib = names.index(a), names.index(b)
        partners.setdefault(ia, []).append(ib)
        partners.setdefault(ib, []).append(ia)
    k_comp = max(1, max_neighbors // 2)
    for c, others in partners.items():
        src = np.flatnonzero(cat == c)
        pool = np.flatnonzero(np.isin(cat, others))
        if len(src) == 0 or len(pool) == 0:
            continue
        sim = v[src] @ v[pool].T
        k = min(k_comp, len(pool))
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        add("complement", np.repeat(src, k), pool[top.ravel()])
    return pa.table({
        "head_item_id": pa.array(np.concatenate(heads).astype(np.int32)),
        "relation": pa.array(np.concatenate(rels).tolist(), pa.string()),
        "tail_item_id": pa.array(np.concatenate(tails).astype(np.int32)),
    })
