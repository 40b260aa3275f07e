"""The command line, run as users run it: ``python -m adaptopt ...`` in a subprocess."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import adaptopt
from adaptopt import demo
from adaptopt.__main__ import main

PNG = b"\x89PNG\r\n\x1a\n"
# Runs the CLI with some modules made unimportable (None in sys.modules).
WITHOUT = ("import sys\n"
           "for m in sys.argv[1].split(','): sys.modules[m] = None\n"
           "from adaptopt.__main__ import main\n"
           "sys.exit(main(sys.argv[2:]))\n")


def cli(*args, cwd, without=None, env=None):
    cmd = [sys.executable]
    cmd += ["-c", WITHOUT, ",".join(without)] if without else ["-m", "adaptopt"]
    return subprocess.run(cmd + [str(a) for a in args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def assert_one_line_error(res):
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("adaptopt") and "error:" in lines[0]
    return lines[0]


# --- info -----------------------------------------------------------------------
def test_info_json(tmp_path):
    res = cli("info", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["version"] == adaptopt.__version__
    assert isinstance(info["openmp"], bool)
    assert info["isa"] in info["isa_available"]
    assert info["num_threads"] >= 1
    assert info == json.loads(json.dumps(adaptopt.show_config(mode="dicts")))


def test_info_text(tmp_path):
    res = cli("info", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    cfg = adaptopt.show_config(mode="dicts")
    out = res.stdout
    assert out.startswith(f"adaptopt {adaptopt.__version__}\n")
    for label, value in (("compiler", cfg["compiler"]),
                         ("OpenMP", "yes" if cfg["openmp"] else "no"),
                         ("SIMD in use", cfg["isa"]), ("NumPy", cfg["numpy"]),
                         ("threads", str(cfg["num_threads"]))):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(label))
        assert value in line, (label, line)
    assert "flags" in out


# --- demo -----------------------------------------------------------------------
def test_demo_quick_writes_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "plots"
    res = cli("demo", "--quick", "--out", out, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == sorted(Path(demo.plot_path(n, "")).name for n in demo.NAMES)
    for p in pngs:
        data = p.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, p
    # the user is told where the plots are, and sees every experiment's table
    assert str(out.resolve()) in res.stdout.splitlines()[-1]
    for number, title, _ in demo.EXPERIMENTS.values():
        assert f"== {number}. {title} ==" in res.stdout
    assert "final epoch loss" in res.stdout and "x after 50" in res.stdout


def test_demo_no_plot_writes_nothing(tmp_path):
    out = tmp_path / "never"
    res = cli("demo", "--quick", "--no-plot", "--only", "quadratic-1d,eps-sensitivity",
              "--out", out, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert not out.exists() and not list(tmp_path.iterdir())
    assert "x after 25" in res.stdout and "loss x 0.001" in res.stdout
    assert "final epoch loss" not in res.stdout          # --only left the others out
    assert "plot:" not in res.stdout and "written to" not in res.stdout


def test_demo_without_matplotlib_or_tqdm(tmp_path):
    out = tmp_path / "plots"
    res = cli("demo", "--quick", "--only", "quadratic-1d", "--out", out, cwd=tmp_path,
              without=["matplotlib", "tqdm", "tqdm.auto"])
    assert res.returncode == 0, res.stderr
    assert "x after 10" in res.stdout
    assert 'pip install "adaptopt[plot]"' in res.stdout
    assert not out.exists()


def test_demo_seed_is_used(tmp_path):
    a = cli("demo", "--quick", "--no-plot", "--only", "linear-regression", "--seed", "7",
            cwd=tmp_path)
    assert a.returncode == 0, a.stderr
    r = demo.run("linear-regression", quick=True, seed=7)
    assert "seed 7" in a.stdout
    assert f"{r['runs'][0]['final_loss']:.6g}" in a.stdout


@pytest.mark.parametrize("args, expected", [
    (["demo", "--seed", "-1"], "--seed"),
    (["demo", "--seed", "1.5"], "--seed"),
    (["demo", "--only", "nope"], "unknown experiment 'nope'"),
    (["demo", "--bogus"], "unrecognized arguments"),
    (["frobnicate"], "invalid choice"),
])
def test_usage_errors_are_one_line(tmp_path, args, expected):
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == 2
    assert expected in assert_one_line_error(res)
    assert res.stdout == ""


@pytest.mark.parametrize("how", ["with matplotlib", "without matplotlib", "--no-plot"])
def test_unusable_output_dir_is_an_error(tmp_path, how):
    """An --out that plots cannot go to is refused before any work, plots or not."""
    without, extra = None, []
    if how == "with matplotlib":
        pytest.importorskip("matplotlib")
    elif how == "without matplotlib":
        without = ["matplotlib"]
    else:
        extra = ["--no-plot"]
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for out in (blocker, blocker / "sub"):
        res = cli("demo", "--quick", *extra, "--out", out, cwd=tmp_path, without=without)
        line = assert_one_line_error(res)
        assert res.returncode == 2
        assert "cannot write plots" in line and str(out) in line
        assert res.stdout == ""                        # refused before any work
    assert blocker.read_text() == "not a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_default_output_dir_unused_without_plots(tmp_path):
    """Without matplotlib and without --out, nothing is checked or created."""
    res = cli("demo", "--quick", "--only", "quadratic-1d", cwd=tmp_path, without=["matplotlib"])
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == (
        'matplotlib is not installed, so no plots were made; for the plots: '
        'pip install "adaptopt[plot]"')
    assert not list(tmp_path.iterdir())


# --- bench ----------------------------------------------------------------------
def test_bench(tmp_path):
    res = cli("bench", "--sizes", "1000,1K", "--repeat", "2", "--optimizers", "adam,sgd",
              "--json", "b.json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "NumPy reference" in res.stdout.splitlines()[0]
    rows = [ln.split() for ln in res.stdout.splitlines() if ln.startswith(("Adam", "SGD"))]
    assert [(r[0], r[-4]) for r in rows] == [("Adam", "1000"), ("SGD", "1000"),
                                             ("Adam", "1K"), ("SGD", "1K")]
    records = json.loads((tmp_path / "b.json").read_text())["records"]
    assert [(r["optimizer"].split()[0], r["size"]) for r in records] == [
        ("Adam", 1000), ("SGD", 1000), ("Adam", 1024), ("SGD", 1024)]
    for r, row in zip(records, rows):
        fast, ref, ratio = float(row[-3]), float(row[-2]), float(row[-1].rstrip("x"))
        assert r["adaptopt_s"] > 0 and r["numpy_s"] > 0
        assert fast == pytest.approx(r["adaptopt_s"] * 1e6, abs=0.06)
        assert ref == pytest.approx(r["numpy_s"] * 1e6, abs=0.06)
        assert ratio == pytest.approx(r["speedup"], abs=0.06)
        assert r["speedup"] == pytest.approx(r["numpy_s"] / r["adaptopt_s"])


def test_bench_help_names_the_peer_suite(tmp_path):
    res = cli("bench", "--help", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "--sizes" in res.stdout and "--repeat" in res.stdout
    assert "bench/suite.py" in res.stdout


def test_bench_python_api_matches_cli_choices():
    import io
    out = io.StringIO()
    records = adaptopt.bench(sizes=[64], dtype="float64", optimizers=["rmsprop"], repeat=1,
                             n_threads=1, file=out)
    assert [(r["optimizer"], r["size"], r["dtype"], r["threads"]) for r in records] == [
        ("RMSprop", 64, "float64", 1)]
    assert "RMSprop" in out.getvalue()
    for kw, err in [({"optimizers": ["nope"]}, "unknown optimizer 'nope'"),
                    ({"sizes": [0]}, "sizes"), ({"repeat": 0}, "repeat"),
                    ({"dtype": "float16"}, "dtype"), ({"n_threads": 0}, "n_threads")]:
        with pytest.raises(ValueError, match=err):
            adaptopt.bench(**kw, file=out)


@pytest.mark.parametrize("args, expected", [
    (["--optimizers", "adam,nope"], "unknown optimizer 'nope'"),
    (["--sizes", "0"], "--sizes"),
    (["--sizes", "3Q"], "--sizes"),
    (["--repeat", "x"], "--repeat"),
    (["--threads", "0"], "--threads"),
    (["--dtype", "float16"], "--dtype"),
])
def test_bench_errors(tmp_path, args, expected):
    res = cli("bench", *args, cwd=tmp_path)
    assert res.returncode == 2
    assert expected in assert_one_line_error(res)


# --- the rest ---------------------------------------------------------------------
def test_unexpected_exception_is_one_line(monkeypatch, capsys):
    def broken(mode="stdout"):
        raise RuntimeError("boom\nsecond line")
    monkeypatch.setattr(adaptopt, "show_config", broken)
    monkeypatch.delenv("ADAPTOPT_DEBUG", raising=False)
    assert main(["info"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError: boom second line" in err
    assert "Traceback" not in err
    monkeypatch.setenv("ADAPTOPT_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        main(["info"])


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "info" in out and "demo" in out and "bench" in out


def test_version(tmp_path):
    res = cli("--version", cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == f"adaptopt {adaptopt.__version__}"


def test_console_script(tmp_path):
    script = Path(sys.executable).with_name("adaptopt")
    if not script.exists():
        pytest.skip("the adaptopt console script is not installed next to this Python")
    res = subprocess.run([str(script), "info", "--json"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["version"] == adaptopt.__version__


def test_help_and_demo_name_the_tutorials(tmp_path):
    """Users read about the tutorials the experiments come from, by title, not 'seeds'."""
    texts = [cli(*args, cwd=tmp_path) for args in (["--help"], ["demo", "--help"],
                                                  ["bench", "--help"],
                                                  ["demo", "--quick", "--no-plot"])]
    for res in texts:
        assert res.returncode == 0, res.stderr
        flat = " ".join(res.stdout.split())
        assert "seeds" not in flat.lower() and "seed 00" not in flat.lower(), flat
    for title in demo.TUTORIALS:
        assert f'"{title}"' in " ".join(texts[1].stdout.split())
        assert f'"{title}"' in texts[3].stdout
