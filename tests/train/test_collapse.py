"""A run whose training falls back to chance is noticed from its per-epoch history (see train/collapse.py)."""

from __future__ import annotations

import math

from cnnlab.train.collapse import collapse_epoch

CHANCE = math.log(3)  # the loss of a uniform guess over three classes


def _history(*losses_and_accs: tuple[float, float]) -> list[dict]:
    return [{"epoch": e, "train_loss": loss, "train_acc": acc} for e, (loss, acc) in enumerate(losses_and_accs, 1)]


LEARNING = [(1.09, 0.36), (0.80, 0.70), (0.45, 0.93)]


def test_a_run_that_learned_and_fell_back_to_chance_collapsed_where_it_fell():
    fell = _history(*LEARNING, (CHANCE, 0.33), (CHANCE, 0.34))
    assert collapse_epoch(fell, 3, 20) == 4
    assert collapse_epoch(fell[:4], 3, 20) == 4  # noticed in the epoch it happens
    assert collapse_epoch(fell[:3], 3, 20) is None


def test_a_learning_run_and_one_that_recovers_did_not_collapse():
    assert collapse_epoch(_history(*LEARNING, (0.40, 0.95)), 3, 20) is None
    assert collapse_epoch(_history(*LEARNING, (CHANCE, 0.33), (0.50, 0.90)), 3, 20) is None


def test_accuracy_at_chance_counts_even_when_the_loss_is_a_little_below_ln_classes():
    assert collapse_epoch(_history(*LEARNING, (0.99, 0.34)), 3, 20) == 4


def test_a_run_that_never_learned_is_reported_after_a_quarter_of_it_and_at_least_three_epochs():
    stuck = _history(*[(CHANCE, 0.33)] * 5)
    assert collapse_epoch(stuck[:2], 3, 4) is None  # two slow first epochs are not yet a failure
    assert collapse_epoch(stuck[:3], 3, 4) == 1
    assert collapse_epoch(stuck[:4], 3, 16) == 1 and collapse_epoch(stuck[:3], 3, 16) is None
