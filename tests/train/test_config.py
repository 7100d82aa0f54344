"""The recipes: an image folder's batch size, learning rate, epochs and hold-out fitted to its size; values a
user gave kept; runs from before split_seed read back with the seed they were split with."""

from __future__ import annotations

import math

import pytest

from cnnlab.train import TrainConfig, make_config
from cnnlab.config import fit_note, fit_to_data
from cnnlab.models import get_model

FOLDER = "imagefolder:/photos"
RESNET_EPOCHS = get_model("resnet").default_epochs


@pytest.mark.parametrize("n_images", [40, 192, 1_000, 8_000])
def test_a_small_folder_gets_enough_steps_an_epoch_and_in_all_and_a_learning_rate_for_its_batch(n_images):
    cfg = fit_to_data(make_config("resnet", dataset=FOLDER), n_images, RESNET_EPOCHS)
    n_train = n_images - cfg.val_size
    steps = n_train // cfg.batch_size
    assert steps >= 16 or cfg.batch_size == 8  # not one or two noisy steps an epoch
    assert cfg.epochs * steps >= 600 or cfg.epochs == 300  # enough steps in all, however small the folder
    assert cfg.lr == pytest.approx(0.05 * math.sqrt(cfg.batch_size / 128))  # scaled down with the batch
    assert 0.1 * n_images <= cfg.val_size + 1 and cfg.val_size >= min(n_images // 5, 100)  # enough to choose with


def test_a_large_folder_keeps_the_recipe_for_mnist():
    cfg = fit_to_data(make_config("resnet", dataset=FOLDER), 60_000, RESNET_EPOCHS)
    mnist = make_config("resnet")
    assert (cfg.batch_size, cfg.lr, cfg.epochs, cfg.val_size) == (mnist.batch_size, mnist.lr, mnist.epochs, mnist.val_size)


def test_values_given_explicitly_are_never_replaced_and_the_learning_rate_follows_a_given_batch():
    given = make_config("resnet", dataset=FOLDER, batch_size=32, epochs=20)
    cfg = fit_to_data(given, 192, RESNET_EPOCHS)
    assert (cfg.batch_size, cfg.epochs) == (32, 20)
    assert cfg.lr == pytest.approx(0.025)  # the batch is the user's, its learning rate is fitted to it
    assert fit_to_data(make_config("resnet", dataset=FOLDER, lr=0.3), 192, RESNET_EPOCHS).lr == 0.3
    note = fit_note(given, cfg, 192)
    assert note.startswith("image folder of 192 training images: ")
    assert "batch 32 (given)" in note and "20 epochs (given)" in note and "lr 0.025 (" in note


def test_named_data_sets_and_the_course_leave_nothing_to_fit():
    for cfg in (make_config("resnet"), make_config("resnet", dataset="fashion-mnist"),
                make_config("resnet", recipe="course", dataset=FOLDER)):
        assert fit_to_data(cfg, 60_000, RESNET_EPOCHS) == cfg and fit_note(cfg, cfg, 60_000) is None


def test_a_run_from_before_split_seed_reads_back_with_the_seed_it_was_split_with():
    old = make_config("resnet", dataset=FOLDER, seed=3).to_dict()
    del old["split_seed"]
    assert TrainConfig.from_dict(old).split_seed == 3
    assert TrainConfig.from_dict({**old, "split_seed": 0}).split_seed == 0
