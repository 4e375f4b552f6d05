"""Host-run DRAM initialisation through the bridge (``docs/board.md``, "Initialisation").

LiteDRAM's standalone core built with ``"cpu": None`` keeps its user port blocked until software
writes ``ddrctrl_init_done``; its init sequence exists only as software. This module is that
software for the host: the steps of LiteX's BIOS (``liblitedram/sdram.c``, ``sdram_init``) as
CSR writes over a :class:`firmware.link.Link`:

1. DFII software control (``sdram_dfii_control`` = CKE | ODT | RESET_N);
2. ``ddrctrl_init_done`` = 0, ``ddrctrl_init_error`` = 0;
3. the PHY's init sequence (``litedram.init.get_sdram_phy_init_sequence``; SDR: CKE high,
   precharge all, mode register with DLL reset, precharge all, two auto refreshes, mode
   register; DDR3: reset released, CKE high, mode registers 2, 3, 1, 0, ZQ calibration), each
   step as ``sdram_dfii_pi0_address``/``baddress`` and then either a DFII control write or a
   command (``pi0_command`` + ``pi0_command_issue``), exactly as LiteDRAM's C generator writes
   it into ``sdram_phy.h`` (``litedram.init.get_sdram_phy_c_header``);
4. for a PHY with read levelling (DDR3, ECP5DDRPHY on the ECPIX-5): a :class:`ReadLevel`
   step, run by :func:`firmware.dram_level.run_read_levelling` (LiteX's ``sdram_leveling``:
   per byte group, the bitslip and read delay found by writing and reading back patterns
   through DFII); a byte group without a working setting is a :class:`DramInitError` (and
   ``ddrctrl_init_error`` = 1);
5. DFII hardware control (``sdram_dfii_control`` = SEL);
6. ``ddrctrl_init_done`` = 1, then a short memory test through the DRAM window (the BIOS tests
   before setting ``init_done``, through the SoC bus; our only path to DRAM is the user port,
   which ``init_done`` opens); on a mismatch ``ddrctrl_init_error`` = 1 and
   :class:`DramInitError`.

Nothing here is copied from a generated file: the PHY and timing settings come from LiteDRAM's
own core class built in-process on the same YAML ``litedram_gen`` reads
(``constraints/litedram/<board>.yml``, the same platform kind as the generator: a Lattice
platform, or LiteX's simulation platform for ``--sim``), the DFII bit values from LiteDRAM's
Python header (``litedram.init.get_sdram_phy_py_header``), and the CSR addresses from the
``csr.csv`` of the generated core the build uses (:func:`hdl.board.litedram.generate`). The unit
test checks the writes against the generated ``sdram_phy.h``.

Only ECP5DDRPHY's levelling (read levelling: bitslip and read delay) is implemented; PHYs that
need write levelling, write latency calibration or DQ-DQS training, and read-levelling PHYs
other than the ECP5's (other CSRs, other data layouts), are refused with
:class:`NotImplementedError`.

A delay of ``n`` (LiteX's ``cdelay(n)``: at least ``n`` CPU cycles at the controller's clock)
becomes a host sleep of ``n`` controller cycles; each bridge frame takes far longer anyway.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CsrWrite",
    "Delay",
    "DramInit",
    "DramInitError",
    "ReadLevel",
    "init_steps",
    "load_core_config",
    "phy_timing_settings",
    "read_csr_csv",
    "run_init",
]

#: Memory types whose initialisation is the PHY's command sequence alone (no levelling).
_NO_LEVELLING = ("SDR",)
#: PHYs whose levelling :mod:`firmware.dram_level` does (read levelling only).
_READ_LEVELLING_PHYS = ("ECP5DDRPHY",)


class DramInitError(RuntimeError):
    """The initialisation failed; the message says at which step (CSR, address, values)."""


@dataclass(frozen=True)
class CsrWrite:
    """Write ``value`` to LiteDRAM's CSR ``name`` (a ``csr.csv`` register name)."""

    name: str
    value: int
    comment: str = ""


@dataclass(frozen=True)
class Delay:
    """Wait at least ``cycles`` cycles of the controller's clock (LiteX's ``cdelay``)."""

    cycles: int
    comment: str = ""


@dataclass(frozen=True)
class ReadLevel:
    """Level the PHY's reads here (:func:`firmware.dram_level.run_read_levelling`).

    Attributes
    ----------
    modules, bitslips, delays : int
        Byte groups, read bitslip and read delay settings (LiteDRAM's ``PhySettings``:
        ``databits // 8``, ``bitslips``, ``delays``).
    nphases, databits, dfi_databits : int
        DFI phases, DRAM data width and DFI data bits per phase.
    rdphase, wrphase : int
        The DFI phases of read and write commands.
    activate, write, read, precharge : int
        The DFII command words (``sdram_dfii_pi*_command``) of LiteX's test-pattern check.
    """

    modules: int
    bitslips: int
    delays: int
    nphases: int
    databits: int
    dfi_databits: int
    rdphase: int
    wrphase: int
    activate: int
    write: int
    read: int
    precharge: int
    comment: str = "read levelling"


@dataclass(frozen=True)
class DramInit:
    """A board's initialisation: the ``steps`` (:class:`CsrWrite`, :class:`Delay`,
    :class:`ReadLevel`), the CSR
    byte offsets of ``csr.csv`` (``csrs``), the controller clock (``sys_clk_freq``, Hz) and
    the memory type."""

    steps: tuple
    csrs: dict
    sys_clk_freq: float
    memtype: str

    def address(self, name: str, base: int) -> int:
        """Bridge byte address of CSR ``name`` in the control window at ``base``."""
        try:
            return base + self.csrs[name]
        except KeyError:
            raise DramInitError(f"LiteDRAM core has no CSR {name!r} (csr.csv has "
                                f"{', '.join(sorted(self.csrs))})") from None


def read_csr_csv(path) -> dict[str, int]:
    """``{register name: byte offset}`` of a LiteX ``csr.csv`` (its ``csr_register`` rows)."""
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r and not r[0].startswith("#")]
    return {r[1]: int(r[2], 0) for r in rows if r[0] == "csr_register"}


def load_core_config(yml) -> dict:
    """The YAML as ``litedram_gen`` reads it (``litedram/gen.py``, ``main``): module and PHY
    names become LiteDRAM's classes, ``*clk_freq`` floats, ``"None"``/``"True"``/``"False"``
    Python values."""
    import yaml
    from litedram import modules as litedram_modules
    from litedram import phy as litedram_phys

    config = yaml.load(Path(yml).read_text(), Loader=yaml.Loader)
    for key, value in config.items():
        value = {"False": False, "True": True, "None": None}.get(value, value) \
            if isinstance(value, str) else value
        if "clk_freq" in key:
            value = float(value)
        if key == "sdram_module":
            value = getattr(litedram_modules, value)
        if key == "sdram_phy":
            value = getattr(litedram_phys, value)
        config[key] = value
    return config


@functools.lru_cache(maxsize=8)
def phy_timing_settings(yml: str, sim: bool = False):
    """``(phy_settings, timing_settings, sys_clk_freq)`` of the core ``litedram_gen`` makes
    from ``yml``: LiteDRAM's ``LiteDRAMCore`` built in-process (about a second, nothing
    written), on the platform the generator would use."""
    from litedram.gen import LiteDRAMCore
    from litex.build.lattice import LatticePlatform
    from litex.build.sim import SimPlatform

    config = load_core_config(yml)
    if sim:
        platform = SimPlatform("", io=[])
    else:
        platform = LatticePlatform(config["device"], io=[], toolchain="trellis")
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)  # LiteX logs every bus region at INFO
    try:
        with contextlib.redirect_stdout(None):
            core = LiteDRAMCore(platform, config, integrated_rom_size=0xC000)
    finally:
        logging.disable(previous)
    settings = core.sdram.controller.settings
    return settings.phy, settings.timing, config["sys_clk_freq"]


def _dfii_constants(phy, timing) -> dict[str, int]:
    """The DFII bit values (``dfii_control_*``, ``dfii_command_*``) of LiteDRAM's Python
    header."""
    from litedram.init import get_sdram_phy_py_header

    namespace: dict = {}
    header = get_sdram_phy_py_header(phy, timing)
    exec(header.split("init_sequence")[0], namespace)  # the constant definitions only
    return {k: v for k, v in namespace.items() if k.startswith("dfii_")}


def _or_names(expression: str, constants: dict[str, int]) -> int:
    """``"DFII_COMMAND_RAS|DFII_COMMAND_CS"`` (LiteDRAM's command strings) as a number."""
    value = 0
    for name in expression.split("|"):
        value |= constants[name.strip().lower()]
    return value


def init_steps(board: str = "ulx3s", *, sim: bool = False, yml=None, csr_csv=None) -> DramInit:
    """The initialisation of ``board``'s core (the simulation core with ``sim``).

    Parameters
    ----------
    board : str
        Reads ``constraints/litedram/<board>.yml``; the CSR map from the generated core's
        ``csr.csv`` (generated if missing: :func:`hdl.board.litedram.generate`).
    yml, csr_csv : path, optional
        Override the two files (tests).

    Raises
    ------
    NotImplementedError
        For PHYs whose levelling is not implemented (any but ECP5DDRPHY's read levelling).
    """
    from litedram.init import cmds, get_sdram_phy_init_sequence

    if yml is None or csr_csv is None:
        from hdl.board.litedram import CONSTRAINTS, generate

        yml = yml or CONSTRAINTS / f"{board}.yml"
        csr_csv = csr_csv or generate(board, sim=sim)["csr_csv"]
    phy, timing, sys_clk_freq = phy_timing_settings(str(yml), sim)
    k = _dfii_constants(phy, timing)
    level = None if phy.memtype in _NO_LEVELLING else _read_level(phy, k, board)
    software = k["dfii_control_cke"] | k["dfii_control_odt"] | k["dfii_control_reset_n"]
    steps = [
        CsrWrite("sdram_dfii_control", software, "DFII software control"),
        CsrWrite("ddrctrl_init_done", 0), CsrWrite("ddrctrl_init_error", 0),
    ]
    sequence, _ = get_sdram_phy_init_sequence(phy, timing)
    for comment, a, ba, cmd, delay in sequence:
        steps += [CsrWrite("sdram_dfii_pi0_address", a, comment),
                  CsrWrite("sdram_dfii_pi0_baddress", ba, comment)]
        if cmd.startswith("DFII_CONTROL"):  # as get_sdram_phy_c_header decides
            steps.append(CsrWrite("sdram_dfii_control", _or_names(cmd, k), comment))
        else:
            steps += [CsrWrite("sdram_dfii_pi0_command", _or_names(cmd, k), comment),
                      CsrWrite("sdram_dfii_pi0_command_issue", 1, comment)]
        if delay:
            steps.append(Delay(delay, comment))
    if level is not None:
        # Ref: litex/soc/software/liblitedram/sdram.c, sdram_init (sdram_leveling follows
        # init_sequence, in software control)
        steps.append(level)
    steps += [CsrWrite("sdram_dfii_control", k["dfii_control_sel"], "DFII hardware control"),
              CsrWrite("ddrctrl_init_done", 1, "open the user port")]
    assert cmds["CKE"].startswith("DFII_CONTROL")  # the decision above rests on this
    return DramInit(tuple(steps), read_csr_csv(csr_csv), sys_clk_freq, phy.memtype)


def _read_level(phy, k: dict[str, int], board: str) -> ReadLevel:
    """The :class:`ReadLevel` step of ``phy`` (a ``PhySettings``), or NotImplementedError."""
    stages = [name for name in ("write_leveling", "write_latency_calibration",
                                "write_dq_dqs_training", "read_leveling")
              if getattr(phy, name, False)]
    if phy.phytype not in _READ_LEVELLING_PHYS or stages != ["read_leveling"]:
        raise NotImplementedError(
            f"host-run initialisation of {phy.memtype} with {phy.phytype} ({board}) needs "
            f"LiteX's levelling ({', '.join(stages) or 'none declared'}; liblitedram/sdram.c, "
            f"sdram_leveling): only the read levelling of {', '.join(_READ_LEVELLING_PHYS)} is "
            "implemented")
    cs, we = k["dfii_command_cs"], k["dfii_command_we"]
    cas, ras = k["dfii_command_cas"], k["dfii_command_ras"]
    # Ref: litex/soc/software/liblitedram/sdram.c, sdram_activate_test_row,
    # sdram_precharge_test_row and sdram_write_read_check_test_pattern (write and read).
    return ReadLevel(
        modules=phy.databits // 8, bitslips=phy.bitslips, delays=phy.delays,
        nphases=phy.nphases, databits=phy.databits, dfi_databits=phy.dfi_databits,
        rdphase=int(phy.rdphase), wrphase=int(phy.wrphase),
        activate=ras | cs, write=cas | we | cs | k["dfii_command_wrdata"],
        read=cas | cs | k["dfii_command_rddata"], precharge=ras | we | cs)


def _memtest_words(n: int) -> list[int]:
    """``n`` test words: walking ones, their complements and an address-dependent pattern."""
    walk = [1 << (i % 32) for i in range(n)]
    return [(w ^ (0xFFFF_FFFF if i % 2 else 0)) ^ (i * 0x9E37_79B9 & 0xFFFF_FFFF)
            for i, w in enumerate(walk)]


def run_init(link, init: DramInit, *, ctrl_base: int | None = None,
             dram_base: int | None = None, memtest_words: int = 64, sleep=time.sleep) -> None:
    """Run ``init`` (:func:`init_steps`) through ``link`` (a :class:`firmware.link.Link`).

    Parameters
    ----------
    ctrl_base, dram_base : int, optional
        Bridge byte addresses of LiteDRAM's control window and of DRAM (default: the board
        top's :data:`hdl.board.top.ADDRESS_MAP`).
    memtest_words : int
        Words written and read back at ``dram_base`` once the user port is open (0: none).
    sleep : callable
        ``sleep(seconds)`` for the :class:`Delay` steps.

    Raises
    ------
    DramInitError
        Read levelling found no working setting for a byte group, or the memory test failed
        (``ddrctrl_init_error`` is then set), or a CSR is missing.
    firmware.link.LinkError
        The link failed; its message names the frame.
    """
    if ctrl_base is None or dram_base is None:
        from hdl.board.top import ADDRESS_MAP

        ctrl_base = ADDRESS_MAP["dram_ctrl"] if ctrl_base is None else ctrl_base
        dram_base = ADDRESS_MAP["dram"] if dram_base is None else dram_base
    for step in init.steps:
        if isinstance(step, Delay):
            sleep(step.cycles / init.sys_clk_freq)
        elif isinstance(step, ReadLevel):
            from firmware.dram_level import run_read_levelling

            try:
                run_read_levelling(link, init, step, ctrl_base=ctrl_base, sleep=sleep)
            except DramInitError as exc:
                link.write(init.address("ddrctrl_init_error", ctrl_base), 1)
                raise DramInitError(f"{exc} (ddrctrl_init_error set)") from exc
        else:
            # command_issue starts a DRAM command: not repeated after a lost answer.
            link.write(init.address(step.name, ctrl_base), step.value,
                       idempotent=not step.name.endswith("_issue"))
    if not memtest_words:
        return
    pattern = _memtest_words(memtest_words)
    link.write_words(dram_base, pattern)
    got = link.read_words(dram_base, memtest_words)
    bad = [(i, e, a) for i, (e, a) in enumerate(zip(pattern, got, strict=True)) if e != a]
    if bad:
        link.write(init.address("ddrctrl_init_error", ctrl_base), 1)
        i, e, a = bad[0]
        raise DramInitError(
            f"DRAM memory test after init: {len(bad)} of {memtest_words} words wrong; first at "
            f"0x{dram_base + 4 * i:08x}: expected 0x{e:08x}, read 0x{a:08x} "
            f"(ddrctrl_init_error set)")
