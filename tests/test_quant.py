"""8-bit optimizer state (issue 14): the block codecs in C against the NumPy
spec (adaptopt._quant) bit for bit on every SIMD path, the maps against
bitsandbytes' definition, and state_dtype='int8' optimizers against the
reference, through state dicts and on hostile input."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_bitwise, assert_same_state

import adaptopt
from adaptopt import _kernels, _precision, _quant, _rounding, reference

ROOT = Path(__file__).resolve().parents[1]
F32 = np.float32


def c_quantize(x, signed, key=None, n_threads=1):
    x = np.ascontiguousarray(x, F32).reshape(-1)
    codes = np.empty(x.size, np.uint8)
    absmax = np.empty(_quant.n_blocks(x.size), F32)
    assert _kernels.q8_quantize(x, codes, absmax, signed, key is not None, key or 0,
                                n_threads) == 0
    return codes, absmax


def c_dequantize(codes, absmax, signed, n_threads=1):
    out = np.empty(codes.size, F32)
    assert _kernels.q8_dequantize(codes, absmax, out, signed, n_threads) == 0
    return out


def check_codec(x, signed, key=None):
    """C and the reference give the same codes and absmax, and decode alike."""
    bits = None if key is None else _rounding.sr_bits(key, np.size(x))
    codes, absmax = _quant.quantize(x, signed, bits)
    for nt in (1, 2):
        c, a = c_quantize(x, signed, key, nt)
        assert_bitwise(c, codes.reshape(-1), f"codes (signed={signed}, key={key})")
        assert_bitwise(a, absmax, f"absmax (signed={signed}, key={key})")
        assert_bitwise(c_dequantize(c, a, signed, nt),
                       _quant.dequantize(codes, absmax, signed).reshape(-1), "decoded")
    return codes, absmax


# --- the maps
def test_maps_are_bitsandbytes_dynamic_maps():
    """The definition (bitsandbytes.functional.create_dynamic_map, 7 exponent
    bits), evaluated with torch's float32 linspace; bitsandbytes itself when it
    is installed."""
    torch = pytest.importorskip("torch", reason="torch's linspace defines the map")

    def dynamic(signed):
        vals = [0.0, 1.0]
        for i in range(7):
            n = 2 ** i if signed else 2 ** (i + 1)
            edges = torch.linspace(0.1, 1, n + 1, dtype=torch.float32)
            mids = (10 ** (i - 6)) * ((edges[:-1] + edges[1:]) / 2.0)
            vals += mids.tolist() + ((-mids).tolist() if signed else [])
        return torch.tensor(sorted(vals), dtype=torch.float32).numpy()

    for signed, m in ((True, _quant.MAP_S), (False, _quant.MAP_U)):
        assert_bitwise(m, dynamic(signed), f"signed={signed}")
    try:
        from bitsandbytes.functional import create_dynamic_map
    except Exception:  # noqa: BLE001 - optional peer: absent or not importable here
        return
    assert_bitwise(_quant.MAP_S, create_dynamic_map(signed=True).numpy())
    assert_bitwise(_quant.MAP_U, create_dynamic_map(signed=False).numpy())


def test_the_map_shapes():
    assert _quant.MAP_S[127] == 0 and _quant.MAP_S[255] == 1 and _quant.MAP_S[0] > -1
    assert _quant.MAP_U[0] == 0 and _quant.MAP_U[255] == 1
    assert np.all(np.diff(_quant.MAP_S) > 0) and np.all(np.diff(_quant.MAP_U) > 0)


def test_generated_tables_are_up_to_date():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_quant.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# --- the codec, C against the reference
@pytest.mark.parametrize("signed", [True, False])
def test_every_code_round_trips(signed, isa):
    m = _quant.MAP_S if signed else _quant.MAP_U
    for A in (F32(1), F32(3.7), F32(1e-30), F32(6e37), F32(2.0 ** -100)):
        x = (m * A).astype(F32)                 # one block: all 256 codes, absmax A
        codes, absmax = check_codec(x, signed)
        assert_bitwise(codes, np.arange(256, dtype=np.uint8), f"A={A}")
        assert absmax[0] == A


@pytest.mark.parametrize("signed", [True, False])
def test_every_float_cell_and_the_midpoints(signed, isa):
    """|y| over every bfloat16-sized cell of [0, 1] at several low bit
    patterns, and 4 ULP either side of every midpoint: blocks led by 1.0
    (absmax 1, so y = x)."""
    hi = np.arange(0, 0x3F81, dtype=np.uint32) << 16
    lows = np.array([0, 1, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF], np.uint32)
    u = (hi[:, None] | lows[None, :]).reshape(-1)
    u = u[u <= 0x3F800000]
    P = _quant.magnitudes(signed)
    mid = ((P[:-1].astype(np.float64) + P[1:]) / 2).astype(F32).view(np.int32)
    near = (mid[:, None] + np.arange(-4, 5, dtype=np.int32)[None, :]).reshape(-1)
    x = np.concatenate([u.view(F32), near.astype(np.uint32).view(F32)])
    x = np.concatenate([x, -x]) if signed else x
    blocks = np.zeros((-(-x.size // 255), 256), F32)
    blocks[:, 0] = 1
    blocks[:, 1:].reshape(-1)[:x.size] = x
    check_codec(blocks, signed)


def test_ties_go_toward_zero():
    """A value exactly half-way between two magnitudes takes the smaller one."""
    P = _quant.magnitudes(True).astype(np.float64)
    mid = (P[:-1] + P[1:]) / 2
    exact = np.flatnonzero(mid.astype(F32).astype(np.float64) == mid)
    assert exact.size > 10
    y = mid[exact].astype(F32)
    block = np.concatenate([[F32(1)], y, -y]).astype(F32)
    codes, _ = check_codec(block, True)
    assert_bitwise(codes[1:1 + y.size], (127 + exact).astype(np.uint8), "positive ties")
    assert_bitwise(codes[1 + y.size:], (127 - exact).astype(np.uint8), "negative ties")


@pytest.mark.parametrize("signed", [True, False])
def test_special_blocks(signed, isa):
    nan, inf = F32(np.nan), F32(np.inf)
    z = _quant.ZERO_CODE[signed]
    cases = {"zeros": np.zeros(256, F32), "neg zeros": -np.zeros(300, F32),
             "nan": np.r_[np.ones(10, F32), nan], "inf": np.r_[inf, np.ones(5, F32)],
             "-inf": np.r_[-inf, np.ones(5, F32)],
             "subnormal absmax": np.array([1e-45, -3e-42, 2e-39, 0], F32),
             "huge": np.array([3e38, -1e38, 1.0], F32), "empty": np.zeros(0, F32),
             "one": np.array([-0.3], F32)}
    for what, x in cases.items():
        x = x if signed else np.abs(x)
        codes, absmax = check_codec(x, signed)
        if what in ("zeros", "neg zeros"):
            assert np.all(codes == z) and np.all(absmax == 0), what
        if what in ("nan", "inf", "-inf"):
            assert np.all(codes == z) and np.isnan(absmax[0]), what
            assert absmax.view(np.uint32)[0] == 0x7FC00000
    # a non-finite value poisons its own block only
    x = np.ones(600, F32)
    x[300] = np.nan
    codes, absmax = check_codec(x, signed)
    assert np.isnan(absmax[1]) and absmax[0] == 1 and absmax[2] == 1


@pytest.mark.parametrize("signed", [True, False])
def test_random_arrays_all_sizes(signed, isa):
    rng = np.random.default_rng(int(signed))
    for n in (1, 7, 8, 9, 255, 256, 257, 1000, 70001):
        x = (rng.standard_normal(n) * np.exp(rng.uniform(-40, 10, n))).astype(F32)
        x[rng.random(n) < 0.05] = 0
        x = x if signed else np.abs(x)
        check_codec(x, signed)
        check_codec(x, signed, key=0xDEADBEEF)


def test_stochastic_rounding_is_unbiased_and_deterministic():
    """Between two codes a value rounds up with probability frac (within 5 sigma
    over 2**16 elements), and the same bits give the same codes."""
    P = _quant.magnitudes(True)
    lo, hi = P[200 - 127], P[201 - 127]
    for frac in (0.1, 0.5, 0.9):
        v = F32(lo + F32(frac) * (hi - lo))
        x = np.full(1 << 16, v, F32)
        x[::256] = 1                            # absmax 1 in every block
        c1, _ = check_codec(x, True, key=12345)
        c2, _ = c_quantize(x, True, key=12345)
        assert_bitwise(c1.reshape(-1), c2)
        body = np.ones(x.size, bool)
        body[::256] = False
        up = np.mean(c1.reshape(-1)[body] == 201)
        assert np.all(np.isin(c1.reshape(-1)[body], [200, 201]))
        f = (float(v) - float(lo)) / (float(hi) - float(lo))
        assert abs(up - f) < 5 * np.sqrt(f * (1 - f) / body.sum()), (frac, up)
    assert not np.array_equal(c_quantize(x, True, key=1)[0], c_quantize(x, True, key=2)[0])


# --- optimizers with state_dtype='int8'
OPTIONS = {"Adam": {}, "AdamW": {"weight_decay": 0.1}, "AMSGrad": {"amsgrad": True},
           # not centered: sq - avg**2 of independently quantised buffers can be < 0 (NaN)
           "Adagrad": {"initial_accumulator_value": 0.1}, "RMSprop": {"momentum": 0.9},
           "SGD": {"momentum": 0.9, "nesterov": True}, "Lion": {}}
SHAPES = [(64, 64), (4097,), (40000,), (100,)]   # exactly 4096, a partial block, threads, small


def _run(cls, name, stochastic, n_threads=None):
    rng = np.random.default_rng([list(OPTIONS).index(name), stochastic])
    ps = [rng.standard_normal(s).astype(F32) for s in SHAPES]
    kw = dict(OPTIONS[name], lr=1e-2, state_dtype="int8", stochastic_rounding=stochastic,
              seed=99)
    if n_threads is not None:
        kw["n_threads"] = n_threads
    opt = getattr(cls, "Adam" if name == "AMSGrad" else name)(ps, **kw)
    for _ in range(3):
        opt.step([(rng.standard_normal(s) * 10.0 ** rng.uniform(-3, 1, s)).astype(F32)
                  for s in SHAPES])
    return ps, opt


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("stochastic", [False, True])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_int8_state_bitwise_equal_to_reference(name, stochastic, n_threads, isa):
    p_ref, ref = _run(reference, name, stochastic)
    p, fast = _run(adaptopt, name, stochastic, n_threads)
    for i, (a, b) in enumerate(zip(p, p_ref)):
        assert_bitwise(a, b, f"{name} params[{i}]")
    assert_same_state(fast, ref)
    st = fast.state
    for i, s in enumerate(SHAPES):
        bufs = [k for k in st[i] if k in fast.spec.all_buffers]
        want = np.uint8 if np.prod(s) >= _quant.MIN_SIZE else F32
        assert bufs and all(st[i][k].dtype == want for k in bufs), (i, bufs)


def test_int8_state_is_about_two_bytes_per_parameter_for_adam():
    p = np.zeros(1 << 16, F32)
    opt = adaptopt.Adam([p], state_dtype="int8")
    opt.step([np.ones_like(p)])
    nbytes = sum(v.nbytes for v in opt.state[0].values() if isinstance(v, np.ndarray))
    assert nbytes / p.size == 2 + 2 * 4 / 256  # 2.03125


def test_int8_moves_and_trains_like_float32():
    """Not vacuous: the 8-bit state differs from float32's, yet a quadratic
    converges as well."""
    rng = np.random.default_rng(0)
    target = rng.standard_normal(8192).astype(F32)
    out = {}
    for sd in ("float32", "int8"):
        w = np.zeros_like(target)
        opt = adaptopt.Adam([w], lr=0.05, state_dtype=sd)
        for _ in range(200):
            opt.step([2 * (w - target)])
        out[sd] = w
    assert not np.array_equal(out["float32"], out["int8"])
    assert np.abs(out["int8"] - target).max() < 0.05


def test_state_dict_round_trip_and_conversions():
    rng = np.random.default_rng(1)
    p = rng.standard_normal(5000).astype(F32)
    g = rng.standard_normal(5000).astype(F32)
    opt = adaptopt.Adam([p], lr=1e-2, state_dtype="int8")
    opt.step([g])
    sd = opt.state_dict()
    assert sd["state"][0]["exp_avg"].dtype == np.uint8
    assert sd["state"][0]["exp_avg_absmax"].shape == (_quant.n_blocks(5000),)
    q = p.copy()
    twin = adaptopt.Adam([q], lr=1e-2, state_dtype="int8")
    twin.load_state_dict(sd)
    opt.step([g])
    twin.step([g])
    assert_bitwise(p, q, "after a state_dict round trip")
    assert_same_state(twin, opt)
    # dequantize=True: float32 buffers, no absmax, that a float32 optimizer loads
    flat = opt.state_dict(dequantize=True)
    assert set(flat["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    st = opt.state[0]
    assert_bitwise(flat["state"][0]["exp_avg"],
                   _quant.dequantize(st["exp_avg"], st["exp_avg_absmax"], True))
    f32 = adaptopt.Adam([p.copy()], lr=1e-2)
    flat["param_groups"][0]["state_dtype"] = None
    f32.load_state_dict(flat)
    # a float32 state loaded into an int8 optimizer is quantised (nearest)
    back = adaptopt.Adam([p.copy()], lr=1e-2, state_dtype="int8")
    fsd = f32.state_dict()
    fsd["param_groups"][0]["state_dtype"] = "int8"
    back.load_state_dict(fsd)
    codes, absmax = _quant.quantize(f32.state[0]["exp_avg_sq"], False)
    assert_bitwise(back.state[0]["exp_avg_sq"], codes)
    assert_bitwise(back.state[0]["exp_avg_sq_absmax"], absmax)
    # and an int8 state loaded into a float32 optimizer is decoded
    f32b = adaptopt.Adam([p.copy()], lr=1e-2)
    sd2 = opt.state_dict()
    sd2["param_groups"][0]["state_dtype"] = None
    f32b.load_state_dict(sd2)
    assert_bitwise(f32b.state[0]["exp_avg"], flat["state"][0]["exp_avg"])


def test_dequantized_state_loads_into_torch_optim():
    torch = pytest.importorskip("torch", reason="torch.optim is the peer")
    p = np.random.default_rng(2).standard_normal(4096).astype(F32)
    opt = adaptopt.Adam([p], lr=1e-3, state_dtype="int8")
    opt.step([np.ones_like(p)])
    sd = opt.state_dict(dequantize=True)
    tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
    topt = torch.optim.Adam([tp], lr=1e-3)
    st = {0: {"step": torch.tensor(float(sd["state"][0]["step"])),
              **{k: torch.from_numpy(v) for k, v in sd["state"][0].items() if k != "step"}}}
    topt.load_state_dict({"state": st, "param_groups": [
        {**torch.optim.Adam([tp]).param_groups[0], "params": [0], "lr": 1e-3}]})
    tp.grad = torch.ones_like(tp)
    topt.step()
    assert torch.isfinite(tp).all()


def test_hostile_int8_input_changes_nothing():
    p = np.ones(5000, F32)
    with pytest.raises(ValueError, match="state_dtype"):
        adaptopt.Adam([p], state_dtype="int4")
    with pytest.raises(TypeError, match="state_dtype='int8'.*float64"):
        adaptopt.Adam([np.ones(5000)], state_dtype="int8").step([np.ones(5000)])
    opt = adaptopt.Adam([p], state_dtype="int8")
    opt.step([np.ones_like(p)])
    before = p.copy()
    st = {k: v.copy() for k, v in opt.state[0].items() if isinstance(v, np.ndarray)}
    good = opt.state[0]["exp_avg_absmax"]
    for bad in (good[:-1].copy(), good.astype(np.float64), good.copy()[::-1][::-1][:0]):
        opt.state[0]["exp_avg_absmax"] = bad
        with pytest.raises(ValueError, match="exp_avg_absmax"):
            opt.step([np.ones_like(p)])
    opt.state[0]["exp_avg_absmax"] = good
    del opt.state[0]["exp_avg_sq_absmax"]
    with pytest.raises(ValueError, match="exp_avg_sq_absmax"):
        opt.step([np.ones_like(p)])
    assert_bitwise(p, before)
    for k, v in st.items():
        if k in opt.state[0]:
            assert_bitwise(opt.state[0][k], v, k)
    sd = opt.state_dict()
    sd["state"][0]["exp_avg_absmax"] = np.zeros(3, F32)
    with pytest.raises(ValueError, match="exp_avg_absmax"):
        adaptopt.Adam([p.copy()], state_dtype="int8").load_state_dict(sd)


def test_centered_rmsprop_with_int8_state_is_refused_and_changes_nothing():
    """v - grad_avg**2 of two independently quantised buffers can be < 0: refused."""
    p = np.ones(5000, F32)
    with pytest.raises(ValueError, match="centered=True.*state_dtype='int8'"):
        adaptopt.RMSprop([p], centered=True, state_dtype="int8")
    opt = adaptopt.RMSprop([p], state_dtype="int8")
    opt.step([np.full_like(p, 0.5)])
    before = p.copy()
    st = {k: np.copy(v) for k, v in opt.state[0].items()}
    opt.param_groups[0]["centered"] = True   # turned on between steps
    with pytest.raises(ValueError, match="centered=True.*state_dtype='int8'"):
        opt.step([np.full_like(p, 0.5)])
    assert_bitwise(p, before)
    assert set(opt.state[0]) == set(st)
    for k, v in st.items():
        assert_bitwise(np.asarray(opt.state[0][k]), v, k)
    adaptopt.RMSprop([p.copy()], centered=True, state_dtype="bfloat16")  # 16-bit: allowed


def test_c_entry_points_reject_bad_sizes():
    x = np.zeros(300, F32)
    with pytest.raises(ValueError, match="absmax"):
        _kernels.q8_quantize(x, np.empty(300, np.uint8), np.empty(1, F32), True, False, 0, 1)
    assert _kernels.q8_quantize(x, np.empty(300, np.uint8), np.empty(2, F32), True, False, 0,
                                0) == _kernels.EINVAL
    assert _precision.is_signed("exp_avg") and not _precision.is_signed("exp_avg_sq")


def test_torch_dropin_refuses_int8_state_clearly():
    torch = pytest.importorskip("torch", reason="the torch drop-in")
    import adaptopt.torch as ot
    p = torch.nn.Parameter(torch.zeros(5000))
    with pytest.raises(ValueError, match="state_dtype='int8'.*NumPy API"):
        ot.Adam([p], state_dtype="int8")
    opt = ot.Adam([p])
    with pytest.raises(ValueError, match="state_dtype='int8'"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(3))],
                             "state_dtype": "int8"})


def test_demo_state_precision_quick():
    pytest.importorskip("sklearn", reason="the digits data ships with scikit-learn")
    from adaptopt import demo
    r = demo.run("state-precision", quick=True)
    accs = {x["state_dtype"]: x["mean_accuracy"] for x in r["digits"]}
    assert accs["int8"] > 0.5 and abs(accs["int8"] - accs["float32"]) < 0.1
    assert {x["state_dtype"]: x["W1_state"] for x in r["digits"]}["int8"] == ["uint8"]
