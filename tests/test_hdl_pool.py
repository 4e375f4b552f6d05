"""Amaranth-simulator tests of the pool walk and running max against model.golden.maxpool_int."""

import numpy as np
import pytest
from amaranth import Module
from amaranth.sim import Simulator

from hdl.descriptor import Pool
from hdl.pool import POOL_LATENCY, PoolMax, PoolWalker
from model.golden import maxpool_int

LANES, N_SUB = 8, 2


def _drain(y, pool, p0, rows, out_w, out_int32=False, upsample=False, subs=N_SUB):
    """Walk the bank of the tile whose first output row is p0 and pool it (its first ``subs``
    sub-groups); return the beats (one int8 per lane) in walk order, and the raw (sub, addr,
    j, pos) sequence."""
    c, h, w = y.shape
    step = 2 if pool == Pool.P2S2 else 1
    c0 = p0 * step
    bank = y.transpose(1, 2, 0)[c0:].reshape(-1, c)  # conv rows from c0, pixel-major
    m = Module()
    m.submodules.walker = walker = PoolWalker(n_sub=N_SUB)
    m.submodules.pool_max = pm = PoolMax(LANES)
    beats, walk = [], []

    async def bench(ctx):
        for name, value in (("pool", pool), ("out_int32", out_int32), ("upsample", upsample),
                            ("width", w), ("height", h), ("out_width", out_w), ("rows", rows),
                            ("c0", c0), ("last_sub", subs - 1)):
            ctx.set(getattr(walker, name), value)
        await ctx.tick()  # the inputs hold still from the cycle before start
        ctx.set(walker.start, 1)
        await ctx.tick()
        ctx.set(walker.start, 0)
        ctx.set(walker.step, 1)
        while True:
            addr, sub, pos = ctx.get(walker.addr), ctx.get(walker.sub), ctx.get(walker.pos)
            walk.append((sub, addr, ctx.get(walker.j), pos))
            # Outside the map the bank holds anything; use the largest value so that a
            # position wrongly taken as real would win the max.
            lanes = bank[addr, sub * LANES:(sub + 1) * LANES] if pos else [127] * LANES
            ctx.set(pm.valid, 1)
            ctx.set(pm.first, ctx.get(walker.first))
            ctx.set(pm.last, ctx.get(walker.last))
            ctx.set(pm.pos, pos)
            ctx.set(pm.y, [int(v) for v in lanes])
            if ctx.get(pm.out_valid):
                beats.append([ctx.get(pm.out[i]) for i in range(LANES)])
            done = ctx.get(walker.done)
            await ctx.tick()
            if done:
                break
        ctx.set(pm.valid, 0)
        for _ in range(POOL_LATENCY):  # the last window's max
            if ctx.get(pm.out_valid):
                beats.append([ctx.get(pm.out[i]) for i in range(LANES)])
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return np.array(beats, dtype=np.int64), walk


@pytest.mark.parametrize("pool,h,w,tile_rows", [
    (Pool.P2S2, 6, 8, 3),  # even map, one tile
    (Pool.P2S2, 7, 5, 2),  # odd map: the last row and column windows are half outside
    (Pool.P2S1, 6, 5, 2),  # bottom/right padding, tiles overlap by one conv row
    (Pool.P2S1, 1, 1, 1),  # one pixel: its window has a single real position
    (Pool.NONE, 4, 3, 2),
])
def test_pool_walk_matches_golden_maxpool(pool, h, w, tile_rows):
    rng = np.random.default_rng(h * 10 + w)
    y = rng.integers(-128, 127, size=(N_SUB * LANES, h, w)).astype(np.int8)
    if pool == Pool.NONE:
        expected = y.astype(np.int64)
    else:
        expected = maxpool_int(y, 2, 2 if pool == Pool.P2S2 else 1, 1).astype(np.int64)
    out_h, out_w = expected.shape[1:]
    for p0 in range(0, out_h, tile_rows):
        rows = min(tile_rows, out_h - p0)
        beats, _ = _drain(y, pool, p0, rows, out_w)
        # walk order: sub-group, row, column -> (channel, row, column)
        want = expected[:, p0:p0 + rows].reshape(N_SUB, LANES, rows, out_w)
        want = want.transpose(0, 2, 3, 1).reshape(-1, LANES)
        assert np.array_equal(beats, want), f"tile at output row {p0}"


def test_pool_walk_int32_emits_four_beats_per_pixel():
    y = np.zeros((N_SUB * LANES, 3, 2), dtype=np.int8)
    _, walk = _drain(y, Pool.NONE, 0, 3, 2, out_int32=True)
    assert walk == [(sub, pix, j, 1) for sub in range(N_SUB) for pix in range(6) for j in range(4)]


@pytest.mark.parametrize("h,w,tile_rows", [(5, 3, 2), (1, 1, 1), (4, 6, 4)])
def test_pool_walk_upsample_emits_the_nearest_x2_map(h, w, tile_rows):
    """Upsample: each output row twice, each pixel twice, so the beats of a tile are the rows
    ``2·p0 .. 2·(p0 + rows)`` of the upsampled map, one pixel per position."""
    rng = np.random.default_rng(h * 10 + w)
    y = rng.integers(-128, 127, size=(N_SUB * LANES, h, w)).astype(np.int8)
    upsampled = np.repeat(np.repeat(y, 2, axis=1), 2, axis=2).astype(np.int64)
    for p0 in range(0, h, tile_rows):
        rows = min(tile_rows, h - p0)
        beats, walk = _drain(y, Pool.NONE, p0, rows, w, upsample=True)
        want = upsampled[:, 2 * p0:2 * (p0 + rows)].reshape(N_SUB, LANES, 2 * rows, 2 * w)
        want = want.transpose(0, 2, 3, 1).reshape(-1, LANES)
        assert len(walk) == len(want) == N_SUB * rows * w * 4
        for k, (got, exp) in enumerate(zip(beats, want, strict=True)):
            sub, r, rest = k // (4 * rows * w), k // (2 * w) % (2 * rows), k % (2 * w)
            assert np.array_equal(got, exp), (
                f"tile at row {p0}: channels {sub * LANES}-{sub * LANES + LANES - 1}, upsampled "
                f"row {2 * p0 + r}, column {rest}: expected {exp.tolist()}, got {got.tolist()}")


@pytest.mark.parametrize("pool", [Pool.P2S2, Pool.NONE])
def test_pool_walk_ends_after_the_last_real_sub_group(pool):
    """A layer's last output-channel group may hold fewer real channels than the bank: the walk
    with ``last_sub`` 0 is the full walk's first sub-group, and ``done`` comes at its end."""
    y = np.zeros((N_SUB * LANES, 5, 4), dtype=np.int8)
    out_w = 2 if pool == Pool.P2S2 else 4
    _, full = _drain(y, pool, 0, 2, out_w)
    _, first = _drain(y, pool, 0, 2, out_w, subs=1)
    assert first == [step for step in full if step[0] == 0]
    assert len(first) < len(full)
