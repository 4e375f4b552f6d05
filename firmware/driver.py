"""The host driver behind ``owlet run``: a compiled program on a board through the bridge.

Everything goes through a :class:`firmware.link.Link`, so the same code drives a ULX3S over
USB-serial and the simulated board over TCP (``sim/board_cosim.py``). :class:`BoardDriver` does,
in order:

1. :meth:`~BoardDriver.connect`: ``identify`` (magic, protocol version, then the board word:
   board byte, engine MHz, P_ic, P_oc; a wrong or absent board is a :class:`DriverError`), and
   if the sequencer is still busy with an earlier host's start, wait for it (with a timeout);
2. :meth:`~BoardDriver.init_dram`: LiteDRAM's init through the bridge (:mod:`firmware.dram_init`)
   unless ``ddrctrl_init_done`` already reads 1 (an earlier run did it; running it again would
   overwrite the start of DRAM with its memory test, and with it the program);
3. :meth:`~BoardDriver.load`: the program's constant segments (descriptors, weights,
   requantization tables) uploaded once. A mailbox in the driver's area at the top of DRAM
   (:data:`DRIVER_AREA`) holds a SHA-256 digest of the image; the upload is skipped when it
   matches. Its magic word is cleared before the first byte of a new image and written after
   the last, so an interrupted upload leaves the board marked "no program" (and says so), and
   the next run uploads again;
4. :meth:`~BoardDriver.run`: per frame, the input segment, the performance records invalidated,
   the sequencer's CSRs (its WATCHDOG from ``watchdog_ms``), the start (not idempotent: a lost
   answer is resolved by reading STATUS and the records), STATUS polled until done with a timeout
   whose message names the layer in progress (the sequencer's LAYER CSR) and the time waited,
   then the records (checked: every layer ran without error) and the outputs read back. A layer
   that the sequencer's watchdog stopped (``SEQ_ERR.WATCHDOG``, set as it fires) is a
   :class:`SequencerWatchdog` naming the layer and the cycles without progress.

The program is compiled to stay below :data:`DRIVER_AREA` (``memory_size``); the performance
records live in that area too. :class:`Frame` carries the time split and the byte counts that
``owlet run --bench`` prints; the engine's own time is its CYCLES CSR at the board word's clock.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from firmware.link import Link, LinkError, NackError
from firmware.program import Program, SegmentKind, map_addr
from hdl.board.boards import BOARDS
from hdl.board.top import ADDRESS_MAP
from hdl.descriptor import EngineConfig
from hdl.engine import COUNTERS
from hdl.sequencer import RECORD, RECORD_WORDS, SEQ_CSR, SEQ_ERR

__all__ = [
    "DRIVER_AREA",
    "MAILBOX_WORDS",
    "PROGRAM_MAGIC",
    "STALE",
    "BoardDriver",
    "CountingTransport",
    "DriverError",
    "Frame",
    "ProgramUploadError",
    "SequencerTimeout",
    "SequencerWatchdog",
    "WATCHDOG_MS",
    "check_outputs",
    "expected_outputs",
    "program_digest",
]

log = logging.getLogger(__name__)

DRAM = ADDRESS_MAP["dram"]
SEQ = ADDRESS_MAP["seq"]
#: Bytes at the top of DRAM that belong to the driver: the mailbox, then (from +4 KB) the
#: sequencer's performance records. Programs are compiled to end below it.
DRIVER_AREA = 64 << 10
_RECORDS_OFFSET = 4096
#: Mailbox word 0 while a complete program image is in DRAM (the bytes ``O W L P``).
PROGRAM_MAGIC = int.from_bytes(b"OWLP", "little")
#: Mailbox: magic, the image digest's first 128 bits (4 words), the image's byte count.
MAILBOX_WORDS = 6
#: Byte written over the output regions a checked run reads back (an output the engine never
#: wrote cannot then match the golden model).
STALE = 0xA5
#: Record word :data:`hdl.sequencer.RECORD`.LAYER before a run: no layer index is this large.
_NO_RECORD = 0xFFFF_FFFF
_BUSY, _DONE, _ERROR = 1 << 0, 1 << 1, 1 << 2


class DriverError(RuntimeError):
    """The board did not do what the driver asked; the message says what, where and why."""


class ProgramUploadError(DriverError):
    """The program upload stopped part way; the board is marked as holding no program."""


class SequencerTimeout(DriverError):
    """STATUS did not reach done in time; ``layer`` is the sequencer's LAYER CSR then."""

    def __init__(self, message: str, layer: int):
        super().__init__(message)
        self.layer = layer


class SequencerWatchdog(DriverError):
    """The sequencer's watchdog stopped layer ``layer`` after ``cycles`` cycles without
    progress; ``ended``: the run has ended (else the engine still waits for the memory to
    complete its bus transfers, and the next run waits for it)."""

    def __init__(self, message: str, layer: int, cycles: int, ended: bool):
        super().__init__(message)
        self.layer, self.cycles, self.ended = layer, cycles, ended


#: ``owlet run``'s default watchdog: a layer that moves nothing on the bus for this long is
#: stopped (a layer's longest quiet stretch is one row tile's passes: well under 1 ms).
WATCHDOG_MS = 100.0


class CountingTransport:
    """Wraps a transport and counts the bytes it sends and receives (``sent``, ``received``):
    what crosses the link, for ``--bench`` and for the tests of the upload-once skip."""

    def __init__(self, transport):
        self.transport, self.sent, self.received = transport, 0, 0
        self.byte_time = transport.byte_time
        self.name = getattr(transport, "name", type(transport).__name__)

    def send(self, data: bytes) -> None:
        self.sent += len(data)
        self.transport.send(data)

    def recv(self, timeout: float) -> bytes:
        data = self.transport.recv(timeout)
        self.received += len(data)
        return data

    def discard_input(self) -> None:
        self.transport.discard_input()

    def close(self) -> None:
        self.transport.close()


def _constant_segments(program: Program):
    """Segments the host writes once per program: everything with data but the input."""
    return [s for s in program.segments if s.data is not None and s.kind != SegmentKind.INPUT]


def program_digest(program: Program) -> tuple[int, int, int, int]:
    """The first 128 bits of the SHA-256 of what :meth:`BoardDriver.load` uploads (each constant
    segment's address, size and bytes, the descriptor address and count), as 4 words."""
    h = hashlib.sha256(struct.pack("<II", program.descriptor_addr, len(program.layers)))
    for seg in _constant_segments(program):
        h.update(struct.pack("<II", seg.addr, len(seg.data)))
        h.update(seg.data)
    return struct.unpack("<4I", h.digest()[:16])


def _padded(data: bytes) -> bytes:
    return bytes(data) + bytes(-len(data) % 4)


def _words(size: int) -> int:
    return -(-size // 4)


@dataclass
class Frame:
    """One frame on the board (:meth:`BoardDriver.run`).

    Attributes
    ----------
    seconds : dict
        Wall seconds of ``upload`` (input, record invalidation, CSRs; the stale fill of a checked
        run is ``fill``), ``compute`` (start to done, polling included) and ``download``
        (records and outputs).
    sent, received : dict
        Bytes on the link per phase (frames and answers, retries included).
    csrs : dict
        The sequencer's ``status``, ``error``, ``layer``, ``cycles`` after the run.
    records : ndarray, shape (count, RECORD_WORDS)
        The performance records.
    mem : bytearray
        ``program.footprint`` bytes: the outputs read back at their addresses, the rest STALE.
    """

    seconds: dict = field(default_factory=dict)
    sent: dict = field(default_factory=dict)
    received: dict = field(default_factory=dict)
    csrs: dict = field(default_factory=dict)
    records: np.ndarray | None = None
    mem: bytearray | None = None

    def counters(self, layer: int) -> dict:
        """Layer ``layer``'s engine counters as a dict (:data:`hdl.engine.COUNTERS`)."""
        return dict(zip(COUNTERS, (int(v) for v in self.records[layer][:len(COUNTERS)]),
                        strict=True))


class BoardDriver:
    """A program on a board through ``link`` (see the module docstring).

    Parameters
    ----------
    link : firmware.link.Link
        Its transport is wrapped in a :class:`CountingTransport` (``link.transport``).
    board : str
        ``"ulx3s"`` or ``"ecpix5"``: the board byte ``identify`` must return, the DRAM size and
        the DRAM init.
    sim_core : bool
        The board is the cosimulation: LiteDRAM's simulation core has its own init sequence.
    timeout_s : float
        Wall seconds a run (or an earlier host's run) may take before :class:`SequencerTimeout`.
    watchdog_ms : float
        The sequencer's WATCHDOG CSR, in milliseconds of the engine clock (the board word's
        MHz): a layer without progress that long is stopped (:class:`SequencerWatchdog`);
        0 turns it off.
    say : callable
        Progress messages (one line each); ``progress``: tqdm bars for uploads.

    Attributes
    ----------
    info : firmware.link.BoardInfo
        After :meth:`connect`; ``engine_mhz`` and ``cfg`` (:class:`hdl.descriptor.EngineConfig`)
        from its board word.
    """

    def __init__(self, link: Link, board: str = "ulx3s", *, sim_core: bool = False,
                 timeout_s: float = 10.0, watchdog_ms: float = WATCHDOG_MS,
                 say: Callable[[str], None] = print, progress: bool = False):
        if board not in BOARDS:
            raise ValueError(f"unknown board '{board}' (known: {', '.join(BOARDS)})")
        self.link, self.board = link, BOARDS[board]
        self.counter = link.transport = CountingTransport(link.transport)
        self.sim_core, self.timeout_s, self.say, self.progress = sim_core, timeout_s, say, progress
        self.watchdog_ms = watchdog_ms
        self.info = self.engine_mhz = self.cfg = None
        self.dram_initialised_now = False
        top = DRAM + self.board.dram_size - DRIVER_AREA
        self.mailbox, self.records_addr = top, top + _RECORDS_OFFSET

    @property
    def memory_size(self) -> int:
        """DRAM bytes a program may use: all but the driver's area."""
        return self.board.dram_size - DRIVER_AREA

    # -- CSRs ---------------------------------------------------------------------------------
    def _csr(self, name: str) -> int:
        return self.link.read(SEQ + 4 * getattr(SEQ_CSR, name))

    def _set_csr(self, name: str, value: int) -> None:
        self.link.write(SEQ + 4 * getattr(SEQ_CSR, name), value)

    @property
    def watchdog_cycles(self) -> int:
        """``watchdog_ms`` in engine cycles (after :meth:`connect`), at least 1 unless off."""
        if self.watchdog_ms <= 0:
            return 0
        return min(max(1, round(self.watchdog_ms * 1e3 * self.engine_mhz)), (1 << 32) - 1)

    # -- session ------------------------------------------------------------------------------
    def connect(self):
        """Identify the board and wait until its sequencer is idle; returns the ID answer."""
        info = self.link.identify()
        board_id, mhz = info.board >> 24, (info.board >> 16) & 0xFF
        p_ic, p_oc = (info.board >> 8) & 0xFF, info.board & 0xFF
        if board_id != self.board.board_id:
            names = {b.board_id: b.name for b in BOARDS.values()}
            raise DriverError(f"wrong board on {self.link.transport_name}: its board word "
                              f"0x{info.board:08x} says {names.get(board_id, f'id {board_id}')}"
                              f", expected {self.board.name} (id {self.board.board_id})")
        try:
            self.cfg = EngineConfig(p_ic=p_ic, p_oc=p_oc, data_width=8 * p_ic)
        except ValueError as exc:
            raise DriverError(f"board word 0x{info.board:08x} on {self.link.transport_name}: "
                              f"P_ic {p_ic}, P_oc {p_oc}: {exc}") from None
        self.info, self.engine_mhz = info, mhz
        self.say(f"board: {self.board.name} on {self.link.transport_name}, bridge "
                 f"v{info.version}, engine {mhz} MHz, P_ic {p_ic} x P_oc {p_oc}")
        status = self._csr("STATUS")
        if status & _BUSY:
            layer = self._csr("LAYER")
            self.say(f"board: the sequencer is still busy with an earlier start (layer {layer});"
                     f" waiting up to {self.timeout_s:.0f} s")
            self._wait_done(f"an earlier start (layer {layer} when this host connected)")
        return info

    def init_dram(self) -> bool:
        """Initialise DRAM through the bridge unless done already; True if it ran."""
        from firmware.dram_init import run_init

        init = self._dram_init()
        ctrl = ADDRESS_MAP["dram_ctrl"]
        done = self.link.read(init.address("ddrctrl_init_done", ctrl))
        error = self.link.read(init.address("ddrctrl_init_error", ctrl))
        if done & 1 and not error & 1:
            self.say("board: DRAM already initialised")
            return False
        t = time.perf_counter()
        run_init(self.link, init)
        self.dram_initialised_now = True
        self.say(f"board: DRAM initialised through the bridge ({time.perf_counter() - t:.1f} s)")
        return True

    def _dram_init(self):
        from firmware.dram_init import init_steps

        try:
            return init_steps(self.board.name, sim=self.sim_core)
        except NotImplementedError as exc:
            raise DriverError(f"{self.board.name}: the host cannot initialise its DRAM yet: "
                              f"{exc}") from None

    def load(self, program: Program) -> bool:
        """Upload ``program``'s constant segments unless the board holds them (the mailbox's
        digest); True if uploaded. Raises :class:`ProgramUploadError` if the upload stops."""
        digest = program_digest(program)
        segments = _constant_segments(program)
        total = sum(len(s.data) for s in segments)
        if not self.dram_initialised_now:
            box = self.link.read_words(self.mailbox, MAILBOX_WORDS)
            if box[0] == PROGRAM_MAGIC and tuple(box[1:5]) == digest and box[5] == total:
                self.say(f"board: program already in DRAM (digest {digest[0]:08x}...), upload "
                         "skipped")
                return False
        self.link.write(self.mailbox, 0)  # from here on the board holds no complete program
        t, done, sent = time.perf_counter(), 0, self.counter.sent
        bar = _bar(total, "program upload", self.progress)
        where = "the first segment"
        try:
            for seg in segments:
                where = f"segment '{seg.name}' (DRAM 0x{DRAM + seg.addr:08x}, {seg.size} bytes)"
                self.link.write_bytes(DRAM + seg.addr, _padded(seg.data),
                                      progress=lambda n: bar.update(4 * n))
                done += len(seg.data)
            where = "the mailbox (every segment was written)"
            self.link.write_words(self.mailbox + 4, [*digest, total])
            self.link.write(self.mailbox, PROGRAM_MAGIC)
        except LinkError as exc:
            raise ProgramUploadError(
                f"program upload stopped in {where} after {done} of {total} bytes: {exc}. The "
                "board is marked as holding no program (its mailbox word was cleared before the "
                "upload), so the next run uploads the program again") from exc
        finally:
            bar.close()
        self.say(f"board: program uploaded: {total} bytes in {len(segments)} segments, "
                 f"{self.counter.sent - sent} bytes on the link ({time.perf_counter() - t:.1f} s)")
        return True

    # -- frames -------------------------------------------------------------------------------
    def run(self, program: Program, x_q: np.ndarray, *, count: int | None = None,
            read_all: bool = False) -> Frame:
        """Run ``program``'s first ``count`` layers (default all) on the int8 input ``x_q``.

        ``read_all``: fill every layer's output region with :data:`STALE` before the run and
        read all of them back (a program compiled without buffer reuse keeps them); else only
        the outputs the host decodes (``program.outputs``).
        """
        count = len(program.layers) if count is None else count
        if RECORD_WORDS * 4 * count > DRIVER_AREA - _RECORDS_OFFSET:
            raise DriverError(f"{count} layers' performance records do not fit in the driver's "
                              f"area ({DRIVER_AREA - _RECORDS_OFFSET} bytes)")
        frame = Frame()
        layers = range(count) if read_all else [i for i in program.outputs if i < count]
        # Layers that write parts of one segment (a channel-split layer, a route's concatenation
        # written in place) share it: fill and read it once, not once per layer (YOLOv3-tiny's
        # read_all would otherwise move 0.9 MB twice more per frame).
        segments = dict.fromkeys(program.layers[i].output_segment for i in layers)
        regions = [program.segments[s] for s in segments]

        with self._phase(frame, "upload"):
            seg = program.segments[program.layers[0].input_segment]
            image = bytearray(seg.end)
            program.write_input(image, x_q)
            self.link.write_bytes(DRAM + seg.addr, _padded(image[seg.addr:]))
            self.link.write_words(self.records_addr, [_NO_RECORD] * (RECORD_WORDS * count))
            self._set_csr("PROG_ADDR", program.descriptor_addr)
            self._set_csr("COUNT", count)
            self._set_csr("PERF_ADDR", self.records_addr - DRAM)
            self._set_csr("WATCHDOG", self.watchdog_cycles)
        if read_all:
            with self._phase(frame, "fill"):
                for seg in regions:
                    self.link.write_bytes(DRAM + seg.addr, bytes([STALE]) * 4 * _words(seg.size))

        with self._phase(frame, "compute"):
            self._start(count)
            self._wait_done(f"this run of {count} layers", program)
        frame.csrs = {name.lower(): self._csr(name)
                      for name in ("STATUS", "ERROR", "LAYER", "CYCLES")}
        if frame.csrs["error"] & SEQ_ERR.WATCHDOG:
            raise self._watchdog(f"this run of {count} layers", program, frame.csrs["status"])
        if frame.csrs["status"] & _ERROR:
            raise DriverError(self._error_message(program, frame.csrs))

        with self._phase(frame, "download"):
            words = self.link.read_words(self.records_addr, RECORD_WORDS * count)
            frame.records = np.array(words, np.uint32).reshape(count, RECORD_WORDS)
            self._check_records(program, frame.records)
            frame.mem = bytearray([STALE]) * program.footprint
            for seg in regions:
                data = self.link.read_bytes(DRAM + seg.addr, 4 * _words(seg.size))
                frame.mem[seg.addr:seg.end] = data[:seg.size]
        return frame

    def _phase(self, frame, name):
        return _Phase(self, frame, name)

    def _start(self, count):
        """CTRL.start; after a lost answer, STATUS and record 0 tell whether it ran."""
        ctrl = SEQ + 4 * SEQ_CSR.CTRL
        try:
            self.link.write(ctrl, 1, idempotent=False)
            return
        except NackError:
            raise
        except LinkError as exc:
            lost = exc
        status = self._csr("STATUS")
        # Busy, or done with record 0 written: it ran (the host checked it idle before, and the
        # records were invalidated). Neither busy nor done, or done with no record: it did not.
        started = bool(status & _BUSY) or (
            bool(status & _DONE) and count > 0 and
            self.link.read(self.records_addr + 4 * RECORD.LAYER) != _NO_RECORD)
        self.say(f"board: the answer to the sequencer start was lost ({lost}); STATUS "
                 f"0x{status:x} says it {'started' if started else 'did not start'}"
                 f"{'' if started else ': starting it again'}")
        if not started:
            self.link.write(ctrl, 1, idempotent=False)

    def _wait_done(self, what, program=None):
        """Poll STATUS until not busy; :class:`SequencerTimeout` after ``timeout_s``."""
        t0 = time.monotonic()
        interval = 1e-3
        while (status := self._csr("STATUS")) & _BUSY:
            waited = time.monotonic() - t0
            if status & _ERROR and program is not None and self._csr("ERROR") & SEQ_ERR.WATCHDOG:
                # Stopped while running: give the engine's outstanding transfers a moment.
                grace = time.monotonic() + min(1.0, self.timeout_s)
                while (status := self._csr("STATUS")) & _BUSY and time.monotonic() < grace:
                    time.sleep(0.01)
                raise self._watchdog(what, program, status)
            if waited > self.timeout_s:
                layer, cycles = self._csr("LAYER"), self._csr("CYCLES")
                name = ""
                if program is not None and layer < len(program.layers):
                    name = f" (darknet {program.layers[layer].covers})"
                raise SequencerTimeout(
                    f"board: {what}: layer {layer}{name} did not finish within {waited:.1f} s "
                    f"(STATUS 0x{status:x}: busy, CYCLES {cycles}); the sequencer is still "
                    "running it: the next run waits for it, reload the bitstream if it never "
                    "ends", layer)
            time.sleep(interval)
            interval = min(2 * interval, 0.05)
        if not status & _DONE:
            raise DriverError(f"board: {what}: the sequencer is neither busy nor done "
                              f"(STATUS 0x{status:x}): the start did not reach it")

    def _watchdog(self, what, program, status):
        """The :class:`SequencerWatchdog` of a run whose ERROR has ``SEQ_ERR.WATCHDOG``."""
        layer, cycles = self._csr("LAYER"), self._csr("WATCHDOG")
        name = f" (darknet {program.layers[layer].covers})" if layer < len(program.layers) else ""
        ended = not status & _BUSY
        after = (f"STATUS 0x{status:x}: the run ended, the next run starts afresh" if ended else
                 f"STATUS 0x{status:x}: busy, the engine still waits for the memory to complete"
                 " its outstanding bus transfers; the next run waits for it, reload the "
                 "bitstream if it never ends")
        return SequencerWatchdog(
            f"board: {what}: watchdog stopped layer {layer}{name} after {cycles} cycles without "
            f"progress ({cycles / (1e3 * self.engine_mhz):.3g} ms at {self.engine_mhz} MHz; "
            f"{after})", layer, cycles, ended)

    def _error_message(self, program, csrs):
        layer, error = csrs["layer"], csrs["error"]
        flags = [name for name, bit in vars(SEQ_ERR).items()
                 if name.isupper() and name != "ENGINE" and error & bit]
        if error & SEQ_ERR.ENGINE:
            flags.append(f"engine ERR 0x{error & SEQ_ERR.ENGINE:x}")
        name = f" (darknet {program.layers[layer].covers})" if layer < len(program.layers) else ""
        return (f"board: the sequencer stopped on an error at layer {layer}{name}: ERROR "
                f"0x{error:x} ({', '.join(flags)})")

    @staticmethod
    def _check_records(program, records):
        for i, rec in enumerate(records):
            what = f"board: performance record of layer {i} (darknet {program.layers[i].covers})"
            if rec[RECORD.LAYER] != i:
                raise DriverError(f"{what}: layer word {int(rec[RECORD.LAYER]):#x}, expected {i}"
                                  " (the sequencer did not write it)")
            if rec[RECORD.STATUS] >> 8 & 0xF:
                raise DriverError(f"{what}: engine ERROR 0x{int(rec[RECORD.STATUS]) >> 8:x}")
            if rec[COUNTERS.index("bytes_written")] == 0:
                raise DriverError(f"{what}: the engine wrote no bytes")


class _Phase:
    """Context manager adding wall seconds and link bytes to ``frame`` under ``name``."""

    def __init__(self, driver, frame, name):
        self.counter, self.frame, self.name = driver.counter, frame, name

    def __enter__(self):
        self.t, self.sent, self.received = (time.perf_counter(), self.counter.sent,
                                            self.counter.received)

    def __exit__(self, *exc):
        f = self.frame
        f.seconds[self.name] = f.seconds.get(self.name, 0.0) + time.perf_counter() - self.t
        f.sent[self.name] = f.sent.get(self.name, 0) + self.counter.sent - self.sent
        f.received[self.name] = (f.received.get(self.name, 0) + self.counter.received
                                 - self.received)


def _bar(total, desc, enabled):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=not enabled,
                leave=False)


# ---- checking against the golden model --------------------------------------------------------

def expected_outputs(qnet, program: Program, x_q: np.ndarray) -> list[np.ndarray]:
    """The golden model's output for each program layer (:func:`model.golden.forward_int`,
    the channels the layer writes)."""
    from model.golden import forward_int

    golden = forward_int(qnet, x_q)
    return [golden[layer.output_index][program.output_channels(i)]
            for i, layer in enumerate(program.layers)]


def _address(program, index, c, y, x):
    """DRAM offset of value (c, y, x) of layer ``index``'s output ([C/p_ic][H][W][p_ic])."""
    layer, p = program.layers[index], program.config.p_ic
    seg = program.segments[layer.output_segment]
    _, h, w = layer.out_shape
    size = np.dtype(layer.out_dtype).itemsize
    base = map_addr(seg, layer.output_group, layer.out_shape, p, layer.out_dtype)
    return base + ((c // p) * h * w * p + (y * w + x) * p + c % p) * size


def check_outputs(program: Program, expected, mem, count: int, *, frame: int = 0,
                  limit: int = 4) -> list[str]:
    """Mismatch messages of the first ``count`` layers' outputs in ``mem`` against ``expected``
    (:func:`expected_outputs`), each naming layer, frame, position, bus address, expected and
    actual; at most ``limit`` per layer, then a count."""
    messages = []
    for i in range(count):
        layer = program.layers[i]
        actual = program.read_output(mem, i)
        bad = np.argwhere(expected[i] != actual)
        for c, y, x in bad[:limit]:
            messages.append(
                f"layer {i} (darknet {layer.covers}) frame {frame}: channel {c}, row {y}, "
                f"column {x} at DRAM 0x{DRAM + _address(program, i, c, y, x):08x}: expected "
                f"{int(expected[i][c, y, x])}, actual {int(actual[c, y, x])}")
        if len(bad) > limit:
            messages.append(f"layer {i} (darknet {layer.covers}) frame {frame}: {len(bad)} of "
                            f"{actual.size} values differ")
    return messages
