"""The host driver (firmware/driver.py) on the ULX3S board cosimulation (sim/board_cosim.py):
LiteDRAM's generated SDR core with its simulation PHY model, the bridge driven a byte per cycle
from a TCP socket, faults injected on the board's side of that socket.

Default suite: one simulator serves five host connections in turn, as a board serves one
``owlet run`` after another: an upload interrupted by lost answers (the driver says the board
holds no program), the recovery with a corrupted request, a corrupted answer and a lost answer
to the sequencer's start (every layer bit-exact against the golden model), the upload-once skip
(bytes counted) with a layer whose reads are held (the sequencer's watchdog stops it and the
driver names it), and the run after it (about a minute, plus the Verilator build once per RTL
change). ``slow``: the whole model through :func:`sim.board_cosim.run_board_cosim`, the
bandwidth table printed.
"""

import logging
import re

import numpy as np
import pytest

from firmware.compiler import compile_network
from firmware.driver import (
    DRIVER_AREA,
    STALE,
    WATCHDOG_MS,
    BoardDriver,
    ProgramUploadError,
    SequencerWatchdog,
    check_outputs,
    expected_outputs,
)
from firmware.program import SegmentKind
from hdl.board.boards import ULX3S
from hdl.descriptor import EngineConfig
from model.golden import quantize_input
from model.pipeline import prepare_input
from model.quant import QuantizedNetwork
from model.zoo import DEFAULT_IMAGE, DEFAULT_QMODEL
from sim.board_cosim import BoardSim, run_board_cosim

#: Wall seconds per bridge frame: every legitimate answer comes in well under a second; a lost
#: one costs this much.
FRAME_TIMEOUT = 4.0
DRAM = 0x8000_0000
STATUS, CTRL = 0x4, 0x0  # sequencer CSR byte addresses (docs/board.md, SEQ_CSR x 4)


class Session:
    """One host connection: a :class:`BoardDriver` whose messages are kept in ``said``."""

    def __init__(self, board, *, retries=3, run_timeout=600.0, watchdog_ms=WATCHDOG_MS):
        self.link = board.link(timeout=FRAME_TIMEOUT, retries=retries)
        self.said = []
        self.driver = BoardDriver(self.link, "ulx3s", sim_core=True, timeout_s=run_timeout,
                                  watchdog_ms=watchdog_ms, say=self.said.append)

    def __enter__(self):
        self.driver.connect()
        self.driver.init_dram()
        return self

    def __exit__(self, *exc):
        self.link.close()

    def load(self, program):
        """``driver.load``: (uploaded, bytes sent meanwhile)."""
        sent = self.driver.counter.sent
        return self.driver.load(program), self.driver.counter.sent - sent


def _constant_segments(program):
    return [s for s in program.segments if s.data is not None and s.kind != SegmentKind.INPUT]


def _bit_exact(program, expected, frame, count=None):
    count = len(program.layers) if count is None else count
    messages = check_outputs(program, expected, frame.mem, count)
    assert not messages, "\n".join(messages)
    assert frame.csrs["status"] & 0b110 == 0b010, f"sequencer STATUS {frame.csrs['status']:#x}"
    assert frame.csrs["error"] == 0 and frame.csrs["layer"] == len(program.layers), frame.csrs


def test_faults_and_recovery_through_the_socket(caplog):
    qnet = QuantizedNetwork.load(DEFAULT_QMODEL)
    x_q = quantize_input(prepare_input(DEFAULT_IMAGE, qnet.input_shape)[0])
    program = compile_network(qnet, EngineConfig(), reuse=False,
                              memory_size=ULX3S.dram_size - DRIVER_AREA)
    expected = expected_outputs(qnet, program, x_q)
    segments = _constant_segments(program)
    image_bytes = sum(len(s.data) for s in segments)
    caplog.set_level(logging.WARNING, logger="firmware.link")

    with BoardSim(run_name="board-faults") as board:
        # 1. Both attempts at one burst of a weight segment lose their answer: the upload stops,
        #    the driver says where and that the board holds no program.
        victim = segments[3]
        board.arm("drop_answer", cmd="WRITE_BURST", addr=DRAM + victim.addr, times=2)
        with Session(board, retries=1) as s, pytest.raises(ProgramUploadError) as info:
            s.load(program)
        message = str(info.value)
        assert re.search(rf"stopped in segment '{re.escape(victim.name)}' \(DRAM "
                         rf"0x{DRAM + victim.addr:08x}, {victim.size} bytes\) after \d+ of "
                         rf"{image_bytes} bytes: WRITE_BURST of \d+ words at "
                         rf"0x{DRAM + victim.addr:08x}: gave up after 2 attempts", message), message
        assert "marked as holding no program" in message and "uploads the program again" in message
        with board.link(timeout=FRAME_TIMEOUT) as link:
            mailbox = DRAM + ULX3S.dram_size - DRIVER_AREA
            assert link.read(mailbox) == 0, "the mailbox still claims a program"

        # 2. The next run uploads it again, through a corrupted request (NACK BAD_CRC, resent),
        #    a corrupted answer to an idempotent read (read again) and a lost answer to the
        #    start (not repeated blindly: STATUS and the records say it ran); bit-exact.
        board.arm("corrupt_request", cmd="WRITE_BURST", addr=DRAM + segments[1].addr)
        board.arm("corrupt_answer", cmd="READ", addr=STATUS)
        board.arm("drop_answer", cmd="WRITE", addr=CTRL)
        caplog.clear()
        with Session(board) as s:
            uploaded, upload_sent = s.load(program)
            frame = s.driver.run(program, x_q, read_all=True)
        assert uploaded and upload_sent >= image_bytes
        _bit_exact(program, expected, frame)
        warnings = caplog.text
        assert re.search(rf"retrying WRITE_BURST of \d+ words at 0x{DRAM + segments[1].addr:08x}: "
                         r"NACK BAD_CRC \(not executed\)", warnings), warnings
        assert "retrying READ at 0x00000004: answer failed its CRC check" in warnings, warnings
        lost = [m for m in s.said if "answer to the sequencer start was lost" in m]
        assert lost and "WRITE at 0x00000000" in lost[0] and "says it started" in lost[0], s.said
        kinds = [(f["kind"], f["cmd"]) for f in board.fired()]
        assert kinds == [("drop_answer", "WRITE_BURST")] * 2 + [
            ("corrupt_answer", "READ"), ("corrupt_request", "WRITE_BURST"),
            ("drop_answer", "WRITE")], kinds
        # A wrong byte in DRAM is reported with its layer, frame, position and DRAM address.
        mem = bytearray(frame.mem)
        seg = program.segments[program.layers[0].output_segment]
        mem[seg.addr + 8] ^= 0x40  # channel 0 of pixel (0, 1): [C/p_ic][H][W][p_ic], p_ic = 8
        messages = check_outputs(program, expected, mem, 1, frame=3)
        assert len(messages) == 1 and re.fullmatch(
            r"layer 0 \(darknet 0\+1\) frame 3: channel 0, row 0, column 1 at DRAM "
            rf"0x{DRAM + seg.addr + 8:08x}: expected -?\d+, actual -?\d+", messages[0]), messages
        for i in range(len(program.layers)):  # the engine really wrote each output
            out = program.segments[program.layers[i].output_segment]
            assert set(frame.mem[out.addr:out.end]) != {STALE}, f"layer {i}: never written"

        # 3. A new connection with the same program: no upload (bytes counted). Layer 2's reads
        #    are held: the sequencer's watchdog (0.2 ms: 20000 cycles at 100 MHz), not the
        #    host's timeout, stops it; the message names the layer and the cycles. The engine's
        #    read address stays pending (AXI4 A3.2.1) until the hold ends.
        board.hold(2)
        with Session(board, run_timeout=300.0, watchdog_ms=0.2) as s:
            uploaded, skip_sent = s.load(program)
            with pytest.raises(SequencerWatchdog) as info:
                s.driver.run(program, x_q)
        assert not uploaded and skip_sent < 64, skip_sent
        assert any("upload skipped" in m for m in s.said), s.said
        assert (info.value.layer, info.value.cycles, info.value.ended) == (2, 20000, False)
        assert re.search(r"this run of 6 layers: watchdog stopped layer 2 \(darknet 4\+5\) after "
                         r"20000 cycles without progress \(0\.2 ms at 100 MHz; STATUS 0x5: busy, "
                         r"the engine still waits for the memory", str(info.value)), str(info.value)

        # 4. Released, the stopped run ends; the next host waits for it, then runs bit-exact.
        board.release()
        with Session(board) as s:
            uploaded, _ = s.load(program)
            frame = s.driver.run(program, x_q)
        assert not uploaded
        head = program.outputs
        assert np.array_equal(program.read_output(frame.mem, head[-1]), expected[head[-1]])
        assert frame.csrs["error"] == 0 and frame.csrs["layer"] == len(program.layers)
    assert len(board.results) == 5, board.results


@pytest.mark.slow
def test_board_cosim_whole_small_model():
    result = run_board_cosim(run_name="board-all", timeout_s=1800)
    _bit_exact(result.program, result.expected, result.frame)
    for i, (moved, cycles, mbps) in enumerate(result.bandwidth()):
        print(f"layer {i}: {moved} bytes in {cycles} engine cycles: {mbps:.1f} MB/s at 100 MHz")
        assert 0 < mbps <= 100.0  # the SDR peak: 16 bit x 50 MHz
