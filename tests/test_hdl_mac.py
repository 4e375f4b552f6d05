"""Amaranth-simulator tests of the MAC array and its multiplier against naive integer loops."""

import numpy as np
import pytest
from amaranth import Cat, Module, Signal, signed
from amaranth.back import rtlil
from amaranth.hdl import Fragment
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
    """Each cycle's ``x`` times the weights of the last ``w_load`` cycle up to the cycle after it
    (the operands pass a register first, the weights do not); ``w`` carries junk in the other
    cycles, which must be ignored."""
    rng = np.random.default_rng(p_ic * 100 + p_oc)
    n = 60
    x = rng.integers(-128, 128, size=(n, p_ic))
    w = rng.integers(-128, 128, size=(n, p_oc, p_ic))
    load = rng.random(n) < 0.3
    load[0] = load[1] = load[2] = True
    load[3] = False  # weights kept over a cycle whose w is junk
    x[0], w[1] = -128, -128  # the largest product, on every lane (x meets the next cycle's load)
    x[1], w[2] = -128, 127
    dut = MacArray(p_ic, p_oc)
    inputs = [[(dut.x, [int(v) for v in x[k]]), (dut.w_load, [int(load[k])] * p_oc),
               (dut.w, [[int(v) for v in row] for row in w[k]])] for k in range(n)]
    got = _stream(dut, inputs, mac_latency(p_ic),
                  lambda ctx: [int(ctx.get(dut.sums[o])) for o in range(p_oc)])
    for k in range(n - 1):
        taken = max(j for j in range(k + 2) if load[j])
        for o in range(p_oc):
            expected = sum(int(w[taken, o, i]) * int(x[k, i]) for i in range(p_ic))
            assert got[k][o] == expected, (
                f"cycle {k} (weights of cycle {taken}), output channel {o}: expected "
                f"{expected}, got {got[k][o]}")


def test_multiplier_on_ecp5_is_one_fully_registered_mult18x18d():
    text = rtlil.convert(Multiplier(8, 8), platform=ECP5Target())
    assert text.count("cell \\MULT18X18D") == 1
    for reg in ("INPUTA", "INPUTB", "PIPELINE", "OUTPUT"):
        assert f'parameter \\REG_{reg}_CLK "CLK0"' in text, reg
    assert "$mul" not in text


def _with_slice_model(mult):
    """``mult`` elaborated for the ECP5 with its MULT18X18D replaced by the slice's documented
    function (Ref: Lattice TN1267, "MULT18X18D": SIGNEDA/SIGNEDB high make A and B 18-bit two's
    complement, P = A × B, 36 bits; with REG_INPUT*, REG_PIPELINE and REG_OUTPUT clocked it is
    three registers deep; REG_INPUTB_CE names the B register's clock enable), wired to the very
    expressions the RTL connects to the slice's pins."""
    frag = Fragment.get(mult, ECP5Target())
    [(inst, _name, _loc)] = frag.subfragments
    pins = {name: value for name, (value, _dir) in inst.ports.items()}
    assert inst.type == "MULT18X18D"
    assert {pin: pins[pin].value for pin in ("SIGNEDA", "SIGNEDB", "CE0", "RST0", "SOURCEA",
                                             "SOURCEB")} == {
        "SIGNEDA": 1, "SIGNEDB": 1, "CE0": 1, "RST0": 0, "SOURCEA": 0, "SOURCEB": 0}
    m = Module()
    a_q, b_q = Signal(signed(18)), Signal(signed(18))
    pipe, out = Signal(signed(36)), Signal(signed(36))
    b_ce = {"CE0": pins["CE0"], "CE1": pins.get("CE1")}[inst.parameters.get("REG_INPUTB_CE",
                                                                             "CE0")]
    m.d.sync += [a_q.eq(Cat(*(pins[f"A{i}"] for i in range(18)))),
                 pipe.eq(a_q * b_q), out.eq(pipe)]
    with m.If(b_ce):
        m.d.sync += b_q.eq(Cat(*(pins[f"B{i}"] for i in range(18))))
    m.d.comb += Cat(*(pins[f"P{i}"] for i in range(36))).eq(out)
    frag.subfragments.clear()
    frag.add_subfragment(Fragment.get(m, None), "slice_model")
    return frag


@pytest.mark.parametrize("a_width, b_width, b_hold",
                         [(8, 8, False), (8, 8, True), (17, 16, False), (18, 18, False),
                          (3, 5, True)])
@pytest.mark.parametrize("platform", ["ecp5", "model"])
def test_multiplier_computes_the_signed_product(a_width, b_width, b_hold, platform):
    """``a · b`` after :data:`MULT_LATENCY` cycles, extremes included, both as wired to the slice
    (top-aligned operands, the product read from the top of P) and as the portable model; with
    ``b_hold`` the ``b`` of the last ``b_en`` cycle, junk ``b`` in the others ignored."""
    rng = np.random.default_rng(a_width * 100 + b_width)
    dut = Multiplier(a_width, b_width, b_hold=b_hold)
    lo_a, lo_b = -(1 << (a_width - 1)), -(1 << (b_width - 1))
    a = [lo_a, lo_a, -lo_a - 1, 0, -1, *rng.integers(lo_a, -lo_a, size=40)]
    b = [lo_b, -lo_b - 1, lo_b, 7 % -lo_b, -1, *rng.integers(lo_b, -lo_b, size=40)]
    en = [True] * 5 + [bool(v) for v in rng.random(40) < 0.3] if b_hold else [True] * len(a)
    held, want = None, []
    for u, v, e in zip(a, b, en, strict=True):
        held = v if e else held
        want.append(int(u) * int(held))
    inputs = [[(dut.a, int(u)), (dut.b, int(v)), *([(dut.b_en, int(e))] if b_hold else [])]
              for u, v, e in zip(a, b, en, strict=True)]
    got = _stream(_with_slice_model(dut) if platform == "ecp5" else dut, inputs, MULT_LATENCY,
                  lambda ctx: int(ctx.get(dut.p)))
    for k, (u, exp) in enumerate(zip(a, want, strict=True)):
        assert got[k] == exp, f"cycle {k}: {u} times the held operand: expected {exp}, got {got[k]}"


def test_multiplier_refuses_operands_wider_than_a_slice():
    with pytest.raises(ValueError, match="a_width must be an integer from 1 to 18, not 19"):
        Multiplier(19, 8)
