"""Amaranth-simulator test of the drain: full accumulator banks → output beats, against the
golden model's requantize and maxpool_int (and the int32 beat layout), over several tiles and
output-channel groups, under random output-FIFO backpressure."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from firmware.layout import fm_to_ddr
from hdl.bram import BRAM_READ_LATENCY
from hdl.descriptor import DESC_LATENCY, EngineConfig, Pool, plan_layer
from hdl.engine.drain import Drain
from model.golden import maxpool_int, requantize


def _expected_beats(out, plan, cfg, int32, scale=1):
    """The output map as beats in the drain's order: tile, og, real 8-channel sub-group, row,
    column (and the four int32 beats of a pixel). ``scale`` 2: ``out`` is the upsampled map, a
    tile of ``tile_rows`` drained rows is twice as many rows of it."""
    f = plan.fields
    raw = fm_to_ddr(out)
    per_pixel = 32 if int32 else 8
    n_sub = cfg.p_oc // cfg.p_ic
    out_h, out_w = out.shape[1:]
    beats = []
    for p0 in range(0, out_h, scale * f["tile_rows"]):
        for og in range(f["og_passes"]):
            for g in range(og * n_sub, min((og + 1) * n_sub, f["out_groups"])):
                for y in range(p0, min(p0 + scale * f["tile_rows"], out_h)):
                    for x in range(out_w):
                        base = ((g * out_h + y) * out_w + x) * per_pixel
                        beats.extend(int.from_bytes(raw[k:k + 8], "little")
                                     for k in range(base, base + per_pixel, 8))
    return beats


@pytest.mark.parametrize("channels, hw, pool, int32, rows, upsample", [
    (24, (5, 7), Pool.P2S2, False, 1, False),  # odd map, 3 tiles, last group half padding
    (16, (4, 5), Pool.P2S1, False, 2, False),  # 2x2/1: the overlap row of each tile
    (8, (3, 4), Pool.NONE, True, 2, False),  # int32
    (40, (3, 3), Pool.NONE, False, None, False),
    (24, (5, 3), Pool.NONE, False, 2, True),  # upsample: 3 tiles, the last one row
])
def test_drain_matches_requantize_and_maxpool(channels, hw, pool, int32, rows, upsample):
    cfg = EngineConfig()
    rng = np.random.default_rng(channels + hw[0])
    plan = plan_layer(cfg, (8, *hw), channels, 3, pool, int32, in_addr=0, out_addr=0,
                      w_addr=0, param_addr=0, max_tile_rows=rows, upsample=upsample)
    f = plan.fields
    h, w = hw
    n_oc = f["og_passes"] * cfg.p_oc
    acc = rng.integers(-2**31, 2**31, size=(n_oc, h, w), dtype=np.int64)
    acc[:, 0, 0] = [-2**31, 2**31 - 1] * (n_oc // 2)  # both saturation ends
    m_pos = rng.integers(0, 2**16, size=n_oc)
    m_neg = rng.integers(0, 2**16, size=n_oc)
    shift = rng.integers(20, 48, size=n_oc)
    if int32:
        out = acc[:channels].astype(np.int32)
    else:
        y = requantize(acc, m_pos, m_neg, shift)[:channels]
        out = y if pool == Pool.NONE else maxpool_int(y, 2, 2 if pool == Pool.P2S2 else 1, 1)
    if upsample:
        out = np.repeat(np.repeat(out, 2, axis=1), 2, axis=2)
    expected = _expected_beats(out, plan, cfg, int32, 2 if upsample else 1)
    # the requant table, as the weight loader stores it: two words per channel, per slot
    table = [(int(s) << 32, int(p) | int(q) << 16) for s, p, q in zip(shift, m_pos, m_neg,
                                                                          strict=True)]
    dut = Drain(cfg)
    prng = random.Random(channels)
    extra = 1 if pool == Pool.P2S1 else 0

    async def bench(ctx):
        ctx.set(dut.desc, f)
        await ctx.tick().repeat(DESC_LATENCY)  # the descriptor holds from DESC_LATENCY before run
        ctx.set(dut.run, 1)
        got, fifo_ready = [], False
        # the banks' words read in the last cycles, delivered BRAM_READ_LATENCY cycles after
        # their address
        reads = [[[0] * cfg.p_oc] * 2] * (BRAM_READ_LATENCY - 1)
        groups = [(c0, og) for c0 in range(0, h, f["tile_conv_rows"])
                  for og in range(f["og_passes"])]
        q = 0  # the bank the compute unit fills next
        filled = {}  # bank -> (c0, og) it holds
        for _cycle in range(100_000):
            if len(got) == len(expected) and not filled:
                break
            # the compute unit: fill a bank as soon as it is free (the drain's `free`)
            free = ctx.get(dut.free)
            for b in (0, 1):
                if free >> b & 1:
                    del filled[b]
            if q < len(groups) and q % 2 not in filled:
                filled[q % 2] = groups[q]
                c0, og = groups[q]
                params = [0] * (4 * cfg.p_oc)
                for b, (_, bog) in filled.items():
                    for o in range(cfg.p_oc):
                        params[b * 2 * cfg.p_oc + 2 * o: b * 2 * cfg.p_oc + 2 * o + 2] = \
                            table[bog * cfg.p_oc + o]
                ctx.set(dut.params, params)
                q += 1
            ctx.set(dut.full, sum(1 << b for b in filled))
            # both banks' words at this cycle's address: conv rows from c0, row-major
            addr = ctx.get(dut.bank_addr)
            words = []
            for b in (0, 1):
                if b in filled:
                    c0, og = filled[b]
                    conv_rows = min(f["tile_conv_rows"] + extra, h - c0)
                    pix = min(addr, conv_rows * w - 1)
                    cy, cx = c0 + pix // w, pix % w
                    words.append([int(acc[og * cfg.p_oc + o, cy, cx]) for o in range(cfg.p_oc)])
                else:
                    words.append([0] * cfg.p_oc)
            ctx.set(dut.o.ready, fifo_ready)
            if fifo_ready and ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload))
            fifo_ready = prng.random() < 0.3
            await ctx.tick()
            reads.append(words)
            ctx.set(dut.bank_data, reads.pop(0))
        assert len(got) == len(expected), f"{len(got)} beats of {len(expected)}"
        for k, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert g == e, f"beat {k}: expected {e:#018x}, got {g:#018x}"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
