"""The replicated register: the same delayed bit on every copy, and copies yosys keeps apart."""

from pathlib import Path

import pytest
from amaranth import Elaboratable, Module, Mux, Signal
from amaranth.back import rtlil
from amaranth.sim import Simulator

from hdl.ecp5 import ECP5Target
from hdl.fanout import Replicated
from hdl.synth import synthesize_design


@pytest.mark.parametrize("width", [1, 5])
def test_every_copy_is_the_input_of_the_previous_cycle(width):
    dut = Replicated(3, width=width)
    pattern = [1, 0, 0, 31, 17, 0, 1, 30, 9, 21, 7, 0]
    pattern = [v % (1 << width) for v in pattern]
    seen = []

    async def bench(ctx):
        for value in pattern:
            ctx.set(dut.i, value)
            await ctx.tick()
            seen.append([ctx.get(dut.o[k]) for k in range(3)])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for k, (value, copies) in enumerate(zip(pattern, seen, strict=True)):
        assert copies == [value] * 3, f"cycle {k}: input {value}, copies {copies}"


@pytest.mark.parametrize("width", [1, 4])
def test_on_ecp5_each_copy_is_a_flip_flop_of_its_own(width):
    text = rtlil.convert(Replicated(6, width=width), platform=ECP5Target())
    assert text.count("cell \\TRELLIS_FF") == 6 * width


class _Steered(Elaboratable):
    """Four copies of a select, each steering 32 bits of a registered 2:1 mux."""

    def __init__(self):
        self.a, self.b, self.s, self.o = Signal(128), Signal(128), Signal(), Signal(128)

    def elaborate(self, platform):
        m = Module()
        m.submodules.sel = sel = Replicated(4)
        m.d.comb += sel.i.eq(self.s)
        for k in range(4):
            bits = slice(32 * k, 32 * k + 32)
            m.d.sync += self.o[bits].eq(Mux(sel.o[k], self.a[bits], self.b[bits]))
        return m


def test_yosys_keeps_the_copies_apart():
    """The property the copies exist for: after ``synth_ecp5`` there are 128 + 4 flip-flops
    (yosys would merge plain registers of the same input into one)."""
    top = _Steered()
    out = Path(__file__).resolve().parents[1] / "build" / "test_fanout"
    counts = synthesize_design(top, "top", out, ports=[top.a, top.b, top.s, top.o])
    assert counts["TRELLIS_FF"] == 128 + 4, counts

