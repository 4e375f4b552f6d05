"""Amaranth-simulator tests of the MAC array and its multiplier against naive integer loops."""

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator

from hdl.dsp import MULT_LATENCY, Multiplier
from hdl.ecp5 import ECP5Target
from hdl.engine.mac import MacArray, mac_latency


def _stream(dut, inputs, latency, outputs):
    """Present one input set per cycle (``inputs[k]``: (port, value) pairs), collect ``outputs()``
    of every cycle; return the outputs aligned to their inputs (cycle k + latency)."""
    seen = []

    async def bench(ctx):
        for k in range(len(inputs) + latency):
            for port, value in inputs[min(k, len(inputs) - 1)]:
                ctx.set(port, value)
            await ctx.tick()
            seen.append(outputs(ctx))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    # ctx.tick() returns after the edge: the output after tick k belongs to input k + 1 - latency
    return seen[latency - 1:latency - 1 + len(inputs)]


@pytest.mark.parametrize("p_ic, p_oc", [(8, 16), (3, 2), (1, 1)])
def test_mac_array_matches_naive_dot_products(p_ic, p_oc):
    rng = np.random.default_rng(p_ic * 100 + p_oc)
    n = 40
    x = rng.integers(-128, 128, size=(n, p_ic))
    w = rng.integers(-128, 128, size=(n, p_oc, p_ic))
    x[0], w[0] = -128, -128  # the largest product, on every lane
    x[1], w[1] = -128, 127
    dut = MacArray(p_ic, p_oc)
    inputs = [[(dut.x, [int(v) for v in x[k]]),
               (dut.w, [[int(v) for v in row] for row in w[k]])] for k in range(n)]
    got = _stream(dut, inputs, mac_latency(p_ic),
                  lambda ctx: [int(ctx.get(dut.sums[o])) for o in range(p_oc)])
    for k in range(n):
        for o in range(p_oc):
            expected = sum(int(w[k, o, i]) * int(x[k, i]) for i in range(p_ic))
            assert got[k][o] == expected, (
                f"cycle {k}, output channel {o}: expected {expected}, got {got[k][o]}")


def test_multiplier_model_is_a_signed_product_with_three_registers():
    rng = np.random.default_rng(1)
    dut = Multiplier(17, 16)
    a = [-(1 << 16), (1 << 16) - 1, 0, *rng.integers(-(1 << 16), 1 << 16, size=30)]
    b = [-(1 << 15), -(1 << 15), 5, *rng.integers(-(1 << 15), 1 << 15, size=30)]
    got = _stream(dut, [[(dut.a, int(u)), (dut.b, int(v))] for u, v in zip(a, b, strict=True)],
                  MULT_LATENCY, lambda ctx: int(ctx.get(dut.p)))
    for k, (u, v) in enumerate(zip(a, b, strict=True)):
        assert got[k] == int(u) * int(v), f"cycle {k}: {u} * {v}: got {got[k]}"


def test_multiplier_on_ecp5_is_one_fully_registered_mult18x18d():
    text = rtlil.convert(Multiplier(8, 8), platform=ECP5Target())
    assert text.count("cell \\MULT18X18D") == 1
    for reg in ("INPUTA", "INPUTB", "PIPELINE", "OUTPUT"):
        assert f'parameter \\REG_{reg}_CLK "CLK0"' in text, reg
    assert "$mul" not in text


def test_multiplier_refuses_operands_wider_than_a_slice():
    with pytest.raises(ValueError, match="a_width must be an integer from 1 to 18, not 19"):
        Multiplier(19, 8)
