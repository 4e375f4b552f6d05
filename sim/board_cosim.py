"""The ULX3S board cosimulation, host side: the simulated board behind a TCP socket, driven by
:class:`firmware.link.Link` exactly as a real board is driven over USB-serial.

:class:`BoardSim` builds :class:`sim.board_top.BoardSimTop` (LiteDRAM's ``--sim`` core, the
bridge, the glue, the sequencer; Verilator, cached) and runs :mod:`sim.board_cocotb` in a
background thread; that cocotb test listens on 127.0.0.1 and pumps the socket's bytes into the
bridge's byte stream, a byte per cycle. The host then does what ``owlet run`` does on a board
(:func:`run_on_board`):

1. ``identify`` (the board word: ULX3S, the engine clock, P_ic, P_oc);
2. DRAM initialisation through the bridge (:mod:`firmware.dram_init`, from the generated core's
   YAML and ``csr.csv``), with its memory test;
3. the program image uploaded through the bridge (descriptors, weights, requantization tables,
   the input); every output region overwritten with a stale pattern (so an output the engine
   never wrote cannot match);
4. the sequencer's CSRs written and started; STATUS polled until done, with a timeout;
5. the performance records and every layer's output read back through the bridge and compared
   bit for bit with the golden model (messages name layer, frame, channel/row/column, DRAM
   address, expected and actual).

``docs/board.md`` ("Board cosimulation") has the measured numbers.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from firmware.dram_init import init_steps, run_init
from firmware.link import Link, LinkTimeout, TcpTransport
from hdl.board.boards import ULX3S
from hdl.board.top import ADDRESS_MAP, board_word
from hdl.descriptor import EngineConfig
from hdl.engine import COUNTERS
from hdl.sequencer import RECORD_WORDS, SEQ_CSR
from sim.board_top import TOPLEVEL, build_board
from sim.runner import run_payload

__all__ = ["BoardCosim", "BoardRun", "BoardSim", "check_outputs", "run_board_cosim",
           "run_on_board"]

DRAM = ADDRESS_MAP["dram"]
SEQ = ADDRESS_MAP["seq"]
#: Byte written over every output region before a run.
STALE = 0xA5
_STATUS_DONE, _STATUS_ERROR = 1 << 1, 1 << 2


class BoardSim:
    """The simulated ULX3S board behind a socket (context manager; see the module docstring).

    Parameters
    ----------
    cfg : EngineConfig, optional
    engine_mhz : float
        The engine clock of the simulation (the LiteDRAM and bridge clock is 50 MHz, as on the
        board).
    run_name : str
    accept_timeout_s : float
        How long the simulation waits for a host to connect.

    Attributes
    ----------
    port : int
        The TCP port on 127.0.0.1 (after ``__enter__``).
    results : list
        What the cocotb side reported (simulated time, byte counts), after ``__exit__``.
    """

    def __init__(self, cfg=None, engine_mhz=100.0, *, run_name="board",
                 accept_timeout_s=300.0, start_timeout_s=600.0):
        self.cfg, self.engine_mhz, self.run_name = cfg or EngineConfig(), engine_mhz, run_name
        self.accept_timeout_s, self.start_timeout_s = accept_timeout_s, start_timeout_s
        self.port, self.results, self.ok = None, [], None
        self.board_word = board_word(ULX3S.board_id, engine_mhz, self.cfg)

    def __enter__(self):
        self.build_dir, self.generated = build_board(self.cfg, self.engine_mhz)
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        port_file = Path(self.build_dir) / "runs" / f"{self.run_name}-{worker}.port"
        port_file.parent.mkdir(parents=True, exist_ok=True)
        port_file.unlink(missing_ok=True)
        payload = {"port_file": str(port_file), "sys_period_ns": 20,
                   "eng_period_ns": round(1000 / self.engine_mhz, 3),
                   "accept_timeout_s": self.accept_timeout_s}

        def simulate():
            try:
                self.results, self.ok = run_payload(self.build_dir, TOPLEVEL, "sim.board_cocotb",
                                                    self.run_name, payload)
            except Exception as exc:  # reported by __exit__
                self.error = exc

        self.error = None
        self.thread = threading.Thread(target=simulate, name="board-cosim", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not (port_file.exists() and port_file.read_text().strip()):
            if not self.thread.is_alive():
                why = self.error or f"see the cocotb log in {port_file.parent}"
                raise RuntimeError(f"board cosim: the simulator ended before listening ({why})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"board cosim: the simulator did not listen within "
                                   f"{self.start_timeout_s:.0f} s (port file {port_file})")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        return self

    def link(self, timeout=60.0):
        """A :class:`firmware.link.Link` to the simulated board (simulation is slower than the
        wire: ``timeout`` is seconds of wall time per frame)."""
        return Link(TcpTransport(self.port), timeout=timeout)

    def __exit__(self, *exc):
        self.thread.join(timeout=120.0)
        if self.thread.is_alive():
            raise TimeoutError("board cosim: the simulator did not end within 120 s after the "
                               "host closed its connection")
        if self.error is not None and exc[0] is None:
            raise self.error


@dataclass
class BoardRun:
    """What :func:`run_on_board` measured: seconds per phase (``seconds``), bytes uploaded,
    the sequencer's CSRs after the run (``status``, ``error``, ``layer``, ``cycles``), the
    performance ``records`` (layers x :data:`hdl.sequencer.RECORD_WORDS`), the outputs read
    back (``mem``: a sparse image of DRAM) and mismatch ``messages``."""

    seconds: dict = field(default_factory=dict)
    uploaded: int = 0
    csrs: dict = field(default_factory=dict)
    records: np.ndarray | None = None
    mem: bytearray | None = None
    messages: list = field(default_factory=list)

    def counters(self, layer):
        """Layer ``layer``'s engine counters as a dict (:data:`hdl.engine.COUNTERS`)."""
        return dict(zip(COUNTERS, (int(v) for v in self.records[layer][:len(COUNTERS)]),
                        strict=True))


def _upload_segments(program, count):
    """The segments with data a run of the first ``count`` layers reads."""
    layers = program.layers[:count]
    needed = {program.segments.index(program.segment("descriptors")),
              *(i for layer in layers for i in (layer.weight_segment, layer.param_segment,
                                                layer.input_segment))}
    return [program.segments[i] for i in sorted(needed) if program.segments[i].data is not None]


def _perf_address(program):
    """The first 4 KB page after the program (as :func:`sim.cosim.perf_address`)."""
    return -(-program.footprint // 4096) * 4096


def _padded(data):
    data = bytes(data)
    return data + bytes(-len(data) % 4)


def run_on_board(link, program, *, count=None, expected_board=None, timeout_s=600.0,
                 poll_s=0.2, sim_core=True, log=print):
    """Initialise DRAM, upload ``program``, run its first ``count`` layers, read back.

    Parameters
    ----------
    link : firmware.link.Link
    program : firmware.program.Program
        Compiled with its input (``x_q``), so the input segment holds the image.
    count : int, optional
        Layers to run (default: all).
    expected_board : int, optional
        The board word ``identify`` must return.
    timeout_s : float
        Wall seconds the sequencer may take before :class:`TimeoutError` (naming the layer in
        progress and the cycles so far).
    sim_core : bool
        The init sequence of LiteDRAM's simulation core (True) or of the board's.

    Returns
    -------
    BoardRun
    """
    count = len(program.layers) if count is None else count
    run = BoardRun()
    t = time.perf_counter()
    info = link.identify(board=expected_board)
    run_init(link, init_steps(ULX3S.name, sim=sim_core))
    run.seconds["identify+init"] = time.perf_counter() - t
    log(f"board: bridge v{info.version}, board word {info.board:#010x}, DRAM initialised "
        f"({run.seconds['identify+init']:.1f} s)")

    t = time.perf_counter()
    for seg in _upload_segments(program, count):
        link.write_bytes(DRAM + seg.addr, _padded(seg.data))
        run.uploaded += len(seg.data)
    for layer in program.layers[:count]:  # stale outputs: every byte must be the engine's
        seg = program.segments[layer.output_segment]
        link.write_bytes(DRAM + seg.addr, bytes([STALE]) * (-(-seg.size // 4) * 4))
    run.seconds["upload"] = time.perf_counter() - t
    log(f"board: uploaded {run.uploaded} bytes through the bridge "
        f"({run.seconds['upload']:.1f} s)")

    t = time.perf_counter()
    perf_addr = _perf_address(program)
    link.write(SEQ + 4 * SEQ_CSR.PROG_ADDR, program.descriptor_addr)
    link.write(SEQ + 4 * SEQ_CSR.COUNT, count)
    link.write(SEQ + 4 * SEQ_CSR.PERF_ADDR, perf_addr)
    link.write(SEQ + 4 * SEQ_CSR.CTRL, 1, idempotent=False)
    deadline = time.monotonic() + timeout_s
    while not (status := link.read(SEQ + 4 * SEQ_CSR.STATUS)) & _STATUS_DONE:
        if time.monotonic() > deadline:
            layer = link.read(SEQ + 4 * SEQ_CSR.LAYER)
            raise TimeoutError(f"board: the sequencer did not finish {count} layers within "
                               f"{timeout_s:.0f} s: STATUS {status:#x}, layer {layer} in progress")
        time.sleep(poll_s)
    run.csrs = {name.lower(): link.read(SEQ + 4 * getattr(SEQ_CSR, name))
                for name in ("STATUS", "ERROR", "LAYER", "CYCLES")}
    run.seconds["run"] = time.perf_counter() - t
    log(f"board: sequencer done: {run.csrs['cycles']} engine cycles, error "
        f"{run.csrs['error']:#x} ({run.seconds['run']:.1f} s)")

    t = time.perf_counter()
    words = link.read_words(DRAM + perf_addr, RECORD_WORDS * count)
    run.records = np.array(words, dtype=np.uint32).reshape(count, RECORD_WORDS)
    run.mem = bytearray([STALE]) * program.footprint
    for layer in program.layers[:count]:
        seg = program.segments[layer.output_segment]
        data = link.read_bytes(DRAM + seg.addr, -(-seg.size // 4) * 4)
        run.mem[seg.addr:seg.end] = data[:seg.size]
    run.seconds["download"] = time.perf_counter() - t
    return run


def _address(program, index, c, y, x):
    """DRAM byte address of value (c, y, x) of layer ``index``'s output ([C/p_ic][H][W][p_ic])."""
    from firmware.program import map_addr

    layer, p = program.layers[index], program.config.p_ic
    seg = program.segments[layer.output_segment]
    _, h, w = layer.out_shape
    size = np.dtype(layer.out_dtype).itemsize
    base = map_addr(seg, layer.output_group, layer.out_shape, p, layer.out_dtype)
    return base + ((c // p) * h * w * p + (y * w + x) * p + c % p) * size


def check_outputs(program, expected, mem, count, *, frame=0, limit=4):
    """Mismatch messages of the first ``count`` layers' outputs in ``mem`` against ``expected``
    (the golden outputs per program layer), each naming layer, frame, position, DRAM address,
    expected and actual."""
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


def run_board_cosim(count=None, *, cfg=None, engine_mhz=100.0, run_name="board", log=print,
                    timeout_s=1800.0):
    """The whole flow on the small default model (``model/zoo/owlet-tiny``, ``shapes.png``):
    compile (no buffer reuse, so every layer's output stays in DRAM to be read back), simulate,
    run through the bridge, compare with :func:`model.golden.forward_int`.

    Returns
    -------
    BoardCosim
    """
    from firmware.compiler import compile_network
    from model.golden import forward_int, quantize_input
    from sim.cosim import CosimOptions, load_model

    cfg = cfg or EngineConfig()
    qnet, x, _, _ = load_model(CosimOptions())
    x_q = quantize_input(x)
    program = compile_network(qnet, cfg, reuse=False, x_q=x_q)
    count = len(program.layers) if count is None else count
    golden = forward_int(qnet, x_q)
    expected = [golden[layer.output_index][program.output_channels(i)]
                for i, layer in enumerate(program.layers)]
    with BoardSim(cfg, engine_mhz, run_name=run_name) as board:
        log(f"board: simulated ULX3S on 127.0.0.1:{board.port}")
        with board.link() as link:
            try:
                run = run_on_board(link, program, count=count, log=log,
                                   expected_board=board.board_word, timeout_s=timeout_s)
            except LinkTimeout as exc:
                raise LinkTimeout(f"board cosim: {exc}") from exc
    return BoardCosim(run, check_outputs(program, expected, run.mem, count),
                      board.results[0] if board.results else {}, program, expected, count)


@dataclass
class BoardCosim:
    """:func:`run_board_cosim`'s result: the :class:`BoardRun`, the mismatch ``messages``
    (empty: bit-exact), the simulation's own report ``sim`` (``sim_ns``, ``sys_cycles``, byte
    counts, ``wall_s``), the ``program``, the golden outputs per layer (``expected``) and the
    number of layers run (``count``)."""

    run: BoardRun
    messages: list
    sim: dict
    program: object
    expected: list
    count: int

    def bandwidth(self, engine_mhz=100.0):
        """Per layer run: (bytes read + written, engine cycles, MB/s at ``engine_mhz``), from
        the engine's own counters."""
        rows = []
        for i in range(self.count):
            c = self.run.counters(i)
            moved = c["bytes_read"] + c["bytes_written"]
            rows.append((moved, c["cycles"], moved / c["cycles"] * engine_mhz))
        return rows
