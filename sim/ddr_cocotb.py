"""cocotb checks of the DDR model (``sim.ddr``) driven by cocotbext-axi's ``AxiMaster``.

This also is the smoke test of cocotbext-axi under cocotb 2.x. The top is :class:`sim.axi_wire.
AxiWire`; the timing under test comes from ``OWLET_DDR_TIMING`` (JSON of :class:`DdrTiming`).
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiBus, AxiMaster, AxiResp

from sim.ddr import DECERR, SLVERR, DdrModel, DdrTiming

__all__ = ["ddr_model_checks"]

PERIOD_NS = 10
SIZE = 1 << 16


@cocotb.test()
async def ddr_model_checks(dut):
    """Random writes/reads against a shadow memory, read latency, error responses."""
    timing = DdrTiming(**json.loads(os.environ["OWLET_DDR_TIMING"]))
    Clock(dut.clk, PERIOD_NS, unit="ns", impl="gpi").start()
    dut.rst.value = 1
    ddr = DdrModel(dut, dut.clk, SIZE, prefix="s__", period_ns=PERIOD_NS, timing=timing)
    master = AxiMaster(AxiBus.from_prefix(dut, "m_"), dut.clk, dut.rst)
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    cocotb.start_soon(ddr.run())
    await ClockCycles(dut.clk, 2)

    rng = random.Random(timing.seed)
    shadow = bytearray(SIZE)
    for _ in range(30):
        addr = rng.randrange(0, SIZE - 3000) & ~7
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2500)))
        shadow[addr:addr + len(data)] = data
        await master.write(addr, data)
        addr = rng.randrange(0, SIZE - 3000)
        length = rng.randrange(1, 2500)
        got = await master.read(addr, length)
        assert got.resp == AxiResp.OKAY
        assert bytes(got.data) == bytes(shadow[addr:addr + length]), f"read {addr:#x}+{length}"
    assert bytes(ddr.read(0, SIZE)) == bytes(shadow)

    # Read latency: AR handshake to first R beat is at least `latency` cycles.
    await ClockCycles(dut.clk, 2)  # let the previous burst's last beat leave the bus
    assert not int(dut.s__rvalid.value)
    start = int(dut.cycles.value)
    task = cocotb.start_soon(master.read(0x100, 8))
    while not int(dut.s__rvalid.value):
        await RisingEdge(dut.clk)
    assert int(dut.cycles.value) - start >= timing.latency
    await task

    # Error injection: both read and write responses, only on the injected range.
    ddr.inject_error(0x4000, 0x4008, SLVERR, "r")
    ddr.inject_error(0x5000, 0x5100, DECERR, "w")
    assert (await master.read(0x3FF8, 16)).resp == AxiResp.SLVERR
    assert (await master.read(0x4008, 8)).resp == AxiResp.OKAY
    assert (await master.write(0x50F8, b"\x01" * 8)).resp == AxiResp.DECERR
    assert bytes(ddr.read(0x50F8, 8)) == bytes(shadow[0x50F8:0x5100])  # nothing written
    assert (await master.write(0x5100, b"\x02" * 8)).resp == AxiResp.OKAY
