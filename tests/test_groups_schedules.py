"""Param groups and learning-rate schedules, fast against reference."""
import math

import numpy as np
import pytest
from conftest import assert_bitwise, assert_same_state, make_grad

import adaptopt
from adaptopt import reference, schedules

NAMES = ["Adam", "AdamW", "Adagrad", "RMSprop", "SGD"]
EXTRA = {"SGD": {"momentum": 0.9}, "RMSprop": {"momentum": 0.5, "centered": True}}


def two_groups(module, name, rng):
    a = rng.standard_normal((4, 5)).astype(np.float32)
    b = rng.standard_normal(7)
    c = rng.standard_normal(3).astype(np.float32)
    params = [a.copy(), b.copy(), c.copy()]
    opt = getattr(module, name)(
        [{"params": params[:2]},
         {"params": params[2:], "lr": schedules.cosine(0.05, T_max=10), "weight_decay": 0.1}],
        lr=0.01, **EXTRA.get(name, {}))
    return params, opt


@pytest.mark.parametrize("name", NAMES)
def test_groups_fall_back_to_defaults_and_match_reference(name, rng):
    p_f, fast = two_groups(adaptopt, name, np.random.default_rng(1))
    p_r, ref = two_groups(reference, name, np.random.default_rng(1))
    assert fast.param_groups[0]["lr"] == 0.01
    assert fast.param_groups[1]["weight_decay"] == 0.1
    assert fast.param_groups[0]["weight_decay"] == fast.defaults["weight_decay"]
    for t in range(12):
        grads = [make_grad(rng, p.shape, p.dtype) for p in p_f]
        if t == 5:  # a hyperparameter changed between steps takes effect next step
            for o in (fast, ref):
                o.param_groups[0]["lr"] = 0.002
        fast.step(grads)
        ref.step(grads)
    for a, b in zip(p_f, p_r):
        assert_bitwise(a, b, name)
    assert_same_state(fast, ref)


CHANGES = {  # step -> hyperparameters set on group 0 before it
    "Adam": {3: {"betas": (0.5, 0.9), "eps": 1e-3}, 5: {"weight_decay": 0.2, "amsgrad": True},
             7: {"lr": schedules.exponential(0.02, gamma=0.9)}, 9: {"lr": 0.003}},
    "Adagrad": {3: {"lr_decay": 0.1}, 5: {"eps": 1e-3, "weight_decay": 0.2},
                7: {"lr": schedules.exponential(0.02, gamma=0.9)}, 9: {"lr_decay": 0.0}},
    "RMSprop": {3: {"alpha": 0.5}, 5: {"eps": 1e-3, "weight_decay": 0.2},
                7: {"lr": schedules.exponential(0.02, gamma=0.9)}, 9: {"lr": 0.003}},
    "SGD": {3: {"momentum": 0.5, "dampening": 0.25}, 5: {"nesterov": True, "dampening": 0.0},
            7: {"lr": schedules.exponential(0.02, gamma=0.9)}, 9: {"maximize": True}},
}
CHANGES["AdamW"] = CHANGES["Adam"]


@pytest.mark.parametrize("name", NAMES)
def test_every_hyperparameter_change_reaches_the_kernel(name, rng):
    """The fast path caches the kernel's step-independent scalars per group:
    any change (and a schedule put in or taken out) must reach the kernel."""
    p_f, fast = two_groups(adaptopt, name, np.random.default_rng(2))
    p_r, ref = two_groups(reference, name, np.random.default_rng(2))
    for t in range(12):
        grads = [make_grad(rng, p.shape, p.dtype) for p in p_f]
        for o in (fast, ref):
            o.param_groups[0].update(CHANGES[name].get(t, {}))
        fast.step(grads)
        ref.step(grads)
        for a, b in zip(p_f, p_r):
            assert_bitwise(a, b, f"{name} after step {t + 1}")
    assert_same_state(fast, ref)


def test_hyperparameter_change_takes_effect_on_next_step():
    p = np.zeros(3)
    opt = adaptopt.SGD([p], lr=1.0)
    opt.step([np.ones(3)])
    opt.param_groups[0]["lr"] = 0.5
    opt.step([np.ones(3)])
    np.testing.assert_array_equal(p, [-1.5, -1.5, -1.5])


def test_add_param_group():
    p, q = np.zeros(2), np.zeros(3, np.float32)
    opt = adaptopt.SGD([p], lr=1.0)
    opt.add_param_group({"params": [q], "lr": 2.0})
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["momentum"] == 0.0
    opt.step([np.ones(2), np.ones(3, np.float32)])
    np.testing.assert_array_equal(p, [-1, -1])
    np.testing.assert_array_equal(q, [-2, -2, -2])
    with pytest.raises(ValueError, match=r"params\[2\] and params\[0\] share memory"
                                         r"|params\[0\] and params\[2\] share memory"):
        opt.add_param_group({"params": [p]})
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        opt.add_param_group({"params": [np.zeros(1)], "betas": (0.9, 0.9)})
    with pytest.raises(ValueError, match="lr must be >= 0"):
        opt.add_param_group({"params": [np.zeros(1)], "lr": -1})
    assert len(opt.param_groups) == 2 and len(opt._params) == 2


def test_callable_lr_gets_step_from_one():
    seen = []
    p = np.zeros(1)
    opt = adaptopt.SGD([p], lr=lambda t: seen.append(t) or 0.1)
    for _ in range(3):
        opt.step([np.ones(1)])
    assert seen == [1, 2, 3]


@pytest.mark.parametrize("bad", [math.nan, -0.1, "x", math.inf])
def test_schedule_returning_bad_lr_raises_and_changes_nothing(bad):
    p = np.ones(3)
    opt = adaptopt.Adam([p], lr=lambda t: 0.1 if t < 2 else bad)
    opt.step([np.ones(3)])
    before, state = p.copy(), {k: np.copy(v) for k, v in opt.state[0].items()}
    with pytest.raises(ValueError, match="the lr schedule returned .* at step 2"):
        opt.step([np.ones(3)])
    np.testing.assert_array_equal(p, before)
    assert opt.state[0]["step"] == 1
    for k, v in state.items():
        np.testing.assert_array_equal(opt.state[0][k], v)


def test_schedule_validation_and_round_trip():
    with pytest.raises(ValueError, match="T_max must be an integer >= 1"):
        schedules.cosine(0.1, T_max=0)
    with pytest.raises(ValueError, match="step must be an integer >= 1"):
        schedules.constant(0.1)(0)
    s = schedules.linear_warmup(schedules.step_decay(0.1, 3, 0.5), warmup_steps=4,
                                start_factor=0.25)
    assert schedules.from_dict(s.to_dict()) == s
    assert [s(t) for t in (1, 5)] == [0.1 * 0.25, 0.1 * 0.5]
    with pytest.raises(ValueError, match="not a schedule description"):
        schedules.from_dict({"kind": "nope"})


torch = None


def _torch_lrs(make_scheduler, steps):
    global torch
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = make_scheduler(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize("ours, theirs", [
    (schedules.constant(0.1), lambda o: torch.optim.lr_scheduler.ConstantLR(o, factor=1.0)),
    (schedules.step_decay(0.1, step_size=3, gamma=0.5),
     lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
    (schedules.exponential(0.1, gamma=0.9),
     lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9)),
    (schedules.cosine(0.1, T_max=10, eta_min=0.01),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.01)),
    (schedules.linear_warmup(0.1, warmup_steps=5, start_factor=0.2),
     lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.2, total_iters=5)),
    (schedules.linear_warmup(schedules.exponential(0.1, 0.9), warmup_steps=4, start_factor=0.5),
     lambda o: torch.optim.lr_scheduler.ChainedScheduler([
         torch.optim.lr_scheduler.LinearLR(o, start_factor=0.5, total_iters=4),
         torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9)])),
], ids=["constant", "step", "exponential", "cosine", "warmup", "warmup+exponential"])
def test_schedules_match_torch_lr_scheduler(ours, theirs):
    expected = _torch_lrs(theirs, 25)
    got = [ours(t) for t in range(1, 26)]
    # torch's schedulers update recursively (lr *= factor each step): a few
    # ULP from the closed form after 25 steps
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("change", [
    lambda g: g.__setitem__("lr", -1.0),
    lambda g: g.update(lr=-1.0),
    lambda g: g.update({"eps": -1.0}),
    lambda g: g.pop("eps"),
    lambda g: g.__ior__({"eps": -1.0}),
], ids=["setitem", "update-kw", "update-dict", "pop", "ior"])
def test_every_way_of_changing_a_group_is_checked_at_the_next_step(change):
    p = np.zeros(3)
    opt = adaptopt.Adam([p], lr=0.1)
    opt.step([np.ones(3)])
    before = p.copy()
    change(opt.param_groups[0])
    with pytest.raises((ValueError, TypeError)):
        opt.step([np.ones(3)])
    np.testing.assert_array_equal(p, before)


def test_group_replaced_by_a_plain_dict_still_works():
    p = np.zeros(3)
    opt = adaptopt.SGD([p], lr=1.0)
    opt.step([np.ones(3)])
    opt.param_groups[0] = {**opt.param_groups[0], "lr": 2.0}
    opt.step([np.ones(3)])
    np.testing.assert_array_equal(p, [-3.0, -3.0, -3.0])
