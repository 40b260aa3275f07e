"""bench/suite.py, the peer benchmark suite, runs end to end and writes well-formed records.

No timing assertions: only that a tiny --quick run succeeds, that every
record has the documented fields with positive finite numbers, and that
missing peers are skipped cleanly.
"""
import json
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import suite as benchmark  # noqa: E402  (bench/suite.py: kept beside the package, not in it)

TINY = ["--quick", "--sizes", "1K,3x256", "--algos", "adam,amsgrad,rmsprop-centered,sgd-nesterov",
        "--dtypes", "float32,float64", "--threads", "1,2", "--budget", "0.002", "--rounds", "2",
        "--min-rounds", "1", "--no-progress"]

COMMON = {"kind": str, "algo": str, "impl": str, "dtype": str, "n_arrays": int, "size": int,
          "n_elements": int, "size_label": str, "threads": int, "bytes_per_element": int,
          "median_s": float, "q1_s": float, "q3_s": float, "iqr_s": float, "min_s": float,
          "max_s": float, "n_samples": int, "step_us": float, "ns_per_element": float,
          "iqr_pct": float, "stat": str}
POSITIVE = ["median_s", "q1_s", "q3_s", "min_s", "max_s", "n_samples", "step_us",
            "ns_per_element", "n_arrays", "size", "n_elements", "threads"]


def _impls():
    return ["adaptopt", "numpy", "roofline", "copy"]


def _positive_finite(rec, key):
    v = rec[key]
    assert isinstance(v, (int, float)) and not isinstance(v, bool), (key, v)
    assert math.isfinite(v) and v > 0, (key, v, rec)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    rc = benchmark.main(TINY + ["--impls", ",".join(_impls()), "--json", str(path)])
    assert rc == 0
    with open(path) as f:
        return json.load(f)


def test_meta(result):
    meta = result["meta"]
    assert meta["adaptopt"]["version"]
    assert set(meta["impls"]) >= set(_impls())
    assert meta["elapsed_s"] > 0
    assert isinstance(meta["skipped"], list)


def test_record_schema(result):
    records = result["records"]
    assert records
    for rec in records:
        for key, typ in COMMON.items():
            assert key in rec, (key, rec)
            if typ is float:
                assert isinstance(rec[key], (int, float)), (key, rec)
            else:
                assert isinstance(rec[key], typ), (key, rec)
        for key in POSITIVE:
            _positive_finite(rec, key)
        assert rec["iqr_s"] >= 0 and rec["q1_s"] <= rec["median_s"] <= rec["q3_s"]
        assert rec["min_s"] <= rec["median_s"] <= rec["max_s"]
        assert rec["n_elements"] == rec["n_arrays"] * rec["size"]
        assert rec["dtype"] in ("float32", "float64")
        assert rec["kind"] in ("step", "machine", "construct")
        if rec["kind"] != "construct":
            _positive_finite(rec, "gbps")
            _positive_finite(rec, "bytes_per_element")
        else:
            _positive_finite(rec, "construct_us")


def test_step_records(result):
    steps = [r for r in result["records"] if r["kind"] == "step"]
    cases = {(r["algo"], r["dtype"], r["size_label"], r["threads"]) for r in steps
             if r["impl"] == "adaptopt"}
    assert len(cases) == 4 * 2 * 2 * 2  # algos x dtypes x sizes x threads
    for r in steps:
        assert r["algo"] in benchmark.ALGOS
        itemsize = 4 if r["dtype"] == "float32" else 8
        assert r["bytes_per_element"] == benchmark.ALGOS[r["algo"]].bytes_per_element(itemsize)
        _positive_finite(r, "pct_roofline")
        _positive_finite(r, "roofline_gbps")
        if r["n_arrays"] == 1:  # the machine section measures single arrays only
            _positive_finite(r, "pct_machine_roofline")
            _positive_finite(r, "machine_roofline_gbps")
        if r["impl"] == "adaptopt":
            assert r["adaptopt_speedup"] is None
            assert {"numpy", "roofline"} <= set(r["speedup_vs"])
            for v in r["speedup_vs"].values():
                assert math.isfinite(v) and v > 0
        else:
            _positive_finite(r, "adaptopt_speedup")
        if r["impl"] == "numpy":
            assert r["threads"] == 1  # single-threaded: measured once
    # Adam float32 moves 28 bytes per element, AMSGrad 36
    adam = next(r for r in steps if r["algo"] == "adam" and r["dtype"] == "float32")
    assert adam["bytes_per_element"] == 28
    ams = next(r for r in steps if r["algo"] == "amsgrad" and r["dtype"] == "float64")
    assert ams["bytes_per_element"] == 72


def test_machine_and_construct_records(result):
    recs = result["records"]
    copies = [r for r in recs if r["kind"] == "machine" and r["impl"] == "copy"]
    roofs = [r for r in recs if r["kind"] == "machine" and r["impl"] == "roofline"]
    assert copies and all(r["threads"] == 1 for r in copies)
    assert {r["threads"] for r in roofs} == {1, 2}
    assert {r["pattern"] for r in roofs} >= {"r4w3", "r5w4", "r3w2"}
    assert {r["placement"] for r in roofs} == {"separate", "staggered"}
    cons = [r for r in recs if r["kind"] == "construct"]
    assert {r["impl"] for r in cons} >= {"adaptopt", "numpy"}


def test_torch_peers(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "b.json"
    rc = benchmark.main(["--quick", "--sizes", "1K", "--algos", "adam,rmsprop", "--threads", "1",
                         "--impls", "adaptopt,torch-single,torch-foreach,torch-fused",
                         "--budget", "0.001", "--rounds", "1", "--no-construct", "--no-progress",
                         "--json", str(path)])
    assert rc == 0
    data = json.loads(path.read_text())
    impls = {(r["algo"], r["impl"]) for r in data["records"]}
    assert {("adam", "torch-single"), ("adam", "torch-foreach"),
            ("rmsprop", "torch-single")} <= impls
    assert ("rmsprop", "torch-fused") not in impls  # torch has no fused RMSprop: skipped
    assert any(s["impl"] == "torch-fused" and s["algo"] == "rmsprop"
               for s in data["meta"]["skipped"])
    adam = next(r for r in data["records"] if r["impl"] == "adaptopt" and r["algo"] == "adam")
    assert {"torch-single", "torch-foreach"} <= set(adam["speedup_vs"])


def test_missing_peer_is_skipped(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(benchmark, "_DS", {"error": "deepspeed not importable (test)"})
    path = tmp_path / "b.json"
    rc = benchmark.main(["--quick", "--sizes", "512", "--algos", "adam", "--threads", "1",
                         "--impls", "adaptopt,deepspeed", "--budget", "0.001", "--rounds", "1",
                         "--no-construct", "--no-progress", "--json", str(path)])
    assert rc == 0
    data = json.loads(path.read_text())
    assert "not importable" in data["meta"]["impls"]["deepspeed"]
    assert {r["impl"] for r in data["records"]} == {"adaptopt"}
    assert "skipping deepspeed" in capsys.readouterr().out


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "b.png"
    rc = benchmark.main(["--quick", "--sizes", "512,1K", "--algos", "sgd-momentum",
                         "--threads", "1", "--impls", "adaptopt,roofline,copy", "--budget", "0.001",
                         "--rounds", "1", "--no-construct", "--no-progress", "--plot", str(png)])
    assert rc == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("text, expected", [("4K", (1, 4096)), ("1M", (1, 1 << 20)),
                                            ("1000x1K", (1000, 1024)), ("65536", (1, 65536))])
def test_parse_size(text, expected):
    assert benchmark.parse_size(text) == expected


@pytest.mark.parametrize("argv", [["--sizes", "3Q"], ["--algos", "nope"], ["--impls", "nope"],
                                  ["--threads", "0"], ["--dtypes", "float16"]])
def test_bad_arguments(argv):
    with pytest.raises(SystemExit):
        benchmark.main(argv + ["--no-progress"])


def test_the_suite_is_not_in_the_package():
    """The installed package ships its small benchmark only (adaptopt.bench)."""
    import importlib.util

    import adaptopt
    assert importlib.util.find_spec("adaptopt.benchmark") is None
    assert callable(adaptopt.bench)
    assert not (Path(adaptopt.__file__).parent / "benchmark.py").exists()
