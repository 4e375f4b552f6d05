"""DDR3 read levelling (firmware/dram_level.py): the pure search against worked answers, and the
whole ECPIX-5 initialisation against a fake board.

The fake (:class:`FakeEcp5Board`) stands behind a fake Link and decodes the CSR writes the way
the hardware does, from LiteDRAM's sources, not from our code: the DFII injector
(``litedram/dfii.py``: a command word acts on a write to ``command_issue``; wrdata/rddata are
64-bit CSRs in two 32-bit words, the most significant first), ECP5DDRPHY
(``litedram/phy/ecp5ddrphy.py``: ``dly_sel`` selects the byte groups the delay and bitslip
strobes act on and pauses their DQSBUFM; the delay counts 0-7 and the bitslip 0-3, both
wrapping; beat ``n`` of a burst is bits ``(n % 4) * 16`` of DFI phase ``n // 4``;
``burstdet_seen`` latches a detected read burst until ``burstdet_clr``), the CSR map from the
generated core's ``csr.csv`` and the DFII command bits from its ``sdram_phy.h``. Each byte group
(module) has a known set of working (bitslip, delay) settings; a read elsewhere returns the
module's bytes shifted by one beat (what a wrong bitslip or capture point does), and
``stale=True`` makes such reads leave the read-data registers as they were instead.

The worked answers: the chosen bitslip is the one with the widest run of working delays (the
lowest on a tie), the delay is that run's centre ``(first + last) // 2``.
"""

import logging
import re

import pytest

from firmware.dram_init import DramInitError, ReadLevel, init_steps, run_init
from firmware.dram_level import Readback, find_read_levels, longest_window
from hdl.board.litedram import generate
from hdl.board.top import ADDRESS_MAP

CTRL, DRAM = ADDRESS_MAP["dram_ctrl"], ADDRESS_MAP["dram"]


# -- the pure search --------------------------------------------------------------------------

def test_longest_window():
    assert longest_window([]) is None
    assert longest_window([False] * 8) is None
    assert longest_window([True] * 8) == (0, 7)
    assert longest_window([0, 1, 1, 0, 1, 1, 1, 0]) == (4, 6)
    assert longest_window([1, 1, 0, 1, 1, 0, 0, 0]) == (0, 1)  # a tie: the first
    assert longest_window([0, 0, 0, 0, 0, 0, 0, 1]) == (7, 7)


def _probe(windows, calls):
    """probe(module, bitslip, delay): ok iff delay is in windows[module][bitslip]."""
    def probe(module, bitslip, delay):
        calls.append((module, bitslip, delay))
        ok = delay in windows.get(module, {}).get(bitslip, ())
        return Readback(ok, "" if ok else f"read 00, expected {module}{bitslip}{delay}")
    return probe


def _r(first, last):
    return range(first, last + 1)


# (windows per module and bitslip, worked answer per module: (bitslip, delay, window))
CASES = {
    "inside": ({0: {1: _r(2, 6)}, 1: {2: _r(3, 5)}},
               [(1, 4, (2, 6)), (2, 4, (3, 5))]),
    "touching-delay-0": ({0: {0: _r(0, 2)}, 1: {3: _r(0, 3)}},
                         [(0, 1, (0, 2)), (3, 1, (0, 3))]),
    "touching-max-delay": ({0: {3: _r(5, 7)}, 1: {1: _r(4, 7)}},
                           [(3, 6, (5, 7)), (1, 5, (4, 7))]),
    "every-delay": ({0: {2: _r(0, 7)}, 1: {0: _r(0, 7)}},
                    [(2, 3, (0, 7)), (0, 3, (0, 7))]),
    "two-bitslips": ({0: {0: _r(0, 1), 2: _r(3, 7)}, 1: {1: _r(4, 5), 3: _r(1, 5)}},
                     [(2, 5, (3, 7)), (3, 3, (1, 5))]),
    "window-across-bitslips": ({0: {1: _r(6, 7), 2: _r(0, 4)}, 1: {0: _r(5, 7), 1: _r(0, 1)}},
                               [(2, 2, (0, 4)), (0, 6, (5, 7))]),
    "one-delay-and-a-tie": ({0: {1: _r(7, 7)}, 1: {0: _r(3, 4), 2: _r(1, 2)}},
                            [(1, 7, (7, 7)), (0, 3, (3, 4))]),
    "gaps": ({0: {0: [0, 1, 2, 3, 5, 6], 1: [2, 3, 4]}, 1: {3: [0, 2, 4, 6]}},
             [(0, 1, (0, 3)), (3, 0, (0, 0))]),
}


@pytest.mark.parametrize("case", CASES)
def test_search_picks_the_widest_window_and_its_centre(case):
    windows, answer = CASES[case]
    calls = []
    choices = find_read_levels(_probe(windows, calls), modules=2, bitslips=4, delays=8)
    assert [(c.bitslip, c.delay, c.window) for c in choices] == answer
    assert [c.module for c in choices] == [0, 1]
    # every setting once, module by module, delays ascending; then the chosen one again
    expected = []
    for module, (bitslip, delay, _) in enumerate(answer):
        expected += [(module, b, d) for b in range(4) for d in range(8)]
        expected.append((module, bitslip, delay))
    assert calls == expected
    for c in choices:
        assert c.scans == tuple(tuple(d in windows[c.module].get(b, ()) for d in range(8))
                                for b in range(4))


def test_search_without_a_window_names_the_module_and_what_was_tried():
    calls = []
    probe = _probe({0: {1: _r(2, 4)}, 1: {}}, calls)
    with pytest.raises(DramInitError) as info:
        find_read_levels(probe, modules=2, bitslips=4, delays=8)
    message = str(info.value)
    assert "module 1 (byte group 1) reads back no test pattern" in message
    assert "tried bitslips 0-3 x delays 0-7 (32 settings, none worked)" in message
    assert "bitslip 0, delay 0: read 00, expected 100" in message  # the probe's own detail
    assert "bitslip 3, delay 0: read 00, expected 130" in message
    assert len(calls) == 33 + 32  # module 0 levelled and checked, module 1 scanned: bounded


def test_search_fails_when_the_centre_fails_its_recheck():
    seen = set()

    def probe(module, bitslip, delay):  # works once at each setting of bitslip 0, delays 1-5
        ok = bitslip == 0 and 1 <= delay <= 5 and (module, bitslip, delay) not in seen
        seen.add((module, bitslip, delay))
        return Readback(ok, "" if ok else "read 5a, expected a5")

    with pytest.raises(DramInitError, match=r"module 0 \(byte group 0\) failed its check at the "
                                            r"chosen setting bitslip 0, delay 3 \(centre of "
                                            r"window 1-5.*\): read 5a, expected a5"):
        find_read_levels(probe, modules=2, bitslips=4, delays=8)


def test_search_takes_plain_booleans_and_logs_every_decision(caplog):
    caplog.set_level(logging.INFO, logger="firmware.dram_level")
    choices = find_read_levels(lambda m, b, d: b == 1 and 2 <= d <= 6, 1, 4, 8)
    assert (choices[0].bitslip, choices[0].delay) == (1, 4)
    text = caplog.text
    assert "module 0, bitslip 0: delays |00000000| no window" in text
    assert "module 0, bitslip 1: delays |00111110| window 2-6" in text
    assert "module 0: bitslip 1 (window 2-6, 5 delays), delay 4 (its centre)" in text


# -- a fake ECPIX-5 behind a fake Link --------------------------------------------------------

def _csr_map(csr_csv):
    """{byte offset: (register, word)} of the generated core's csr.csv (its own reading)."""
    regs = {}
    for line in csr_csv.read_text().splitlines():
        fields = line.split(",")
        if fields[0] == "csr_register":
            for word in range(int(fields[3])):
                regs[int(fields[2], 16) + 4 * word] = (fields[1], word)
    return regs


def _header_defines(header):
    return {k: int(v, 0) for k, v in re.findall(r"#define (\w+) (0x[0-9a-fA-F]+|\d+)\n", header)}


class FakeEcp5Board:
    """LiteDRAM's DFII and ECP5DDRPHY (2 byte groups, 2 DFI phases of 4 beats x 16 bits) as far
    as the levelling and memory test see them, behind ``write``/``read``/``write_words``/
    ``read_words``. ``windows[module][bitslip]``: the working delays; ``no_burst``: modules
    whose DQSBUFM never detects a read burst."""

    MODULES, BEATS, PHASES, DELAYS, BITSLIPS = 2, 4, 2, 8, 4

    def __init__(self, windows, *, no_burst=(), stale=False):
        gen = generate("ecpix5")
        header = (gen["csr_csv"].parent / "software" / "include" / "generated" /
                  "sdram_phy.h").read_text()
        self.k = _header_defines(header)
        self.regs = _csr_map(gen["csr_csv"])
        self.windows, self.no_burst, self.stale = windows, set(no_burst), stale
        self.csr = {}  # register -> list of words as last written
        self.rddata = {p: [0, 0] for p in range(self.PHASES)}
        self.delay, self.bitslip = [5] * self.MODULES, [3] * self.MODULES  # not reset at power-up
        self.burstdet = 0
        self.open_rows, self.bursts, self.mem = {}, {}, {}
        self.log, self.violations, self.checks = [], [], 0

    # -- the link -------------------------------------------------------------------------------
    def _decode(self, addr):
        assert CTRL <= addr < CTRL + 0x1_0000, hex(addr)
        return self.regs[addr - CTRL]

    def write(self, addr, value, *, idempotent=True):
        name, word = self._decode(addr)
        self.log.append((name, value, idempotent))
        self.csr.setdefault(name, [0, 0])[word] = value
        sel = [i for i in range(self.MODULES) if self.csr.get("ddrphy_dly_sel", [0])[0] >> i & 1]
        if name == "ddrphy_rdly_dq_rst":
            for m in sel:
                self.delay[m] = 0
        elif name == "ddrphy_rdly_dq_inc":
            for m in sel:
                self.delay[m] = (self.delay[m] + 1) % self.DELAYS
        elif name == "ddrphy_rdly_dq_bitslip_rst":
            for m in sel:
                self.bitslip[m] = 0
        elif name == "ddrphy_rdly_dq_bitslip":
            for m in sel:
                self.bitslip[m] = (self.bitslip[m] + 1) % self.BITSLIPS
        elif name == "ddrphy_burstdet_clr":
            self.burstdet = 0
        elif issue := re.fullmatch(r"sdram_dfii_pi(\d)_command_issue", name):
            self._issue(int(issue.group(1)))

    def read(self, addr):
        name, word = self._decode(addr)
        if rddata := re.fullmatch(r"sdram_dfii_pi(\d)_rddata", name):
            return self.rddata[int(rddata.group(1))][word]
        if name == "ddrphy_burstdet_seen":
            return self.burstdet
        return self.csr.get(name, [0])[word]

    def _levelled(self):
        return all(self.delay[m] in self.windows.get(m, {}).get(self.bitslip[m], ())
                   for m in range(self.MODULES))

    def write_words(self, addr, words):
        assert self.csr["ddrctrl_init_done"][0] == 1 and self.csr["sdram_dfii_control"][0] == 1
        for i, w in enumerate(words):
            self.mem[addr + 4 * i] = w

    def read_words(self, addr, n):
        assert self.csr["ddrctrl_init_done"][0] == 1 and self.csr["sdram_dfii_control"][0] == 1
        flip = 0 if self._levelled() else 0x0100_0001
        return [self.mem[addr + 4 * i] ^ flip for i in range(n)]

    # -- DFII ------------------------------------------------------------------------------------
    def _wide(self, name):
        hi, lo = self.csr.get(name, [0, 0])
        return hi << 32 | lo

    def _rdword(self, phase):
        hi, lo = self.rddata[phase]
        return hi << 32 | lo

    def _issue(self, phase):
        k = self.k
        cmd = self.csr.get(f"sdram_dfii_pi{phase}_command", [0])[0]
        bank = self.csr.get(f"sdram_dfii_pi{phase}_baddress", [0])[0]
        address = self.csr.get(f"sdram_dfii_pi{phase}_address", [0])[0]
        control = self.csr.get("sdram_dfii_control", [0])[0]
        if control & k["DFII_CONTROL_SEL"]:
            self.violations.append(f"command {cmd:#x} issued under hardware control")
            return
        ras, cas, we = (bool(cmd & k[f"DFII_COMMAND_{n}"]) for n in ("RAS", "CAS", "WE"))
        if ras and not cas and not we:  # activate
            self.open_rows[bank] = address
        elif ras and we and not cas:  # precharge (all banks with A10)
            self.open_rows = {} if address & 0x400 else {
                b: r for b, r in self.open_rows.items() if b != bank}
        elif cas and not ras and cmd & k["DFII_COMMAND_WRDATA"]:
            self._write_burst(phase, bank, address)
        elif cas and not ras and cmd & k["DFII_COMMAND_RDDATA"]:
            self._read_burst(phase, bank, address)

    def _write_burst(self, phase, bank, column):
        if phase != self.k["SDRAM_PHY_WRPHASE"] or bank not in self.open_rows:
            self.violations.append(f"write on phase {phase}, open rows {self.open_rows}")
            return
        words = [self._wide(f"sdram_dfii_pi{p}_wrdata") for p in range(self.PHASES)]
        self.bursts[bank, self.open_rows[bank], column] = [
            (words[n // self.BEATS] >> (n % self.BEATS) * 16) & 0xFFFF
            for n in range(self.PHASES * self.BEATS)]

    def _read_burst(self, phase, bank, column):
        self.checks += 1
        dly_sel = self.csr.get("ddrphy_dly_sel", [0])[0]
        if phase != self.k["SDRAM_PHY_RDPHASE"] or bank not in self.open_rows or dly_sel:
            self.violations.append(f"read on phase {phase}, open rows {self.open_rows}, "
                                   f"dly_sel {dly_sel}")
            return
        beats = self.bursts.get((bank, self.open_rows[bank], column), [0] * 8)
        last = [(self._rdword(n // self.BEATS) >> (n % self.BEATS) * 16) & 0xFFFF
                for n in range(len(beats))]
        out = [0] * len(beats)
        for m in range(self.MODULES):
            lane = [beat >> 8 * m & 0xFF for beat in beats]
            if self.delay[m] not in self.windows.get(m, {}).get(self.bitslip[m], ()):
                if self.stale:  # the lane keeps the last burst's bytes
                    lane = [beat >> 8 * m & 0xFF for beat in last]
                else:
                    lane = lane[-1:] + lane[:-1]  # one beat late
            if m not in self.no_burst:
                self.burstdet |= 1 << m
            for n, byte in enumerate(lane):
                out[n] |= byte << 8 * m
        for p in range(self.PHASES):
            word = sum(out[p * self.BEATS + b] << 16 * b for b in range(self.BEATS))
            self.rddata[p] = [word >> 32, word & 0xFFFF_FFFF]


@pytest.fixture(scope="module")
def ecpix5():
    return init_steps("ecpix5")


@pytest.mark.parametrize("case", CASES)
def test_ecpix5_init_levels_every_byte_group(ecpix5, case, caplog):
    caplog.set_level(logging.INFO, logger="firmware.dram_level")
    windows, answer = CASES[case]
    board = FakeEcp5Board({m: {b: set(d) for b, d in w.items()} for m, w in windows.items()})
    slept = []
    run_init(board, ecpix5, sleep=slept.append, memtest_words=16)
    # the PHY is left at the worked answer, and the memory test (through the user port) passed
    assert [(board.bitslip[m], board.delay[m]) for m in range(2)] == [a[:2] for a in answer]
    assert board.violations == []
    assert board.csr["ddrctrl_init_done"][0] == 1 and board.csr["ddrctrl_init_error"][0] == 0
    assert board.csr["sdram_dfii_control"][0] == 0x01  # hardware control again
    assert board.csr["ddrphy_dly_sel"][0] == 0
    # 3 bursts at a working setting, 1 where the first fails; 4 x 8 settings and the chosen one
    works = [sum(len(d) for d in windows[m].values()) for m in range(2)]
    assert board.checks == sum(3 * w + (32 - w) + 3 for w in works)
    # an increment or a command issue is never repeated after a lost answer, the rest may be
    for name, _, idempotent in board.log:
        assert idempotent == (not name.endswith(("_issue", "_inc", "_bitslip"))), name
    for m, (bitslip, delay, (first, last)) in enumerate(answer):
        assert (f"module {m}: bitslip {bitslip} (window {first}-{last}, "
                f"{last - first + 1} delays") in caplog.text
        assert f"), delay {delay} (its centre)" in caplog.text


def test_ecpix5_init_without_a_window_raises_and_sets_init_error(ecpix5):
    board = FakeEcp5Board({0: {1: set(_r(2, 6))}, 1: {}})
    with pytest.raises(DramInitError) as info:
        run_init(board, ecpix5, sleep=lambda s: None)
    message = str(info.value)
    assert "module 1 (byte group 1) reads back no test pattern at any setting" in message
    assert "tried bitslips 0-3 x delays 0-7" in message
    assert re.search(r"bitslip 0, delay 0: read( [0-9a-f]{2}){8}, expected( [0-9a-f]{2}){8}",
                     message)
    assert message.endswith("(ddrctrl_init_error set)")
    assert board.csr["ddrctrl_init_error"][0] == 1 and board.csr["ddrctrl_init_done"][0] == 0
    assert board.violations == []


def test_ecpix5_init_requires_the_read_burst_to_be_detected(ecpix5):
    board = FakeEcp5Board({0: {1: set(_r(2, 6))}, 1: {0: set(_r(0, 7))}}, no_burst={0})
    with pytest.raises(DramInitError, match=r"module 0 .* no read burst detected"):
        run_init(board, ecpix5, sleep=lambda s: None)


def test_ecpix5_init_is_not_fooled_by_stale_read_data(ecpix5):
    board = FakeEcp5Board({0: {2: set(_r(1, 3))}, 1: {1: set(_r(4, 6))}}, stale=True)
    run_init(board, ecpix5, sleep=lambda s: None, memtest_words=16)
    assert [(board.bitslip[m], board.delay[m]) for m in range(2)] == [(2, 2), (1, 5)]


def test_ecpix5_read_level_step_matches_the_generated_header(ecpix5):
    gen = generate("ecpix5")
    k = _header_defines((gen["csr_csv"].parent / "software" / "include" / "generated" /
                         "sdram_phy.h").read_text())
    (step,) = [s for s in ecpix5.steps if isinstance(s, ReadLevel)]
    assert (step.modules, step.bitslips, step.delays, step.nphases, step.databits,
            step.dfi_databits, step.rdphase, step.wrphase) == (
        k["SDRAM_PHY_MODULES"], k["SDRAM_PHY_BITSLIPS"], k["SDRAM_PHY_DELAYS"],
        k["SDRAM_PHY_PHASES"], k["SDRAM_PHY_DATABITS"], k["SDRAM_PHY_DFI_DATABITS"],
        k["SDRAM_PHY_RDPHASE"], k["SDRAM_PHY_WRPHASE"])
    assert (step.modules, step.bitslips, step.delays) == (2, 4, 8)
    # Ref: liblitedram/sdram.c, sdram_activate_test_row, sdram_precharge_test_row,
    # sdram_write_read_check_test_pattern
    cs, we, cas, ras = (k[f"DFII_COMMAND_{n}"] for n in ("CS", "WE", "CAS", "RAS"))
    assert step.activate == ras | cs and step.precharge == ras | we | cs
    assert step.write == cas | we | cs | k["DFII_COMMAND_WRDATA"]
    assert step.read == cas | cs | k["DFII_COMMAND_RDDATA"]
