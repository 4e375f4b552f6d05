"""cocotb testbench of the engine top (``hdl.engine.Engine``): runs a list of layer jobs.

The pytest side (``sim.runner.run_jobs``) hands over a list of jobs (``sim.runner.run_payload``);
each is a dict with ``case`` (:class:`sim.layer.LayerCase`), ``timing``
(:class:`sim.ddr.DdrTiming`, the DDR model's pattern restarted from its seed for the job) and
optional ``errors`` (DDR error injections) and ``timeout`` (cycles, default
:func:`cycle_budget`). This module runs them one after another on one simulator instance and
writes one result dict per job (counters, status, failure messages) back as JSON after every job,
so that what finished survives a simulator that dies. Per job it checks, with messages naming
the layer and the position:

- the output map against the golden model (layer, channel, row, column, expected, actual),
  including the padded channels of the last group, which the contract says are 0;
- that no byte outside the output region changed: input map, weights, requant table, the guard
  bands around the output (a pattern unlike the general fill) and all the rest of the memory;
- that every wait ends: a CSR access without ACK or a layer without its done interrupt is a
  failure with a message (:class:`Hang`), after which the engine is reset and the next job runs.
"""

import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, SimTimeoutError, with_timeout

from firmware.layout import fm_from_ddr
from hdl.descriptor import EngineConfig
from hdl.engine import COUNTERS, CSR
from sim.ddr import DdrModel, DdrTiming
from sim.layer import FILL, layer_image
from sim.runner import load_payload, write_results

__all__ = ["CSR_ACK_CYCLES", "TB", "Hang", "compare", "cycle_budget", "memory_changes",
           "run_jobs"]

PERIOD_NS = 10
MEM_SIZE = 1 << 25
#: Cycles a CSR access may wait for ACK: the slaves answer after one wait state.
CSR_ACK_CYCLES = 64


class Hang(Exception):
    """A wait of the testbench ran out of cycles; the message names what it waited for."""


class TB:
    """Owns the clock, the reset, the DDR model and the Wishbone CSR master of one engine."""

    def __init__(self, dut, timing=None):
        self.dut = dut
        Clock(dut.clk, PERIOD_NS, unit="ns", impl="gpi").start()
        self.ddr = DdrModel(dut, dut.clk, MEM_SIZE, period_ns=PERIOD_NS, timing=timing)
        self._models_started = False
        self._csr_idle()

    def _csr_idle(self):
        for name in ("cyc", "stb", "we", "adr", "dat_w"):
            getattr(self.dut, "csr__" + name).value = 0

    def _start_models(self):
        """Start the bus models' processes (once, after the first reset)."""
        cocotb.start_soon(self.ddr.run())

    async def reset(self):
        """Reset the DUT and make the bus models forget the transfers in flight; also the way
        out of a hang."""
        self._csr_idle()
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.ddr.reset()
        self.dut.rst.value = 0
        await FallingEdge(self.dut.clk)
        if not self._models_started:
            # The bus models start after reset: before it, 4-state simulators show X on the bus.
            self._models_started = True
            self._start_models()

    async def _csr(self, adr, we, value=0):
        # Drive on the falling edge; ACK is a registered response (Ref: Wishbone B4 3.2.3).
        dut = self.dut
        await FallingEdge(dut.clk)
        dut.csr__adr.value, dut.csr__we.value, dut.csr__dat_w.value = adr, we, value
        dut.csr__cyc.value = dut.csr__stb.value = 1
        try:
            for _ in range(CSR_ACK_CYCLES):
                await FallingEdge(dut.clk)
                if int(dut.csr__ack.value):
                    return int(dut.csr__dat_r.value)
            raise Hang(f"CSR {'write' if we else 'read'} of word {adr:#04x}: no ACK within "
                       f"{CSR_ACK_CYCLES} cycles")
        finally:
            dut.csr__cyc.value = dut.csr__stb.value = 0

    async def csr_write(self, adr, value):
        await self._csr(adr, 1, value)

    async def csr_read(self, adr):
        return await self._csr(adr, 0)

    async def wait_irq(self, cycles, what):
        """Wait for the rising edge of ``irq``; :class:`Hang` naming ``what`` after ``cycles``."""
        try:
            await with_timeout(RisingEdge(self.dut.irq), cycles * PERIOD_NS, "ns")
        except SimTimeoutError:
            raise Hang(f"{what}: no done interrupt within {cycles} cycles") from None

    async def run_layer(self, words, timeout_cycles):
        """Load the descriptor, start, wait for the done interrupt; return (status, error,
        counters dict)."""
        for i, word in enumerate(words):
            await self.csr_write(CSR.DESC + i, word)
        await self.csr_write(CSR.CTRL, 1)
        await self.wait_irq(timeout_cycles, "engine")
        status = await self.csr_read(CSR.STATUS)
        error = await self.csr_read(CSR.ERROR)
        counters = {name: await self.csr_read(CSR.COUNTERS + i)
                    for i, name in enumerate(COUNTERS)}
        return status, error, counters


def compare(name, expected, actual, limit=8):
    """Mismatch messages (at most ``limit``) naming layer, channel, row, column, expected, actual.
    """
    bad = np.argwhere(expected != actual)
    msgs = [f"layer {name}: channel {c}, row {y}, column {x}: expected {int(expected[c, y, x])}, "
            f"actual {int(actual[c, y, x])}" for c, y, x in bad[:limit]]
    if len(bad) > limit:
        msgs.append(f"layer {name}: ... {len(bad)} mismatches in total of {expected.size}")
    return msgs


def memory_changes(name, image, before, after, limit=8):
    """Messages (at most ``limit``) for bytes that changed outside ``image``'s output region,
    naming layer, region, address, expected and actual (:class:`sim.layer.LayerImage`)."""
    changed = np.flatnonzero(before != after)
    outside = changed[(changed < image.out_addr) | (changed >= image.out_addr + image.out_bytes)]
    msgs = [f"layer {name}: {image.region(a)}: byte {a:#x} changed: expected {before[a]:#04x}, "
            f"actual {after[a]:#04x}" for a in outside[:limit]]
    if len(outside) > limit:
        msgs.append(f"layer {name}: ... {len(outside)} bytes changed outside the output region")
    return msgs


def cycle_budget(case, image, cfg):
    """A generous bound on a layer's cycles, its default ``timeout``: 50 per cycle of the MAC
    array's work and per beat the layer moves (weights and requant table once per row tile, the
    input up to four times per output-channel group with its halo and overlap rows, the output),
    plus 200 000 for latencies. 50 covers a 4x slower bus (gaps down to 0.25) many times over."""
    fields = image.plan.fields
    tiles = -(-fields["out_height"] // fields["tile_rows"])
    size = {name: len(blob) for name, _, blob in image.segments}
    moved = (tiles * (size["weights"] + size["requant table"])
             + 4 * fields["og_passes"] * size["input map"] + image.out_bytes)
    return 50 * (case.macs // (cfg.p_ic * cfg.p_oc) + moved // (cfg.data_width // 8)) + 200_000


async def run_job(tb, job, cfg):
    """Run one job (see the module docstring); return its result dict."""
    t0 = time.perf_counter()
    case = job["case"]
    image = layer_image(case, cfg)
    tb.ddr.mem[:] = FILL  # stale data everywhere: outputs must be written, not left over
    for _, addr, blob in image.segments:
        tb.ddr.write(addr, blob)
    before = tb.ddr.mem.copy()
    tb.ddr.errors = list(job.get("errors", []))
    tb.ddr.set_timing(job.get("timing", DdrTiming()))
    timeout = job.get("timeout", cycle_budget(case, image, cfg))
    beats = dict(tb.ddr.stats)
    result = {"name": case.name, "status": None, "error": None, "counters": {}, "ddr_bytes": {},
              "macs": case.macs, "mismatches": []}
    try:
        result["status"], result["error"], result["counters"] = await tb.run_layer(
            image.plan.pack(), timeout)
    except Hang as exc:
        result["mismatches"].append(f"layer {case.name}: {exc}")
        await tb.reset()  # the engine may be stuck mid-layer: the next job starts afresh
    # The DDR model's own beat counts, to check the engine's byte counters against.
    result["ddr_bytes"] = {k: (tb.ddr.stats[k] - beats[k]) * tb.ddr.beat for k in beats}
    result["mismatches"] += memory_changes(case.name, image, before, tb.ddr.mem)
    if result["status"] is not None and not job.get("errors"):
        # The whole output region: real channels as the golden model, padded ones 0.
        expected = case.expected()
        padded = np.zeros((image.out_channels, *expected.shape[1:]), expected.dtype)
        padded[:len(expected)] = expected
        actual = fm_from_ddr(tb.ddr.read(image.out_addr, image.out_bytes), padded.shape,
                             padded.dtype)
        result["mismatches"] += compare(case.name, padded, actual)
    result["wall_s"] = time.perf_counter() - t0
    return result


@cocotb.test()
async def run_jobs(dut):
    """Run every job of the payload on one engine instance (reset once, and after a hang)."""
    payload = load_payload()
    cfg, jobs = payload.get("cfg", EngineConfig()), payload["jobs"]
    tb = TB(dut)
    await tb.reset()
    results = []
    for job in jobs:
        results.append(await run_job(tb, job, cfg))
        write_results(results)
        dut._log.info("%s: %s", job["case"].name, results[-1]["counters"])
    problems = [msg for r in results for msg in r["mismatches"]]
    assert not problems, "\n".join(problems)
