"""The replicated register: the same delayed bit on every copy, and copies yosys keeps apart."""

from pathlib import Path

import pytest
from amaranth import Elaboratable, Module, Mux, Signal
from amaranth.back import rtlil
from amaranth.lib import data
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


@pytest.mark.parametrize("width", [1, 4, data.StructLayout({"addr": 3, "en": 1})])
def test_on_ecp5_each_copy_has_a_flip_flop_instance_of_its_own(width):
    """A bit's copy is the instance; a wider copy's instance is its clock enable."""
    text = rtlil.convert(Replicated(6, width=width), platform=ECP5Target())
    assert text.count("cell \\TRELLIS_FF") == 6


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


class _Operands(Elaboratable):
    """Three copies of an 8-bit operand, each multiplied by its own coefficient into a
    register."""

    def __init__(self):
        self.x, self.c, self.o = Signal(8), Signal(24), Signal(48)

    def elaborate(self, platform):
        m = Module()
        m.submodules.x = x = Replicated(3, width=8)
        m.d.comb += x.i.eq(self.x)
        for k in range(3):
            m.d.sync += self.o[16 * k:16 * k + 16].eq(x.o[k] * self.c[8 * k:8 * k + 8])
        return m


@pytest.mark.parametrize("design, flops", [
    (_Steered, 128 + 4),  # the mux outputs and the four select copies
    (_Operands, 48 + 3 * 8 + 3),  # the products, the three operand copies and their enables
])
def test_yosys_keeps_the_copies_apart(design, flops):
    """The property the copies exist for: after ``synth_ecp5`` every copy is still there (yosys
    would merge plain registers of the same input into one)."""
    top = design()
    out = Path(__file__).resolve().parents[1] / "build" / "test_fanout" / design.__name__
    ports = [getattr(top, name) for name in ("a", "b", "s", "x", "c", "o") if hasattr(top, name)]
    counts = synthesize_design(top, "top", out, ports=ports)
    assert counts["TRELLIS_FF"] == flops, counts

