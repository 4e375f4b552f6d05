"""Block RAM with a registered output: the simulated contents and latency, and what yosys maps
it to."""

import random
from pathlib import Path

import pytest
from amaranth import Elaboratable, Module, Signal
from amaranth.lib import memory
from amaranth.sim import Simulator

from hdl.bram import BRAM_READ_LATENCY, BlockRAM
from hdl.synth import synthesize_design

BUILD = Path(__file__).resolve().parents[1] / "build" / "test_bram"


@pytest.mark.parametrize("read_enable", [False, True])
def test_words_read_back_after_the_latency(read_enable):
    """Random writes and reads (and read stalls) against a dict of the contents and a queue of
    the reads in flight: every read returns the word its address held when it was issued,
    ``BRAM_READ_LATENCY`` enabled cycles later, stalled cycles keeping the word."""
    rng = random.Random(7)
    depth = 32
    dut = BlockRAM(16, depth, read_enable=read_enable)
    contents = {a: rng.randrange(1 << 16) for a in range(depth)}

    async def bench(ctx):
        ctx.set(dut.wr_en, 1)
        for a, w in contents.items():
            ctx.set(dut.wr_addr, a)
            ctx.set(dut.wr_data, w)
            await ctx.tick()
        ctx.set(dut.wr_en, 0)
        in_flight = [None] * BRAM_READ_LATENCY  # the word each pipeline stage will deliver
        for step in range(300):
            a = rng.randrange(depth)
            enable = rng.random() < 0.7 if read_enable else True
            ctx.set(dut.rd_addr, a)
            if read_enable:
                ctx.set(dut.rd_en, enable)
            # a write elsewhere in the same cycle: never to the address being read
            w_addr = (a + 1 + rng.randrange(depth - 1)) % depth
            w_data = rng.randrange(1 << 16)
            ctx.set(dut.wr_addr, w_addr)
            ctx.set(dut.wr_data, w_data)
            ctx.set(dut.wr_en, 1)
            expected_word = contents[a]
            await ctx.tick()
            contents[w_addr] = w_data
            if enable:
                in_flight = [expected_word] + in_flight[:-1]
            if in_flight[-1] is not None:
                assert ctx.get(dut.rd_data) == in_flight[-1], (
                    f"step {step}: read {ctx.get(dut.rd_data):#06x}, "
                    f"expected {in_flight[-1]:#06x}")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


class _PlainBank(Elaboratable):
    """A 1024 × 512 memory (an accumulator bank's shape) without ``no_rw_check``."""

    def __init__(self, width=512, depth=1024):
        self.width, self.depth = width, depth
        self.wa, self.ra = Signal(range(depth)), Signal(range(depth))
        self.wd, self.rd, self.we = Signal(width), Signal(width), Signal()

    @property
    def ports(self):
        return [self.wa, self.ra, self.wd, self.rd, self.we]

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=self.width, depth=self.depth, init=[])
        wr, rd = mem.write_port(), mem.read_port()
        m.d.comb += [wr.addr.eq(self.wa), wr.data.eq(self.wd), wr.en.eq(self.we),
                     rd.addr.eq(self.ra), self.rd.eq(rd.data)]
        return m


def test_yosys_maps_it_to_block_rams_and_the_output_register():
    """1024 × 512 bits is 29 DP16KD (1K × 18 each), and the output register 512 flip-flops,
    with no LUT between them; the same memory without ``no_rw_check`` gets yosys's collision
    emulation, flip-flops and LUTs on every data bit."""
    plain = _PlainBank()
    emulated = synthesize_design(plain, "plain", BUILD / "plain", ports=plain.ports)
    assert emulated["DP16KD"] == 29 and emulated["TRELLIS_FF"] > 512, emulated
    report = synthesize_design(BlockRAM(512, 1024), "bank", BUILD / "bank")
    assert report["DP16KD"] == 29, report
    assert report["TRELLIS_FF"] == 512 and report["LUT4"] == 0, report
