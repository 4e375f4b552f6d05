"""``owlet run``: the detector on a board (or on the simulated board) through the host bridge.

``owlet/cli.py`` adds the command with :func:`register_cli`; the work is
:class:`firmware.driver.BoardDriver`'s. ``--sim`` starts the board cosimulation
(:class:`sim.board_cosim.BoardSim`, imported only then) and connects to it over TCP.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from functools import partial
from pathlib import Path

__all__ = ["bench_report", "cmd_run", "register_cli", "sim_run_timeout"]

#: Wall seconds per bridge frame on the simulated board (the simulation is slower than a wire).
SIM_FRAME_TIMEOUT = 60.0
#: Wall seconds the sequencer may take on the simulated board unless ``--timeout`` says.
SIM_RUN_TIMEOUT = 600.0
#: The slowest the board cosimulation is expected to run, in engine cycles per wall second: a
#: program predicted to need longer than :data:`SIM_RUN_TIMEOUT` at this speed gets a longer
#: default timeout. Measured: about 180,000 with the pump idle on two cores shared with other
#: jobs; this allows a ninefold slowdown before a healthy run is called stuck.
SIM_ENGINE_CYCLES_PER_S = 20_000


def register_cli(subparsers) -> None:
    """Add the ``run`` command to the ``owlet`` sub-command parsers."""
    from firmware.driver import WATCHDOG_MS
    from hdl.board.boards import BOARDS
    from model.zoo import MODELS

    parser = subparsers.add_parser(
        "run", help="run the detector on the board (or the simulated board) through the bridge",
        description="Connect to the board's host bridge, identify it, initialise its DRAM, "
                    "upload the program once (skipped when the board holds it), then per image "
                    "upload the input, start the sequencer, wait for it, read the outputs back "
                    "and decode the detections on the host (README: On the board).")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", metavar="DEVICE",
                       help="the board's USB-serial port (/dev/ttyUSB0) or a pyserial URL")
    where.add_argument("--sim", action="store_true",
                       help="start the ULX3S board cosimulation and run on it over 127.0.0.1")
    where.add_argument("--sim-port", type=int, metavar="PORT",
                       help="attach to a running board cosimulation (python -m sim.board_cosim)")
    parser.add_argument("--board", choices=BOARDS, default="ulx3s")
    parser.add_argument("--baud", type=int, default=3_000_000,
                        help="serial baud rate (default: %(default)s)")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model", choices=MODELS,
                       help="a network of the zoo (default: owlet-tiny); its quantized model "
                            "<cfg>.npz, else calibrated on the images")
    model.add_argument("--qmodel", type=Path, metavar="MODEL.npz", help="a quantized model file")
    parser.add_argument("images", type=Path, nargs="*", metavar="IMAGE",
                        help="default: the model's image")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="write <image>.png (annotated) and <image>.json per image")
    parser.add_argument("--json", action="store_true",
                        help="print the detections as owlet infer's JSON, one document per "
                             "image and line (other messages go to stderr)")
    parser.add_argument("--bench", type=int, default=0, metavar="N",
                        help="run N frames (the images in turn) and report frames per second "
                             "and the time split")
    parser.add_argument("--check", action="store_true",
                        help="compile without buffer reuse, read back every layer's output and "
                             "compare it bit for bit with the golden model")
    parser.add_argument("--pack-taps", action="store_true",
                        help="run the first layer tap-packed (docs/engine.md, \"Tap packing\"): "
                             "its engine time halves, but the input the host uploads each frame "
                             "grows 4x (416x416: 5.5 MB instead of 1.4 MB, about 14 s more at 3 "
                             "Mbaud), so it is off by default")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="wall seconds the sequencer may take (default 10; --sim: 600, "
                             "more for a program predicted to take longer on the simulator)")
    parser.add_argument("--watchdog-ms", type=float, default=WATCHDOG_MS, metavar="MS",
                        help="stop a layer that makes no progress on the memory bus for this "
                             f"long, in engine-clock milliseconds (default {WATCHDOG_MS:g}; 0: "
                             "off)")
    parser.add_argument("--thresh", type=float, default=0.5, help="detection threshold")
    parser.add_argument("--nms", type=float, default=0.45, help="NMS IoU threshold")
    parser.set_defaults(func=cmd_run)


def _quantized(args, say):
    """(qnet, class names, default image) for ``--model`` / ``--qmodel``."""
    from model.darknet import load_darknet, parse_cfg
    from model.pipeline import class_names
    from model.quant import QuantizedNetwork
    from model.zoo import DEFAULT_IMAGE, find_model

    if args.qmodel is not None:
        qnet = QuantizedNetwork.load(args.qmodel)
        return qnet, class_names(_classes(qnet), args.qmodel), DEFAULT_IMAGE
    zoo = find_model(args.model or "owlet-tiny")
    npz = zoo.cfg.with_suffix(".npz")
    if npz.is_file():
        qnet = QuantizedNetwork.load(npz)
        qnet.check_matches(parse_cfg(zoo.cfg), npz, zoo.cfg)
    else:
        from owlet.cli import _calibrate

        images = args.images or [zoo.image]
        say(f"owlet run: {zoo.name} has no {npz.name}: calibrating on {len(images)} image(s)")
        qnet = _calibrate(load_darknet(zoo.cfg, zoo.weights), images, "max", quiet=True)
    return qnet, class_names(_classes(qnet), zoo.cfg, zoo.names), zoo.image


def _classes(qnet):
    heads = [layer.layer for layer in qnet.layers if layer.kind in ("region", "yolo")]
    return heads[-1].classes if heads else 0


@contextlib.contextmanager
def _link(args, say):
    """The :class:`firmware.link.Link` ``args`` ask for (starting the simulated board)."""
    from firmware.link import Link, SerialTransport, TcpTransport

    if args.port is not None:
        with Link(SerialTransport(args.port, args.baud)) as link:
            yield link
    elif args.sim_port is not None:
        with Link(TcpTransport(args.sim_port), timeout=SIM_FRAME_TIMEOUT) as link:
            yield link
    else:
        from sim.board_cosim import BoardSim

        say("owlet run: starting the ULX3S board cosimulation (the Verilator build is cached)")
        with BoardSim() as board, board.link(timeout=SIM_FRAME_TIMEOUT) as link:
            say(f"owlet run: simulated ULX3S on 127.0.0.1:{board.port}")
            yield link


def cmd_run(args) -> int:
    """``owlet run`` (see :func:`register_cli`)."""
    from firmware.dram_init import DramInitError
    from firmware.driver import DriverError
    from firmware.link import LinkError

    say = partial(print, file=sys.stderr if args.json else sys.stdout, flush=True)
    sim = args.port is None
    if sim and args.board != "ulx3s":
        raise ValueError(f"--sim: the board cosimulation is a ULX3S, not {args.board}")
    if args.bench < 0:
        raise ValueError(f"--bench takes a number of frames, not {args.bench}")
    qnet, names, default_image = _quantized(args, say)
    images = args.images or [default_image]
    try:
        with _json_stream(args.json and args.sim) as out, _link(args, say) as link:
            return _run(args, link, qnet, names, images, sim, say, out)
    except (DriverError, DramInitError, LinkError) as exc:
        print(f"owlet run: error: {exc}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _json_stream(separate):
    """Where ``--json`` documents go: stdout, or with ``separate`` a copy of file descriptor 1
    while descriptor 1 itself points at stderr. The simulator started by ``--sim`` is a child
    process that logs to descriptor 1; this keeps stdout for the JSON alone."""
    if not separate:
        yield sys.stdout
        return
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    try:
        yield out
    finally:
        sys.stdout.flush()
        os.dup2(out.fileno(), 1)
        out.close()


def _run(args, link, qnet, names, images, sim, say, out):
    import numpy as np

    from firmware.compiler import compile_network
    from firmware.driver import BoardDriver, check_outputs, expected_outputs
    from model.golden import quantize_input
    from model.image import draw_detections
    from model.pipeline import decode_engine_output, prepare_input
    from owlet.cli import detection_lines, detections_doc

    timeout = args.timeout or (SIM_RUN_TIMEOUT if sim else 10.0)
    driver = BoardDriver(link, args.board, sim_core=sim, timeout_s=timeout,
                         watchdog_ms=args.watchdog_ms, say=say, progress=sys.stderr.isatty())
    driver.connect()
    program = compile_network(qnet, driver.cfg, reuse=not args.check,
                              memory_size=driver.memory_size, pack_taps=args.pack_taps)
    if sim and not args.timeout:
        # A fixed wall timeout would stop a large network's healthy run on the simulator (the
        # real YOLOv3-tiny needs minutes there); a real board runs it in about a second.
        driver.timeout_s = sim_run_timeout(program, driver.engine_mhz)
        if driver.timeout_s > SIM_RUN_TIMEOUT:
            say(f"owlet run: --sim: the sequencer may take up to {driver.timeout_s:.0f} s for "
                f"this program (--timeout to change it)")
    driver.init_dram()
    t, sent = time.perf_counter(), driver.counter.sent
    uploaded = driver.load(program)
    once = (uploaded, time.perf_counter() - t, driver.counter.sent - sent)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    frames, failures = [], 0
    for k in range(args.bench or len(images)):
        path = images[k % len(images)]
        x, size = prepare_input(path, qnet.input_shape)
        x_q = quantize_input(x)
        frame = driver.run(program, x_q, read_all=args.check)
        t = time.perf_counter()
        dets = decode_engine_output(qnet, program.read_outputs(frame.mem), size, args.thresh,
                                    args.nms)
        frame.seconds["decode"] = time.perf_counter() - t
        frames.append(frame)
        if args.check:
            expected = expected_outputs(qnet, program, x_q)
            messages = check_outputs(program, expected, frame.mem, len(expected), frame=k)
            failures += bool(messages)
            for line in messages:
                say(f"owlet run: {path.name}: {line}")
            exact = sum(np.array_equal(e, program.read_output(frame.mem, i))
                        for i, e in enumerate(expected))
            say(f"owlet run: frame {k} ({path.name}): {exact}/{len(expected)} layers bit-exact "
                "against the golden model")
        if k >= len(images):
            continue
        doc = detections_doc(size, dets)
        say(f"{path.name}: {len(doc['detections'])} detection(s), {frame.csrs['cycles']} engine "
            f"cycles")
        for line in detection_lines(dets, names):
            say(f"  {line}")
        if args.json:
            print(json.dumps(doc), file=out, flush=True)
        if args.out:
            (args.out / f"{path.stem}.json").write_text(json.dumps(doc, indent=1))
            draw_detections(path, dets, names, args.out / f"{path.stem}.png")
            say(f"owlet run: wrote {args.out / path.stem}.png and .json")
    if args.bench:
        for line in bench_report(frames, program, driver, once, sim, args.baud):
            say(line)
    return 1 if failures else 0


def sim_run_timeout(program, engine_mhz: float) -> float:
    """The default ``--timeout`` on the simulated board, in wall seconds.

    Parameters
    ----------
    program : firmware.program.Program
    engine_mhz : float
        The engine clock of the board word.

    Returns
    -------
    float
        :data:`SIM_RUN_TIMEOUT`, or if longer the wall time of the engine cycles
        :mod:`firmware.perf` predicts for ``program`` on the ULX3S's SDR memory at
        :data:`SIM_ENGINE_CYCLES_PER_S` (YOLOv3-tiny with resident tiles: about 27.6 M cycles,
        23 minutes).
    """
    from firmware.perf import BOARD_MEMORY, PerfConfig, predict_program, program_cycles

    perf = PerfConfig(clock_mhz=engine_mhz,
                      ddr_bytes_per_cycle=BOARD_MEMORY["ulx3s"].bytes_per_cycle(engine_mhz))
    cycles = program_cycles(predict_program(program, perf), program.config, perf)
    return max(SIM_RUN_TIMEOUT, cycles / SIM_ENGINE_CYCLES_PER_S)


def bench_report(frames, program, driver, once, sim, baud) -> list[str]:
    """The ``--bench`` lines: the program upload, then per frame the mean wall time and link
    bytes of each phase, the engine's own time (CYCLES CSR), frames per second, the line time
    these bytes would take at ``baud``, and the last frame's per-layer performance records."""
    import numpy as np

    from hdl.engine import COUNTERS

    n, mhz = len(frames), driver.engine_mhz
    uploaded, up_s, up_bytes = once
    where = "the simulated board (wall times are the simulator's)" if sim else driver.board.name
    lines = [f"bench: {n} frame{'s' * (n != 1)} on {where}, engine {mhz} MHz",
             f"  program upload (once): {up_bytes:,} bytes on the link, {up_s:.2f} s"
             + ("" if uploaded else " (skipped: the board already held it)")]

    def mean(table, key):
        return sum(getattr(f, table).get(key, 0) for f in frames) / n

    cycles = [f.csrs["cycles"] for f in frames]
    engine_s = float(np.mean(cycles)) / (mhz * 1e6)
    lines.append(f"  {'phase':<9} {'wall/frame':>10} {'bytes out':>10} {'bytes in':>10}")
    for phase in ("upload", "compute", "download", "decode"):
        lines.append(f"  {phase:<9} {mean('seconds', phase):>9.3f}s "
                     f"{mean('sent', phase):>10,.0f} {mean('received', phase):>10,.0f}")
    if "fill" in frames[0].seconds:
        lines.append(f"  (--check: stale fill of every output, {mean('seconds', 'fill'):.3f} s "
                     "a frame, not counted)")
    wall = sum(mean("seconds", p) for p in ("upload", "compute", "download", "decode"))
    lines.append(f"  total {wall:.3f} s a frame: {1 / wall:.3g} frames/s on this link")
    lines.append(f"  engine (CYCLES CSR): {np.mean(cycles):,.0f} cycles = {engine_s * 1e3:.3f} ms "
                 f"a frame at {mhz} MHz: {1 / engine_s:.1f} frames/s for the engine alone")
    line_bytes = sum(mean("sent", p) + mean("received", p)
                     for p in ("upload", "compute", "download"))
    line_s = line_bytes * 10 / baud
    projected = line_s + engine_s + mean("seconds", "decode")
    lines.append(f"  at {baud / 1e6:g} Mbaud these {line_bytes:,.0f} bytes take {line_s * 1e3:.1f}"
                 f" ms on the line: {1 / projected:.1f} frames/s with engine and decode (no USB "
                 "latency)")
    lines.append(f"  {'layer':>5} {'darknet':<8} {'cycles':>9} {'ms':>7} {'MB/s':>7} "
                 f"{'stall in':>8}")
    last = frames[-1]
    for i in range(len(last.records)):
        c = last.counters(i)
        moved = c["bytes_read"] + c["bytes_written"]
        lines.append(f"  {i:>5} {program.layers[i].covers:<8} {c['cycles']:>9,} "
                     f"{c['cycles'] / mhz / 1e3:>7.3f} {moved / c['cycles'] * mhz:>7.1f} "
                     f"{c['stall_input'] / c['cycles']:>8.0%}")
    layer_sum = int(last.records[:, COUNTERS.index("cycles")].sum())
    lines.append(f"  layers {layer_sum:,} cycles, the sequencer's own "
                 f"{last.csrs['cycles'] - layer_sum:,} (CYCLES minus the layers')")
    return lines
