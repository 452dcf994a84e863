"""The executor's parts that need no mpiexec: options, partitioning, split backward, the
oracle comparison, planning refusals and the predicted-vs-measured arithmetic."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

import schedules
from executor.compute import oracle
from executor.config import UsageError, parse_args
from executor.compute.model import Workload, partition, stage_bounds
from executor.results.predict import measured
from executor.engine.plan import plan
from executor.compute.stage import SleepStage, Stage


def test_defaults_and_millisecond_flags():
    cfg = parse_args(["--compute", "sleep", "--t-f", "12", "--t-i", "3", "--t-w", "4.5"])
    assert (cfg.schedule, cfg.microbatches, cfg.comm_mode) == ("1f1b", 8, "async")
    assert (cfg.t_f, cfg.t_i, cfg.t_w) == pytest.approx((0.012, 0.003, 0.0045))
    assert str(cfg.out_dir(4)) == "out/run-1f1b-p4-m8"


@pytest.mark.parametrize("argv, message", [
    (["--microbatches", "0"], "must be >= 1"),
    (["--check", "--compute", "sleep"], "--check needs --compute real"),
    (["--balance", "3,x"], "layer counts"),
    (["--dtype", "float16"], "invalid choice"),
])
def test_bad_flags_raise_usage_error(argv, message):
    with pytest.raises(UsageError, match=message):
        parse_args(argv)


def test_check_runs_exactly_one_step():
    cfg = parse_args(["--check", "--steps", "9", "--warmup", "3"])
    assert (cfg.steps, cfg.warmup) == (1, 0)


@pytest.mark.parametrize("weights, parts, sizes", [
    ([10] * 8, 4, [2, 2, 2, 2]),
    ([100, 1, 1, 1, 1, 100], 2, [3, 3]),
    ([50, 10, 10, 10, 10, 10], 2, [1, 5]),
    ([0, 0, 0], 3, [1, 1, 1]),
])
def test_partition_minimises_the_largest_stage(weights, parts, sizes):
    assert partition(weights, parts) == sizes


def test_partition_refuses_fewer_layers_than_stages():
    with pytest.raises(UsageError, match="fewer than its 3 model stages"):
        partition([1, 1], 3)


def test_balance_must_cover_every_layer():
    layers = [nn.Linear(2, 2) for _ in range(4)]
    assert stage_bounds(layers, 2, (3, 1)) == [(0, 3), (3, 4)]
    with pytest.raises(UsageError, match="sums to 3 layers"):
        stage_bounds(layers, 2, (2, 1))


def _grads(stage: Stage) -> list[torch.Tensor]:
    return [p.grad.clone() for p in stage.parameters()]


@pytest.mark.parametrize("last", [False, True])
def test_split_backward_equals_full_backward(last):
    """I then W leaves the same input gradient and weight gradients as one B."""
    torch.manual_seed(0)
    layers = [nn.Sequential(nn.Linear(5, 5), nn.Tanh()) for _ in range(3)]
    x, target, grad = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5), torch.randn(4, 5)
    layers = [layer.double() for layer in layers]
    loss_fn = nn.functional.mse_loss if last else None
    g = None if last else grad.double()
    target = target.double()
    full = Stage(1, layers, loss_fn, microbatches=2)
    full.forward(0, x, target)
    dx_full = full.backward(0, g).clone()
    want = _grads(full)
    for p in full.parameters():
        p.grad = None
    split = Stage(1, layers, loss_fn, microbatches=2)
    split.forward(0, x, target)
    dx_split = split.backward_input(0, g)
    assert all(p.grad is None for p in split.parameters())  # I touches no weight gradient
    split.backward_weight(0)
    torch.testing.assert_close(dx_split, dx_full, rtol=1e-12, atol=0)
    for got, exp in zip(_grads(split), want):
        torch.testing.assert_close(got, exp, rtol=1e-12, atol=1e-15)


def test_first_stage_split_backward_still_fills_weight_gradients():
    torch.manual_seed(1)
    layers = [nn.Linear(3, 3), nn.Linear(3, 3)]
    stage = Stage(0, layers, None, microbatches=1)
    stage.forward(0, torch.randn(2, 3), None)
    assert stage.backward_input(0, torch.ones(2, 3)) is None  # no input gradient on stage 0
    stage.backward_weight(0)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in stage.parameters())


def test_sleep_stage_sleeps_and_hands_out_buffers():
    out, back = torch.zeros(2, 3), torch.zeros(2, 4)
    stage = SleepStage(1, 0.002, 0.001, 0.001, out, back)
    assert stage.forward(0, None, None) is out
    assert stage.backward_input(0, None) is back


def test_compare_names_the_mismatch_and_honours_tolerances():
    want = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert oracle.compare("w", want * (1 + 1e-10), want) is None
    problem = oracle.compare("3.0.weight", want * (1 + 1e-7), want)
    assert problem.startswith("parameter 3.0.weight: gradient differs")
    f32 = torch.tensor([1.0, 0.0])
    assert oracle.compare("b", f32 + torch.tensor([5e-6, 5e-7]), f32) is None
    assert oracle.compare("b", f32 + torch.tensor([5e-5, 0.0]), f32) is not None
    assert oracle.compare_loss(1.0, 1.0 + 1e-8, torch.float64) is not None


def test_reference_loss_is_the_mean_over_microbatches():
    torch.manual_seed(2)
    layers = (nn.Linear(3, 2),)
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    layers = (layers[0].double(),)
    loss, grads = oracle.reference(Workload(layers, x, y, lambda o, t: ((o - t) ** 2).sum()), parts=4)
    out = layers[0](x)
    assert loss == pytest.approx(float(((out - y) ** 2).sum().detach()) / 4, rel=1e-12)
    assert set(grads) == {"0.weight", "0.bias"}


@pytest.mark.parametrize("argv, world, message", [
    (["--dp", "2"], 3, "not divisible by --dp 2"),
    (["--layers", "3"], 4, "fewer than its 4 model stages"),
    (["--schedule-file", "tests/data/torch_ScheduleGPipe_p4_m8_compute_only.csv"], 2, "names 4 ranks"),
    (["--model", "no_such_module:f"], 2, "cannot import no_such_module"),
    (["--batch", "30"], 2, "does not divide"),
    (["--fail-rank", "7"], 2, "not a rank of the world"),
])
def test_plan_refuses_before_any_communication(argv, world, message):
    with pytest.raises(UsageError, match=message):
        plan(parse_args(argv), world)


def test_plan_refuses_a_broken_schedule_constraint():
    with pytest.raises(schedules.ScheduleError, match="divisible"):
        plan(parse_args(["--schedule", "interleaved-1f1b", "--chunks", "2", "--microbatches", "7", "--batch", "448"]), 2)


def test_plan_knows_every_boundary_shape_without_messages():
    the_plan = plan(parse_args(["--model", "transformer", "--layers", "4", "--width", "16", "--batch", "8",
                                "--seq-len", "5", "--microbatches", "4", "--compute", "sleep"]), 2)
    assert [shape for shape, _ in the_plan.boundary] == [(2, 5, 16), (2, 5, 16)]
    act, grads = the_plan.message_bytes()
    assert act == [2 * 5 * 16 * 4]
    assert len(grads) == 2 and grads[0] == grads[1] > 0


def test_plan_adds_reduce_grad_for_data_parallel():
    the_plan = plan(parse_args(["--dp", "2", "--microbatches", "4"]), 4)
    assert the_plan.ranks == 2
    assert the_plan.schedule.reduce_grad


def test_measured_step_times_and_median_step():
    rows = []
    for step, span in enumerate([1.0, 3.0, 2.0]):
        rows += [(0, 0, 0, "F", "compute", 0.0, span / 2, step), (1, 1, 0, "F", "compute", span / 2, span, step)]
    trace = pd.DataFrame(rows, columns=["rank", "stage", "mb", "kind", "stream", "start", "end", "step"])
    times, bubbles, median_step = measured(trace, ranks=2)
    assert times == [1.0, 3.0, 2.0]
    assert bubbles == pytest.approx([0.5, 0.5, 0.5])
    assert median_step == 2
