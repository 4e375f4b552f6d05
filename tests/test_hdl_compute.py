"""Amaranth-simulator test of the compute unit: the sums it hands the accumulator banks, over
every pass of a layer, add up to the golden model's convolution (model.golden.conv2d_int), tile
by tile and output-channel group by group, under random weight-stream and input-slot delays."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from firmware.layout import fm_to_ddr, weights_to_ddr
from hdl.descriptor import DESC_LATENCY, Buffering, EngineConfig, Pool, plan_layer
from hdl.engine.accum import ACC_READ_LEAD
from hdl.engine.compute import Compute
from hdl.engine.loader import IBUF_READ_LATENCY
from model.golden import conv2d_int


def _beats(raw):
    return [int.from_bytes(raw[k:k + 8], "little") for k in range(0, len(raw), 8)]


@pytest.mark.parametrize("shape, out_ch, kernel, rows, buffering", [
    ((16, 5, 6), 32, 3, 2, Buffering.STREAM),  # 3 tiles, 2 output groups, 2 input groups
    ((16, 5, 6), 32, 3, 2, Buffering.SPLIT),  # the same, resident: chunks read for every og
    ((24, 5, 6), 48, 3, 2, Buffering.SINGLE),  # resident in the whole buffer
    ((24, 4, 3), 32, 1, 1, Buffering.SPLIT),  # 1x1 resident: a chunk per pass, 4-cycle passes
    ((8, 1, 2), 16, 1, None, None),  # 2-pixel passes: padded to min_pass
    ((3, 4, 3), 16, 3, 3, None),  # C < P_ic: padded lanes
])
def test_pass_sums_add_up_to_the_convolution(shape, out_ch, kernel, rows, buffering):
    cfg = EngineConfig(ibuf_depth=4096)  # two banks: the halves in different banks
    c, h, w = shape
    rng = np.random.default_rng(c * h + w)
    x = rng.integers(-128, 128, size=shape).astype(np.int8)
    wq = rng.integers(-127, 128, size=(out_ch, c, kernel, kernel)).astype(np.int8)
    plan = plan_layer(cfg, shape, out_ch, kernel, Pool.NONE, False, in_addr=0, out_addr=0,
                      w_addr=0, param_addr=0, pad_value=0, max_tile_rows=rows,
                      buffering=buffering)
    f = plan.fields
    acc = conv2d_int(x, wq, np.zeros(out_ch, np.int32), 1, kernel // 2)
    n_og = f["og_passes"]
    acc = np.concatenate([acc, np.zeros((n_og * cfg.p_oc - out_ch, h, w), np.int64)])
    xraw, wbeats = fm_to_ddr(x), _beats(weights_to_ddr(wq, cfg.p_ic, cfg.p_oc))
    og_beats = f["og_weight_beats"]
    tiles = list(range(0, h, f["tile_conv_rows"]))
    groups = [(c0, og) for c0 in tiles for og in range(n_og)]
    # input units, in order: resident, a tile's chunks (input groups) back to back, loaded once;
    # streaming, one chunk per (tile, og, ig); a chunk holds the rows from the halo above
    units = []
    for c0, og in groups:
        if f["resident"] and og:
            continue
        first = c0 - 1 if kernel == 3 and c0 else c0
        end = min(c0 + f["tile_conv_rows"] + (1 if kernel == 3 else 0), h)
        chunks = [_beats(xraw[(g * h + first) * w * 8:(g * h + end) * w * 8])
                  for g in range(f["in_groups"])]
        units += [chunks] if f["resident"] else [[ch] for ch in chunks]
    half = 0 if f["single_region"] else cfg.ibuf_depth // 2
    stream = [b for _, og in groups for b in wbeats[og * og_beats:(og + 1) * og_beats]]
    dut = Compute(cfg)
    prng = random.Random(c)

    async def bench(ctx):
        ctx.set(dut.desc, f)
        await ctx.tick().repeat(DESC_LATENCY)  # the descriptor holds from DESC_LATENCY before run
        ctx.set(dut.run, 1)
        held = [None, None]  # the unit in each half, and its whole chunks
        mem = [0] * cfg.ibuf_depth
        reads = [0] * (IBUF_READ_LATENCY - 1)  # buffer addresses in flight
        loaded, sent, leads, done = 0, 0, [], []
        bank_busy, sums = [False, False], {}
        freed = [-9, -9]  # the cycle each half was released
        for cycle in range(80_000):
            if len(done) == len(groups):
                break
            # input units: claim the next unit's half when free (single region: both), then
            # load its chunks one by one after random delays (the loader's first beat comes
            # at least 4 cycles after a release: SLOT, SPAN1, SPAN2, CALC)
            free = [held[hh] is None and cycle >= freed[hh] + 4 for hh in (0, 1)]
            free = free[loaded % 2] and (half or free[1 - loaded % 2])
            if loaded < len(units) and free:
                held[loaded % 2] = [loaded, 0]
                loaded += 1
            for hh, unit in enumerate(held):
                if unit is not None and unit[1] < len(units[unit[0]]) and prng.random() < 0.2:
                    base = hh * half + sum(len(ch) for ch in units[unit[0]][:unit[1]])
                    chunk = units[unit[0]][unit[1]]
                    mem[base:base + len(chunk)] = chunk
                    unit[1] += 1
            ctx.set(dut.ready, [0 if u is None else u[1] for u in held])
            ctx.set(dut.bank_free, sum(1 << b for b in (0, 1) if not bank_busy[b]))
            # the weight stream, with random gaps
            offer = sent < len(stream) and prng.random() < 0.7
            ctx.set(dut.weights.valid, offer)
            ctx.set(dut.weights.payload, stream[sent] if offer else 0)
            took = offer and ctx.get(dut.weights.ready)
            addr = ctx.get(dut.buf_addr)
            for hh in (0, 1):
                if ctx.get(dut.release) >> hh & 1:
                    held[hh], freed[hh] = None, cycle
            claim = ctx.get(dut.bank_claim)
            for b in (0, 1):
                if claim >> b & 1:
                    assert not bank_busy[b], f"bank {b} claimed while busy"
                    bank_busy[b] = True
            leads.append((ctx.get(dut.read.valid), ctx.get(dut.read.p.pix),
                          ctx.get(dut.read.p.bank), ctx.get(dut.read.p.first)))
            if ctx.get(dut.acc.valid):
                p = ctx.get(dut.acc.payload)
                lead = leads[-1 - ACC_READ_LEAD]
                assert lead == (1, p.pix, p.bank, p.first), f"read {lead} does not lead {p}"
                key = (p.bank, p.pix)
                row = [int(v) for v in p.sums]
                sums[key] = row if p.first else [a + b for a, b in zip(sums[key], row,
                                                                       strict=True)]
                if p.last:  # the group is complete: collect the bank, free it
                    done.append({pix: v for (b, pix), v in sums.items() if b == p.bank})
                    sums = {k: v for k, v in sums.items() if k[0] != p.bank}
                    bank_busy[p.bank] = False
            await ctx.tick()
            sent += took
            reads.append(addr)
            ctx.set(dut.buf_data, mem[reads.pop(0)])
        assert len(done) == len(groups), f"{len(done)} of {len(groups)} groups completed"
        for q, ((c0, og), got) in enumerate(zip(groups, done, strict=True)):
            npix = min(f["tile_conv_rows"], h - c0) * w
            assert sorted(got) == list(range(npix)), f"group {q}: pixels {sorted(got)}"
            for pix in range(npix):
                y, xx = c0 + pix // w, pix % w
                want = [int(v) for v in acc[og * cfg.p_oc:(og + 1) * cfg.p_oc, y, xx]]
                assert got[pix] == want, f"group {q} (rows from {c0}, og {og}), pixel " \
                                         f"({y}, {xx}): expected {want}, got {got[pix]}"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
