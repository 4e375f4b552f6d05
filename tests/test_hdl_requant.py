"""Amaranth-simulator tests of the requantization unit against model.golden.requantize."""

import numpy as np
from amaranth.sim import Simulator

from hdl.requant import REQUANT_LATENCY, RequantUnit
from model.golden import requantize

LANES = 8


def _run(acc, m_pos, m_neg, shift):
    """Feed one vector per cycle (lane i = element i of a group of LANES) and collect outputs."""
    dut = RequantUnit(LANES)
    n = len(acc) // LANES
    out = []

    async def bench(ctx):
        for k in range(n + REQUANT_LATENCY):
            if k < n:
                sl = slice(k * LANES, (k + 1) * LANES)
                ctx.set(dut.valid_i, 1)
                ctx.set(dut.lane, [
                    {"acc": int(a), "m_pos": int(p), "m_neg": int(q), "shift": int(s)}
                    for a, p, q, s in zip(acc[sl], m_pos[sl], m_neg[sl], shift[sl], strict=True)])
            else:
                ctx.set(dut.valid_i, 0)
            await ctx.tick()
            if ctx.get(dut.valid_o):
                out.extend(int(ctx.get(dut.y[i])) for i in range(LANES))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return np.array(out, dtype=np.int64)


def _check(acc, m_pos, m_neg, shift):
    # One "channel" per element, so golden's per-channel parameters line up element-wise.
    expected = requantize(acc[:, None], m_pos, m_neg, shift)[:, 0]
    actual = _run(acc, m_pos, m_neg, shift)
    bad = np.flatnonzero(actual != expected)
    assert not len(bad), [(int(acc[i]), int(m_pos[i]), int(m_neg[i]), int(shift[i]),
                           int(expected[i]), int(actual[i])) for i in bad[:5]]


def test_requant_unit_random_matches_golden():
    rng = np.random.default_rng(0)
    n = 64 * LANES
    shift = rng.integers(1, 48, size=n)
    # Accumulators scaled to the shift so outputs spread over and beyond the int8 range.
    acc = (rng.normal(size=n) * 2.0 ** (shift - 9)).astype(np.int64)
    acc = np.clip(acc, -(1 << 31), (1 << 31) - 1)
    m_pos = rng.integers(0, 1 << 16, size=n)
    m_neg = rng.integers(0, 1 << 16, size=n)
    _check(acc, m_pos, m_neg, shift)


def test_requant_unit_extremes():
    """Widest products (acc at both int32 ends times 65535), shifts 1 and 47, zero multipliers,
    ties at exactly half (round half up), saturation at both ends."""
    acc, m_pos, m_neg, shift = [], [], [], []
    for a in (-(1 << 31), (1 << 31) - 1, -1, 0, 1, 3, -3, 255, -257):
        for m in (0, 1, 65535):
            for s in (1, 2, 16, 47):
                acc.append(a)
                m_pos.append(m)
                m_neg.append(65535 - m)
                shift.append(s)
    # exact ties: acc * m = (2k + 1) * 2**(s-1)
    for k in (-5, -1, 0, 1, 5):
        acc.append(2 * k + 1)
        m_pos.append(1)
        m_neg.append(1)
        shift.append(1)
    while len(acc) % LANES:
        acc.append(0)
        m_pos.append(0)
        m_neg.append(0)
        shift.append(1)
    _check(*(np.array(v, dtype=np.int64) for v in (acc, m_pos, m_neg, shift)))
