"""Bad input: a clear exception naming the argument, and nothing changed.

Run against both the fast classes and the reference: they share the
checks, and must raise the same exceptions."""
import copy
import math

import numpy as np
import pytest

import adaptopt
from adaptopt import reference

NAMES = ["Adam", "AdamW", "Adagrad", "RMSprop", "SGD"]


@pytest.fixture(params=["fast", "reference"])
def module(request):
    return adaptopt if request.param == "fast" else reference


def snapshot(opt, grads=()):
    return (copy.deepcopy(opt._params), copy.deepcopy(opt.state),
            copy.deepcopy(opt.param_groups), [None if g is None else g.copy() for g in grads])


def assert_unchanged(opt, snap, grads=()):
    params, state, groups, grads_before = snap
    for a, b in zip(opt._params, params):
        np.testing.assert_array_equal(a, b)
    assert state.keys() == opt.state.keys()
    for i in state:
        for k, v in state[i].items():
            np.testing.assert_array_equal(opt.state[i][k], v)
    assert [{k: v for k, v in g.items() if k != "params"} for g in groups] == \
        [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    for g, b in zip(grads, grads_before):
        if g is not None:
            np.testing.assert_array_equal(g, b)


def stepped(module, name, **kw):
    """An optimizer with two params that has taken two steps."""
    params = [np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), np.ones(5)]
    kw.setdefault("momentum", 0.9) if name in ("SGD", "RMSprop") else None
    opt = getattr(module, name)(params, lr=0.1, **kw)
    for _ in range(2):
        opt.step([np.full((3, 4), 0.5, np.float32), np.full(5, -0.25)])
    return opt


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad, exc, match", [
    ([], ValueError, "params is empty"),
    (np.zeros(3), TypeError, "wrap it in a list"),
    ([np.zeros(3, dtype=np.int64)], TypeError, r"params\[0\] has unsupported dtype int64"),
    ([np.zeros(3, dtype=np.complex128)], TypeError, "unsupported dtype complex128"),
    ([np.zeros(3, dtype=object)], TypeError, "unsupported dtype object"),
    ([np.zeros(3, dtype=">f8")], TypeError, "unsupported dtype"),
    ([np.zeros((4, 4))[:, 1]], ValueError, r"params\[0\] is not dense"),
    ([[1.0, 2.0]], TypeError, r"params\[0\] must be a NumPy array"),
])
def test_bad_params(module, name, bad, exc, match):
    with pytest.raises(exc, match=match):
        getattr(module, name)(bad)


def test_read_only_param(module):
    p = np.zeros(3)
    p.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[0\] is read-only"):
        module.Adam([p])


def _unaligned(n, dtype=np.float64):
    a = np.frombuffer(bytearray(n * np.dtype(dtype).itemsize + 1), dtype=dtype, count=n, offset=1)
    assert not a.flags.aligned
    return a


def test_unaligned_param_and_grad(module):
    with pytest.raises(ValueError, match=r"params\[0\] is not aligned"):
        module.Adam([_unaligned(5)])
    opt = stepped(module, "Adam")
    grads = [np.ones((3, 4), np.float32), _unaligned(5)]
    snap = snapshot(opt, grads)
    with pytest.raises(ValueError, match=r"grads\[1\] is not aligned"):
        opt.step(grads)
    assert_unchanged(opt, snap, grads)


def test_same_array_twice_and_overlapping_views(module):
    p = np.zeros(10)
    with pytest.raises(ValueError, match=r"params\[0\] and params\[1\] share memory \(the same array twice\)"):
        module.SGD([p, p])
    with pytest.raises(ValueError, match=r"params\[1\] and params\[2\] share memory"):
        module.SGD([np.ones(2), p[:6], p[4:]])
    module.SGD([p[:5], p[5:]])  # adjacent, not overlapping: fine


@pytest.mark.parametrize("name, kw, exc, match", [
    ("Adam", {"lr": -1.0}, ValueError, "lr must be >= 0"),
    ("Adam", {"lr": math.nan}, ValueError, "lr must be finite"),
    ("Adam", {"lr": "0.1"}, TypeError, "lr must be a real number"),
    ("Adam", {"eps": -1e-8}, ValueError, "eps must be >= 0"),
    ("Adam", {"betas": (1.0, 0.999)}, ValueError, r"betas\[0\] must be < 1"),
    ("Adam", {"betas": (0.9, -0.1)}, ValueError, r"betas\[1\] must be >= 0"),
    ("Adam", {"betas": 0.9}, TypeError, "betas must be a pair"),
    ("Adam", {"amsgrad": 1}, TypeError, "amsgrad must be True or False"),
    ("AdamW", {"weight_decay": -0.1}, ValueError, "weight_decay must be >= 0"),
    ("AdamW", {"weight_decay": math.inf}, ValueError, "weight_decay must be finite"),
    ("Adagrad", {"lr_decay": -1.0}, ValueError, "lr_decay must be >= 0"),
    ("Adagrad", {"initial_accumulator_value": -1.0}, ValueError, "initial_accumulator_value"),
    ("RMSprop", {"alpha": 1.0}, ValueError, "alpha must be < 1"),
    ("RMSprop", {"momentum": -0.5}, ValueError, "momentum must be >= 0"),
    ("RMSprop", {"centered": "yes"}, TypeError, "centered must be True or False"),
    ("SGD", {"nesterov": True}, ValueError, "nesterov requires momentum > 0"),
    ("SGD", {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, ValueError, "dampening = 0"),
    ("SGD", {"momentum": math.nan}, ValueError, "momentum must be finite"),
    ("SGD", {"n_threads": 0}, ValueError, "n_threads must not be 0"),
    ("SGD", {"n_threads": 1.5}, TypeError, "n_threads must be an int"),
])
def test_bad_hyperparameters(module, name, kw, exc, match):
    with pytest.raises(exc, match=match):
        getattr(module, name)([np.zeros(3)], **kw)


def _shares_param(opt):
    return [opt._params[0].reshape(-1)[:12].reshape(3, 4), None]


def _shares_state(opt):
    k = next(k for k, v in opt.state[0].items() if isinstance(v, np.ndarray))
    return [opt.state[0][k], None]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("make_grads, exc, match", [
    (lambda o: np.zeros(12, np.float32), TypeError, "grads must be a list or tuple"),
    (lambda o: [np.zeros((3, 4), np.float32)], ValueError, "grads has 1 entries, the optimizer has 2"),
    (lambda o: [np.zeros((3, 4)), np.zeros(5)], TypeError, r"grads\[0\] has dtype float64, params\[0\] has float32"),
    (lambda o: [np.zeros((4, 3), np.float32), np.zeros(5)], ValueError, r"grads\[0\] has shape \(4, 3\)"),
    (lambda o: [np.frombuffer(bytearray(49), np.float32, 12, 1).reshape(3, 4), None], ValueError,
     r"grads\[0\] is not aligned"),
    (lambda o: [None, [1.0] * 5], TypeError, r"grads\[1\] must be a NumPy array or None"),
    (lambda o: [None, np.zeros(5, np.float32)], TypeError, r"grads\[1\] has dtype float32"),
    (_shares_param, ValueError, r"grads\[0\] shares memory with params\[0\]"),
    (_shares_state, ValueError, r"grads\[0\] shares memory with state\[0\]"),
])
def test_bad_grads_change_nothing(module, name, make_grads, exc, match):
    opt = stepped(module, name)
    grads = make_grads(opt)
    snap = snapshot(opt, grads if isinstance(grads, list) else ())
    with pytest.raises(exc, match=match):
        opt.step(grads)
    assert_unchanged(opt, snap, grads if isinstance(grads, list) else ())


@pytest.mark.parametrize("name", NAMES)
def test_bad_hyperparameter_set_between_steps_raises_at_step(module, name):
    opt = stepped(module, name)
    grads = [np.ones((3, 4), np.float32), np.ones(5)]
    snap = snapshot(opt, grads)
    opt.param_groups[0]["lr"] = -0.5
    with pytest.raises(ValueError, match="lr must be >= 0"):
        opt.step(grads)
    opt.param_groups[0]["lr"] = 0.1
    assert_unchanged(opt, snap, grads)


@pytest.mark.parametrize("name", NAMES)
def test_none_grad_skips_parameter(module, name):
    opt = stepped(module, name)
    before = opt._params[1].copy()
    step = opt.state[1]["step"]
    opt.step([np.ones((3, 4), np.float32), None])
    np.testing.assert_array_equal(opt._params[1], before)
    assert opt.state[1]["step"] == step
    assert opt.state[0]["step"] == step + 1


@pytest.mark.parametrize("name", NAMES)
def test_read_only_grads_are_fine_and_untouched(module, name):
    opt = stepped(module, name)
    grads = [np.ones((3, 4), np.float32), np.ones(5)]
    for g in grads:
        g.flags.writeable = False
    opt.step(grads)
    assert all((g == 1).all() for g in grads)


def test_nan_and_inf_gradients_propagate_without_crashing(module):
    """As in torch: a NaN gradient makes that element's parameter NaN; an
    inf gradient in Adam gives inf/inf = NaN.  Other elements unaffected."""
    p = np.zeros(4)
    opt = module.Adam([p], lr=0.1)
    opt.step([np.array([np.nan, np.inf, -np.inf, 1.0])])
    assert np.isnan(p[:3]).all() and p[3] == pytest.approx(-0.1)
