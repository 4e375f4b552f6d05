"""Amaranth-simulator test of the accumulator banks: bias on the first pass, read-modify-write
over the later ones at the shortest pass the engine allows, bank states, and the drain's reads,
against a naive Python sum."""

import numpy as np
from amaranth.sim import Simulator

from hdl.bram import BRAM_READ_LATENCY
from hdl.descriptor import EngineConfig
from hdl.engine.accum import ACC_READ_LEAD, AccumulatorBanks

P_OC, SUM_WIDTH, DEPTH = 4, 19, 16


def test_banks_accumulate_passes_and_hand_over_to_the_drain():
    rng = np.random.default_rng(0)
    dut = AccumulatorBanks(P_OC, SUM_WIDTH, DEPTH)
    # two groups (banks 0 and 1), 3 passes each; the second group's passes are as short as
    # the read-modify-write allows (min_pass)
    groups = [(0, 7, 3), (1, EngineConfig().min_pass, 3)]  # (bank, pixels, passes)
    bias = rng.integers(-2**31, 2**31, size=(2, P_OC))
    sums = {(b, p): rng.integers(-2**18, 2**18, size=(n, P_OC)) for b, n, passes in groups
            for p in range(passes)}
    def wrap32(v):  # the bank keeps 32-bit two's complement (docs/fixed-point.md §3)
        return (v + 2**31) % 2**32 - 2**31

    expected = {b: [[wrap32(int(bias[b][o]) + sum(int(sums[(b, p)][x][o])
                                                  for p in range(passes)))
                     for o in range(P_OC)] for x in range(n)] for b, n, passes in groups}
    # the beat schedule: one pixel per cycle; `read` ACC_READ_LEAD cycles before its beat
    beats = []
    for b, n, passes in groups:
        for p in range(passes):
            for x in range(n):
                beats.append({"sums": [int(v) for v in sums[(b, p)][x]], "pix": x, "bank": b,
                              "first": p == 0, "last": p == passes - 1 and x == n - 1})

    async def bench(ctx):
        ctx.set(dut.bias, [[int(v) for v in row] for row in bias])
        assert ctx.get(dut.free) == 0b11
        ctx.set(dut.claim, 0b11)
        await ctx.tick()
        ctx.set(dut.claim, 0)
        assert ctx.get(dut.free) == 0 and ctx.get(dut.full) == 0
        for k in range(len(beats) + ACC_READ_LEAD):
            lead = beats[k] if k < len(beats) else None
            beat = beats[k - ACC_READ_LEAD] if k >= ACC_READ_LEAD else None
            ctx.set(dut.read.valid, lead is not None)
            if lead:
                ctx.set(dut.read.p, {"pix": lead["pix"], "bank": lead["bank"],
                                     "first": lead["first"]})
            ctx.set(dut.i.valid, beat is not None)
            if beat:
                ctx.set(dut.i.p, beat)
            await ctx.tick()
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.read.valid, 0)
        await ctx.tick()
        assert ctx.get(dut.full) == 0b11, f"full = {ctx.get(dut.full):#b} after the last writes"
        for b, n, _ in groups:
            for x in range(n):
                ctx.set(dut.drain_addr, x)
                await ctx.tick().repeat(BRAM_READ_LATENCY)
                got = [int(v) for v in ctx.get(dut.drain_data[b])]
                assert got == expected[b][x], f"bank {b}, pixel {x}: expected " \
                                              f"{expected[b][x]}, got {got}"
        ctx.set(dut.drained, 0b01)
        await ctx.tick()
        ctx.set(dut.drained, 0)
        assert ctx.get(dut.free) == 0b01 and ctx.get(dut.full) == 0b10
        ctx.set(dut.clear, 1)
        await ctx.tick()
        assert ctx.get(dut.free) == 0b11, "clear returns both banks to FREE"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
