"""The training loop's parts: schedules, layer-wise rates, unfreezing, class weights, batching, early stopping.

The loop itself runs on a toy model of linear layer groups, so these tests need no pretrained weights.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import make_params
from pipeline.model.device import choose_device, make_deterministic
from pipeline.model.models import Probe, head
from pipeline.model.train import (EarlyStopping, Recipe, active_groups, batch_order, class_weights, fit, group_lrs,
                                  lr_factor, predict_logits, recipe_for)


# --- schedules and rates ----------------------------------------------------------------------

def test_warmup_rises_linearly_to_the_base_rate():
    factors = [lr_factor(s, total=100, warmup=4, schedule="constant") for s in range(6)]
    assert factors == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("schedule, middle", [("linear", 0.5), ("cosine", 0.5), ("constant", 1.0)])
def test_decay_after_warmup(schedule, middle):
    """Linear and cosine fall from 1 to 0 over the steps after the warmup, passing 0.5 halfway."""
    total, warmup = 110, 10
    assert lr_factor(warmup, total=total, warmup=warmup, schedule=schedule) == 1.0
    assert lr_factor(warmup + 50, total=total, warmup=warmup, schedule=schedule) == pytest.approx(middle)
    end = lr_factor(total, total=total, warmup=warmup, schedule=schedule)
    assert end == (1.0 if schedule == "constant" else pytest.approx(0.0, abs=1e-12))


def test_cosine_stays_above_linear_early_and_both_only_decrease():
    cosine = [lr_factor(s, total=50, warmup=0, schedule="cosine") for s in range(50)]
    linear = [lr_factor(s, total=50, warmup=0, schedule="linear") for s in range(50)]
    assert all(b <= a for a, b in zip(cosine, cosine[1:])) and all(b <= a for a, b in zip(linear, linear[1:]))
    assert cosine[10] > linear[10]


def test_discriminative_rates_fall_by_the_decay_below_the_head():
    assert group_lrs(3, 1e-3, 0.5) == pytest.approx([2.5e-4, 5e-4, 1e-3])
    assert group_lrs(2, 1e-3, 1.0) == [1e-3, 1e-3]


def test_gradual_unfreezing_adds_one_group_per_period():
    assert [active_groups(e, 4, 1) for e in range(1, 7)] == [1, 2, 3, 4, 4, 4]
    assert [active_groups(e, 3, 2) for e in range(1, 7)] == [1, 1, 2, 2, 3, 3]
    assert active_groups(1, 5, None) == 5


# --- class weights and batches --------------------------------------------------------------

def test_balanced_class_weights_are_inverse_frequency():
    y = torch.tensor([0, 0, 0, 1])
    assert class_weights(y, 2, "balanced").tolist() == pytest.approx([4 / 6, 2.0])
    assert class_weights(y, 2, "none") is None
    assert class_weights(y, 3, "balanced")[2] == 0  # absent class: nothing to weigh


def test_batches_cover_every_row_once_and_follow_the_seed():
    a = batch_order(10, 3, torch.Generator().manual_seed(1))
    b = batch_order(10, 3, torch.Generator().manual_seed(1))
    assert sorted(torch.cat(a).tolist()) == list(range(10))
    assert [t.tolist() for t in a] == [t.tolist() for t in b]
    assert [len(t) for t in a] == [3, 3, 3, 1]


def test_length_grouped_batches_hold_similar_lengths():
    lengths = torch.tensor([5, 50, 6, 51, 7, 52, 8, 53])
    batches = batch_order(8, 2, torch.Generator().manual_seed(0), lengths)
    assert sorted(torch.cat(batches).tolist()) == list(range(8))
    for batch in batches:  # each batch pairs two short or two long texts
        assert len({bool(lengths[i] > 20) for i in batch.tolist()}) == 1


# --- early stopping -------------------------------------------------------------------------

def test_early_stopping_waits_patience_epochs_and_keeps_the_best():
    stopper = EarlyStopping("macro_f1", patience=2)
    seen = [stopper.update(e, {"macro_f1": f, "loss": 1.0}) for e, f in enumerate([0.5, 0.7, 0.6, 0.7], start=1)]
    assert seen == [True, True, False, False] and stopper.best_epoch == 2 and stopper.stop


def test_early_stopping_breaks_ties_by_lower_loss_and_can_monitor_loss():
    stopper = EarlyStopping("macro_f1", patience=None)
    stopper.update(1, {"macro_f1": 1.0, "loss": 0.3})
    assert stopper.update(2, {"macro_f1": 1.0, "loss": 0.1}) and stopper.best_epoch == 2
    assert not stopper.stop
    by_loss = EarlyStopping("loss", patience=1)
    by_loss.update(1, {"loss": 0.2, "macro_f1": 0.0})
    assert not by_loss.update(2, {"loss": 0.3, "macro_f1": 1.0}) and by_loss.stop


# --- the loop on a toy model ----------------------------------------------------------------

class Toy:
    """Three linear groups on 4-d inputs; logits = head(relu(b(relu(a(x)))))."""

    def __init__(self) -> None:
        self.a, self.b, self.head = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)

    def groups(self):
        return [self.a, self.b, self.head]

    def take(self, inputs, index):
        return {"x": inputs[index]}

    def size(self, inputs):
        return len(inputs)

    def lengths(self, inputs):
        return None

    def logits(self, batch):
        return self.head(torch.relu(self.b(torch.relu(self.a(batch["x"])))))

    def train_mode(self, active):
        pass


def toy_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return x, (x[:, 0] + x[:, 1] > 0).long()


def train_toy(recipe: Recipe, seed: int = 3):
    make_deterministic(seed, 1)
    model = Toy()
    result = fit(model, toy_data(64, 1), toy_data(32, 2), n_classes=2, recipe=recipe, seed=seed)
    return model, result


def test_fit_learns_and_records_every_epoch():
    model, result = train_toy(Recipe(epochs=5, batch_size=8, lr=0.05, schedule="cosine", warmup=0.2, clip_norm=1.0))
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4, 5]
    assert result.best["val_accuracy"] >= 0.9
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.history[-1]["lr"] == pytest.approx(0.0, abs=1e-9)  # cosine ends at zero


def test_fit_is_bit_reproducible():
    recipe = Recipe(epochs=3, batch_size=8, lr=0.05, label_smoothing=0.1, weight_decay=0.01, accumulate=2)
    (a, ra), (b, rb) = train_toy(recipe), train_toy(recipe)
    assert ra.history == rb.history
    assert all(torch.equal(p, q) for p, q in zip(a.head.parameters(), b.head.parameters()))


def test_fit_restores_the_best_epoch_and_stops_early():
    """A learning rate that diverges after the first epochs: the kept weights are the best epoch's."""
    model, result = train_toy(Recipe(epochs=8, batch_size=8, lr=3.0, monitor="loss", patience=2))
    best = result.best_epoch
    assert result.stopped_early and len(result.history) == best + 2
    x, y = toy_data(32, 2)
    loss = nn.functional.cross_entropy(torch.from_numpy(predict_logits(model, x, 16)), y).item()
    assert loss == pytest.approx(result.history[best - 1]["val_loss"], abs=1e-5)


def test_gradual_unfreezing_trains_only_the_top_groups_first():
    make_deterministic(0, 1)
    model = Toy()
    before = [p.detach().clone() for p in model.a.parameters()]
    result = fit(model, toy_data(32, 1), toy_data(8, 2), n_classes=2, seed=0,
                 recipe=Recipe(epochs=2, batch_size=8, lr=0.05, unfreeze_every=1))
    assert [row["trainable_groups"] for row in result.history] == [1, 2]
    assert all(torch.equal(p, q) for p, q in zip(before, model.a.parameters()))  # the bottom group never trained


def test_gradient_accumulation_matches_a_larger_batch():
    """Two accumulated batches of 8 take the same optimiser step as one batch of 16 (no dropout, SGD-free AdamW)."""
    def one_step(batch_size: int, accumulate: int) -> torch.Tensor:
        make_deterministic(0, 1)
        model = Toy()
        x, y = toy_data(16, 1)
        fit(model, (x, y), toy_data(0, 2), n_classes=2, seed=0,
            recipe=Recipe(epochs=1, batch_size=batch_size, lr=0.01, accumulate=accumulate))
        return model.head.weight.detach()
    # the batch order is a permutation of all 16 rows either way, and the mean loss is the same
    assert torch.allclose(one_step(16, 1), one_step(8, 2), atol=1e-6)


def test_class_weights_raise_the_minority_recall():
    """On a 9:1 imbalance, weighting the loss lets the head predict the rare class more often."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=g)
    y = (x[:, 0] > 1.3).long()  # about 10 % positives

    def positives(mode: str) -> int:
        make_deterministic(0, 1)
        probe = Probe(head(4, 2, 0.0))
        fit(probe, (x, y), (x[:0], y[:0]), n_classes=2, seed=0,
            recipe=Recipe(epochs=3, batch_size=32, lr=0.05, class_weights=mode))
        return int(predict_logits(probe, x, 64).argmax(axis=1).sum())
    assert positives("balanced") > positives("none")


def test_recipe_comes_from_the_params_section():
    section = make_params(finetune={"text": {"strategy": "gradual", "unfreeze_every": 2, "lr": 3e-4,
                                              "early_stopping": {"monitor": "loss", "patience": 1}}}).finetune.text
    recipe = recipe_for(section)
    assert (recipe.lr, recipe.unfreeze_every, recipe.monitor, recipe.patience) == (3e-4, 2, "loss", 1)
    assert recipe_for(make_params().finetune.text).unfreeze_every is None  # only gradual unfreezes
    assert recipe_for(section, epochs=9).epochs == 9


def test_device_is_cpu_without_a_gpu_and_cuda_when_asked_for_fails_clearly():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert choose_device("auto").describe() == {"device": "cpu", "amp": None}
    with pytest.raises(RuntimeError, match="no CUDA device"):
        choose_device("cuda")
    assert math.isfinite(lr_factor(0, total=1, warmup=0, schedule="cosine"))
