"""The step plan: fixed epochs, and a wall-time budget met on a simulated clock (no real timing here)."""

import pytest
import torch

from cnnlab.train import make_config
from cnnlab.train.parts import build_schedule
from cnnlab.train.plan import BudgetPlan, Plan


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(plan: BudgetPlan, clock: FakeClock, step_seconds, eval_seconds: float, max_epochs: int = 1000) -> tuple[int, int]:
    """Drive `plan` the way fit() does, advancing the fake clock; returns (steps, epochs) run."""
    steps = epoch = 0
    while epoch < plan.epochs and epoch < max_epochs:
        epoch += 1
        t0 = clock.now
        in_epoch = 0
        while in_epoch < plan.steps_in_epoch(epoch):
            clock.now += step_seconds(steps)
            steps += 1
            in_epoch += 1
            plan.after_step(steps, lambda: None)
        train = clock.now - t0
        clock.now += eval_seconds
        plan.after_epoch(epoch, steps, train, eval_seconds)
    return steps, epoch


def test_fixed_plan_counts_epochs_and_steps():
    plan = Plan(steps_per_epoch=100, epochs=3)
    assert plan.total_steps == 300 and plan.epochs == 3
    assert [plan.steps_in_epoch(e) for e in (1, 3, 4)] == [100, 100, 0]
    plan.total_steps = 250  # a partial last epoch
    assert plan.epochs == 3 and plan.steps_in_epoch(3) == 50
    with pytest.raises(ValueError, match="smaller than one batch"):
        Plan(steps_per_epoch=0, epochs=1)


@pytest.mark.parametrize(
    "budget, step, eval_s, steps_per_epoch",
    [(30.0, 0.025, 1.0, 429), (60.0, 0.07, 2.5, 429), (5.0, 0.01, 0.3, 100), (600.0, 0.02, 0.5, 200)],
)
def test_budget_plan_ends_inside_the_budget_and_uses_most_of_it(budget, step, eval_s, steps_per_epoch):
    clock = FakeClock()
    clock.now = 0.5  # data loading and model building before the first step
    plan = BudgetPlan(steps_per_epoch, 128, budget, start=0.0, eval_images=15000, clock=clock)
    steps, epochs = simulate(plan, clock, lambda i: step, eval_s)
    assert steps == plan.total_steps and epochs == plan.epochs
    assert clock.now <= budget
    reserve = 1.0 + 0.05 * budget  # what the plan holds back on purpose
    assert clock.now >= 0.9 * (budget - reserve)  # a plan that stops far short wastes the user's time


def test_budget_plan_adapts_when_the_machine_slows_down():
    clock = FakeClock()
    plan = BudgetPlan(200, 128, 40.0, start=0.0, eval_images=15000, clock=clock)
    # The first 200 steps run at 20 ms, then the machine is shared and every step takes 40 ms.
    steps, _ = simulate(plan, clock, lambda i: 0.02 if i < 200 else 0.04, eval_seconds=0.5)
    assert clock.now <= 40.0
    assert steps < 40.0 / 0.02  # it did not keep the plan made at the first speed


def test_budget_too_small_for_the_calibration_stops_after_it():
    clock = FakeClock()
    plan = BudgetPlan(500, 128, 0.5, start=0.0, eval_images=15000, clock=clock)
    steps, epochs = simulate(plan, clock, lambda i: 0.05, eval_seconds=1.0)
    assert epochs == 1 and 0 < steps < 500


def test_onecycle_anneals_to_zero_at_the_planned_end_even_after_a_replan():
    cfg = make_config("basic_cnn", lr=1.0)
    plan = Plan(steps_per_epoch=10, epochs=10)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = build_schedule(opt, cfg, plan)
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    plan.total_steps = 40  # a budget revised midway
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(lrs) == pytest.approx(1.0)
    assert lrs[0] == pytest.approx(0.1)  # the warm-up starts low: one epoch, 10 steps
    assert lrs[-1] == pytest.approx(1.0 / (40 - 10))  # one step before the end
    assert opt.param_groups[0]["lr"] == 0.0


def test_a_short_run_keeps_a_warm_up_of_150_steps_or_half_the_run():
    cfg = make_config("inception_net", lr=1.0)  # one epoch of warm-up asked for
    for total, expected in ((5000, 429), (600, 150), (200, 100), (2000, 300)):
        plan = Plan(steps_per_epoch=429, epochs=1)
        plan.total_steps = total
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
        build_schedule(opt, cfg, plan)
        lam = opt.param_groups[0]["lr"]  # the factor of step 0 = 1 / warm-up
        assert lam == pytest.approx(1.0 / expected), total


def test_a_budget_run_shorter_than_an_epoch_follows_a_slowdown_within_it():
    """Another program starts halfway through a one-epoch run and every step takes three times as long: the plan,
    measured again every 50 steps, still ends inside the budget."""
    clock = FakeClock()
    plan = BudgetPlan(2000, 128, 12.0, start=0.0, eval_images=15000, clock=clock)
    steps, epochs = simulate(plan, clock, lambda i: 0.01 if i < 300 else 0.03, eval_seconds=0.5)
    assert epochs == 1 and clock.now <= 12.0
    assert clock.now >= 0.8 * (12.0 - 1.0 - 0.05 * 12.0)  # and it still uses the budget
