"""``owlet sim`` (the whole network on the RTL, :mod:`sim.cosim`) and ``owlet perf`` (the analytic
model, :mod:`firmware.perf`): :func:`register_cli` adds both to the ``owlet`` command parsers."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["DEFAULT_SIM_MODEL", "cmd_perf", "cmd_sim", "register_cli"]

#: What ``owlet sim`` (``make sim``) runs when no network is named (``--model``, ``--cfg``,
#: ``--qmodel``, ``--full``): the real YOLOv3-tiny on dog.png, about 23 M cycles (4.5 minutes
#: on two shared cores, docs/performance.md).
DEFAULT_SIM_MODEL = "yolov3-tiny"


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"not in [0, 1): {text}")
    return value


def _bandwidth(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 8.0:
        raise argparse.ArgumentTypeError(f"bytes per cycle must be in (0, 8]: {text}")
    return value


def engine_clock_mhz(requested: float | None) -> tuple[float, str]:
    """The clock an fps figure is projected at, and where it comes from: ``requested``, else the
    Fmax of the last ``make timing`` run, else :data:`firmware.perf.DEFAULT_CLOCK_MHZ`."""
    from firmware.perf import DEFAULT_CLOCK_MHZ
    from hdl.timing import TIMING_DIR, last_measured_fmax

    if requested is not None:
        return requested, "--clock-mhz"
    fmax = last_measured_fmax()
    if fmax is not None:  # to 0.1 MHz: as nextpnr prints it, and what a projection means
        return round(fmax, 1), f"the Fmax of the last make timing, {TIMING_DIR / 'timing.json'}"
    return DEFAULT_CLOCK_MHZ, "assumed: no make timing run yet"


def _add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--full", action="store_true",
                        help="tiny-YOLOv2-VOC 416x416 with seeded random weights")
    parser.add_argument("--p-oc", type=int, default=16,
                        help="engine output channels per cycle (default: %(default)s)")
    parser.add_argument("--clock-mhz", type=float,
                        help="clock for the fps projection (default: the Fmax of the last "
                             "`make timing`, else 50)")
    parser.add_argument("--ddr-latency", type=int, default=30, metavar="CYCLES",
                        help="DDR read latency (default: %(default)s)")
    parser.add_argument("--ddr-bandwidth", type=_bandwidth, metavar="BYTES",
                        help="DDR read bytes per cycle, at most one 64-bit beat (default: 8, or "
                             "the --board memory's at the clock)")
    parser.add_argument("--no-pack-taps", dest="pack_taps", action="store_false",
                        help="run a first 3x3 layer of 3 channels as 9 passes of 3 lanes, not "
                             "tap-packed as 4 passes of 27 (docs/engine.md, \"Tap packing\"): "
                             "its input map is then 4x smaller")


def register_cli(subparsers) -> None:
    """Add the ``sim`` and ``perf`` commands to the ``owlet`` sub-command parsers."""
    from firmware.perf import BOARD_MEMORY
    from model.zoo import MODELS
    from sim.cosim import DETECTION_THRESH

    sim = subparsers.add_parser(
        "sim", help="run the whole network on the engine RTL, bit-exact against the golden model",
        description="Quantize the model on the image, compile it, run the program on the "
                    "Verilated sequencer + engine through the DDR model from one start, compare "
                    "every layer's output in DDR with the golden model, decode the detections "
                    "on the host and print per-layer performance (docs/sequencer.md).")
    sim.add_argument("--cfg", type=Path,
                     help="darknet .cfg, quantized on the image (random weights without "
                          "--weights; with --qmodel, checked against it)")
    sim.add_argument("--weights", type=Path, help="darknet .weights for --cfg")
    sim.add_argument("--qmodel", type=Path, metavar="MODEL.npz",
                     help="a quantized model file (e.g. the zoo's model/zoo/owlet-tiny.npz)")
    sim.add_argument("--model", choices=MODELS,
                     help="a zoo network by name, quantized on its image (default, when no "
                          f"other network is given: {DEFAULT_SIM_MODEL}, which needs "
                          "`make weights`; the small one: owlet-tiny)")
    sim.add_argument("--image", type=Path,
                     help="input image (default: the model's own, dog.png with --full)")
    sim.add_argument("--sim", choices=("verilator", "icarus"), default="verilator",
                     help="HDL simulator (icarus is about 100x slower)")
    _add_engine_arguments(sim)
    sim.add_argument("--backpressure", type=_fraction, default=0.0, metavar="P",
                     help="probability that the DDR drops a READY in a cycle (default: 0)")
    sim.add_argument("--thresh", type=float, default=DETECTION_THRESH,
                     help="detection threshold (default: %(default)s)")
    sim.add_argument("--seed", type=int, default=0, help="backpressure and random-weight seed")
    sim.add_argument("--no-reuse", action="store_true",
                     help="compile without feature-map buffer reuse")
    sim.add_argument("--waves", action="store_true", help="dump a waveform in the run directory")
    sim.add_argument("--outdir", type=Path, default=Path("build/sim"),
                     help="where the PNGs go (default: %(default)s)")
    sim.set_defaults(func=cmd_sim)

    perf = subparsers.add_parser(
        "perf", help="analytic performance model: per-layer cycles, DDR traffic, roofline, fps",
        description="Model the engine layer by layer on a compiled network (docs/performance.md).")
    perf.add_argument("--cfg", type=Path, help="darknet .cfg (random weights: timing does not "
                                               "depend on them)")
    perf.add_argument("--model", choices=MODELS,
                      help="a zoo network's cfg by name (random weights)")
    perf.add_argument("--qmodel", type=Path, metavar="MODEL.npz",
                      help="a quantized model file (default: the zoo's)")
    _add_engine_arguments(perf)
    perf.add_argument("--board", choices=BOARD_MEMORY, default="ideal",
                      help="memory the engine streams from: " + "; ".join(
                          f"{m.name}: {m.description}" for m in BOARD_MEMORY.values())
                      + " (default: %(default)s)")
    perf.set_defaults(func=cmd_perf)


def cmd_sim(args) -> int:
    """Run the cosimulation; print the table and the summary line. Returns 1 on any mismatch."""
    from firmware.perf import PerfConfig, sequencer_overhead
    from hdl.descriptor import EngineConfig
    from sim.cosim import CosimOptions, format_table, run_cosim

    named = args.model or args.cfg or args.qmodel or args.full
    opts = CosimOptions(
        cfg=args.cfg, weights=args.weights, qmodel=args.qmodel, image=args.image,
        full=args.full, model=args.model if named else DEFAULT_SIM_MODEL, p_oc=args.p_oc,
        sim=args.sim, waves=args.waves,
        ddr_latency=args.ddr_latency, ddr_bytes_per_cycle=args.ddr_bandwidth or 8.0,
        backpressure=args.backpressure, seed=args.seed, reuse=not args.no_reuse,
        pack_taps=args.pack_taps,
        thresh=args.thresh,
        clock_mhz=engine_clock_mhz(args.clock_mhz)[0], outdir=args.outdir,
        run_name="cosim-full" if args.full else "cosim")
    report = run_cosim(opts)
    print(format_table(report.rows, report.peak_macs_per_cycle))
    overhead = sequencer_overhead(EngineConfig(p_oc=args.p_oc),
                                  PerfConfig(ddr_latency=args.ddr_latency))
    engine = sum(r["cycles"] for r in report.rows)
    print(f"engine {engine} cycles + sequencer {report.cycles - engine} "
          f"(model: {overhead} per layer + 1); {len(report.detections)} detections decoded on the "
          f"host from the RTL's output; wall time {report.wall_s:.0f} s")
    for path in report.files:
        print(f"wrote {path}")
    for msg in report.errors[:20]:
        print(msg)
    print(report.summary())
    return 0 if report.ok else 1


def cmd_perf(args) -> int:
    """Print the model's per-layer table with the DDR traffic beside its minimum, the roofline gap
    and the projected fps (compute-bound, memory-bound, modelled) on the chosen board."""
    from firmware.compiler import compile_network
    from firmware.perf import (
        BOARD_MEMORY,
        PerfConfig,
        minimum_traffic,
        predict_program,
        program_cycles,
    )
    from hdl.descriptor import EngineConfig
    from model.zoo import find_model
    from sim.cosim import CosimOptions, load_model

    # Timing does not depend on weight values: a --cfg alone gets random weights.
    cfg_path = find_model(args.model).cfg if args.model else args.cfg
    qnet = load_model(CosimOptions(cfg=cfg_path, qmodel=args.qmodel, full=args.full))[0]
    cfg = EngineConfig(p_oc=args.p_oc)
    clock, clock_source = engine_clock_mhz(args.clock_mhz)
    board = BOARD_MEMORY[args.board]
    bandwidth = args.ddr_bandwidth or board.bytes_per_cycle(clock)
    perf = PerfConfig(clock_mhz=clock, ddr_bytes_per_cycle=bandwidth,
                      ddr_latency=args.ddr_latency)
    program = compile_network(qnet, cfg, pack_taps=args.pack_taps)
    layers = predict_program(program, perf)
    peak = cfg.p_ic * cfg.p_oc
    print(f"engine P_ic={cfg.p_ic} x P_oc={cfg.p_oc} ({peak} MAC/cycle) at {clock:g} MHz "
          f"({clock_source})")
    print(f"memory: {board.description}, {bandwidth:.2f} B/cycle [{board.source}]; read latency "
          f"{perf.ddr_latency} cycles")
    head = (f"{'layer':<9} {'MACs':>12} {'cycles':>10} {'util':>6} {'rd bytes':>10} "
            f"{'wr bytes':>9} {'min rd+wr':>10} {'traffic':>7} {'compute':>10} {'memory':>10} "
            f"{'bound':>7}")
    print(head)
    print("-" * len(head))
    minimum = 0
    for p, layer in zip(layers, program.layers, strict=True):
        least = sum(minimum_traffic(layer))
        minimum += least
        bound = "memory" if p.memory_bound > p.compute_bound else "compute"
        print(f"{p.name:<9} {p.macs:>12} {p.cycles:>10} {p.macs / (peak * p.cycles):>6.1%} "
              f"{p.bytes_read:>10} {p.bytes_written:>9} {least:>10} "
              f"{(p.bytes_read + p.bytes_written) / least:>6.2f}x {p.compute_bound:>10.0f} "
              f"{p.memory_bound:>10.0f} {bound:>7}")
    cycles = program_cycles(layers, cfg, perf)
    overhead = cycles - sum(p.cycles for p in layers)
    macs = sum(p.macs for p in layers)
    moved = sum(p.bytes_read + p.bytes_written for p in layers)
    compute = sum(p.compute_bound for p in layers)
    memory = sum(p.memory_bound for p in layers)
    roofline = sum(p.roofline for p in layers)
    hz = clock * 1e6
    print(f"total: {macs} MACs, {cycles} cycles (sequencer {overhead}), MAC utilization "
          f"{macs / (peak * cycles):.1%}; DDR {moved} bytes a frame, {moved / minimum:.2f}x the "
          f"minimum {minimum}")
    print(f"fps: compute-bound {hz / compute:.2f}, memory-bound {hz / memory:.2f}, roofline "
          f"{hz / roofline:.2f}; the model is {cycles / roofline - 1:+.1%} above the roofline")
    # Packing trades the first layer's passes for 4x its input bytes: which wins depends on the
    # memory, so say what the other choice would give on this one.
    other = compile_network(qnet, cfg, pack_taps=not args.pack_taps)
    if other.layers[0].taps_packed != program.layers[0].taps_packed:
        alt = program_cycles(predict_program(other, perf), cfg, perf)
        flag = "--no-pack-taps" if args.pack_taps else "without --no-pack-taps"
        print(f"tap packing: first layer {'' if args.pack_taps else 'not '}packed; {flag}: "
              f"{hz / alt:.2f} fps ({'faster' if alt < cycles else 'slower'} on {board.name})")
    print(f"perf: projected {hz / cycles:.2f} fps at {clock:g} MHz on {board.name}")
    return 0
