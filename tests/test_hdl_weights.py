"""Amaranth-simulator test of the weight loader: per (tile, output-channel group) the requant
table lands in the right parameter slot and the weight stream comes out in DDR order, under
random grant delays, read latency and consumer backpressure."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from hdl.descriptor import DESC_LATENCY, EngineConfig, Pool, plan_layer
from hdl.engine.weights import WeightLoader

W_ADDR, PARAM_ADDR = 0x1F40, 0x7FC0  # runs cross 4 KB boundaries; regions apart


@pytest.mark.parametrize("depth", [2048, 512], ids=["replay", "fifo"])
@pytest.mark.parametrize("shape, out_ch, kernel, rows", [
    ((24, 6, 5), 40, 3, 2),  # 3 tiles x 3 output groups, 27 weight beats per input group
    ((8, 3, 3), 16, 1, None),  # one tile, one group
    ((8, 5, 3), 16, 1, 1),  # 5 tiles of one 16-beat group: replayed at the shortest period
])
def test_tables_and_weights_arrive_in_order(shape, out_ch, kernel, rows, depth):
    """The stream is the same whether the store replays it (the layer's weights fit: read from
    DDR once) or is a FIFO (read again for every tile); the DDR reads say which."""
    cfg = EngineConfig(weight_fifo_depth=min(depth, 512), weight_store_depth=depth)
    plan = plan_layer(cfg, shape, out_ch, kernel, Pool.NONE, False, in_addr=0, out_addr=0,
                      w_addr=W_ADDR, param_addr=PARAM_ADDR, max_tile_rows=rows)
    f = plan.fields
    rng = np.random.default_rng(out_ch)
    n_og, tbl = f["og_passes"], 2 * cfg.p_oc
    w_beats = [int(v) for v in rng.integers(0, 2**63, size=n_og * f["og_weight_beats"])]
    p_beats = [int(v) for v in rng.integers(0, 2**63, size=n_og * tbl)]
    ddr = {W_ADDR + 8 * k: v for k, v in enumerate(w_beats)}
    ddr.update({PARAM_ADDR + 8 * k: v for k, v in enumerate(p_beats)})
    tiles = -(-shape[1] // f["tile_conv_rows"])
    dut = WeightLoader(cfg)
    prng = random.Random(5)

    async def bench(ctx):
        ctx.set(dut.desc, f)
        await ctx.tick().repeat(DESC_LATENCY)  # the descriptor holds from DESC_LATENCY before run
        ctx.set(dut.run, 1)
        pending, beat = [], 0
        w_read = 0  # weight beats requested from DDR
        got_w, tables = [], {}  # weights popped; (slot, index) -> beat
        group = 0  # (tile, og) groups checked and released
        for cycle in range(60_000):
            if group == tiles * n_og:
                break
            ctx.set(dut.req.ready, 0)
            if ctx.get(dut.req.valid) and prng.random() < 0.4:
                ctx.set(dut.req.ready, 1)
                addr, n = ctx.get(dut.req.addr), ctx.get(dut.req.len) + 1
                assert addr // 4096 == (addr + 8 * n - 1) // 4096, f"4 KB crossed at {addr:#x}"
                pending.append((cycle + prng.randint(2, 12), addr, n))
                w_read += n if W_ADDR <= addr < PARAM_ADDR else 0
            ctx.set(dut.r.valid, 0)
            if pending and pending[0][0] <= cycle and prng.random() < 0.8:
                _, addr, n = pending[0]
                ctx.set(dut.r.valid, 1)
                ctx.set(dut.r.p.data, ddr[addr + 8 * beat])
                ctx.set(dut.r.p.last, beat == n - 1)
                beat += 1
                if beat == n:
                    pending.pop(0)
                    beat = 0
            # the compute unit takes the beats of its passes, no more (a store that replays
            # would go on)
            ready = prng.random() < 0.7 and len(got_w) < tiles * n_og * f["og_weight_beats"]
            ctx.set(dut.weights.ready, ready)
            if ready and ctx.get(dut.weights.valid):
                got_w.append(ctx.get(dut.weights.payload))
            if ctx.get(dut.params.valid):
                p = ctx.get(dut.params.payload)
                tables[(p.slot, p.index)] = p.data
            # the drain: once group `group`'s weights are all out and its table is in, check
            # both and free its slot
            ctx.set(dut.release, 0)
            og, slot = group % n_og, group % 2
            w_end = (group + 1) * f["og_weight_beats"]
            whole = all((slot, i) in tables for i in range(tbl))
            flag = ctx.get(dut.params_ready) >> slot & 1
            assert not flag or whole, f"group {group}: slot {slot} ready before its table"
            if len(got_w) >= w_end and flag:
                want_w = w_beats[og * f["og_weight_beats"]:(og + 1) * f["og_weight_beats"]]
                seen = got_w[w_end - f["og_weight_beats"]:w_end]
                bad = [k for k, (g, e) in enumerate(zip(seen, want_w, strict=True)) if g != e]
                assert not bad, (f"group {group} (og {og}): weight beat {bad[0]} of "
                                 f"{len(want_w)}: expected {want_w[bad[0]]:#x}, "
                                 f"got {seen[bad[0]]:#x}")
                for i in range(tbl):
                    want = p_beats[og * tbl + i]
                    assert tables.pop((slot, i)) == want, f"group {group}: table beat {i}"
                ctx.set(dut.release, 1 << slot)
                group += 1
            await ctx.tick()
        assert group == tiles * n_og, f"{group} of {tiles * n_og} groups arrived"
        assert len(got_w) == tiles * n_og * f["og_weight_beats"], "extra weight beats"
        replay = n_og * f["og_weight_beats"] < depth
        assert f["weights_resident"] == replay
        assert w_read == (1 if replay else tiles) * n_og * f["og_weight_beats"]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
