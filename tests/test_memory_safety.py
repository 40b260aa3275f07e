"""The engine's memory-safety and consistency guarantees (issue 11).

One test per reproducer of the issue, named after what it guards.  The
semantics asserted are the issue's:

* ``param_groups`` and ``state`` are the source of truth, as in
  torch.optim: a replaced parameter or buffer is *used* if valid (the step
  then equals, bit for bit, the NumPy reference fed the same arrays), and
  *rejected* with a TypeError/ValueError naming it if not; never ignored.
* A rejected step leaves parameters, state (buffers and step counts) and
  the caller's arrays untouched, byte for byte.
* No input crashes the process.

Every case that can crash runs in a child interpreter (``run_isolated``), so
a segfault or an abort is a failed test that names the signal, and under
the sanitizer build (.ci/asan.sh) the child's ASan report is in the failure.
"""
import textwrap

import pytest
from conftest import run_isolated

# Helpers defined in every child.  twin(opt) is the NumPy reference fed the
# same arrays: a reference optimizer of the same class over copies of the
# arrays now in opt.param_groups, with opt's hyperparameters and state.
PRELUDE = r'''
import math, os, sys, threading, time
import numpy as np
import adaptopt
from adaptopt import reference

N = 1000


def arrays_of(opt):
    """Every array the optimizer addresses, by name."""
    out = {}
    for gi, g in enumerate(opt.param_groups):
        for k, p in enumerate(g["params"]):
            out[f"param_groups[{gi}]['params'][{k}]"] = p
    for i, st in opt.state.items():
        for k, v in st.items():
            out[f"state[{i}][{k!r}]"] = v
    return out


def snapshot(opt, extra=()):
    snap = {k: (v.tobytes(), v.shape, v.dtype.str) if isinstance(v, np.ndarray) else repr(v)
            for k, v in arrays_of(opt).items()}
    for j, a in enumerate(extra):
        snap[f"extra[{j}]"] = np.asarray(a).tobytes()
    return snap


def twin(opt):
    cls = getattr(reference, type(opt).__name__)
    groups = [{**{k: v for k, v in g.items() if k != "params"},
               "params": [np.array(p, copy=True) for p in g["params"]]}
              for g in opt.param_groups]
    t = cls(groups, n_threads=1)
    # the same state as given (not load_state_dict, which would refuse a
    # state missing a buffer that the step creates as zeros)
    t.state = {i: {k: (np.array(v, copy=True) if isinstance(v, np.ndarray) else v)
                   for k, v in st.items()} for i, st in opt.state.items()}
    return t


def bits(a):
    a = np.ascontiguousarray(a)
    return a.view({4: np.uint32, 8: np.uint64, 2: np.uint16}[a.dtype.itemsize])


def same_bits(a, b, what):
    assert a.dtype == b.dtype and a.shape == b.shape, (what, a.dtype, a.shape, b.dtype, b.shape)
    ba, bb = bits(a), bits(b)
    nan = np.isnan(a) & np.isnan(b)  # NaN bits are not part of the contract
    bad = (ba != bb) & ~nan
    assert not bad.any(), f"{what}: {int(bad.sum())} of {a.size} elements differ from the reference"


def assert_used(opt, grads, check=None, fresh=()):
    """The step succeeds and equals the reference fed the same arrays (the
    parameters at positions fresh start without state: they replaced others)."""
    ref = twin(opt)
    for i in fresh:
        ref.state.pop(i, None)
    opt.step(grads)
    ref.step([None if g is None else g.copy() for g in grads])
    for gi, (g, rg) in enumerate(zip(opt.param_groups, ref.param_groups)):
        for k, (p, rp) in enumerate(zip(g["params"], rg["params"])):
            same_bits(p, rp, f"param_groups[{gi}]['params'][{k}]")
    assert opt.state.keys() == ref.state.keys(), (opt.state.keys(), ref.state.keys())
    for i, st in ref.state.items():
        assert opt.state[i].keys() == st.keys(), (i, opt.state[i].keys(), st.keys())
        for k, v in st.items():
            if isinstance(v, np.ndarray):
                same_bits(opt.state[i][k], v, f"state[{i}][{k!r}]")
            else:
                assert opt.state[i][k] == v, (i, k, opt.state[i][k], v)
    print("USED")


def assert_rejected(opt, grads, names, extra=(), errors=(TypeError, ValueError)):
    """The step raises a TypeError/ValueError whose message contains each
    of names, and changes no byte of the optimizer's arrays, step counts,
    the gradients or the arrays in extra."""
    before = snapshot(opt, list(extra) + [g for g in grads if g is not None])
    try:
        opt.step(grads)
    except errors as e:
        msg = str(e)
        for name in names:  # a tuple: any of these
            alts = name if isinstance(name, tuple) else (name,)
            assert any(a in msg for a in alts), f"the error does not name {name!r}: {type(e).__name__}: {msg}"
        print("REJECTED", type(e).__name__, msg)
    else:
        raise AssertionError(f"the step accepted it (should raise naming {names})")
    after = snapshot(opt, list(extra) + [g for g in grads if g is not None])
    changed = [k for k in before if before[k] != after.get(k)] + [k for k in after if k not in before]
    assert not changed, f"the rejected step changed {changed}"


def stepped(cls=adaptopt.Adam, n=N, steps=1, dtype=np.float32, **kw):
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n).astype(dtype)
    opt = cls([p], **kw)
    for _ in range(steps):
        opt.step([rng.standard_normal(n).astype(dtype)])
    return p, opt


def grad(n=N, dtype=np.float32, seed=1):
    return np.random.default_rng(seed).standard_normal(n).astype(dtype)
'''


def child(body, timeout=120, **kw):
    return run_isolated(PRELUDE + textwrap.dedent(body), timeout=timeout, **kw)


# --- state buffers replaced or supplied by the user ------------------------
def test_replaced_state_buffer_is_used_or_rejected():
    child("""
        # valid replacement after a step: used (the ASan reproducer was a
        # heap-use-after-free here, the old buffer being freed)
        p, opt = stepped(steps=2)
        opt.state[0]["exp_avg"] = np.full(N, 0.25, np.float32)
        assert_used(opt, [grad()])
        assert_used(opt, [grad(seed=2)])  # and from then on
        # too small: rejected, naming the buffer
        p, opt = stepped(steps=2)
        small = np.zeros(10, np.float32)
        opt.state[0]["exp_avg"] = small
        assert_rejected(opt, [grad()], ["exp_avg"], extra=[small])
        # too large: rejected as well
        p, opt = stepped(steps=2)
        opt.state[0]["exp_avg_sq"] = np.ones(2 * N, np.float32)
        assert_rejected(opt, [grad()], ["exp_avg_sq"])
    """)


def test_replaced_state_buffer_is_used_while_the_old_one_lives_on():
    child("""
        p, opt = stepped(steps=2)
        old = opt.state[0]["exp_avg"]      # still referenced: no crash, but must not be updated
        old_bytes = old.tobytes()
        new = np.zeros(N, np.float32)
        opt.state[0]["exp_avg"] = new
        assert_used(opt, [grad()])
        assert old.tobytes() == old_bytes, "the replaced buffer kept being updated"
        assert opt.state[0]["exp_avg"] is new and new.any(), "the new buffer was ignored"
    """)


def test_replaced_state_dict_entry_is_used_or_rejected():
    child("""
        p, opt = stepped(steps=2)
        st = opt.state[0]
        opt.state[0] = {"step": st["step"], "exp_avg": st["exp_avg"].copy(),
                        "exp_avg_sq": st["exp_avg_sq"].copy()}
        assert_used(opt, [grad()])
        p, opt = stepped(steps=2)
        opt.state[0] = {"step": 2, "exp_avg": np.zeros(N, np.float32)}  # exp_avg_sq missing
        assert_rejected(opt, [grad()], ["exp_avg_sq"])
    """)


def test_deleted_state_buffer_is_rejected_or_recreated():
    child("""
        p, opt = stepped(steps=2)
        del opt.state[0]["exp_avg_sq"]
        before = snapshot(opt)
        try:
            opt.step([grad()])
        except (TypeError, ValueError, KeyError) as e:
            assert "exp_avg_sq" in str(e), e
            assert snapshot(opt) == before, "the rejected step changed something"
        else:  # recreated as zeros, as the README says for newly needed buffers
            assert opt.state[0]["exp_avg_sq"].shape == (N,)
    """)


def test_user_state_wrong_size_before_first_step():
    child("""
        p = np.ones(N, np.float32)
        opt = adaptopt.Adam([p])
        small = np.zeros(10, np.float32)
        opt.state[0] = {"step": 0, "exp_avg": small}
        assert_rejected(opt, [grad()], ["exp_avg"], extra=[small])
        opt = adaptopt.Adam([p])
        opt.state[0] = {"step": 0, "exp_avg": np.zeros((N, 2), np.float32)}
        assert_rejected(opt, [grad()], ["exp_avg"])
    """)


def test_user_state_valid_before_first_step_is_used():
    child("""
        p = np.ones(N, np.float32)
        opt = adaptopt.Adam([p])
        opt.state[0] = {"step": 0, "exp_avg": np.full(N, 0.5, np.float32)}
        assert_used(opt, [grad()])
        q = np.ones(N, np.float32)
        opt = adaptopt.Adam([q])
        opt.state[0] = {"step": 7, "exp_avg": np.full(N, 0.5, np.float32),
                        "exp_avg_sq": np.full(N, 0.25, np.float32)}
        assert_used(opt, [grad()])
        assert opt.state[0]["step"] == 8
    """)


def test_user_state_bad_step_count_is_rejected():
    child("""
        for bad in (-5, 1.5, float("nan"), float("inf"), "3", None):
            p, opt = stepped(steps=1)
            opt.state[0]["step"] = bad
            assert_rejected(opt, [grad()], ["step"])
    """)


def test_float16_state():
    child("""
        p, opt = stepped(steps=1)
        h = np.zeros(N, np.float16)
        opt.state[0]["exp_avg"] = h
        assert_rejected(opt, [grad()], ["exp_avg", "float16"], extra=[h])
        p, opt = stepped(steps=1, dtype=np.float64)
        opt.state[0]["exp_avg_sq"] = np.zeros(N, np.float32)  # float32 state, float64 param
        assert_rejected(opt, [grad(dtype=np.float64)], ["exp_avg_sq", "float32"])
        p, opt = stepped(steps=1)
        opt.state[0]["exp_avg"] = list(range(N))  # not an array at all
        assert_rejected(opt, [grad()], ["exp_avg"])
    """)


def test_amsgrad_switched_on_with_bad_state():
    child("""
        p, opt = stepped(steps=2)
        bad = np.zeros(10, np.float32)
        opt.state[0]["max_exp_avg_sq"] = bad  # picked up when amsgrad is switched on
        opt.param_groups[0]["amsgrad"] = True
        assert_rejected(opt, [grad()], ["max_exp_avg_sq"], extra=[bad])
        p, opt = stepped(steps=2)
        opt.state[0]["max_exp_avg_sq"] = np.zeros(N, np.float16)
        opt.param_groups[0]["amsgrad"] = True
        assert_rejected(opt, [grad()], ["max_exp_avg_sq"])
    """)


def test_amsgrad_switched_on_with_valid_state_uses_it():
    child("""
        p, opt = stepped(steps=2)
        opt.state[0]["max_exp_avg_sq"] = np.full(N, 3.0, np.float32)
        opt.param_groups[0]["amsgrad"] = True
        assert_used(opt, [grad()])
        p, opt = stepped(steps=2)
        opt.param_groups[0]["amsgrad"] = True  # no buffer: created as zeros (README)
        assert_used(opt, [grad()])
    """)


def test_momentum_and_centered_switched_on_with_bad_state():
    child("""
        p, opt = stepped(adaptopt.RMSprop, steps=2)
        opt.state[0]["grad_avg"] = np.zeros(10, np.float32)
        opt.param_groups[0]["centered"] = True
        assert_rejected(opt, [grad()], ["grad_avg"])
        p, opt = stepped(adaptopt.SGD, steps=2, momentum=0.9)
        opt.state[0]["momentum_buffer"] = np.zeros(10, np.float32)
        assert_rejected(opt, [grad()], ["momentum_buffer"])
        p, opt = stepped(adaptopt.Adagrad, steps=2)
        opt.state[0]["sum"] = np.zeros(10, np.float32)
        assert_rejected(opt, [grad()], ["sum"])
    """)


def test_readonly_memmap_state(tmp_path):
    path = tmp_path / "state.bin"
    child(f"""
        np.zeros(N, np.float32).tofile({str(path)!r})
        p, opt = stepped(steps=1)
        mm = np.memmap({str(path)!r}, dtype=np.float32, mode="r", shape=(N,))
        opt.state[0]["exp_avg"] = mm     # writing it was a SEGV
        assert_rejected(opt, [grad()], ["exp_avg", "read-only"], extra=[mm])
        p, opt = stepped(steps=1)
        ro = np.zeros(N, np.float32)
        ro.setflags(write=False)
        opt.state[0]["exp_avg_sq"] = ro
        assert_rejected(opt, [grad()], ["exp_avg_sq", "read-only"], extra=[ro])
        # a writable memmap is a valid buffer: used
        p, opt = stepped(steps=1)
        opt.state[0]["exp_avg"] = np.memmap({str(path)!r}, dtype=np.float32, mode="r+", shape=(N,))
        assert_used(opt, [grad()])
    """)


def test_noncontiguous_state_view():
    child("""
        p, opt = stepped(steps=1)
        base = np.zeros(2 * N, np.float32)
        view = base[::2]                 # N elements, stride 2: wrote the first N of base
        opt.state[0]["exp_avg"] = view
        assert_rejected(opt, [grad()], ["exp_avg", "strides"], extra=[base])
        p, opt = stepped(steps=1)
        raw = np.zeros(4 * N + 1, np.uint8)
        odd = raw[1:].view(np.float32)   # misaligned
        opt.state[0]["exp_avg"] = odd
        assert_rejected(opt, [grad()], ["exp_avg"], extra=[raw])
    """)


def test_state_aliasing_param():
    child("""
        p, opt = stepped(steps=1)
        opt.state[0]["exp_avg"] = p      # restrict violated: a wrong result
        assert_rejected(opt, [grad()], ["exp_avg", "memory"])
        p, opt = stepped(steps=1)
        big = np.zeros(N + 8, np.float32)
        opt.state[0]["exp_avg"] = big[8:]
        opt.state[0]["exp_avg_sq"] = big[:N]   # overlapping each other
        assert_rejected(opt, [grad()], ["memory"], extra=[big])
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal(N).astype(np.float32), rng.standard_normal(N).astype(np.float32)
        opt = adaptopt.Adam([a, b])
        opt.step([grad(), grad(seed=3)])
        opt.state[1]["exp_avg"] = opt.state[0]["exp_avg"]   # shared between two parameters
        assert_rejected(opt, [grad(), grad(seed=3)], ["exp_avg", "memory"])
    """)


def test_gradient_aliasing_replaced_state_is_rejected():
    child("""
        p, opt = stepped(steps=1)
        buf = np.zeros(N, np.float32)
        opt.state[0]["exp_avg"] = buf
        assert_rejected(opt, [buf], ["grads[0]", "memory"])
    """)


# --- parameters resized or replaced ---------------------------------------
def test_param_resized_in_place():
    child("""
        for n_new in (10, 2 * N):       # shrink (heap corruption), grow (use-after-free)
            p, opt = stepped(steps=2)
            p.resize(n_new, refcheck=False)
            assert_rejected(opt, [grad(n_new)], ["shape"])
            assert_rejected(opt, [grad(N)], ["grads[0]"])
    """)


def test_params_list_item_replaced():
    child("""
        p, opt = stepped(steps=2)
        q = np.full(N, 2.0, np.float32)
        p_bytes = p.tobytes()
        opt.param_groups[0]["params"][0] = q   # was ignored: p kept being updated
        # as in torch.optim, state belongs to its parameter: q starts without any
        assert_used(opt, [grad()], fresh=[0])
        assert p.tobytes() == p_bytes, "the replaced parameter kept being updated"
        assert (q != 2.0).all(), "the new parameter was ignored"
        # invalid replacements: rejected, naming the parameter
        # another shape is a new parameter, with fresh state: used
        p, opt = stepped(steps=2)
        opt.param_groups[0]["params"][0] = np.zeros(10, np.float32)
        assert_used(opt, [grad(10)], fresh=[0])
        for bad in (np.zeros(N, np.int32), np.zeros(N, np.float64), np.zeros(2 * N, np.float32)[::2],
                    [0.0] * N):
            p, opt = stepped(steps=2)
            opt.param_groups[0]["params"][0] = bad
            assert_rejected(opt, [grad()], ["params"])
    """)


def test_params_list_replaced_by_state_buffer_is_rejected_or_fresh():
    """The old parameter's state goes with it, so its exp_avg, now a
    parameter, is either refused as shared memory or updated as a new
    parameter with fresh state: never stepped while it is also a buffer."""
    child("""
        p, opt = stepped(steps=2)
        buf = opt.state[0]["exp_avg"]
        opt.param_groups[0]["params"][0] = buf
        try:
            assert_used(opt, [grad()], fresh=[0])
        except ValueError as e:
            assert "memory" in str(e), e
        else:
            assert opt.state[0]["exp_avg"] is not buf
    """)


def test_params_list_append():
    child("""
        p, opt = stepped(steps=2)
        x = np.ones(50, np.float32)
        opt.param_groups[0]["params"].append(x)   # was ignored
        assert_rejected(opt, [grad()], ["grads", "2"])
        x_before = x.copy()
        assert_used(opt, [grad(), grad(50, seed=4)])
        assert (x != x_before).all(), "the appended parameter was not updated"
    """)


def test_params_list_remove():
    child("""
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal(N).astype(np.float32), rng.standard_normal(20).astype(np.float32)
        opt = adaptopt.Adam([a, b])
        opt.step([grad(), grad(20)])
        opt.param_groups[0]["params"].pop()
        b_bytes = b.tobytes()
        before = snapshot(opt)
        try:
            opt.step([grad()])
        except (TypeError, ValueError) as e:
            assert snapshot(opt) == before
        else:
            assert b.tobytes() == b_bytes, "a removed parameter was updated"
            assert opt.state[0]["step"] == 2
    """)


def test_del_param_group():
    child("""
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal(N).astype(np.float32), rng.standard_normal(N).astype(np.float32)
        opt = adaptopt.Adam([{"params": [a], "lr": 0.5}, {"params": [b], "lr": 1e-3}])
        opt.step([grad(), grad(seed=2)])
        a_bytes = a.tobytes()
        st_b = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in opt.state[1].items()}
        del opt.param_groups[0]         # stepped a with group 1's lr
        expected = reference.Adam([b.copy()], lr=1e-3)
        expected.state[0] = st_b
        before = snapshot(opt)
        try:
            opt.step([grad(seed=3)])
        except (TypeError, ValueError) as e:   # a clear refusal is acceptable; silence is not
            assert "param" in str(e), e
            assert snapshot(opt) == before, "the rejected step changed something"
            print("REJECTED", e)
        else:
            assert a.tobytes() == a_bytes, "the removed group's parameter was updated"
            expected.step([grad(seed=3)])
            same_bits(b, expected.param_groups[0]["params"][0], "b (group 1's lr, b's state)")
    """)


def test_add_param_group_with_another_params_buffer():
    child("""
        p, opt = stepped(steps=2)
        for name in ("exp_avg", "exp_avg_sq"):
            buf = opt.state[0][name]
            try:
                opt.add_param_group({"params": [buf]})
            except ValueError as e:
                assert "memory" in str(e) and name in str(e), e
            else:
                raise AssertionError(f"add_param_group accepted state[0][{name!r}] as a parameter")
            assert len(opt.param_groups) == 1
        view = opt.state[0]["exp_avg"][: N // 2]
        try:
            opt.add_param_group({"params": [view]})
        except ValueError as e:
            assert "memory" in str(e), e
        else:
            raise AssertionError("add_param_group accepted a view of a state buffer")
    """)


def test_param_groups_entry_replaced_by_a_plain_dict():
    child("""
        p, opt = stepped(steps=2)
        g = dict(opt.param_groups[0])
        g["lr"] = 0.5
        opt.param_groups[0] = g          # a plain dict, not the optimizer's ParamGroup
        assert_used(opt, [grad()])
        p, opt = stepped(steps=2)
        g = dict(opt.param_groups[0]); g["lr"] = -1.0
        opt.param_groups[0] = g
        assert_rejected(opt, [grad()], ["lr"])
        p, opt = stepped(steps=2)
        g = dict(opt.param_groups[0]); del g["betas"]
        opt.param_groups[0] = g
        assert_rejected(opt, [grad()], ["betas"])
    """)


# --- atomicity -------------------------------------------------------------
def test_ctrl_c_mid_step_is_atomic():
    """SIGINT during a 16M-element step, 2 groups: afterwards either every
    group's parameters AND step counters advanced, or none did."""
    r = child("""
        import signal
        n = 8 << 20                          # 2 groups x 8M = 16M elements
        ps = [np.zeros(n, np.float32), np.zeros(n, np.float32)]
        opt = adaptopt.Adam([{"params": [ps[0]]}, {"params": [ps[1]], "lr": 2e-3}], lr=1e-3)
        grads = [np.ones(n, np.float32), np.ones(n, np.float32)]
        opt.step(grads)
        t0 = time.perf_counter(); opt.step(grads); dt = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        interrupted = partial = 0
        probes = [0, n // 2, n - 1]
        for trial in range(30):
            before = [p[probes].copy() for p in ps]
            steps = [opt.state[i]["step"] for i in (0, 1)]
            timer = threading.Timer(rng.uniform(0, 1.2 * dt), os.kill, (os.getpid(), signal.SIGINT))
            try:
                try:
                    timer.start()
                    opt.step(grads)
                    timer.join()
                    time.sleep(0.02)         # a late SIGINT lands here, outside the step
                except KeyboardInterrupt:
                    interrupted += 1
                    timer.join()
                    time.sleep(0.02)
            except KeyboardInterrupt:
                interrupted += 1
            moved = [bool((p[probes] != b).all()) for p, b in zip(ps, before)]
            untouched = [bool((p[probes] == b).all()) for p, b in zip(ps, before)]
            counted = [opt.state[i]["step"] - s for i, s in zip((0, 1), steps)]
            ok = (all(moved) and counted == [1, 1]) or (all(untouched) and counted == [0, 0])
            if not ok:
                partial += 1
                print(f"trial {trial}: params moved {moved} untouched {untouched}, "
                      f"step counters advanced by {counted}", file=sys.stderr)
        print("interrupted", interrupted, "partial", partial)
        assert partial == 0, f"{partial} of 30 interrupted steps were half-applied"
    """, timeout=300)
    assert "interrupted" in r.stdout


def test_exception_in_lr_schedule_leaves_every_group_untouched():
    child("""
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal(N).astype(np.float32), rng.standard_normal(N).astype(np.float32)

        def lr(step):
            if step == 3:
                raise ZeroDivisionError("boom")
            return 1e-3

        opt = adaptopt.Adam([{"params": [a]}, {"params": [b], "lr": lr}])
        for _ in range(2):
            opt.step([grad(), grad(seed=2)])
        before = snapshot(opt)
        try:
            opt.step([grad(), grad(seed=2)])
        except ZeroDivisionError:
            pass
        else:
            raise AssertionError("the schedule's exception was swallowed")
        after = snapshot(opt)
        changed = [k for k in before if before[k] != after[k]]
        assert not changed, f"a step whose schedule raised changed {changed}"
    """)


def test_no_lost_hyperparameter_writes():
    """One thread steps, another edits lr 300 times: every write stays
    (nothing writes an older value back over it) and every step that starts
    after a write completed uses that write or a later one."""
    child("""
        p = np.zeros(4, np.float64)
        opt = adaptopt.SGD([p], lr=1e-3)
        g = np.ones(4, np.float64)
        group = opt.param_groups[0]
        values = [1e-3 * (k + 2) for k in range(300)]   # increasing, all distinct
        writes = []                                      # (time the write completed, value)
        lost = []
        steps = []                                       # (start, lr used)
        done = threading.Event()

        def editor():
            for v in values:
                group["lr"] = v
                writes.append((time.perf_counter(), v))
                time.sleep(0.0002)
                now = group["lr"]
                if now != v:
                    lost.append((v, now))
            done.set()

        def stepper():
            while not done.is_set():
                before = p[0]
                t0 = time.perf_counter()
                opt.step([g])
                steps.append((t0, before - p[0]))

        sys.setswitchinterval(1e-5)
        threads = [threading.Thread(target=editor), threading.Thread(target=stepper)]
        for t in threads: t.start()
        for t in threads: t.join()
        assert not lost, f"{len(lost)} of {len(values)} writes were overwritten, e.g. {lost[:3]}"
        assert group["lr"] == values[-1]
        never_used = 0
        for t0, used in steps:
            latest = max((v for tw, v in writes if tw < t0), default=1e-3)
            if used < latest * (1 - 1e-6):
                never_used += 1
        assert never_used == 0, (f"{never_used} of {len(steps)} steps used an lr older than "
                                 "the last write completed before they started")
        opt.step([g])  # after the editor: the last value
        assert len(steps) > 10
    """, timeout=180)


# --- the torch drop-in -----------------------------------------------------
TORCH = r'''
import copy
import torch
import adaptopt.torch as aopt


def tstepped(cls=None, n=N, steps=1, **kw):
    cls = cls or aopt.Adam
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(n))
    opt = cls([p], **kw)
    for _ in range(steps):
        p.grad = torch.randn(n)
        opt.step()
    return p, opt


def tsnap(opt):
    out = {}
    for g in opt.param_groups:
        for p in g["params"]:
            out[f"param {id(p)}"] = p.detach().clone()
            for k, v in opt.state.get(p, {}).items():
                out[f"state {id(p)} {k}"] = v.detach().clone() if isinstance(v, torch.Tensor) else v
    return out


def tsame(a, b):
    assert a.keys() == b.keys(), (a.keys(), b.keys())
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor) and x.shape == y.shape and x.dtype == y.dtype, k
            assert torch.equal(x.reshape(-1).contiguous().view(torch.uint8),
                               y.reshape(-1).contiguous().view(torch.uint8)), k
        else:
            assert x == y, (k, x, y)


def trejected(opt, p, names):
    before = tsnap(opt)
    try:
        opt.step()
    except (TypeError, ValueError) as e:
        for name in names:  # a tuple: any of these
            alts = name if isinstance(name, tuple) else (name,)
            assert any(a in str(e) for a in alts), f"the error does not name {name!r}: {e}"
        print("REJECTED", type(e).__name__, e)
    else:
        raise AssertionError(f"the step accepted it (should raise naming {names})")
    tsame(before, tsnap(opt))


def tused(opt, p):
    """The step equals that of a fresh adaptopt.torch twin loaded with the same state."""
    q = torch.nn.Parameter(p.detach().clone())
    twin = type(opt)([q], **{k: v for k, v in opt.param_groups[0].items() if k != "params"})
    twin.load_state_dict(copy.deepcopy(opt.state_dict()))  # torch's state_dict shares tensors
    q.grad = p.grad.clone()
    opt.step(); twin.step()
    assert torch.equal(p.detach().view(torch.int32), q.detach().view(torch.int32)), "param differs"
    for k, v in twin.state[q].items():
        w = opt.state[p][k]
        assert torch.equal(w.reshape(-1).view(torch.uint8), v.reshape(-1).view(torch.uint8)), k
    print("USED")
'''


def torch_child(body, timeout=180):
    pytest.importorskip("torch", reason="the torch drop-in tests need torch")
    return child(TORCH + textwrap.dedent(body), timeout=timeout)


def test_torch_state_resized_in_place():
    torch_child("""
        p, opt = tstepped(steps=2)
        opt.state[p]["exp_avg"].resize_(10)   # the kernel wrote 1,000 elements into it
        p.grad = torch.randn(N)
        trejected(opt, p, ["exp_avg"])
        p, opt = tstepped(steps=2)
        opt.state[p]["exp_avg_sq"].resize_(5 * N)  # grown: reallocated
        p.grad = torch.randn(N)
        trejected(opt, p, ["exp_avg_sq"])
    """)


def test_torch_storage_resized_in_place():
    # torch itself reads past such a storage's end; the step must refuse it
    torch_child("""
        def shrink(t):
            t.untyped_storage().resize_(0)       # as FSDP frees a parameter
            t.untyped_storage().resize_(t.numel() * t.element_size() // 4)
        def readable(opt, bad):  # every tensor but the shrunk one (reading it overruns)
            out = {}
            for q in opt.param_groups[0]["params"]:
                for k, v in [("param", q), *opt.state[q].items()]:
                    if isinstance(v, torch.Tensor) and v is not bad:
                        out[k] = v.detach().clone()
            return out
        for which in ("exp_avg", "param", "grad"):
            p, opt = tstepped(steps=2)
            p.grad = torch.randn(N)
            bad = {"exp_avg": opt.state[p]["exp_avg"], "param": p, "grad": p.grad}[which]
            shrink(bad)
            before = readable(opt, bad)
            try:
                opt.step()
            except ValueError as e:
                assert "storage" in str(e), e
            else:
                raise AssertionError(f"a shrunk {which} storage was accepted")
            tsame(before, readable(opt, bad))
    """)


def test_torch_param_resized_in_place():
    torch_child("""
        p, opt = tstepped(steps=2)
        p.requires_grad_(False)
        p.resize_(10)                    # in place, same tensor object
        p.requires_grad_(True)
        p.grad = torch.randn(10)
        trejected(opt, p, [("exp_avg", "shape")])
    """)


def test_torch_negative_step_tensor():
    torch_child("""
        for bad in (torch.tensor(-5.), torch.tensor(float("nan")), torch.tensor(float("inf")),
                    torch.tensor(2.5), -1):
            p, opt = tstepped(steps=2)
            opt.state[p]["step"] = bad       # was "math domain error"
            p.grad = torch.randn(N)
            trejected(opt, p, ["step"])
    """)


def test_torch_replaced_state_tensor_is_used_or_rejected():
    torch_child("""
        p, opt = tstepped(steps=2)
        opt.state[p]["exp_avg"] = torch.full((N,), 0.25)
        p.grad = torch.randn(N)
        tused(opt, p)
        p, opt = tstepped(steps=2)
        opt.state[p]["exp_avg"] = torch.zeros(10)
        p.grad = torch.randn(N)
        trejected(opt, p, ["exp_avg"])
        p, opt = tstepped(steps=2)
        opt.state[p]["exp_avg"] = torch.zeros(N, dtype=torch.float16)
        p.grad = torch.randn(N)
        trejected(opt, p, ["exp_avg"])
    """)


def test_torch_state_aliasing_param():
    torch_child("""
        p, opt = tstepped(steps=2)
        opt.state[p]["exp_avg"] = p.data
        p.grad = torch.randn(N)
        trejected(opt, p, ["exp_avg"])
    """)
