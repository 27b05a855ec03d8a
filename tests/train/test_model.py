"""The fused model learns with every plug-in, gradients reach every modality, ESMM multiplies its
towers, resuming from a checkpoint equals an uninterrupted run, and bad settings are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rectune.batches import ITEM_KEY, table_to_batch
from rectune.data.prepared import open_dataset
from rectune.errors import ConfigError, DataError
from rectune.models.model import build_model
from rectune.runconfig import RunConfig
from rectune.train.core import Trainer
from rectune.train.local import fit_local
from rectune.train.tensors import TensorRows

FAST = {"train.epochs": 3, "train.patience": 0}

CONFIGS = [
    {},
    {"model.fusion": "gate"},
    {"model.fusion": "attention", "model.fusion.heads": 2},
    {"model.fusion": "cross", "model.fusion.layers": 2},
    {"model.mtl": "mmoe", "model.mtl.experts": 3},
    {"model.mtl": "ple", "model.mtl.levels": 2},
    {"model.mtl": "mmoe", "model.norm": "batch"},
    {"model.norm": "layer", "model.dropout": 0.1},
    {"model.mtl": "esmm"},
    {"model.mtl": "esmm", "model.mtl.cvr_weight": 1.0},
    {"model.history": "attention"},
    {"model.history": "none"},
    {"model.kg": "mean"},
    {"model.kg": "attention", "model.kg.pretrain": 1},
    {"model.text_dim": 16},
    {"model.history": "attention", "model.text_dim": 8, "model.history_text": True, "model.history_position": True},
    {"model.history": "attention", "model.history_position": True, "model.history_layers": 2},
    {"model.history": "attention", "model.history_attributes": True, "model.min_id_count": 5},
    {"loss.weighting": "uncertainty"},
    {"loss.weighting": "gradnorm"},
    {"loss.weighting": "dwa"},
    {"augment.adversarial.method": "fgm", "augment.adversarial.eps": 0.1},
    {"augment.adversarial.method": "pgd", "augment.adversarial.eps": 0.1, "augment.adversarial.steps": 2},
    {"optim.ema": 0.9},
]


@pytest.fixture(scope="module")
def world(text_world):
    return open_dataset(text_world)


@pytest.fixture(scope="module")
def rows(world):
    return {s: TensorRows.from_split(world, s) for s in ("train", "valid")}


@pytest.mark.parametrize("sets", CONFIGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "default")
def test_every_plugin_trains_and_beats_a_constant(world, rows, sets):
    run = fit_local(world, RunConfig({**FAST, **sets}), data=dict(rows))
    last = run.state.history[-1]
    # a constant predictor scores AUC 0.5 on every task
    assert last["valid/click_auc"] > 0.56, last
    assert last["valid/conversion_auc"] > 0.62, last
    first_loss = run.state.history[0]["train/click_loss"]
    assert last["train/click_loss"] < first_loss


def test_gradients_reach_every_modality(world):
    config = RunConfig({"model.text_dim": 16, "model.kg": "attention", "model.history": "attention",
                        "model.fusion": "gate"})
    model = build_model(world, config)
    table = world.read_split("train").slice(0, 512)
    batch = {k: torch.from_numpy(v) for k, v in table_to_batch(table, world.schema).items()}
    assert set(model.modalities) == {"user", "item", "context", "behaviour", "text", "kg"}
    logits = model(batch)
    torch.nn.functional.binary_cross_entropy_with_logits(
        logits, torch.stack([batch[t] for t in model.tasks], 1)).backward()
    parts = {"embeddings": model.embeddings, "history": model.pool, "dense": model.dense_tokens,
             "text": model.text, "graph": model.graph, "fusion": model.fusion, "towers": model.mtl}
    for name, module in parts.items():
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    # the history's item rows receive gradient through the shared item table
    hist_codes = batch["hist_items"][batch["hist_items"] > 0].unique()
    off = model.embeddings.offsets["hist_items"]
    assert model.embeddings.offsets["item_id"] == off
    assert model.embeddings.table.weight.grad[hist_codes.long() + off].abs().sum(1).gt(0).float().mean() > 0.9


def test_a_masked_item_is_embedded_as_unknown_and_keeps_its_text_and_graph(world):
    model = build_model(world, RunConfig({"model.text_dim": 8, "model.kg": "mean"})).eval()
    table = world.read_split("train").slice(0, 64)
    batch = {k: torch.from_numpy(v) for k, v in table_to_batch(table, world.schema).items()}
    masked = dict(batch, item_id=torch.zeros_like(batch["item_id"]))
    with torch.no_grad():
        plain, lost, kept = (model.embed(b) for b in (batch, masked, dict(masked, **{ITEM_KEY: batch["item_id"]})))
    text, kg = model.modalities.index("text"), model.modalities.index("kg")
    item = model.sparse.index("item_id")
    assert torch.equal(kept[:, [text, kg]], plain[:, [text, kg]])  # the row's own item's text and neighbours
    assert not torch.allclose(lost[:, text], plain[:, text])  # without the key they would be item 0's
    assert torch.equal(kept[:, item], lost[:, item])  # the id itself is the unknown id's embedding


def _history_token(model, batch):
    with torch.no_grad():
        return model.embed(batch)[:, model.modalities.index("behaviour")]


def test_history_text_puts_each_history_items_text_in_the_history_token(world):
    sets = {"model.text_dim": 8, "model.history": "attention"}
    table = world.read_split("train").slice(0, 64)
    batch = {k: torch.from_numpy(v) for k, v in table_to_batch(table, world.schema).items()}
    item = int(batch["hist_items"][batch["hist_items"] > 0][0])
    for on in (True, False):
        model = build_model(world, RunConfig({**sets, "model.history_text": on})).eval()
        with torch.no_grad():  # the item's text token is its own projection, however it was looked up
            tokens = model.embed(batch)
            own = model.text.proj(model.text.vectors[batch["item_id"].long()])  # row by row
            assert torch.allclose(tokens[:, model.modalities.index("text")], own, atol=1e-6)
            # two rows look up fewer items than the catalogue holds (row by row), 64 rows more (the
            # catalogue projected once): the same tokens either way
            assert 64 * (1 + batch["hist_items"].shape[1]) > model.text.vectors.shape[0] > 2 * 21
            two = model.embed({k: v[:2] for k, v in batch.items()})
            assert torch.allclose(two, tokens[:2], atol=1e-6)
        before = _history_token(model, batch)
        model.text.vectors[item] += 1.0  # the text of one item in the histories
        after = _history_token(model, batch)
        has = (batch["hist_items"] == item).any(1)
        changed = ~torch.isclose(before, after).all(1)
        # the rows whose history holds the item (or whose target is it: attention reads the target's text)
        target = batch["item_id"] == item
        assert torch.equal(changed & ~target, has & ~target) if on else not changed[~target].any()


def test_history_attributes_put_each_history_items_attributes_in_the_history_token(world):
    table = world.read_split("train").slice(0, 256)
    batch = {k: torch.from_numpy(v) for k, v in table_to_batch(table, world.schema).items()}
    item = int(batch["hist_items"][batch["hist_items"] > 0][0])
    has = (batch["hist_items"] == item).any(1)
    assert 0 < has.sum() < len(has)
    model = build_model(world, RunConfig({"model.history": "attention", "model.history_attributes": True})).eval()
    attrs = [f.name for f in world.schema.row_fields if f.side == "item" and f.kind == "sparse" and f.name != "item_id"]
    assert model.attr_names == attrs and len(attrs) >= 2  # brand, category, shop ...
    catalogue = world.item_attributes()
    for i, name in enumerate(attrs):  # the catalogue's codes; the rows agree with it
        assert np.array_equal(model.attr_codes[:, i].numpy(), catalogue[name])
        assert torch.equal(model.attr_codes[batch["item_id"].long(), i], batch[name].long())
    before = _history_token(model, batch)
    brand = attrs.index("brand")
    with torch.no_grad():  # the item is said to have another brand: only the rows whose history holds it change
        model.attr_codes[item, brand] = model.attr_codes[item, brand] % (world.schema.field("brand").vocab_size - 1) + 1
    changed = ~torch.isclose(before, _history_token(model, batch)).all(1)
    assert torch.equal(changed, has)
    assert "attr_codes" in model.state_dict()
    assert "attr_codes" not in build_model(world, RunConfig({"model.history": "attention"})).state_dict()


def test_history_position_makes_the_history_token_depend_on_order(world):
    table = world.read_split("train")
    table = table.slice(table.num_rows - 256)  # late rows: long histories
    batch = {k: torch.from_numpy(v) for k, v in table_to_batch(table, world.schema).items()}
    hist = batch["hist_items"]
    full = (hist[:, -2] > 0) & (hist[:, -2] != hist[:, -1])  # two items to swap (right-aligned)
    assert full.sum() > 5
    swapped = hist.clone()
    swapped[:, -2], swapped[:, -1] = hist[:, -1], hist[:, -2]
    flipped = dict(batch, hist_items=swapped)
    for on in (True, False):
        model = build_model(world, RunConfig({"model.history": "attention", "model.history_position": on})).eval()
        if on:
            with torch.no_grad():
                model.pool["hist_items"].position.normal_()
        same = torch.isclose(_history_token(model, batch), _history_token(model, flipped), atol=1e-6).all(1)
        assert (not same[full].any()) if on else same[full].all()
    assert "pool.hist_items.position" in build_model(world, RunConfig({"model.history_position": True})).state_dict()


def test_history_layers_mix_the_history_and_never_read_its_padding(world):
    table = world.read_split("train")
    table = table.slice(table.num_rows - 256)
    batch = {k: torch.from_numpy(v) for k, v in table_to_batch(table, world.schema).items()}
    hist = batch["hist_items"]
    padded = (hist == 0).any(1) & (hist > 0).any(1)
    assert padded.sum() > 5
    empty = dict(batch, hist_items=torch.zeros_like(hist))
    for layers in (0, 2):
        model = build_model(world, RunConfig({"model.history": "mean", "model.history_layers": layers})).eval()
        assert len(model.pool["hist_items"].layers) == layers
        base = _history_token(model, batch)
        # a history with no items stays finite (every key is padding)
        assert torch.isfinite(_history_token(model, empty)).all()
        # padding slots hold code 0: changing that row of the table changes no row with a real item
        with torch.no_grad():
            model.embeddings.table.weight[model.embeddings.offsets["hist_items"]] += 5.0
        assert torch.allclose(_history_token(model, batch)[padded], base[padded], atol=1e-5)
        with torch.no_grad():
            model.embeddings.table.weight[model.embeddings.offsets["hist_items"]] -= 5.0
        # mean pooling alone is linear in the items; the layers let each item see the others
        one = hist.clone()
        one[:, -1] = hist[:, -2]  # the most recent item replaced by the one before it
        moved = _history_token(model, dict(batch, hist_items=one)) - base
        rows = (hist[:, -1] > 0) & (hist[:, -2] > 0) & (hist[:, -1] != hist[:, -2])
        emb = model.embeddings.lookup("hist_items", hist)
        n = (hist > 0).sum(1, keepdim=True).float()
        linear = (emb[:, -2] - emb[:, -1]) / n
        close = torch.isclose(moved, linear, atol=1e-6).all(1)
        assert close[rows].all() if layers == 0 else not close[rows].any()


@pytest.mark.parametrize("sets, expected", [
    ({"model.history_text": True}, "model.history_text: needs the item text (model.text_dim > 0)"),
    ({"model.history_text": True, "model.text_dim": 8, "model.history": "none"},
     "model.history_text: needs the history pooled (model.history mean or attention), not none"),
    ({"model.history_position": True, "model.history": "none"},
     "model.history_position: needs the history pooled (model.history mean or attention), not none"),
    ({"model.history_layers": 1, "model.history": "none"},
     "model.history_layers: needs the history pooled (model.history mean or attention), not none"),
    ({"model.history_text": True, "model.text_dim": 8, "model.features": ["user_id", "item_id"]},
     "model.history_text: dataset 'synth-s7' has no history of item ids among the features"),
    ({"model.history_attributes": True, "model.history": "none"},
     "model.history_attributes: needs the history pooled (model.history mean or attention), not none"),
    ({"model.history_attributes": True, "model.features": ["user_id", "item_id", "brand"]},
     "model.history_attributes: dataset 'synth-s7' has no history of item ids among the features"),
    ({"model.history_attributes": True, "model.features": ["user_id", "item_id", "hist_items"]},
     "model.history_attributes: no item-side sparse field besides the item id among the features of dataset "
     "'synth-s7'"),
])
def test_history_options_without_text_or_history_are_refused(world, sets, expected):
    with pytest.raises(ConfigError) as e:
        build_model(world, RunConfig(sets))
    assert str(e.value) == expected


def test_min_id_count_embeds_rare_ids_as_unknown(world):
    train = world.read_split("train")
    counts = np.bincount(train.column("item_id").to_numpy(), minlength=world.schema.field("item_id").vocab_size)
    model = build_model(world, RunConfig({"model.min_id_count": 20, "model.kg": "mean"})).eval()
    codes = np.arange(1, len(counts))
    rare, common = codes[counts[1:] < 20], codes[counts[1:] >= 20]
    assert len(rare) and len(common)
    e = model.embeddings
    got = e.lookup_many(["item_id"], torch.from_numpy(codes).view(-1, 1))[:, 0]
    unknown = e.lookup("item_id", torch.zeros(1, dtype=torch.long))
    is_unknown = (got == unknown).all(1).numpy()
    assert is_unknown[rare - 1].all() and not is_unknown[common - 1].any()
    # the history and the graph still look the item up by its own id; the rule is saved with the weights
    assert torch.equal(e.lookup("hist_items", torch.from_numpy(rare)), e.table.weight[rare + e.offsets["item_id"]])
    assert "embeddings.sparse_rows" in model.state_dict()
    assert "embeddings.sparse_rows" not in build_model(world, RunConfig({})).state_dict()
    # 1: only the ids no training row has (here, users who only appear in later splits)
    users = np.bincount(train.column("user_id").to_numpy(), minlength=world.schema.field("user_id").vocab_size)
    unseen = np.flatnonzero(users == 0)[1:]  # code 0 is the unknown id itself
    assert len(unseen)
    e = build_model(world, RunConfig({"model.min_id_count": 1})).embeddings
    rows = e.sparse_rows[torch.from_numpy(np.arange(1, len(users))) + e.offsets["user_id"]].numpy()
    assert (rows == e.offsets["user_id"]).sum() == len(unseen)


FUNNELS = [{"model.mtl": "esmm"}, {"model.mtl": "mmoe", "model.mtl.funnel": True},
           {"model.mtl": "ple", "model.mtl.funnel": True}, {"model.mtl": "shared_bottom", "model.mtl.funnel": True}]


@pytest.mark.parametrize("sets", FUNNELS, ids=lambda s: "+".join(str(v) for v in s.values()))
def test_the_funnel_makes_ctcvr_the_product_of_the_towers(world, rows, sets):
    run = fit_local(world, RunConfig({"train.epochs": 1, **sets}), data=dict(rows))
    pred = run.trainer.predict(rows["valid"].batches(4096))
    click, conv = run.model.tasks.index("click"), run.model.tasks.index("conversion")
    ctr, cvr = pred["conditional"][:, click], pred["conditional"][:, conv]
    np.testing.assert_allclose(pred["probs"][:, conv], ctr * cvr, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pred["probs"][:, click], ctr, rtol=1e-5)
    assert run.state.history[-1]["valid/ctcvr_auc"] == run.state.history[-1]["valid/conversion_auc"]
    assert "valid/conversion_cvr_auc" in run.state.history[-1]


def test_without_the_funnel_an_architecture_predicts_each_task_on_its_own(world, rows):
    run = fit_local(world, RunConfig({"train.epochs": 1, "model.mtl": "mmoe"}), data=dict(rows))
    pred = run.trainer.predict(rows["valid"].batches(4096))
    assert "conditional" not in pred and not run.model.mtl.has_funnel
    assert "valid/ctcvr_auc" not in run.state.history[-1]
    # each task's output is its own tower's; with the funnel the child's is not
    batch = next(iter(rows["valid"].batches(512)))
    for sets, same in (({"model.mtl": "mmoe"}, True), ({"model.mtl": "mmoe", "model.mtl.funnel": True}, False)):
        model = build_model(world, RunConfig(sets)).eval()
        with torch.no_grad():
            h = model.fusion(model.embed(batch))
            assert torch.allclose(model.mtl(h), model.mtl.conditional(h)) is same


@pytest.mark.parametrize("sets", [{"model.mtl": "esmm"}, {"model.mtl": "mmoe", "model.mtl.funnel": True}])
def test_a_funnel_without_a_parent_task_is_refused(world, tmp_path, sets):
    import dataclasses
    import shutil

    from rectune.data.prepared import replace_files

    shutil.copytree(world.path, tmp_path / "w")
    flat = replace_files(open_dataset(tmp_path / "w"), dataclasses.replace(world.schema, task_parents={}), {})
    what = "model.mtl: esmm" if sets["model.mtl"] == "esmm" else "model.mtl.funnel"
    with pytest.raises(ConfigError, match=rf"^{what} needs a funnel .* set model.mtl.parents=\[child:parent\]$"):
        build_model(flat, RunConfig(sets))
    given = build_model(flat, RunConfig({**sets, "model.mtl.parents": ["conversion:click"]}))  # by the config
    assert given.mtl.parents == {"conversion": "click"}  # what the metrics' cvr_auc is computed over
    assert build_model(flat, RunConfig({"model.mtl": "mmoe", "model.mtl.parents": ["conversion:click"]})).mtl.parents == {}


def test_esmm_cvr_weight_adds_the_cvr_towers_loss_on_clicked_rows(world, rows):
    batch = next(iter(rows["train"].batches(512)))
    tasks = list(world.schema.tasks)
    click, conv = tasks.index("click"), tasks.index("conversion")
    labels = torch.stack([batch[t] for t in tasks], dim=1).float()
    clicked = labels[:, click] > 0.5
    assert 0 < clicked.sum() < len(labels) and labels[clicked, conv].sum() > 0
    torch.manual_seed(0)
    model = build_model(world, RunConfig({"model.mtl": "esmm", "model.mtl.cvr_weight": 0.7}))
    model.train()
    logits = model(batch)
    own = model.mtl.conditional(model.fusion(model.embed(batch)))  # dropout 0: the same towers' logits
    expected = 0.7 * F.binary_cross_entropy_with_logits(own[clicked, conv], labels[clicked, conv])
    torch.testing.assert_close(model.mtl.auxiliary_loss(logits, labels), expected)
    # a function of the outputs and labels alone: the same again
    torch.testing.assert_close(model.mtl.auxiliary_loss(logits, labels), expected, rtol=0, atol=0)
    # no clicked row in the batch: nothing to add; cvr_weight 0: no term at all
    no_clicks = labels.clone()
    no_clicks[:, click] = 0
    assert float(model.mtl.auxiliary_loss(logits, no_clicks)) == 0.0
    plain = build_model(world, RunConfig({"model.mtl": "esmm"}))
    assert plain.mtl.auxiliary_loss(plain(batch), labels) is None


def test_esmm_cvr_weight_changes_training_and_only_esmm_reads_it(world, rows):
    runs = [fit_local(world, RunConfig({"train.epochs": 1, "model.mtl": "esmm", "model.mtl.cvr_weight": w}),
                      data=dict(rows)) for w in (0.0, 1.0)]
    assert runs[0].state.history[-1]["valid/conversion_auc"] != runs[1].state.history[-1]["valid/conversion_auc"]
    # without the funnel another architecture has no pCVR tower: the key is inert; with it, it adds the term
    batch = next(iter(rows["train"].batches(256)))
    labels = torch.stack([batch[t] for t in world.schema.tasks], 1).float()
    mmoe = build_model(world, RunConfig({"model.mtl": "mmoe", "model.mtl.cvr_weight": 1.0}))
    assert mmoe.mtl.auxiliary_loss(mmoe(batch), labels) is None
    mmoe = build_model(world, RunConfig({"model.mtl": "mmoe", "model.mtl.funnel": True, "model.mtl.cvr_weight": 1.0}))
    assert float(mmoe.mtl.auxiliary_loss(mmoe(batch), labels).detach()) > 0


@pytest.mark.parametrize("sets", [{}, {"loss.weighting": "dwa", "model.mtl": "mmoe", "model.dropout": 0.2},
                                  {"optim.schedule": "cosine"}, {"optim.ema": 0.95, "model.norm": "batch"}])
def test_resume_from_checkpoint_equals_an_uninterrupted_run(world, rows, tmp_path, sets):
    config = {"train.patience": 0, **sets}
    straight = fit_local(world, RunConfig({**config, "train.epochs": 3}), data=dict(rows))
    fit_local(world, RunConfig({**config, "train.epochs": 3}), epochs=2, checkpoint_to=tmp_path / "ck", data=dict(rows))
    resumed = fit_local(world, RunConfig({**config, "train.epochs": 3}), epochs=1, resume_from=tmp_path / "ck",
                        data=dict(rows))
    assert resumed.state.epoch == 3 and len(resumed.state.history) == 3
    for k, v in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=0, atol=0)
    untimed = [[{k: v for k, v in h.items() if not k.endswith("time_s")} for h in s.state.history]
               for s in (resumed, straight)]
    assert untimed[0] == untimed[1]
    for k, v in straight.best_weights.items():
        torch.testing.assert_close(resumed.best_weights[k], v, rtol=0, atol=0)


def test_ema_is_the_warmed_up_average_of_every_steps_weights_and_what_is_scored(world, rows):
    config = RunConfig({"train.epochs": 2, "train.patience": 0, "optim.ema": 0.9, "model.norm": "batch"})
    model = build_model(world, config, seed=0)
    trainer = Trainer(model, config)
    expected, t = None, 0
    for batch in list(rows["train"].batches(256, seed=1))[:12]:
        trainer.train_batch(batch)
        t += 1
        now = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if expected is None:
            expected = now
            continue
        d = min(0.9, (1 + t) / (10 + t))
        expected = {k: d * e + (1 - d) * now[k] if e.is_floating_point() else now[k] for k, e in expected.items()}
    assert trainer.ema_steps == 12
    for k, v in expected.items():
        torch.testing.assert_close(trainer.ema[k], v)
    trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert any(not torch.equal(trained[k], v) for k, v in expected.items() if v.is_floating_point())

    pred = trainer.predict(rows["valid"].batches(512))
    for k, v in trained.items():  # scoring leaves the weights as trained in the model
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)
    averaged = build_model(world, RunConfig({"model.norm": "batch"}), seed=0)
    averaged.load_state_dict(trainer.scored_state())
    plain = Trainer(averaged, RunConfig({"model.norm": "batch"})).predict(rows["valid"].batches(512))
    np.testing.assert_array_equal(pred["probs"], plain["probs"])
    own = Trainer(model, RunConfig({"model.norm": "batch"})).predict(rows["valid"].batches(512))
    assert not np.allclose(own["probs"], pred["probs"])


def test_the_best_epoch_keeps_the_average_that_was_scored(world, rows):
    run = fit_local(world, RunConfig({"train.epochs": 1, "optim.ema": 0.99}), data=dict(rows))
    assert run.state.best_epoch == 0  # the only epoch: its best weights are the average as it ends
    for k, v in run.trainer.ema.items():
        torch.testing.assert_close(run.best_weights[k], v, rtol=0, atol=0)
    trained = run.model.state_dict()
    assert any(not torch.equal(trained[k], v) for k, v in run.best_weights.items() if v.is_floating_point())


@pytest.mark.parametrize("schedule,factors", [("constant", [1.0, 1.0, 1.0, 1.0]),
                                              ("cosine", [1.0, 0.8535534, 0.5, 0.1464466]),
                                              ("linear", [1.0, 0.75, 0.5, 0.25])])
def test_learning_rate_schedule_sets_each_epochs_rate(world, rows, schedule, factors):
    config = RunConfig({"train.epochs": 4, "train.patience": 0, "optim.lr": 0.002, "optim.schedule": schedule})
    run = fit_local(world, config, data=dict(rows))
    assert [h["train/lr"] for h in run.state.history] == pytest.approx([0.002 * f for f in factors])
    assert [g["lr"] for g in run.trainer.optimizer.param_groups] == pytest.approx([0.002 * factors[-1]] * 2)
    with pytest.raises(ConfigError, match=r"^optim.schedule: 'step' is not one of \['constant', 'cosine', 'linear'\]$"):
        RunConfig({"optim.schedule": "step"})


def test_leaking_configs_are_refused(world, leaky_world):
    with pytest.raises(ConfigError, match="model.features: 'click' is a task label"):
        build_model(world, RunConfig({"model.features": ["user_id", "click"]}))
    with pytest.raises(ConfigError, match="field 'clicked' reproduces the label 'click'.*a leak"):
        build_model(open_dataset(leaky_world), RunConfig())
    # leaving the leaking field out is accepted
    fields = [f.name for f in open_dataset(leaky_world).schema.row_fields if f.name != "clicked"]
    build_model(open_dataset(leaky_world), RunConfig({"model.features": fields}))


@pytest.mark.parametrize("sets, message", [
    ({"model.fusoin": "cross"}, r"unknown config key 'model.fusoin' \(did you mean 'model.fusion'\?\); valid keys: .*model.mtl"),
    ({"model.fusion": "transformer"}, r"model.fusion: 'transformer' is not one of \['attention', 'concat', 'cross', 'gate'\]"),
    ({"model.mtl": "aitm"}, r"model.mtl: 'aitm' is not one of"),
    ({"model.mtl.experts": 0}, r"model.mtl.experts: 0 is out of range"),
    ({"model.min_id_count": -1}, r"model.min_id_count: -1 is out of range"),
    ({"optim.ema": 1.0}, r"^optim.ema: 1.0 is out of range; expected a value in \[0.0, 0.9999\]$"),
    ({"loss.weights.like": 2.0}, r"loss.weights.like: the dataset has no task 'like'; tasks: click, conversion"),
    ({"model.features": ["user_id", "colour"]}, r"model.features: no field 'colour'"),
])
def test_bad_settings_are_one_line_errors(world, sets, message):
    with pytest.raises(ConfigError, match=message):
        build_model(world, RunConfig(sets))


def test_dataset_dependent_errors(small_world, world):
    plain = open_dataset(small_world)
    with pytest.raises(ConfigError, match="model.text_dim: needs item-text embeddings; run `rectune data embed-text"):
        build_model(plain, RunConfig({"model.text_dim": 8}))
    with pytest.raises(ConfigError, match="model.kg.relations: unknown relation 'sequel'"):
        build_model(world, RunConfig({"model.kg": "mean", "model.kg.relations": ["sequel"]}))
    with pytest.raises(ConfigError, match="model.mtl.parents: 'click:like' is not child:parent"):
        build_model(world, RunConfig({"model.mtl": "esmm", "model.mtl.parents": ["click:like"]}))


def test_config_files_nested_and_flat(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  fusion: {name: cross, layers: 2}\n  mtl: mmoe\nmodel.mtl.experts: 6\nloss:\n  weights: {click: 2}\n")
    c = RunConfig.from_file(f)
    assert (c["model.fusion"], c["model.fusion.layers"], c["model.mtl"], c["model.mtl.experts"]) == ("cross", 2, "mmoe", 6)
    assert c["loss.weights.click"] == 2.0 and c["loss.weights.conversion"] == 1.0
    f.write_text("model:\n  fusion: [oops\n")
    with pytest.raises(DataError, match=r"c.yaml: not valid YAML at line \d"):
        RunConfig.from_file(f)
    f.write_text("model:\n  emb_dimm: 8\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown config key 'model.emb_dimm' \(did you mean 'model.emb_dim'"):
        RunConfig.from_file(f)
    # what a run writes, a run reads as it is
    c.dump(tmp_path / "out.yaml")
    assert RunConfig.from_file(tmp_path / "out.yaml").to_dict() == c.to_dict()


def test_an_unknown_metric_is_refused(world):
    with pytest.raises(ConfigError, match=r"train.metric: 'valid/clik_auc' is not a metric of this dataset \(did you "
                                          r"mean 'valid/click_auc'\?\)"):
        build_model(world, RunConfig({"train.metric": "valid/clik_auc"}))
