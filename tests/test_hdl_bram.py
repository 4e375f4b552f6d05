"""Block RAM without collision emulation: the simulated contents, and what yosys maps it to."""

from pathlib import Path

from amaranth import Elaboratable, Module, Signal
from amaranth.lib import memory
from amaranth.sim import Simulator

from hdl.bram import block_ram
from hdl.synth import synthesize_design

BUILD = Path(__file__).resolve().parents[1] / "build" / "test_bram"


class _Bank(Elaboratable):
    """One write and one read port on a ``depth`` × ``width`` memory (an accumulator bank's
    shape by default), made by ``make_memory(shape, depth)``."""

    def __init__(self, make_memory, width=512, depth=1024):
        self.make_memory, self.width, self.depth = make_memory, width, depth
        self.wa, self.ra = Signal(range(depth)), Signal(range(depth))
        self.wd, self.rd, self.we = Signal(width), Signal(width), Signal()

    @property
    def ports(self):
        return [self.wa, self.ra, self.wd, self.rd, self.we]

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = self.make_memory(self.width, self.depth)
        wr, rd = mem.write_port(), mem.read_port()
        m.d.comb += [wr.addr.eq(self.wa), wr.data.eq(self.wd), wr.en.eq(self.we),
                     rd.addr.eq(self.ra), self.rd.eq(rd.data)]
        return m


def test_words_read_back_as_written():
    dut = _Bank(block_ram, width=16, depth=32)
    words = {a: (a * 2654435761) % (1 << 16) for a in range(32)}

    async def bench(ctx):
        ctx.set(dut.we, 1)
        for a, w in words.items():
            ctx.set(dut.wa, a)
            ctx.set(dut.wd, w)
            await ctx.tick()
        ctx.set(dut.we, 0)
        for a in reversed(range(32)):
            ctx.set(dut.ra, a)
            await ctx.tick()
            assert ctx.get(dut.rd) == words[a], f"address {a}"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_yosys_maps_it_to_block_rams_alone():
    """1024 × 512 bits is 29 DP16KD (1K × 18 each) and nothing else; the same memory without
    the attribute gets yosys's collision emulation, flip-flops and LUTs on every data bit."""
    plain = _Bank(lambda shape, depth: memory.Memory(shape=shape, depth=depth, init=[]))
    emulated = synthesize_design(plain, "plain", BUILD / "plain", ports=plain.ports)
    assert emulated["DP16KD"] == 29 and emulated["TRELLIS_FF"] > 512, emulated
    bank = _Bank(block_ram)
    report = synthesize_design(bank, "bank", BUILD / "bank", ports=bank.ports)
    assert report["DP16KD"] == 29, report
    assert report["TRELLIS_FF"] == 0 and report["LUT4"] == 0, report
