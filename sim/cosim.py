"""The whole-network cosimulation behind ``make sim``: sequencer + engine RTL vs the golden model.

Host side (:func:`run_cosim`): quantize the model on the image, compile it
(:func:`firmware.compiler.compile_network`), build the :class:`hdl.sequencer.Sequencer` top with
Verilator (``sim.runner.build_top``, cached), run the program once from one start, and report per
layer: every layer's output region of DDR compared with :func:`model.golden.forward_int` bit for
bit, the performance record the sequencer wrote, and the analytic prediction
(:mod:`firmware.perf`). The int32 maps of every detection head
(:meth:`firmware.program.Program.read_outputs`) are decoded on the host into detections (the
decoding :func:`model.pipeline.infer_int8` applies to the golden model's, so once every layer is
bit-exact they are the golden model's; ``tests/test_cosim.py`` checks them against the real
darknet's); an annotated PNG and a roofline/utilization plot land in ``build/sim``.

cocotb side (:func:`run_programs`, the ``@cocotb.test`` of this module): :class:`SequencerTB`
loads the DDR image, writes the sequencer's CSRs and starts it. A watcher compares layer ``i``'s
output segment with the golden output as soon as the sequencer's ``progress`` port says layer
``i`` is complete, so programs compiled with buffer reuse are checked too: the next layer that
reuses the buffer has not been started yet at that moment.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, ValueChange

from hdl.descriptor import EngineConfig
from hdl.engine import COUNTERS
from hdl.sequencer import RECORD, RECORD_WORDS, SEQ_CSR, WATCHDOG_RESET
from hdl.top import AxiBurstBridge, SimTop
from sim.ddr import OKAY, DdrTiming
from sim.engine_cocotb import TB, Hang, compare
from sim.runner import BUILD_ROOT, build_top, load_payload, run_payload, write_results

__all__ = [
    "DETECTION_THRESH",
    "TOPLEVEL",
    "CosimOptions",
    "CosimReport",
    "SequencerTB",
    "build_sequencer",
    "format_table",
    "load_model",
    "run_cosim",
    "run_programs",
    "simulate_program",
]

#: Detection threshold of the host-side decoding (darknet's ``detector test`` default).
DETECTION_THRESH = 0.5

TOPLEVEL = "owlet_simtop"
#: Performance records go on the first 4 KB page after the program.
_RECORD_ALIGN = 4096


def build_sequencer(cfg=None, *, sim=None, waves=None):
    """Build (or reuse) the simulator binary of :class:`hdl.top.SimTop` (the sequencer with the
    DDR model's pins and the burst bridge)."""
    cfg = cfg or EngineConfig()
    return build_top(lambda: SimTop(cfg), TOPLEVEL, repr(cfg), sim=sim, waves=waves)


# ---- cocotb side -------------------------------------------------------------------------------

class SequencerTB(TB):
    """The engine testbench's clock, reset, DDR model and Wishbone master, driving the sequencer's
    CSR map (:class:`hdl.sequencer.SEQ_CSR`) instead of the engine's.

    The DDR model's memory (``ddr.mem``) backs both memory paths of :class:`hdl.top.SimTop`: the
    cocotb DDR model on the AXI pins (every beat in Python) or the burst bridge (timing in the
    RTL, Python once per burst: ``docs/sequencer.md``), chosen per run by :meth:`select_memory`.
    """

    def __init__(self, dut, timing=None):
        super().__init__(dut, timing)
        for name in ("use_bridge", "mem_ld_valid", "mem_wc_valid", "mem_reseed"):
            getattr(dut, name).value = 0

    def _start_models(self):
        super()._start_models()
        cocotb.start_soon(self._serve_reads())
        cocotb.start_soon(self._serve_writes())

    async def select_memory(self, timing, bridge):
        """Use the burst bridge (``bridge``) or the cocotb DDR model, with ``timing``; either
        restarts its pattern of gaps from ``timing.seed`` (the bridge in the cycle after this)."""
        dut = self.dut
        self.ddr.set_timing(timing)
        dut.use_bridge.value = int(bridge)
        dut.mem_read_latency.value = timing.latency
        dut.mem_write_latency.value = timing.write_latency
        for name in AxiBurstBridge.CHANNELS:
            getattr(dut, f"mem_{name}_threshold").value = round(256 * getattr(timing,
                                                                                f"{name}_prob"))
        dut.mem_seed.value = timing.seed % (1 << 32)
        await FallingEdge(dut.clk)
        dut.mem_reseed.value = 1
        await FallingEdge(dut.clk)
        dut.mem_reseed.value = 0

    async def _serve_reads(self):
        """Answer each read burst of the bridge with all its beats (or its error response)."""
        dut, mem, beat = self.dut, self.ddr.mem, self.ddr.beat
        while True:
            await FallingEdge(dut.clk)  # the bridge takes the answer on the next rising edge
            if not int(dut.mem_rq_valid.value):
                dut.mem_ld_valid.value = 0
                await RisingEdge(dut.mem_rq_valid)
                continue
            addr, size = int(dut.mem_rq_addr.value), (int(dut.mem_rq_len.value) + 1) * beat
            resp = self.ddr._resp(addr, size, "r")  # the DDR model's error injection ranges
            data = mem[addr:addr + size].tobytes() if resp == OKAY else b""
            dut.mem_ld_data.value = int.from_bytes(data, "little")
            dut.mem_ld_resp.value = resp
            dut.mem_ld_valid.value = 1

    async def _serve_writes(self):
        """Commit each complete write burst of the bridge to memory (unless refused)."""
        dut, mem, beat = self.dut, self.ddr.mem, self.ddr.beat
        while True:
            await FallingEdge(dut.clk)
            if not int(dut.mem_wr_valid.value):
                dut.mem_wc_valid.value = 0
                await RisingEdge(dut.mem_wr_valid)
                continue
            addr, beats = int(dut.mem_wr_addr.value), int(dut.mem_wr_len.value) + 1
            if int(dut.mem_wr_beats.value) + 1 != beats or not int(dut.mem_wr_full_strobes.value):
                raise RuntimeError(f"bridge: write burst at {addr:#x}: AWLEN says {beats} beats, "
                                   f"W has {int(dut.mem_wr_beats.value) + 1}, or partial WSTRB")
            resp = self.ddr._resp(addr, beats * beat, "w")
            if resp == OKAY:
                raw = int(dut.mem_wr_data.value).to_bytes(len(dut.mem_wr_data) // 8, "little")
                mem[addr:addr + beats * beat] = np.frombuffer(raw[:beats * beat], np.uint8)
            dut.mem_wc_resp.value = resp
            dut.mem_wc_valid.value = 1

    async def stall_reads(self, layer, after, cycles):
        """Stop answering reads for ``cycles`` cycles, ``after`` cycles into layer ``layer``
        (``progress`` = ``layer``): ARREADY low and no R beat presented, on both memory paths
        (the DDR model's probabilities, the bridge's thresholds); a VALID already presented stays
        (Ref: AMBA AXI4 spec A3.2.1)."""
        dut, ddr = self.dut, self.ddr
        while int(dut.progress.value) != layer:
            await ValueChange(dut.progress)
        await ClockCycles(dut.clk, after)
        timing = ddr.timing
        ddr.timing = replace(timing, arready_prob=0.0, rvalid_prob=0.0)
        saved = [int(getattr(dut, f"mem_{n}_threshold").value) for n in ("arready", "rvalid")]
        for n in ("arready", "rvalid"):
            getattr(dut, f"mem_{n}_threshold").value = 0
        await ClockCycles(dut.clk, cycles)
        ddr.timing = timing
        for n, value in zip(("arready", "rvalid"), saved, strict=True):
            getattr(dut, f"mem_{n}_threshold").value = value

    def bus_activity(self):
        """What is still going on on the cocotb DDR model's AXI4 pins: master VALIDs high and
        transfers the model holds (empty: the bus is idle)."""
        dut, ddr = self.dut, self.ddr
        busy = [name for name in ("arvalid", "awvalid", "wvalid")
                if int(getattr(dut, f"axi__{name}").value)]
        return busy + [name for name in ("reads", "aws", "wbeats", "wbursts", "bresps")
                       if len(getattr(ddr, name))]

    async def run_program(self, prog_addr, count, perf_addr, timeout_cycles,
                          watchdog=WATCHDOG_RESET):
        """Start the program, wait for the done interrupt (:class:`sim.engine_cocotb.Hang` after
        ``timeout_cycles``); return the sequencer's CSRs (:meth:`status`)."""
        await self.csr_write(SEQ_CSR.WATCHDOG, watchdog)
        await self.csr_write(SEQ_CSR.PROG_ADDR, prog_addr)
        await self.csr_write(SEQ_CSR.COUNT, count)
        await self.csr_write(SEQ_CSR.PERF_ADDR, perf_addr)
        await self.csr_write(SEQ_CSR.CTRL, 1)
        await self.wait_irq(timeout_cycles, "sequencer")
        return await self.status()

    async def status(self):
        """The sequencer's STATUS, ERROR, LAYER and CYCLES CSRs as a dict."""
        return {name.lower(): await self.csr_read(getattr(SEQ_CSR, name))
                for name in ("STATUS", "ERROR", "LAYER", "CYCLES")}

    def records(self, perf_addr, count):
        """The performance records of ``count`` layers, as an array (count, RECORD_WORDS)."""
        raw = self.ddr.read(perf_addr, 4 * RECORD_WORDS * count)
        return np.frombuffer(raw.tobytes(), "<u4").reshape(count, RECORD_WORDS)


async def _check_layers(tb, program, expected, checked):
    """Compare each layer's output segment with the golden output when ``progress`` passes it."""
    seen = 0
    while True:
        await ValueChange(tb.dut.progress)
        done = int(tb.dut.progress.value)
        for i in range(seen, done):
            layer = program.layers[i]
            actual = program.read_output(tb.ddr.mem, i)
            checked[i] = compare(f"{i} (darknet {layer.output_index})", expected[i], actual)
            tb.dut._log.info("layer %d of %d: %s", i + 1, len(program.layers),
                             "MISMATCH" if checked[i] else "bit-exact")
        seen = done


async def _run_one(tb, payload, run, index):
    program, expected = payload["program"], run.get("expected", payload["expected"])
    t0 = time.perf_counter()
    await tb.select_memory(run.get("timing", DdrTiming()), run.get("bridge", True))
    tb.ddr.errors = list(run.get("errors", []))
    # Stale data everywhere: every output must be written by the engine, never left over.
    tb.ddr.mem[:] = 0xA5
    for seg in program.segments:
        if seg.data is not None:
            tb.ddr.write(seg.addr, seg.data)
    count = run.get("count", len(program.layers))
    perf_addr = run["perf_addr"]
    checked = {}
    watcher = cocotb.start_soon(_check_layers(tb, program, expected, checked))
    stall = cocotb.start_soon(tb.stall_reads(**run["stall"])) if run.get("stall") else None
    failure = None
    try:
        csrs = await tb.run_program(run.get("prog_addr", program.descriptor_addr), count,
                                    perf_addr, run["timeout"],
                                    run.get("watchdog", WATCHDOG_RESET))
    except Hang as exc:
        failure = f"run {run.get('name', index)}: {exc}"
        csrs = await tb.status()  # as the stuck sequencer reports them
    watcher.cancel()
    if stall is not None:
        stall.cancel()
    csrs["bus"] = [] if run.get("bridge", True) else tb.bus_activity()
    # Records of the layers run: all of them, or up to the one that failed (written if its
    # engine ran; stale memory if its descriptor fetch failed).
    result = {
        **csrs, "records": tb.records(perf_addr, min(csrs["layer"] + 1, count)).tolist(),
        "mismatches": {str(i): m for i, m in checked.items()}, "checked": sorted(checked),
        "failure": failure, "wall_s": time.perf_counter() - t0,
    }
    if failure:
        await tb.reset()  # the next run starts afresh
    # Every head the host decodes, once the last layer is done (output buffers live to the end).
    if len(program.layers) - 1 in checked and run.get("outputs"):
        np.savez(run["outputs"], **{str(index): out for index, out
                                    in program.read_outputs(tb.ddr.mem).items()})
    return result


@cocotb.test()
async def run_programs(dut):
    """Run every program run of the payload on one sequencer instance (reset once, and after
    a hang); the results file is rewritten after every run."""
    payload = load_payload()
    tb = SequencerTB(dut)
    await tb.reset()
    results = []
    for index, run in enumerate(payload["runs"]):
        results.append(await _run_one(tb, payload, run, index))
        write_results(results)
        dut._log.info("run: status %#x error %#x layer %d cycles %d",
                      *(results[-1][k] for k in ("status", "error", "layer", "cycles")))


# ---- host side ---------------------------------------------------------------------------------

def perf_address(program):
    """Where the performance records go: the first 4 KB page after the program."""
    return -(-program.footprint // _RECORD_ALIGN) * _RECORD_ALIGN


def simulate_program(program, expected, runs, run_name, *, sim=None, waves=None):
    """Run ``program`` on the sequencer RTL, once per entry of ``runs``, on one simulator.

    Parameters
    ----------
    program : firmware.program.Program
    expected : list of arrays
        The golden output of every program layer (``forward_int`` at ``layer.output_index``).
    runs : list of dict
        ``timing`` (:class:`sim.ddr.DdrTiming`), ``errors`` (DDR error injections),
        ``timeout`` (cycles), ``bridge`` (memory path, default True: :class:`hdl.top.SimTop`),
        ``name`` (for messages, default the run's index),
        optional ``perf_addr``, ``prog_addr``, ``count``, ``expected`` overrides and
        ``outputs`` (an ``.npz`` path for every output the host reads,
        :meth:`firmware.program.Program.read_outputs`, keyed by darknet index).

    Returns
    -------
    (results, ok)
        One dict per run that finished: the sequencer's CSRs (``status``, ``error``, ``layer``,
        ``cycles``), ``records`` (the performance records in DDR), ``mismatches`` per checked
        layer, ``checked`` (layers compared), ``failure`` (the message of a run that hung, else
        None); ``ok`` whether the cocotb test passed.
    """
    build_dir = build_sequencer(program.config, sim=sim, waves=waves)
    runs = [{"perf_addr": perf_address(program), **run} for run in runs]
    return run_payload(build_dir, TOPLEVEL, "sim.cosim", run_name,
                       {"program": program, "expected": expected, "runs": runs},
                       sim=sim, waves=waves)


@dataclass
class CosimOptions:
    """What :func:`run_cosim` runs. ``qmodel`` (a saved ``.npz``) replaces ``cfg``/``weights``;
    ``full`` selects tiny-YOLOv2-VOC 416 with seeded random weights; ``model`` names a zoo network
    (:data:`model.zoo.MODELS`: its cfg, weights, names and image); ``thresh`` is the detection
    threshold of the host-side decoding (NMS at 0.45, as darknet)."""

    cfg: Path | None = None
    weights: Path | None = None
    qmodel: Path | None = None
    image: Path | None = None
    full: bool = False
    model: str | None = None
    p_oc: int = 16
    sim: str = "verilator"
    waves: bool = False
    ddr_latency: int = 30
    ddr_bytes_per_cycle: float = 8.0
    backpressure: float = 0.0
    seed: int = 0
    reuse: bool = True
    pack_taps: bool = True
    thresh: float = DETECTION_THRESH
    clock_mhz: float | None = None
    outdir: Path = BUILD_ROOT
    run_name: str = "cosim"


@dataclass
class CosimReport:
    """Outcome of :func:`run_cosim`; ``rows`` has one dict per program layer, ``detections``
    the detections (with some class probability above the threshold) decoded on the host from
    the int32 heads the RTL wrote."""

    rows: list[dict]
    cycles: int
    macs: int
    peak_macs_per_cycle: int
    clock_mhz: float
    detections: list
    status: dict
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    files: list[Path] = field(default_factory=list)

    @property
    def exact(self):
        return sum(r["exact"] for r in self.rows)

    @property
    def ok(self):
        return not self.errors and self.exact == len(self.rows)

    @property
    def utilization(self):
        return self.macs / (self.peak_macs_per_cycle * self.cycles) if self.cycles else 0.0

    @property
    def fps(self):
        return self.clock_mhz * 1e6 / self.cycles if self.cycles else 0.0

    def summary(self):
        """The one summary line of ``make sim``."""
        return (f"cosim: {self.exact}/{len(self.rows)} layers bit-exact, {self.cycles} cycles, "
                f"MAC utilization {self.utilization:.1%}, projected "
                f"{self.fps:.{2 if self.fps < 10 else 1}f} fps at "
                f"{self.clock_mhz:g} MHz")


def load_model(opts):
    """The quantized network, its float input, the image size and the image path for ``opts``.

    In order: ``qmodel``; ``full`` (or a ``cfg`` without ``weights``): seeded random weights
    (:func:`model.zoo.random_weights`) quantized on the image; ``cfg`` + ``weights`` quantized on
    the image; by default the zoo's quantized model (:data:`model.zoo.DEFAULT_QMODEL`). The image
    defaults to the zoo's (dog.png for ``full``). A ``cfg`` given with ``qmodel`` must describe
    the same network (:meth:`model.quant.QuantizedNetwork.check_matches`).
    """
    from model.darknet import load_darknet, parse_cfg
    from model.pipeline import prepare_input
    from model.quant import QuantizedNetwork, quantize_network
    from model.zoo import (
        DEFAULT_IMAGE,
        DEFAULT_QMODEL,
        DOG_IMAGE,
        TINY_YOLO_VOC_CFG,
        find_model,
        random_weights,
    )

    if opts.model is not None:
        zoo = find_model(opts.model)
        opts = replace(opts, cfg=zoo.cfg, weights=zoo.weights, image=opts.image or zoo.image)
    image = opts.image or (DOG_IMAGE if opts.full else DEFAULT_IMAGE)
    if opts.qmodel is not None or (opts.cfg is None and not opts.full):
        qnet = QuantizedNetwork.load(opts.qmodel or DEFAULT_QMODEL)
        if opts.cfg is not None:
            qnet.check_matches(parse_cfg(opts.cfg), opts.qmodel, opts.cfg)
        x, size = prepare_input(image, qnet.input_shape)
        return qnet, x, size, image
    if opts.full or opts.weights is None:
        net = random_weights(parse_cfg(opts.cfg or TINY_YOLO_VOC_CFG), seed=opts.seed)
    else:
        net = load_darknet(opts.cfg, opts.weights)
    x, size = prepare_input(image, net.input_shape)
    return quantize_network(net, [x]), x, size, image


def _names(opts, classes):
    """Class names for the annotated image: ``<model>.names`` beside the model file when it
    exists (the zoo's detector has one), else ``class0``, ``class1``, ..."""
    from model.pipeline import class_names
    from model.zoo import DEFAULT_QMODEL, TINY_YOLO_VOC_CFG, find_model

    if opts.model is not None:
        zoo = find_model(opts.model)
        return class_names(classes, zoo.cfg, zoo.names)
    default = TINY_YOLO_VOC_CFG if opts.full else DEFAULT_QMODEL
    return class_names(classes, opts.qmodel or opts.cfg or default)


def _ddr_timing(opts):
    ready = 1.0 - opts.backpressure
    return DdrTiming(latency=opts.ddr_latency, arready_prob=ready, awready_prob=ready,
                     wready_prob=ready, rvalid_prob=min(1.0, opts.ddr_bytes_per_cycle / 8),
                     seed=opts.seed)


def _rows(program, records, checked, mismatches, predictions):
    from firmware.perf import layer_macs

    rows = []
    for i, layer in enumerate(program.layers):
        rec = records[i] if i < len(records) else [0] * RECORD_WORDS
        counters = dict(zip(COUNTERS, rec[RECORD.COUNTERS:RECORD.COUNTERS + len(COUNTERS)],
                            strict=True))
        rows.append({
            "index": i, "darknet": layer.covers, "in_shape": layer.in_shape,
            "out_shape": layer.out_shape, "macs": layer_macs(layer), **counters,
            "seq_cycles": rec[RECORD.SEQ_CYCLES], "predicted": predictions[i].cycles,
            "predicted_read": predictions[i].bytes_read,
            "predicted_written": predictions[i].bytes_written,
            "exact": i in checked and not mismatches.get(str(i)),
        })
    return rows


def format_table(rows, peak):
    """The per-layer table of ``owlet sim`` as text."""
    head = (f"{'#':>2} {'darknet':<7} {'in':<12} {'out':<12} {'cycles':>9} {'util':>6} "
            f"{'rd bytes':>9} {'wr bytes':>8} {'st.in':>6} {'st.wt':>6} {'st.rq':>6} "
            f"{'st.out':>6} {'predict':>9} {'err':>6} {'exact':>5}")
    lines = [head, "-" * len(head)]
    for r in rows:
        util = r["macs"] / (peak * r["cycles"]) if r["cycles"] else 0.0
        err = (r["predicted"] - r["cycles"]) / r["cycles"] if r["cycles"] else 0.0
        lines.append(
            f"{r['index']:>2} {r['darknet']:<7} {'x'.join(map(str, r['in_shape'])):<12} "
            f"{'x'.join(map(str, r['out_shape'])):<12} {r['cycles']:>9} {util:>6.1%} "
            f"{r['bytes_read']:>9} {r['bytes_written']:>8} {r['stall_input']:>6} "
            f"{r['stall_weights']:>6} {r['stall_requant']:>6} {r['stall_output']:>6} "
            f"{r['predicted']:>9} {err:>+6.1%} {'yes' if r['exact'] else 'NO':>5}")
    return "\n".join(lines)


def _plot(rows, cfg, perf, path):
    """Roofline (achieved MAC/cycle vs MACs per DDR byte) and per-layer utilization, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peak = cfg.p_ic * cfg.p_oc
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    achieved = [r["macs"] / r["cycles"] if r["cycles"] else 0 for r in rows]
    # The compiler's identity copies do no MACs: no point of theirs on a log-log roofline.
    work = [(r, a) for r, a in zip(rows, achieved, strict=True) if r["macs"]]
    intensity = [r["macs"] / max(1, r["bytes_read"]) for r, _ in work]  # reads bound (perf model)
    xs = np.logspace(np.log10(min(intensity) / 2), np.log10(max(intensity) * 2), 100)
    ax.loglog(xs, np.minimum(peak, xs * perf.ddr_bytes_per_cycle), "k-",
              label=f"roofline: {peak} MAC/cycle, {perf.ddr_bytes_per_cycle:g} B/cycle")
    ax.scatter(intensity, [a for _, a in work], color="#d8533b", zorder=3)
    for (r, y), x in zip(work, intensity, strict=True):
        ax.annotate(r["darknet"], (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.set_xlabel("MACs per DDR byte read")
    ax.set_ylabel("MACs per cycle (measured)")
    ax.set_title("Roofline")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    labels = [r["darknet"] for r in rows]
    bx.bar(labels, [a / peak for a in achieved], color="#3b7dd8", label="measured (RTL)")
    bx.plot(labels, [r["macs"] / (peak * r["predicted"]) for r in rows], "ko",
            label="predicted (firmware.perf)")
    bx.set_ylim(0, 1.05)
    bx.set_ylabel("MAC utilization")
    bx.set_xlabel("darknet layer (conv+pool)")
    bx.set_title("Utilization per layer")
    bx.legend(fontsize=8)
    bx.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_cosim(opts=None, *, log=print):
    """The whole flow of ``owlet sim``; returns a :class:`CosimReport` (``log`` gets progress).

    Raises
    ------
    firmware.compiler.CompileError
        If the network does not map onto the engine configuration.
    """
    from firmware.compiler import compile_network
    from firmware.perf import DEFAULT_CLOCK_MHZ, PerfConfig, predict_program
    from model.golden import forward_int, quantize_input
    from model.image import draw_detections
    from model.pipeline import decode_engine_output

    opts = opts or CosimOptions()
    t0 = time.perf_counter()
    cfg = EngineConfig(p_oc=opts.p_oc)
    qnet, x, image_size, image = load_model(opts)
    x_q = quantize_input(x)
    program = compile_network(qnet, cfg, reuse=opts.reuse, x_q=x_q, pack_taps=opts.pack_taps)
    golden = forward_int(qnet, x_q)
    expected = [golden[layer.output_index][program.output_channels(i)]
                for i, layer in enumerate(program.layers)]
    perf = PerfConfig(clock_mhz=opts.clock_mhz or DEFAULT_CLOCK_MHZ,
                      ddr_bytes_per_cycle=min(8.0, opts.ddr_bytes_per_cycle),
                      ddr_latency=opts.ddr_latency)
    predictions = predict_program(program, perf)
    log(f"cosim: {len(program.layers)} engine layers, P_ic={cfg.p_ic} x P_oc={cfg.p_oc}, "
        f"DDR footprint {program.footprint} bytes, {opts.sim}")
    opts.outdir.mkdir(parents=True, exist_ok=True)
    # Resolved: the simulation runs in its own directory.
    outputs_file = (opts.outdir / f"{opts.run_name}-outputs.npz").resolve()
    outputs_file.unlink(missing_ok=True)
    timeout = 4 * sum(p.cycles for p in predictions) + 100_000
    results, ok = simulate_program(
        program, expected,
        [{"timing": _ddr_timing(opts), "timeout": timeout, "outputs": str(outputs_file)}],
        opts.run_name, sim=opts.sim, waves=opts.waves)
    errors = [] if ok and results else ["the simulation did not finish (see the cocotb log)"]
    res = results[0] if results else {"records": [], "checked": [], "mismatches": {},
                                      "status": 0, "error": 0, "layer": 0, "cycles": 0}
    if res.get("failure"):
        errors.append(res["failure"])
    if res.get("error"):
        errors.append(f"sequencer error flags {res['error']:#x} at layer {res['layer']}")
    errors += [m for msgs in res["mismatches"].values() for m in msgs]
    rows = _rows(program, res["records"], set(res["checked"]), res["mismatches"],
                 predictions)
    total_macs = sum(r["macs"] for r in rows)

    files, dets = [], []
    if outputs_file.exists():
        with np.load(outputs_file) as heads:
            acc = {int(index): heads[index] for index in heads.files}
        decoded = decode_engine_output(qnet, acc, image_size, opts.thresh)
        dets = [d for d in decoded if np.any(d.probs > 0)]
        classes = qnet.layers[-1].layer.classes
        files.append(opts.outdir / "cosim-detections.png")
        draw_detections(image, dets, _names(opts, classes), files[-1])
    if all(r["cycles"] for r in rows):
        files.append(opts.outdir / "cosim-roofline.png")
        _plot(rows, cfg, perf, files[-1])
    return CosimReport(rows, int(res["cycles"]), total_macs, cfg.p_ic * cfg.p_oc, perf.clock_mhz,
                       dets, {k: res[k] for k in ("status", "error", "layer")},
                       errors, time.perf_counter() - t0, files)
