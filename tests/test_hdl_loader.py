"""Amaranth-simulator test of the input loader: every unit of the input buffer (a resident
tile's chunks, or one streamed chunk) holds exactly the input rows the tiling rules of
docs/engine.md name, at its half's start, read from a DDR image in firmware.layout's format,
under random grant delays and read latency, in each buffering mode and bank count."""

import random
from pathlib import Path

import numpy as np
import pytest
from amaranth.sim import Simulator

from firmware.layout import fm_to_ddr
from hdl.descriptor import DESC_LATENCY, Buffering, EngineConfig, Pool, plan_layer
from hdl.engine.loader import IBUF_READ_LATENCY, InputBuffer, InputLoader, buffer_banks
from hdl.synth import synthesize_design

IN_ADDR = 0x7C0  # not 4 KB aligned: runs cross a 4 KB boundary


def _expected_units(x, plan, kernel, cfg):
    """Per unit in the loader's order: (buffer address of its first word, its beats), from the
    tiling rules alone: a chunk is one input group's rows from one above the tile (3×3, not the
    first tile) to one below its conv rows (+ the 2×2/1 overlap row); resident, a unit is a
    tile's chunks back to back, loaded once; streaming, one chunk per (tile, og, ig). Units
    alternate between the buffer's halves unless ``single_region``."""
    f = plan.fields
    c, h, w = x.shape
    raw = fm_to_ddr(x)
    extra = 1 if f["pool"] == Pool.P2S1.value else 0

    def chunk(first, end, g):
        start = (g * h + first) * w * 8
        run = raw[start:start + (end - first) * w * 8]
        return [int.from_bytes(run[k:k + 8], "little") for k in range(0, len(run), 8)]

    units = []
    for c0 in range(0, h, f["tile_conv_rows"]):
        c1 = min(c0 + f["tile_conv_rows"] + extra, h)
        first = c0 - 1 if kernel == 3 and c0 > 0 else c0
        end = min(c1 + (1 if kernel == 3 else 0), h)
        groups = range(f["in_groups"])
        if f["resident"]:
            units.append([b for g in groups for b in chunk(first, end, g)])
        else:
            units += [chunk(first, end, g) for _og in range(f["og_passes"]) for g in groups]
    half = 0 if f["single_region"] else cfg.ibuf_depth // 2
    return [((u % 2) * half, beats) for u, beats in enumerate(units)], raw


@pytest.mark.parametrize("cfg", [EngineConfig(), EngineConfig(ibuf_depth=4096)],
                         ids=["3banks", "1bank"])
@pytest.mark.parametrize("shape, out_ch, kernel, pool, rows, buffering", [
    ((16, 7, 9), 32, 3, Pool.NONE, 2, Buffering.STREAM),  # 4 tiles, 2 og, 2 input groups
    ((16, 7, 9), 32, 3, Pool.NONE, 2, Buffering.SPLIT),  # resident: each chunk loaded once
    ((24, 7, 9), 32, 3, Pool.NONE, 3, Buffering.SINGLE),  # resident in the whole buffer
    ((8, 5, 300), 16, 1, Pool.NONE, 2, None),  # 1x1: no halo; long runs split into bursts
    ((3, 6, 5), 16, 3, Pool.P2S1, 2, None),  # the overlap row of 2x2/1
])
def test_every_unit_holds_its_tile_rows(cfg, shape, out_ch, kernel, pool, rows, buffering):
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(-128, 128, size=shape).astype(np.int8)
    plan = plan_layer(cfg, shape, out_ch, kernel, pool, False, in_addr=IN_ADDR, out_addr=0,
                      w_addr=0, param_addr=0, max_tile_rows=rows, buffering=buffering)
    units, raw = _expected_units(x, plan, kernel, cfg)
    n_chunks = plan.fields["in_groups"] if plan.fields["resident"] else 1
    dut = InputLoader(cfg)
    prng = random.Random(3)

    async def bench(ctx):
        ctx.set(dut.desc, plan.fields)
        await ctx.tick().repeat(DESC_LATENCY)  # the descriptor holds from DESC_LATENCY before run
        ctx.set(dut.run, 1)
        pending = []  # (cycle the data starts, address, beats) of granted bursts, in order
        beat = 0
        checked = 0
        for cycle in range(40_000):
            if checked == len(units):
                break
            # the arbiter + DDR: grant at random, data after a random latency
            ctx.set(dut.req.ready, 0)
            granted = ctx.get(dut.req.valid) and prng.random() < 0.4
            if granted:
                ctx.set(dut.req.ready, 1)
                addr, n = ctx.get(dut.req.addr), ctx.get(dut.req.len) + 1
                assert addr // 4096 == (addr + 8 * n - 1) // 4096, f"4 KB crossed at {addr:#x}"
                pending.append((cycle + prng.randint(2, 12), addr, n))
            ctx.set(dut.r.valid, 0)
            if pending and pending[0][0] <= cycle and prng.random() < 0.8:
                _, addr, n = pending[0]
                off = addr - IN_ADDR + 8 * beat
                ctx.set(dut.r.valid, 1)
                ctx.set(dut.r.p.data, int.from_bytes(raw[off:off + 8], "little"))
                ctx.set(dut.r.p.last, beat == n - 1)
                beat += 1
                if beat == n:
                    pending.pop(0)
                    beat = 0
            # the compute unit: check the next unit once all its chunks are whole, release it
            half = checked % 2
            ctx.set(dut.release, 0)
            ready = ctx.get(dut.ready[half])
            assert ready <= n_chunks, f"unit {checked}: {ready} of {n_chunks} chunks ready"
            idle = not granted and not ctx.get(dut.r.valid)  # the bus is quiet while we read
            if ready == n_chunks and idle:
                base, want = units[checked]
                for k, value in enumerate(want):
                    ctx.set(dut.rd_addr, base + k)
                    for _ in range(IBUF_READ_LATENCY):
                        await ctx.tick()
                    got = ctx.get(dut.rd_data)
                    assert got == value, (f"unit {checked}, beat {k}: expected {value:#x}, "
                                          f"got {got:#x}")
                ctx.set(dut.release, 1 << half)
                checked += 1
            await ctx.tick()
        assert checked == len(units), f"{checked} of {len(units)} units arrived"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("depth, banks", [
    (22528, [(0, 16384), (16384, 4096), (20480, 2048)]),  # the default: 11 × 2048
    (4096, [(0, 4096)]),
    (128, [(0, 128)]),
    (40960, [(0, 16384), (16384, 16384), (32768, 8192)]),  # 2.5 × the largest bank
])
def test_buffer_banks_are_the_binary_digits_of_the_depth(depth, banks):
    assert buffer_banks(depth) == banks


def test_input_buffer_reads_every_bank_back():
    """Words written around every bank boundary read back IBUF_READ_LATENCY cycles after
    their address, in an order that changes bank every read."""
    dut = InputBuffer(64, 22528)
    rng = random.Random(7)
    addrs = sorted({a for b in (0, 16384, 20480, 22528) for a in range(b - 3, b + 3)
                    if 0 <= a < 22528} | {rng.randrange(22528) for _ in range(40)})
    words = {a: rng.getrandbits(64) for a in addrs}
    order = addrs[::2] + addrs[1::2]
    got = []

    async def bench(ctx):
        ctx.set(dut.wr_en, 1)
        for a, w in words.items():
            ctx.set(dut.wr_addr, a)
            ctx.set(dut.wr_data, w)
            await ctx.tick()
        ctx.set(dut.wr_en, 0)
        for a in order + [0] * IBUF_READ_LATENCY:
            ctx.set(dut.rd_addr, a)
            await ctx.tick()
            got.append(ctx.get(dut.rd_data))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for k, a in enumerate(order):
        word = got[k + IBUF_READ_LATENCY - 1]
        assert word == words[a], f"address {a}: read {word:#x}, wrote {words[a]:#x}"


def test_input_buffer_is_88_block_rams_and_one_small_mux():
    """The default buffer maps to 88 DP16KD (64 in 16K × 1, 16 in 4K × 4, 8 in 2K × 9) with
    no mux inside a bank: at most three LUT4 per bit of the word for the 3-way read mux and
    the bank decode (banks of 2048 words needed an 11-way mux, five or more per bit)."""
    out = Path(__file__).resolve().parents[1] / "build" / "test_ibuf"
    report = synthesize_design(InputBuffer(64, 22528), "ibuf", out)
    assert report["DP16KD"] == 88, report
    assert report["LUT4"] <= 3 * 64, report
