"""state_dict / load_state_dict and crash-safe checkpoints."""
import copy
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import adaptopt
from adaptopt import reference, schedules

from conftest import assert_bitwise, assert_same_state, make_grad

NAMES = ["Adam", "AdamW", "Adagrad", "RMSprop", "SGD"]
EXTRA = {"Adam": {"amsgrad": True}, "SGD": {"momentum": 0.9, "nesterov": True},
         "RMSprop": {"momentum": 0.5, "centered": True}}


def make(name, seed=0, module=adaptopt, lr=0.01):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal(4)]
    return params, getattr(module, name)(
        [{"params": params[:1]}, {"params": params[1:], "lr": schedules.cosine(0.05, 30)}],
        lr=lr, **EXTRA.get(name, {}))


def grads_for(params, seed, steps):
    rng = np.random.default_rng(seed)
    return [[make_grad(rng, p.shape, p.dtype) for p in params] for _ in range(steps)]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("via", ["state_dict", "file"])
def test_resume_is_bitwise_identical_to_never_stopping(name, via, tmp_path):
    params, opt = make(name)
    gs = grads_for(params, 1, 20)
    for g in gs[:8]:
        opt.step(g)
    saved_params = [p.copy() for p in params]
    if via == "file":
        opt.save(tmp_path / "ckpt.npz")
    else:
        sd = opt.state_dict()
    for g in gs[8:]:
        opt.step(g)

    params2, opt2 = make(name, seed=99)  # different start: everything must come from the checkpoint
    for p, s in zip(params2, saved_params):
        p[...] = s
    if via == "file":
        opt2.load(tmp_path / "ckpt.npz")
    else:
        opt2.load_state_dict(sd)
    for g in gs[8:]:
        opt2.step(g)
    for a, b in zip(params2, params):
        assert_bitwise(a, b, name)
    assert_same_state(opt2, opt)


def test_state_dict_layout_and_copies():
    params, opt = make("Adam")
    opt.step(grads_for(params, 1, 1)[0])
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    assert [g["params"] for g in sd["param_groups"]] == [[0], [1]]
    assert sd["param_groups"][0]["betas"] == (0.9, 0.999)
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    sd["state"][0]["exp_avg"][...] = 123.0  # a copy: the optimizer is not affected
    assert not (opt.state[0]["exp_avg"] == 123.0).any()
    opt.load_state_dict(sd)
    sd["state"][0]["exp_avg"][...] = 7.0    # loading copies too
    assert (opt.state[0]["exp_avg"] == 123.0).all()


def _bad(mutate):
    params, opt = make("Adam")
    opt.step(grads_for(params, 1, 1)[0])
    sd = copy.deepcopy(opt.state_dict())
    mutate(sd)
    return sd


@pytest.mark.parametrize("mutate, match", [
    (lambda sd: sd.pop("state"), "exactly the keys"),
    (lambda sd: sd["param_groups"].pop(), "has 1 param groups, the optimizer has 2"),
    (lambda sd: sd["param_groups"][0]["params"].append(5), r"\['params'\] is \[0, 5\]"),
    (lambda sd: sd["param_groups"][0].pop("eps"), r"is missing \['eps'\]"),
    (lambda sd: sd["param_groups"][0].update(lr=-1.0), "lr must be >= 0"),
    (lambda sd: sd["param_groups"][0].update(momentum=0.9), "unknown hyperparameter"),
    (lambda sd: sd["state"][0].pop("exp_avg"), r"is missing \['exp_avg'\]"),
    (lambda sd: sd["state"][0].pop("step"), "must be a dict with a 'step'"),
    (lambda sd: sd["state"][0].update(step=-1), "finite non-negative whole number"),
    (lambda sd: sd["state"][0].update(step=float("nan")), "finite non-negative whole number"),
    (lambda sd: sd["state"][0].update(step=1.5), "finite non-negative whole number"),
    (lambda sd: sd["state"][0].update(bogus=np.zeros((5, 3), np.float32)), "unknown key"),
    (lambda sd: sd["state"][0].update(exp_avg=np.zeros((3, 5), np.float32)), "shape"),
    (lambda sd: sd["state"][0].update(exp_avg=np.zeros((5, 3))), "dtype float32"),
    (lambda sd: sd["state"][0].update(exp_avg=[[0.0] * 3] * 5), "must be an array"),
    (lambda sd: sd["state"].update({7: {"step": 1}}), "entry for parameter 7"),
    (lambda sd: sd["state"].update({"x": {"step": 1}}), "entry for parameter 'x'"),
])
def test_load_state_dict_rejects_and_is_atomic(mutate, match):
    params, opt = make("Adam")
    g = grads_for(params, 1, 3)
    opt.step(g[0])
    opt.step(g[1])
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(_bad(mutate))
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for i in before["state"]:
        for k, v in before["state"][i].items():
            np.testing.assert_array_equal(after["state"][i][k], v)


def test_fast_and_reference_state_dicts_are_interchangeable():
    params, fast = make("RMSprop")
    params_r, ref = make("RMSprop", module=reference)
    gs = grads_for(params, 3, 6)
    for g in gs[:3]:
        fast.step(g)
        ref.step(g)
    ref.load_state_dict(fast.state_dict())
    for g in gs[3:]:
        fast.step(g)
        ref.step(g)
    for a, b in zip(params, params_r):
        assert_bitwise(a, b)


def test_checkpoint_of_unsaveable_lr(tmp_path):
    p = np.zeros(2)
    opt = adaptopt.SGD([p], lr=lambda t: 0.1)
    with pytest.raises(ValueError, match="cannot be saved without pickle"):
        opt.save(tmp_path / "c.npz")
    assert not os.listdir(tmp_path)  # no temp file left behind


def test_corrupt_truncated_and_foreign_files(tmp_path):
    params, opt = make("Adam")
    opt.step(grads_for(params, 1, 1)[0])
    path = tmp_path / "c.npz"
    opt.save(path)
    data = path.read_bytes()
    before = opt.state_dict()

    cases = {"truncated.npz": data[: len(data) // 2], "empty.npz": b"",
             "garbage.npz": b"not a zip file at all" * 10}
    flipped = bytearray(data)  # corrupt the bytes of an array inside the zip
    flipped[len(data) // 3] ^= 0xFF
    cases["flipped.npz"] = bytes(flipped)
    for fname, blob in cases.items():
        (tmp_path / fname).write_bytes(blob)
        with pytest.raises(ValueError, match="is not a valid adaptopt checkpoint"):
            opt.load(tmp_path / fname)
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a valid adaptopt checkpoint"):
        opt.load(tmp_path / "plain.npz")
    params_s, sgd = make("SGD")
    with pytest.raises(ValueError, match="holds a Adam state, not SGD"):
        sgd.load(path)
    with pytest.raises(FileNotFoundError):
        opt.load(tmp_path / "missing.npz")
    after = opt.state_dict()
    for k, v in before["state"][0].items():
        np.testing.assert_array_equal(after["state"][0][k], v)


def test_sigkill_during_save_leaves_previous_checkpoint_intact(tmp_path):
    """A child process saves a large state over and over; SIGKILL it while
    it writes. The previous checkpoint must still load, intact."""
    path = tmp_path / "ckpt.npz"
    script = textwrap.dedent(f"""
        import sys, numpy as np, adaptopt
        p = np.zeros(8_000_000, np.float32)
        opt = adaptopt.Adam([p])
        opt.step([np.ones_like(p)])
        opt.save({str(path)!r})
        print("saved", flush=True)
        while True:
            opt.step([np.ones_like(p)])
            opt.save({str(path)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "saved"
        # wait until a temp file exists: the child is in the middle of a save
        for _ in range(2000):
            if any(f.endswith(".tmp") for f in os.listdir(tmp_path)):
                break
            import time
            time.sleep(0.005)
        else:
            pytest.fail("never saw a save in progress")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    p = np.zeros(8_000_000, np.float32)
    opt = adaptopt.Adam([p])
    opt.load(path)
    st = opt.state[0]
    k = st["step"]
    assert k >= 1
    # after k steps of gradient 1: exp_avg = 1 - 0.9**k exactly as the kernel computes it
    ref_p = np.zeros(4, np.float32)
    ref = reference.Adam([ref_p])
    for _ in range(k):
        ref.step([np.ones(4, np.float32)])
    assert (st["exp_avg"] == ref.state[0]["exp_avg"][0]).all()
    assert (st["exp_avg_sq"] == ref.state[0]["exp_avg_sq"][0]).all()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_pickle_and_deepcopy_continue_bitwise(name, how):
    import pickle
    params, opt = make(name)
    gs = grads_for(params, 5, 6)
    for g in gs[:3]:
        opt.step(g)
    clone = pickle.loads(pickle.dumps(opt)) if how == "pickle" else copy.deepcopy(opt)
    for g in gs[3:]:
        opt.step(g)
        clone.step(g)
    for a, b in zip(clone._params, params):
        assert a is not b
        assert_bitwise(a, b, name)
    assert_same_state(clone, opt)
