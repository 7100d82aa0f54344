"""The depth sweep's networks: the skip is the identity path, and the sweep measures what it says."""

import math
import time

import pytest
import torch

from cnnlab.analysis.depth import Block, Stack, run_one, sweep, work


def _zero_convs(module):
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.zero_()
                if m.bias is not None:
                    m.bias.zero_()


def test_a_residual_stack_with_its_convs_zeroed_is_the_identity():
    stack = Stack(depth=8, width=6, residual=True)
    _zero_convs(stack.blocks)
    x = torch.rand(3, 6, 14, 14)  # what the blocks receive comes out of a ReLU: non-negative
    assert torch.equal(stack.blocks(x), x)
    plain = Stack(depth=8, width=6, residual=False)
    _zero_convs(plain.blocks)
    assert torch.count_nonzero(plain.blocks(x)) == 0  # without the skip nothing gets through


def test_stack_shapes_and_layers():
    s = Stack(depth=4, width=5)
    assert s(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert [n for n, _ in s.conv_layers()] == ["stem", "blocks.0.conv1", "blocks.0.conv2", "blocks.1.conv1", "blocks.1.conv2"]
    with pytest.raises(ValueError, match="even"):
        Stack(depth=3)
    assert isinstance(Block(4, True, batch_norm=True).bn1, torch.nn.BatchNorm2d)


def test_run_one_records_a_gradient_per_layer_and_a_loss_per_step(tiny_mnist):
    r = run_one(4, True, tiny_mnist, steps=6, batch_size=16, early_steps=3)
    assert len(r.grad_init) == len(r.grad_early) == 5 and all(g > 0 for g in r.grad_init)
    assert len(r.losses) == 6 and all(math.isfinite(x) for x in r.losses)
    assert r.train_loss == pytest.approx(sum(r.losses) / 6)  # fewer than 20 steps: the mean of them all


@pytest.mark.parametrize("residual", [True, False])
def test_a_shallow_stack_learns_mnist_within_the_budget(real_mnist, residual):
    # Both kinds of stack must learn at depth 4, or the sweep's comparison at depth means nothing. 60 steps of 64
    # images take such a stack from chance (a loss of ln 10 = 2.30, 10% right) to about 0.4-0.6 and about 90%; the
    # bounds leave wide margins for another CPU's rounding, and neither holds if the optimiser never steps.
    r = run_one(4, residual, real_mnist, steps=60, batch_size=64, early_steps=3)
    assert abs(r.losses[0] - math.log(10)) < 0.3  # it starts at chance
    assert r.train_loss < math.log(10) / 2, r.losses
    assert r.train_acc > 0.5, r.train_acc


def test_the_work_a_sweep_reports_adds_up_to_what_it_planned(tiny_mnist):
    told = []
    sweep(tiny_mnist, (2, 4), progress=False, done=told.append, steps=3, batch_size=8)
    probe = min(len(tiny_mnist.train_images), 5000)
    assert sum(told) == sum(work(d, steps=3, batch_size=8, probe=probe) for d in (2, 2, 4, 4))
    assert len(told) == 4 * (3 + 1)  # each step and each probe


@pytest.mark.slow
def test_the_sweeps_time_left_after_a_tenth_of_its_work_is_within_30_percent_of_the_time_it_takes(real_mnist):
    # The bar's estimate is the work left at the rate so far (tqdm with smoothing=0). Replayed here from the same
    # reports on the real sweep: the total time it predicts once a tenth of the work is done, against the time
    # the sweep took. Shallow stacks come first, so a count of runs (the bar this replaced) said less than half.
    t0 = time.perf_counter()
    told = []
    sweep(real_mnist, (2, 4, 8, 16), progress=False, done=lambda w: told.append((time.perf_counter() - t0, w)), steps=80)
    took = time.perf_counter() - t0
    total = sum(w for _, w in told)
    done = 0
    for t, w in told:
        done += w
        if done >= total / 10:
            predicted = t * total / done
            break
    assert 0.7 < predicted / took < 1.3, (predicted, took)
