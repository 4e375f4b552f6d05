"""Amaranth-simulator test of the progress watchdog (hdl/watchdog.py): when it fires after a
kick and after ``run`` rises, that every kick pushes it back, that it pulses once per period with
no progress, that 0 turns it off and that ``run`` low holds it."""

from amaranth.sim import Simulator

from hdl.watchdog import Watchdog


def _simulate(bench):
    dut = Watchdog()
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def testbench(ctx):
        await bench(ctx, dut)

    sim.add_testbench(testbench)
    sim.run()


async def _expiry_cycles(ctx, dut, cycles):
    """The cycles (counted from 1 after the call) in which ``expired`` is high."""
    fired = []
    for t in range(1, cycles + 1):
        await ctx.tick()
        if ctx.get(dut.expired):
            fired.append(t)
    return fired


def test_watchdog_fires_after_limit_cycles_without_progress():
    limit = 20

    async def bench(ctx, dut):
        ctx.set(dut.limit, limit)
        assert await _expiry_cycles(ctx, dut, 3 * limit) == [], "fired while not running"
        ctx.set(dut.run, 1)
        # From run: limit cycles, then once per limit + 1 cycles while nothing moves.
        assert await _expiry_cycles(ctx, dut, 3 * limit + 10) == [
            limit, 2 * limit + 1, 3 * limit + 2]
        # Kicks every limit - 1 cycles: never fires.
        for _ in range(5):
            ctx.set(dut.kick, 1)
            await ctx.tick()
            ctx.set(dut.kick, 0)
            assert await _expiry_cycles(ctx, dut, limit - 2) == [], "fired despite progress"
        # After the last kick: one cycle more (the kick is registered).
        ctx.set(dut.kick, 1)
        await ctx.tick()
        ctx.set(dut.kick, 0)
        assert await _expiry_cycles(ctx, dut, limit + 5) == [limit + 1]
        # run low holds it; 0 turns it off.
        ctx.set(dut.run, 0)
        assert await _expiry_cycles(ctx, dut, 3 * limit) == []
        ctx.set(dut.limit, 0)
        await ctx.tick()
        ctx.set(dut.run, 1)
        assert await _expiry_cycles(ctx, dut, 1 << 10) == [], "fired while off"

    _simulate(bench)


def test_watchdog_of_one_cycle():
    async def bench(ctx, dut):
        ctx.set(dut.limit, 1)
        await ctx.tick()
        ctx.set(dut.run, 1)
        assert await _expiry_cycles(ctx, dut, 8) == [1, 3, 5, 7]

    _simulate(bench)
