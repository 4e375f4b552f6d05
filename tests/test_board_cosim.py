"""The ULX3S board cosimulation (sim/board_cosim.py): LiteDRAM's generated SDR core with its
simulation PHY model, the bridge driven a byte per cycle from a TCP socket, the host on
``firmware.link.Link``: DRAM initialised, the program uploaded, the sequencer started and
polled, the outputs read back, all through the bridge, bit-exact against the golden model.

Default suite: the first layer of the small default model (about 20 s once the Verilator model
is built; the build takes about 2 minutes once per RTL change). ``slow``: the whole model, every
layer's output compared (about a minute)."""

import re

import pytest

from firmware.driver import STALE, check_outputs
from sim.board_cosim import run_board_cosim


def _check(result, count):
    run = result.frame
    assert run.csrs["status"] & 0b110 == 0b010, f"sequencer STATUS {run.csrs['status']:#x}"
    assert run.csrs["error"] == 0 and run.csrs["layer"] == count, run.csrs
    assert not result.messages, "\n".join(result.messages)
    for i in range(count):  # the engine really wrote each output (not the stale fill)
        c = run.counters(i)
        assert c["bytes_written"] >= result.expected[i].size, (i, c)
        seg = result.program.segments[result.program.layers[i].output_segment]
        assert set(run.mem[seg.addr:seg.end]) != {STALE}, f"layer {i}: output never written"


def test_board_cosim_first_layer_through_the_bridge():
    result = run_board_cosim(count=1, run_name="board-l0", timeout_s=600)
    _check(result, 1)
    # A wrong byte in DRAM is reported with its layer, frame, position and DRAM address.
    mem = bytearray(result.frame.mem)
    seg = result.program.segments[result.program.layers[0].output_segment]
    mem[seg.addr + 8] ^= 0x40  # channel 0 of pixel (0, 1): [C/p_ic][H][W][p_ic], p_ic = 8
    messages = check_outputs(result.program, result.expected, mem, 1, frame=3)
    assert len(messages) == 1
    assert re.fullmatch(r"layer 0 \(darknet 0\+1\) frame 3: channel 0, row 0, column 1 at DRAM "
                        rf"0x{0x8000_0000 + seg.addr + 8:08x}: expected -?\d+, actual -?\d+",
                        messages[0]), messages[0]


@pytest.mark.slow
def test_board_cosim_whole_small_model():
    result = run_board_cosim(run_name="board-all", timeout_s=1800)
    _check(result, len(result.program.layers))
    for i, (moved, cycles, mbps) in enumerate(result.bandwidth()):
        print(f"layer {i}: {moved} bytes in {cycles} engine cycles: {mbps:.1f} MB/s at 100 MHz")
        assert 0 < mbps <= 100.0  # the SDR peak: 16 bit x 50 MHz
