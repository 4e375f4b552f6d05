"""Amaranth-simulator test of the engine's writer: output FIFO → AXI write bursts, against the
feature-map layout of firmware.layout (the oracle), under random FIFO fill and AXI backpressure."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from firmware.layout import fm_to_ddr
from hdl.descriptor import DESC_LATENCY, EngineConfig, Pool, plan_layer
from hdl.engine.writer import Writer

OUT_ADDR = 0xF40  # not 4 KB aligned: runs cross a 4 KB boundary


def _drain_order(fm, plan, cfg, int32):
    """The FIFO's contents in the drain's order: per tile, output-channel group, 8-channel
    sub-group (real ones only), row, column, beat."""
    f = plan.fields
    raw = fm_to_ddr(fm)
    beat = (32 if int32 else 8)  # bytes per pixel and group
    n_sub = cfg.p_oc // cfg.p_ic
    beats = []
    for p0 in range(0, f["out_height"], f["tile_rows"]):
        for og in range(f["og_passes"]):
            for sub in range(n_sub):
                g = og * n_sub + sub
                if g >= f["out_groups"]:
                    continue
                for y in range(p0, min(p0 + f["tile_rows"], f["out_height"])):
                    for x in range(f["out_width"]):
                        base = ((g * f["out_height"] + y) * f["out_width"] + x) * beat
                        beats.extend(int.from_bytes(raw[base + k:base + k + 8], "little")
                                     for k in range(0, beat, 8))
    return beats, raw


@pytest.mark.parametrize("channels, hw, pool, int32, rows", [
    (24, (5, 7), Pool.NONE, False, 2),  # the last output-channel group is half padding
    (16, (6, 5), Pool.P2S2, False, 1),
    (8, (3, 300), Pool.NONE, True, None),  # int32: four beats per pixel, long runs
])
def test_writer_puts_every_beat_where_the_layout_says(channels, hw, pool, int32, rows):
    cfg = EngineConfig()
    rng = np.random.default_rng(channels)
    plan = plan_layer(cfg, (8, *hw), channels, 3, pool, int32, in_addr=0, out_addr=OUT_ADDR,
                      w_addr=0, param_addr=0, max_tile_rows=rows)
    shape = (channels, *plan.out_hw)
    fm = rng.integers(-2**31, 2**31, size=shape, dtype=np.int64).astype(
        np.int32 if int32 else np.int8)
    beats, expected = _drain_order(fm, plan, cfg, int32)
    dut = Writer(cfg)
    memory, bursts = {}, []
    prng = random.Random(7)

    async def bench(ctx):
        ctx.set(dut.desc, plan.fields)
        await ctx.tick().repeat(DESC_LATENCY)  # the descriptor holds from DESC_LATENCY before run
        ctx.set(dut.run, 1)
        fifo, pushed, aw, count = [], 0, None, 0
        for cycle in range(40_000):
            if ctx.get(dut.done):
                break
            # the drain: pushes at random, never beyond the FIFO's depth
            if pushed < len(beats) and len(fifo) < cfg.out_fifo_depth and prng.random() < 0.7:
                fifo.append(beats[pushed])
                pushed += 1
            ctx.set(dut.fifo_level, len(fifo))
            ctx.set(dut.fifo_data, fifo[0] if fifo else 0)
            awready = prng.random() < 0.5
            wready = prng.random() < 0.6
            ctx.set(dut.awready, awready)
            ctx.set(dut.wready, wready)
            ctx.set(dut.bvalid, 0)
            if ctx.get(dut.awvalid) and awready:
                assert aw is None, f"cycle {cycle}: a second address before the data"
                aw = (ctx.get(dut.awaddr), ctx.get(dut.awlen) + 1)
                bursts.append(aw)
                count = 0
            if ctx.get(dut.wvalid) and wready:
                assert aw is not None, f"cycle {cycle}: write data before its address"
                assert ctx.get(dut.fifo_pop), f"cycle {cycle}: a beat sent without a pop"
                memory[aw[0] + 8 * count] = fifo.pop(0)
                count += 1
                assert ctx.get(dut.wlast) == (count == aw[1]), f"cycle {cycle}: WLAST"
                if count == aw[1]:
                    aw = None
                    ctx.set(dut.bvalid, 1)
            await ctx.tick()
        else:
            raise AssertionError(f"writer not done after 40000 cycles, {pushed} beats pushed")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for addr, n in bursts:
        # Ref: AMBA AXI4 spec A3.4.1: no burst crosses a 4 KB boundary; at most max_burst beats.
        assert addr // 4096 == (addr + 8 * n - 1) // 4096, f"burst at {addr:#x}, {n} beats"
        assert 1 <= n <= cfg.max_burst
    assert len(memory) == len(expected) // 8, (len(memory), len(expected) // 8)
    for k in range(0, len(expected), 8):
        want = int.from_bytes(expected[k:k + 8], "little")
        got = memory.get(OUT_ADDR + k)
        assert got == want, f"beat at {OUT_ADDR + k:#x}: expected {want:#x}, got {got}"
