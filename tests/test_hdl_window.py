"""Amaranth-simulator tests of the window generator against the golden model's im2col."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hdl.window import WindowGen
from model.windows import im2col

MIN_PASS = 4


def _walk(x, k, c0, rows, pad_value):
    """Run one pass per tap over conv rows [c0, c0 + rows) of map x (H, W) and return, per tap,
    the values the engine would feed the array (buffer read, or pad_value when ``pad``)."""
    h, w = x.shape
    # The input buffer of a tile: rows from c0 - 1 (3x3, c0 > 0) or c0, to the tile's last input.
    first = c0 - 1 if (k == 3 and c0 > 0) else c0
    last = min(h, c0 + rows + (1 if k == 3 else 0))
    buf = x[first:last].reshape(-1)
    npix = rows * w
    dut = WindowGen(min_pass=MIN_PASS)
    taps = [(ky, kx) for ky in range(k) for kx in range(k)]
    got = {}

    async def bench(ctx):
        ctx.set(dut.k3, k == 3)
        ctx.set(dut.width, w)
        ctx.set(dut.height, h)
        await ctx.tick()  # the layer's shape is stable from one cycle before the first start
        for ky, kx in taps:
            # the pass's tap and tile are stable from two cycles before its start
            ctx.set(dut.ky, ky)
            ctx.set(dut.kx, kx)
            ctx.set(dut.c0, c0)
            ctx.set(dut.npix, npix)
            await ctx.tick().repeat(2)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            values, cycles = [], 0
            while ctx.get(dut.running):
                cycles += 1
                if ctx.get(dut.valid):
                    assert ctx.get(dut.pix) == len(values)
                    values.append(pad_value if ctx.get(dut.pad) else int(buf[ctx.get(dut.addr)]))
                    assert ctx.get(dut.last_pix) == (len(values) == npix)
                ended = ctx.get(dut.end)
                await ctx.tick()
                if ended:
                    break
            assert cycles == max(npix, MIN_PASS)
            got[ky, kx] = values

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("h,w,k,c0,rows", [
    (5, 7, 3, 0, 5),  # whole map, one tile
    (9, 6, 3, 3, 3),  # a middle tile
    (9, 6, 3, 6, 3),  # the bottom tile
    (4, 1, 3, 0, 4),  # one column: left and right taps both pad
    (3, 2, 3, 0, 3),  # two columns: every pixel ends or starts a row
    (1, 1, 3, 0, 1),  # one pixel: pass padded to min_pass
    (6, 5, 1, 2, 2),  # 1x1 kernel, no padding
])
def test_window_generator_matches_im2col(h, w, k, c0, rows):
    rng = np.random.default_rng(h * 100 + w * 10 + c0)
    x = rng.integers(-128, 128, size=(h, w)).astype(np.int64)
    # Zero padding (contract §1); the map has no zeros, so a wrong pad flag cannot hide.
    x[x == 0] = 1
    got = _walk(x, k, c0, rows, 0)
    cols = im2col(x[None], k, 1, k // 2)  # (k*k, H*W), the golden model's unfolding
    for (ky, kx), values in got.items():
        expected = cols[ky * k + kx].reshape(h, w)[c0:c0 + rows].reshape(-1)
        assert values == expected.tolist(), f"tap ({ky}, {kx})"
