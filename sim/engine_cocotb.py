"""cocotb testbench of the engine top (``hdl.engine.Engine``): runs a list of layer jobs.

The pytest side (``sim.runner.run_jobs``) hands over a list of jobs (``sim.runner.run_payload``);
each is a dict with ``case`` (:class:`sim.layer.LayerCase`), ``timing``
(:class:`sim.ddr.DdrTiming`) and optional ``errors`` (DDR error injections). This module runs
them one after another on one simulator instance, compares every output with the golden model
and writes one result dict per job (counters, status, mismatches) back as JSON. The cocotb test
fails on the first mismatch with a message naming layer, channel, row, column, expected and actual.
"""

import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, with_timeout

from firmware.layout import fm_from_ddr
from hdl.descriptor import EngineConfig
from hdl.engine import COUNTERS, CSR
from sim.ddr import DdrModel, DdrTiming
from sim.layer import layer_image
from sim.runner import load_payload, write_results

__all__ = ["TB", "compare", "run_jobs"]

PERIOD_NS = 10
MEM_SIZE = 1 << 25


class TB:
    """Owns the clock, the reset, the DDR model and the Wishbone CSR master of one engine."""

    def __init__(self, dut, timing):
        self.dut = dut
        Clock(dut.clk, PERIOD_NS, unit="ns", impl="gpi").start()
        self.ddr = DdrModel(dut, dut.clk, MEM_SIZE, period_ns=PERIOD_NS, timing=timing)
        for name in ("cyc", "stb", "we", "adr", "dat_w"):
            getattr(dut, "csr__" + name).value = 0

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await FallingEdge(self.dut.clk)
        # The bus model starts after reset: before it, 4-state simulators show X on the bus.
        cocotb.start_soon(self.ddr.run())

    async def _csr(self, adr, we, value=0):
        # Drive on the falling edge; ACK is a registered response (Ref: Wishbone B4 3.2.3).
        dut = self.dut
        await FallingEdge(dut.clk)
        dut.csr__adr.value, dut.csr__we.value, dut.csr__dat_w.value = adr, we, value
        dut.csr__cyc.value = dut.csr__stb.value = 1
        while True:
            await FallingEdge(dut.clk)
            if int(dut.csr__ack.value):
                break
        data = int(dut.csr__dat_r.value)
        dut.csr__cyc.value = dut.csr__stb.value = 0
        return data

    async def csr_write(self, adr, value):
        await self._csr(adr, 1, value)

    async def csr_read(self, adr):
        return await self._csr(adr, 0)

    async def run_layer(self, words, timeout_cycles):
        """Load the descriptor, start, wait for the done interrupt; return (status, error,
        counters dict, cycles from start to done)."""
        for i, word in enumerate(words):
            await self.csr_write(CSR.DESC + i, word)
        await self.csr_write(CSR.CTRL, 1)
        await with_timeout(RisingEdge(self.dut.irq), timeout_cycles * PERIOD_NS, "ns")
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


async def run_job(tb, job, cfg):
    t0 = time.perf_counter()
    case = job["case"]
    segments, plan, out_addr, out_bytes = layer_image(case, cfg)
    tb.ddr.mem[:] = 0xA5  # stale data everywhere: outputs must be written, not left over
    for addr, blob in segments:
        tb.ddr.write(addr, blob)
    tb.ddr.errors = list(job.get("errors", []))
    timeout = job.get("timeout", 50 * case.macs // (cfg.p_ic * cfg.p_oc) + 200_000)
    before = dict(tb.ddr.stats)
    status, error, counters = await tb.run_layer(plan.pack(), timeout)
    # The DDR model's own beat counts, to check the engine's byte counters against.
    ddr_bytes = {k: (tb.ddr.stats[k] - before[k]) * tb.ddr.beat for k in before}
    result = {"name": case.name, "status": status, "error": error, "counters": counters,
              "ddr_bytes": ddr_bytes, "macs": case.macs, "mismatches": [],
              "wall_s": time.perf_counter() - t0}
    if job.get("errors"):
        return result
    expected = case.expected()
    dtype = np.int32 if case.out_int32 else np.int8
    actual = fm_from_ddr(tb.ddr.read(out_addr, out_bytes), expected.shape, dtype)
    result["mismatches"] = compare(case.name, expected, actual)
    return result


@cocotb.test()
async def run_jobs(dut):
    """Run every job of the payload on one engine instance (reset once)."""
    payload = load_payload()
    cfg, jobs = payload.get("cfg", EngineConfig()), payload["jobs"]
    tb = TB(dut, jobs[0].get("timing", DdrTiming()))
    await tb.reset()
    results = []
    try:
        for job in jobs:
            tb.ddr.timing = job.get("timing", DdrTiming())
            results.append(await run_job(tb, job, cfg))
            dut._log.info("%s: %s", job["case"].name, results[-1]["counters"])
    finally:
        write_results(results)
    problems = [msg for r in results for msg in r["mismatches"]]
    assert not problems, "\n".join(problems)
