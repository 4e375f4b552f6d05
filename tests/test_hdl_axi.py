"""Amaranth-simulator tests of the AXI helpers and the descriptor packing."""

import random

import pytest
from amaranth import Array, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, connect
from amaranth.sim import Simulator

from hdl.axi import (
    BURST_PLAN_LATENCY,
    WISHBONE_SLICE_LATENCY,
    BurstPlanner,
    ReadArbiter,
    WishboneRegisterSlice,
    WishboneSignature,
)
from hdl.descriptor import Descriptor, EngineConfig, Pool, plan_layer


@pytest.mark.parametrize("addr,remaining,expected", [
    (0x0000, 1000, 128),  # capped by max_beats
    (0x0FF8, 1000, 1),  # one beat before the 4 KB boundary
    (0x0F00, 1000, 32),  # 256 bytes to the boundary
    (0x1000, 5, 5),  # remainder
    (0x2F80, 16, 16),  # fits exactly before the boundary
    (0x0F00, 40, 32),  # under max_beats, over the boundary: not the last burst
])
def test_burst_plan_never_crosses_4k(addr, remaining, expected):
    planner = BurstPlanner(addr_width=32, remaining_width=24, max_beats=128, beat_bytes=8)

    async def bench(ctx):
        ctx.set(planner.addr, addr)
        ctx.set(planner.remaining, remaining)
        # Ref: AMBA AXI4 spec A3.4.1: the burst ends at or before the 4 KB boundary.
        assert (addr % 4096) + 8 * expected <= 4096
        await ctx.tick().repeat(BURST_PLAN_LATENCY)
        assert ctx.get(planner.beats) == expected, f"BurstPlanner at {addr:#x}, {remaining}"
        assert ctx.get(planner.last) == (expected == remaining), \
            f"BurstPlanner's last at {addr:#x}, {remaining}"

    sim = Simulator(planner)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_read_arbiter_round_robin_and_stable_under_backpressure():
    dut = ReadArbiter(2, addr_width=32, data_width=64)
    rng = random.Random(1)
    granted = []

    async def bench(ctx):
        pending = {0: 0x1000, 1: 0x8000}  # both clients always want another burst
        held = None
        for _ in range(400):
            for i in (0, 1):
                req = getattr(dut, f"req{i}")
                ctx.set(req.valid, 1)
                ctx.set(req.addr, pending[i])
                ctx.set(req.len, i * 7)
            ready = rng.random() < 0.4
            ctx.set(dut.arready, ready)
            if ctx.get(dut.arvalid):
                payload = (ctx.get(dut.arid), ctx.get(dut.araddr), ctx.get(dut.arlen))
                # Ref: AMBA AXI4 spec A3.2.1: payload stable while ARVALID waits for ARREADY.
                assert held is None or held == payload
                held = payload
                if ready:
                    i = payload[0]
                    assert payload[1:] == (pending[i], i * 7)
                    assert ctx.get(getattr(dut, f"req{i}").ready)
                    granted.append(i)
                    pending[i] += 0x100
                    held = None
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(granted) > 50
    # Two clients always requesting: strict alternation.
    assert all(a != b for a, b in zip(granted, granted[1:], strict=False))


def test_descriptor_words_match_hardware_layout():
    cfg = EngineConfig()
    plan = plan_layer(cfg, (130, 13, 11), 77, 3, Pool.P2S1, False, in_addr=0x1000,
                      out_addr=0x123458, w_addr=0xABC000, param_addr=0x7FFF8, pad_value=-3)
    words = plan.pack()
    sig = Signal(Descriptor)

    async def bench(ctx):
        ctx.set(sig.as_value(), sum(w << (32 * i) for i, w in enumerate(words)))
        for name, value in plan.fields.items():
            got = ctx.get(getattr(sig, name))
            if name == "pool":
                got = got.value
            if name == "pad_value":
                assert got == -3  # stored as the two's complement byte
            else:
                assert got == value, name

    sim = Simulator(Module())
    sim.add_testbench(bench)
    sim.run()


def test_plan_rejects_too_wide_layers():
    with pytest.raises(ValueError, match="too wide"):
        plan_layer(EngineConfig(acc_depth=256), (8, 8, 300), 16, 3, Pool.NONE, False,
                   in_addr=0, out_addr=0, w_addr=0, param_addr=0)


class _RegisterFile(wiring.Component):
    """A Wishbone slave of sixteen registers with a registered ACK after ``adr % 3`` wait
    states (the engine's CSR port registers its ACK too)."""

    bus: In(WishboneSignature(addr_width=4, data_width=32))

    def elaborate(self, platform):
        m = Module()
        bus, regs, wait = self.bus, Array(Signal(32) for _ in range(16)), Signal(2)
        m.d.sync += bus.ack.eq(0)
        with m.If(bus.cyc & bus.stb & ~bus.ack):
            with m.If(wait == bus.adr % 3):
                m.d.sync += [bus.ack.eq(1), wait.eq(0), bus.dat_r.eq(regs[bus.adr])]
                with m.If(bus.we):
                    m.d.sync += regs[bus.adr].eq(bus.dat_w)
            with m.Else():
                m.d.sync += wait.eq(wait + 1)
        return m


def _wishbone_run(ops, through_slice):
    """Run ``ops`` ((write?, adr, data) each) from a master testbench against
    :class:`_RegisterFile`, through a :class:`WishboneRegisterSlice` or directly; return the
    words the master read and each transfer's cycles from request to ACK."""
    m = Module()
    m.submodules.regs = regs = _RegisterFile()
    if through_slice:
        m.submodules.slice = stage = WishboneRegisterSlice(addr_width=4, data_width=32)
        connect(m, stage.sub, regs.bus)
        bus = stage.bus
    else:
        bus = regs.bus
    answers, cycles = [], []

    async def master(ctx):
        for k, (we, adr, dat) in enumerate(ops):
            for name, value in (("cyc", 1), ("stb", 1), ("we", int(we)), ("adr", adr),
                                ("dat_w", dat)):
                ctx.set(getattr(bus, name), value)
            n, ack = 0, 0
            while not ack:  # ACK as sampled at each clock edge
                await ctx.tick()
                n, ack = n + 1, ctx.get(bus.ack)
                assert n < 50, f"transfer {k}: no ACK within 50 cycles"
            cycles.append(n)
            answers.append(ctx.get(bus.dat_r))
            if k % 3 == 0:  # sometimes idle between transfers, sometimes back to back
                ctx.set(bus.cyc, 0)
                ctx.set(bus.stb, 0)
                await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(master)
    sim.run()
    return answers, cycles


def test_wishbone_register_slice_passes_each_transfer_once():
    """Random reads and writes through the slice to a register file with wait states: every
    read returns the word last written there (an independent dictionary: so no write was lost
    or repeated out of order), and each transfer takes WISHBONE_SLICE_LATENCY cycles more than
    against the register file directly."""
    rng = random.Random(11)
    ops = [(True, 3, 0xDEADBEEF), (False, 3, 0)] + [
        (rng.random() < 0.5, rng.randrange(16), rng.getrandbits(32)) for _ in range(80)]
    answers, cycles = _wishbone_run(ops, through_slice=True)
    written = {}
    for k, (we, adr, dat) in enumerate(ops):
        if we:
            written[adr] = dat
        else:
            assert answers[k] == written.get(adr, 0), f"read {k} of address {adr}"
    assert answers[1] == 0xDEADBEEF
    direct_answers, direct = _wishbone_run(ops, through_slice=False)
    reads = [k for k, (we, _, _) in enumerate(ops) if not we]
    assert [answers[k] for k in reads] == [direct_answers[k] for k in reads]
    assert [a - b for a, b in zip(cycles, direct, strict=True)] == (
        [WISHBONE_SLICE_LATENCY] * len(ops))
