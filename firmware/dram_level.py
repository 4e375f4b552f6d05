"""DDR3 read levelling from the host, through the bridge (``docs/board.md``, "Initialisation").

The ECP5's DDR3 PHY (LiteDRAM's ``ECP5DDRPHY``) captures read data with a per-byte-group
(per-"module") DQS read-pulse position (``rdly``: 0 to ``delays`` - 1, the DQSBUFM's
``READCLKSEL``) and a per-module bitslip (0 to ``bitslips`` - 1, which of the 4 captured beats
starts a burst). Neither is known before the board runs; LiteX's BIOS finds them by search
(``liblitedram/sdram.c``, ``sdram_read_leveling``). This module is that search, run by the host
over a :class:`firmware.link.Link`, in two parts:

- :func:`find_read_levels`, pure: for each module, for each bitslip, every delay is checked by a
  ``probe(module, bitslip, delay)`` callable ("does a pattern written there read back?"); the
  bitslip whose longest run of consecutive working delays is the widest wins (the lowest bitslip
  on a tie), its delay is the run's centre (``(first + last) // 2``), which is checked once more;
  no working delay at any bitslip, or a failing centre, raises :class:`DramInitError`;
- :class:`DfiiReadProbe`, the probe on real hardware: sets the PHY's bitslip and delay through
  its CSRs and writes/reads patterns through LiteDRAM's DFII software-control registers, as
  LiteX's ``sdram_write_read_check_test_pattern`` does.

:func:`run_read_levelling` runs both; :func:`firmware.dram_init.run_init` calls it for a
:class:`firmware.dram_init.ReadLevel` step. Every scan row and every decision is logged
(``logging``, this module's logger, INFO).

Where we differ from LiteX 2024.12 (on purpose): a check compares every beat of the module's
byte lane (LiteX compares two of the four beats per DFI phase); each check uses a fresh pattern
whose bytes differ in every beat of the module's lane (a bitslip shift or a stale read-back never
matches); the window is the longest run of working delays (LiteX's exhaustive scorer counts all
working delays, its centring wants two consecutive ones); a module without a window is an error
here (LiteX prints and leaves it to the memory test).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from firmware.dram_init import DramInit, DramInitError, ReadLevel

__all__ = [
    "DfiiReadProbe",
    "LevelChoice",
    "Readback",
    "find_read_levels",
    "longest_window",
    "run_read_levelling",
]

log = logging.getLogger(__name__)

#: Bridge words of a CSR: LiteDRAM's standalone core has 32-bit CSRs (``csr.csv``,
#: ``config_csr_data_width``), wider registers span several, the most significant first (LiteX's
#: default ``csr_ordering = "big"``).
_CSR_BITS = 32
#: LiteX's ``cdelay(15)`` after each DFII command (``liblitedram/sdram.c``).
_COMMAND_CYCLES = 15


@dataclass(frozen=True)
class Readback:
    """One probe's answer: ``ok`` (true if the pattern read back), ``detail`` (what was read and
    what was expected, when not ``ok``). Truthy when ``ok``."""

    ok: bool
    detail: str = ""

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class LevelChoice:
    """The read levelling of one module (byte group).

    Attributes
    ----------
    module : int
        The byte group (DQ ``8*module`` to ``8*module + 7``).
    bitslip, delay : int
        The chosen setting: the bitslip with the widest window, the window's centre.
    window : tuple of int
        First and last working delay of that window.
    scans : tuple of tuple of bool
        ``scans[bitslip][delay]``: the check's result at every setting tried.
    """

    module: int
    bitslip: int
    delay: int
    window: tuple[int, int]
    scans: tuple[tuple[bool, ...], ...]


def longest_window(oks) -> tuple[int, int] | None:
    """First and last index of the longest run of true values in ``oks`` (the first such run
    on a tie), or None when none is true."""
    best, start = None, None
    for i, ok in enumerate([*oks, False]):
        if ok and start is None:
            start = i
        elif not ok and start is not None:
            if best is None or i - 1 - start > best[1] - best[0]:
                best = (start, i - 1)
            start = None
    return best


def _row(oks) -> str:
    """A scan row as LiteX prints it: ``1`` working, ``0`` not, delay 0 first."""
    return "".join("1" if ok else "0" for ok in oks)


def _span(values) -> str:
    return f"{values[0]}-{values[-1]}" if len(values) > 1 else f"{values[0]}"


def find_read_levels(probe: Callable[[int, int, int], object], modules: int, bitslips: int,
                     delays: int) -> list[LevelChoice]:
    """Find each module's read bitslip and delay.

    Parameters
    ----------
    probe : callable
        ``probe(module, bitslip, delay)``: set the module's bitslip and delay, write a pattern and
        read it back; truthy if it matched. A :class:`Readback` (or anything with a ``detail``
        attribute) lets error messages say what was read and expected. Called module by module,
        bitslip by bitslip, delays ascending, then once at the chosen setting: exactly
        ``modules * (bitslips * delays + 1)`` times when levelling succeeds, so the last call
        for a module leaves the PHY at its chosen setting.
    modules, bitslips, delays : int
        Byte groups, bitslip settings and delay settings of the PHY (``PhySettings``).

    Returns
    -------
    list of LevelChoice
        One per module, in module order.

    Raises
    ------
    DramInitError
        A module reads back no pattern at any (bitslip, delay), or not at the centre of its
        widest window when checked again; the message names the module, the settings tried and
        what was read versus expected.
    """
    # Ref: litex/soc/software/liblitedram/sdram.c, sdram_read_leveling (per module, every bitslip:
    # sdram_read_leveling_scan_module scans every delay; the best bitslip is then set and
    # centred) and sdram_leveling_center_module (the window's centre, checked again).
    choices = []
    for module in range(modules):
        scans, failures = [], {}
        for bitslip in range(bitslips):
            row = []
            for delay in range(delays):
                answer = probe(module, bitslip, delay)
                row.append(bool(answer))
                if not answer and bitslip not in failures:
                    failures[bitslip] = (delay, getattr(answer, "detail", "") or "no match")
            window = longest_window(row)
            log.info("read levelling: module %d, bitslip %d: delays |%s| %s", module, bitslip,
                     _row(row), f"window {window[0]}-{window[1]}" if window else "no window")
            scans.append(tuple(row))
        windows = {b: w for b in range(bitslips) if (w := longest_window(scans[b]))}
        if not windows:
            examples = "; ".join(f"bitslip {b}, delay {d}: {what}"
                                 for b, (d, what) in failures.items())
            raise DramInitError(
                f"read levelling: module {module} (byte group {module}) reads back no test "
                f"pattern at any setting: tried bitslips {_span(range(bitslips))} x delays "
                f"{_span(range(delays))} ({bitslips * delays} settings, none worked); first "
                f"failure per bitslip: {examples}")
        # Widest window first; on a tie the lowest bitslip (max keeps the first maximum).
        bitslip = max(windows, key=lambda b: windows[b][1] - windows[b][0])
        first, last = windows[bitslip]
        delay = (first + last) // 2
        ties = [b for b, w in windows.items() if w[1] - w[0] == last - first and b != bitslip]
        log.info("read levelling: module %d: bitslip %d (window %d-%d, %d delays%s), delay %d "
                 "(its centre)", module, bitslip, first, last, last - first + 1,
                 f"; bitslips {ties} as wide, the lowest wins" if ties else "", delay)
        if last == first:
            log.warning("read levelling: module %d works at one delay only (bitslip %d, delay "
                        "%d): a marginal read timing", module, bitslip, delay)
        answer = probe(module, bitslip, delay)
        if not answer:
            raise DramInitError(
                f"read levelling: module {module} (byte group {module}) failed its check at the "
                f"chosen setting bitslip {bitslip}, delay {delay} (centre of window "
                f"{first}-{last}, which had worked during the scan): "
                f"{getattr(answer, 'detail', '') or 'no match'}")
        choices.append(LevelChoice(module, bitslip, delay, (first, last), tuple(scans)))
    return choices


class DfiiReadProbe:
    """The probe of :func:`find_read_levels` on the board: LiteDRAM's ECP5DDRPHY and DFII
    through the bridge.

    A call sets the module's bitslip and delay (only the steps that change: a reset when going
    down, increments going up), then writes and reads back ``patterns`` bursts through DFII; it
    is ok when every beat of the module's byte lane read back as written and the PHY saw the
    read burst (``ddrphy_burstdet_seen``), in every burst (it stops at the first that fails).

    Parameters
    ----------
    link : firmware.link.Link
        Needs ``write(addr, value, idempotent=...)`` and ``read(addr)``.
    init : firmware.dram_init.DramInit
        The CSR map and controller clock.
    step : firmware.dram_init.ReadLevel
        The PHY's geometry and the DFII command words.
    ctrl_base : int
        Bridge byte address of LiteDRAM's control window.
    sleep : callable
        ``sleep(seconds)`` for LiteX's ``cdelay`` after each DFII command.
    patterns : int
        Bursts per check (LiteX: 3 seeds).
    """

    def __init__(self, link, init: DramInit, step: ReadLevel, *, ctrl_base: int,
                 sleep=time.sleep, patterns: int = 3):
        self.link, self.init, self.step, self.base = link, init, step, ctrl_base
        self.sleep, self.patterns = sleep, patterns
        self.beats = step.dfi_databits // step.databits  # beats per DFI phase
        self.words = -(-step.dfi_databits // _CSR_BITS)  # CSR words per wrdata/rddata
        self.settings: dict[int, tuple[int, int]] = {}  # module -> (bitslip, delay) in the PHY
        self.checks = 0  # bursts written and read so far (also the pattern's seed)

    # -- CSR access -------------------------------------------------------------------------------
    def _write(self, name: str, value: int, *, idempotent: bool = True) -> None:
        self.link.write(self.init.address(name, self.base), value, idempotent=idempotent)

    def _read(self, name: str) -> int:
        return self.link.read(self.init.address(name, self.base))

    def _pulse(self, name: str, times: int = 1) -> None:
        # An increment (bitslip, delay) or command issue acts on every write: never repeated.
        for _ in range(times):
            self._write(name, 1, idempotent=False)

    # -- PHY settings (Ref: litex/soc/software/liblitedram/accessors.c) --------------------------
    def _select(self, module: int) -> None:
        # Ref: litex/soc/software/liblitedram/accessors.c, sdram_select (dly_sel also pauses the
        # module's DQSBUFM: ecp5ddrphy.py, DQSBUFM PAUSE).
        self._write("ddrphy_dly_sel", 1 << module)

    def _deselect(self) -> None:
        # Ref: litex/soc/software/liblitedram/accessors.c, sdram_deselect (unselect, then
        # toggle every DQSBUFM's PAUSE on the ECP5).
        self._write("ddrphy_dly_sel", 0)
        self._write("ddrphy_dly_sel", (1 << self.step.modules) - 1)
        self._write("ddrphy_dly_sel", 0)

    def reset(self) -> None:
        """Bitslip and delay 0 in every module."""
        # Ref: litex/soc/software/liblitedram/sdram.c, sdram_leveling (read_rst_dq_delay and
        # read_rst_dq_bitslip of every module before the levelling)
        for module in range(self.step.modules):
            self._select(module)
            self._write("ddrphy_rdly_dq_rst", 1)
            self._write("ddrphy_rdly_dq_bitslip_rst", 1)
            self._deselect()
            self.settings[module] = (0, 0)
        log.debug("read levelling: every module at bitslip 0, delay 0")

    def set(self, module: int, bitslip: int, delay: int) -> None:
        """Put ``module`` at ``bitslip`` and ``delay``."""
        # Ref: litex/soc/software/liblitedram/accessors.c, read_rst_dq_delay, read_inc_dq_delay,
        # read_rst_dq_bitslip, read_inc_dq_bitslip; ecp5ddrphy.py: the counters wrap (3 and 2 bits)
        if not (0 <= module < self.step.modules and 0 <= bitslip < self.step.bitslips
                and 0 <= delay < self.step.delays):
            raise ValueError(f"no module {module}, bitslip {bitslip}, delay {delay} in a PHY of "
                             f"{self.step.modules} modules, {self.step.bitslips} bitslips, "
                             f"{self.step.delays} delays")
        if module not in self.settings:
            self.reset()
        now_bitslip, now_delay = self.settings[module]
        if (now_bitslip, now_delay) == (bitslip, delay):
            return
        self._select(module)
        if bitslip != now_bitslip:
            if bitslip < now_bitslip:  # the counters only count up (and wrap)
                self._write("ddrphy_rdly_dq_bitslip_rst", 1)
                now_bitslip = 0
            self._pulse("ddrphy_rdly_dq_bitslip", bitslip - now_bitslip)
        if delay != now_delay:
            if delay < now_delay:
                self._write("ddrphy_rdly_dq_rst", 1)
                now_delay = 0
            self._pulse("ddrphy_rdly_dq_inc", delay - now_delay)
        self._deselect()
        self.settings[module] = (bitslip, delay)

    # -- DFII (Ref: litex/soc/software/liblitedram/sdram.c) --------------------------------------
    def _command(self, phase: int, command: int) -> None:
        """Row 0, bank 0, column 0: ``command`` on DFII phase ``phase``, then ``cdelay(15)``."""
        self._write(f"sdram_dfii_pi{phase}_address", 0)
        self._write(f"sdram_dfii_pi{phase}_baddress", 0)
        self._write(f"sdram_dfii_pi{phase}_command", command)
        self._pulse(f"sdram_dfii_pi{phase}_command_issue")
        self.sleep(_COMMAND_CYCLES / self.init.sys_clk_freq)

    def pattern(self, seed: int) -> list[int]:
        """One burst's DFI data, a word per phase: in every module's byte lane (bits
        ``8*module`` of each ``databits``-wide beat, ECP5DDRPHY's layout) the burst's bytes are
        pseudo-random and all different, so a beat shift is never a match."""
        rng = random.Random(seed)
        phases = [0] * self.step.nphases
        for module in range(self.step.modules):
            lane = rng.sample(range(256), self.step.nphases * self.beats)
            for n, byte in enumerate(lane):
                phase, beat = divmod(n, self.beats)
                phases[phase] |= byte << (beat * self.step.databits + 8 * module)
        return phases

    def lane(self, phases: list[int], module: int) -> list[int]:
        """``module``'s bytes of a burst (:meth:`pattern`'s layout), beat by beat."""
        return [(word >> (beat * self.step.databits + 8 * module)) & 0xFF
                for word in phases for beat in range(self.beats)]

    def _check(self, module: int) -> str:
        """Write a fresh burst, read it back; '' if ``module``'s lane matched, else what
        differed."""
        # Ref: litex/soc/software/liblitedram/sdram.c, sdram_write_read_check_test_pattern
        # (activate, wrdata of every phase, write on wrphase, burstdet_clr, read on rdphase,
        # precharge, rddata of every phase, burstdet_seen), sdram_activate_test_row,
        # sdram_precharge_test_row
        step, mask = self.step, (1 << _CSR_BITS) - 1
        expected = self.pattern(self.checks)
        self.checks += 1
        self._command(0, step.activate)
        for phase, value in enumerate(expected):
            address = self.init.address(f"sdram_dfii_pi{phase}_wrdata", self.base)
            for i in range(self.words):  # the most significant word first
                self.link.write(address + 4 * i, value >> _CSR_BITS * (self.words - 1 - i) & mask)
        self._command(step.wrphase, step.write)
        self._write("ddrphy_burstdet_clr", 1)
        self._command(step.rdphase, step.read)
        self._command(0, step.precharge)
        got = []
        for phase in range(step.nphases):
            address = self.init.address(f"sdram_dfii_pi{phase}_rddata", self.base)
            value = 0
            for i in range(self.words):
                value = value << _CSR_BITS | self.link.read(address + 4 * i)
            got.append(value)
        burst = (self._read("ddrphy_burstdet_seen") >> module) & 1
        want, have = self.lane(expected, module), self.lane(got, module)
        faults = []
        if have != want:
            faults.append(f"read {bytes(have).hex(' ')}, expected {bytes(want).hex(' ')}")
        if not burst:
            faults.append("no read burst detected (ddrphy_burstdet_seen)")
        return "; ".join(faults)

    def __call__(self, module: int, bitslip: int, delay: int) -> Readback:
        self.set(module, bitslip, delay)
        for _ in range(self.patterns):
            fault = self._check(module)
            if fault:
                log.debug("read levelling: module %d, bitslip %d, delay %d: %s", module,
                          bitslip, delay, fault)
                return Readback(False, fault)
        return Readback(True)


def run_read_levelling(link, init: DramInit, step: ReadLevel, *, ctrl_base: int,
                       sleep=time.sleep) -> list[LevelChoice]:
    """Level every module's reads: reset all bitslips and delays, then
    :func:`find_read_levels` with a
    :class:`DfiiReadProbe`. DFII must be in software control (the init sequence before it);
    each module is left at its chosen setting.

    Parameters
    ----------
    link, init, step, ctrl_base, sleep
        As :class:`DfiiReadProbe`.

    Returns
    -------
    list of LevelChoice
        One per module.

    Raises
    ------
    DramInitError
        As :func:`find_read_levels`.
    """
    # Ref: litex/soc/software/liblitedram/sdram.c, sdram_leveling (resets, then sdram_read_leveling)
    probe = DfiiReadProbe(link, init, step, ctrl_base=ctrl_base, sleep=sleep)
    probe.reset()
    choices = find_read_levels(probe, step.modules, step.bitslips, step.delays)
    log.info("read levelling done: %s (%d bursts checked)", ", ".join(
        f"module {c.module}: bitslip {c.bitslip}, delay {c.delay}" for c in choices),
        probe.checks)
    return choices
