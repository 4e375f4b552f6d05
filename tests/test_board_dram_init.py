"""The host-run DRAM initialisation (firmware/dram_init.py) against LiteDRAM's own generated
init sequence: the ``init_sequence()`` of the ``sdram_phy.h`` that ``litedram_gen`` writes for the
same YAML, interpreted here, is the oracle for the CSR writes between software and hardware
control; the framing (software control, init_done/init_error, read levelling where the PHY has
it, hardware control) is LiteX's ``liblitedram/sdram.c`` ``sdram_init``. The read levelling
itself is tested in tests/test_dram_level.py."""

import copy
import re

import pytest

import firmware.dram_init
from firmware.dram_init import CsrWrite, Delay, DramInitError, ReadLevel, init_steps, run_init
from hdl.board.litedram import CONSTRAINTS, generate
from hdl.board.top import ADDRESS_MAP


class FakeLink:
    """Records CSR writes; DRAM words written are read back (``corrupt``: index to flip)."""

    def __init__(self, corrupt=None):
        self.writes, self.mem, self.corrupt = [], {}, corrupt

    def write(self, addr, value, *, idempotent=True):
        self.writes.append((addr, value, idempotent))

    def write_words(self, addr, words):
        for i, w in enumerate(words):
            self.mem[addr + 4 * i] = w

    def read_words(self, addr, n):
        out = [self.mem[addr + 4 * i] for i in range(n)]
        if self.corrupt is not None:
            out[self.corrupt] ^= 0x100
        return out


def _header_init_sequence(header):
    """Interpret ``init_sequence()`` of a generated ``sdram_phy.h``: [(csr, value) or
    ('cdelay', n)], with the header's own #defines and its ``command_p0`` body."""
    defines = {k: int(v, 0) for k, v in re.findall(r"#define (DFII_\w+) (0x[0-9a-fA-F]+)", header)}
    command_body = re.search(r"void command_p0\(int cmd\)\s*\{(.*?)\}", header, re.S).group(1)
    body = re.search(r"void init_sequence\(void\)\s*\{(.*?)\n\}", header, re.S).group(1)

    def value(expr):
        v = 0
        for name in expr.split("|"):
            name = name.strip()
            v |= defines[name] if name in defines else int(name, 0)
        return v

    out = []
    for call, arg in re.findall(r"(\w+)\(([^)]*)\);", body):
        if call == "command_p0":
            for inner, inner_arg in re.findall(r"(\w+)\(([^)]*)\);", command_body):
                inner_value = value(arg if inner_arg == "cmd" else inner_arg)
                out.append((inner[:-len("_write")], inner_value))
        elif call == "cdelay":
            out.append(("cdelay", int(arg)))
        else:
            assert call.endswith("_write"), call
            out.append((call[:-len("_write")], value(arg)))
    return out


def _ours(init):
    return [("cdelay", s.cycles) if isinstance(s, Delay) else
            ("read_level",) if isinstance(s, ReadLevel) else (s.name, s.value)
            for s in init.steps]


def _header(gen):
    return (gen["csr_csv"].parent / "software" / "include" / "generated" /
            "sdram_phy.h").read_text()


@pytest.mark.parametrize("sim", [False, True], ids=["gensdrphy", "sim-model"])
def test_ulx3s_init_matches_generated_header(sim):
    header = _header(generate("ulx3s", sim=sim))
    init = init_steps("ulx3s", sim=sim)
    ours = _ours(init)
    # sdram_init(): software control, init_done/init_error cleared, init_sequence(), hardware
    # control, init_done (Ref: liblitedram/sdram.c, DFII_CONTROL_SOFTWARE/HARDWARE).
    software = init.steps[0].value
    assert ours[:3] == [("sdram_dfii_control", software), ("ddrctrl_init_done", 0),
                        ("ddrctrl_init_error", 0)]
    assert software == 0x02 | 0x04 | 0x08  # CKE | ODT | RESET_N, the header's DFII_CONTROL_*
    assert ours[3:-2] == _header_init_sequence(header)
    assert ours[-2:] == [("sdram_dfii_control", 0x01), ("ddrctrl_init_done", 1)]
    assert init.sys_clk_freq == 50e6 and init.memtype == "SDR"


def test_run_init_writes_through_the_csr_map_and_tests_memory():
    init = init_steps("ulx3s")
    link, slept = FakeLink(), []
    run_init(link, init, sleep=slept.append, memtest_words=16)
    base = ADDRESS_MAP["dram_ctrl"]
    writes = [s for s in init.steps if isinstance(s, CsrWrite)]
    assert [(a, v) for a, v, _ in link.writes] == [(base + init.csrs[s.name], s.value)
                                                   for s in writes]
    # csr.csv of the generated core: ddrctrl at +0x0, the DFII injector from +0x800.
    assert init.csrs["ddrctrl_init_done"] == 0 and init.csrs["sdram_dfii_control"] == 0x800
    # a command issue is never repeated after a lost answer; plain CSR writes may be
    assert all(idem == (not s.name.endswith("_issue"))
               for (_, _, idem), s in zip(link.writes, writes, strict=True))
    assert slept == [d.cycles / 50e6 for d in init.steps if isinstance(d, Delay)]
    assert sorted(link.mem) == [ADDRESS_MAP["dram"] + 4 * i for i in range(16)]


def test_run_init_memtest_failure_names_address_and_sets_init_error():
    init = init_steps("ulx3s")
    link = FakeLink(corrupt=5)
    with pytest.raises(DramInitError, match=r"1 of 16 words wrong; first at 0x80000014: "
                                            r"expected 0x[0-9a-f]{8}, read 0x[0-9a-f]{8}"):
        run_init(link, init, sleep=lambda s: None, memtest_words=16)
    assert link.writes[-1][:2] == (ADDRESS_MAP["dram_ctrl"] + init.csrs["ddrctrl_init_error"], 1)


def test_ecpix5_init_matches_generated_header():
    header = _header(generate("ecpix5"))
    init = init_steps("ecpix5")
    ours = _ours(init)
    assert ours[:3] == [("sdram_dfii_control", 0x02 | 0x04 | 0x08), ("ddrctrl_init_done", 0),
                        ("ddrctrl_init_error", 0)]
    # DDR3: reset released, CKE high, MR2, MR3, MR1, MR0 (CL=6, BL=8), ZQ calibration
    sequence = _header_init_sequence(header)
    assert ours[3:-3] == sequence
    assert ("sdram_dfii_pi0_address", 0x320) in sequence and ("cdelay", 50000) in sequence
    # sdram_init(): sdram_leveling() after init_sequence(), then hardware control
    assert ours[-3:] == [("read_level",), ("sdram_dfii_control", 0x01), ("ddrctrl_init_done", 1)]
    assert init.sys_clk_freq == 75e6 and init.memtype == "DDR3"
    assert init.csrs["ddrphy_dly_sel"] == 0x800 and init.csrs["sdram_dfii_control"] == 0x1000


def test_ddr3_levelling_is_no_longer_refused_for_the_ecpix5():
    (step,) = [s for s in init_steps("ecpix5").steps if isinstance(s, ReadLevel)]
    assert (step.modules, step.bitslips, step.delays) == (2, 4, 8)
    assert not any(isinstance(s, ReadLevel) for s in init_steps("ulx3s").steps)


@pytest.mark.parametrize("phytype, stages", [("A7DDRPHY", {"write_leveling": True}),
                                             ("ECP5DDRPHY", {"write_leveling": True}),
                                             ("USDDRPHY", {})])
def test_other_levelling_is_refused_by_name(monkeypatch, phytype, stages):
    phy, timing, freq = firmware.dram_init.phy_timing_settings(str(CONSTRAINTS / "ecpix5.yml"))
    other = copy.copy(phy)
    other.phytype = phytype
    for name, value in stages.items():
        setattr(other, name, value)
    monkeypatch.setattr(firmware.dram_init, "phy_timing_settings",
                        lambda yml, sim=False: (other, timing, freq))
    needs = "write_leveling, read_leveling" if stages else "read_leveling"
    with pytest.raises(NotImplementedError,
                       match=rf"DDR3 with {phytype} \(ecpix5\) needs LiteX's levelling "
                             rf"\({needs}; .*only the read levelling of ECP5DDRPHY"):
        init_steps("ecpix5")
