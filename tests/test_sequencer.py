"""The sequencer's control and error paths on the RTL (cocotb + Verilator, one instance).

The reference network's program runs repeatedly on one sequencer: with bus errors injected into
the engine's reads and writes, a descriptor fetch and a performance-record write, with a
misaligned program address and with a shorter layer count. Each run must stop cleanly at the
right layer with the right flags, every layer completed before it must be bit-exact, and a
full run under random DDR latency and backpressure must be bit-exact again (recovery). The
last runs check the two memory paths of ``hdl.top.SimTop`` against each other: the burst bridge
(the default) and the cocotb DDR model give the same cycle counts, and the DDR model's own random
backpressure gives a bit-exact run too.
"""

import numpy as np
import pytest

from firmware.compiler import compile_network
from firmware.perf import PerfConfig, predict_program
from hdl.descriptor import DESCRIPTOR_WORDS, EngineConfig
from hdl.engine import COUNTERS, ERR
from hdl.sequencer import RECORD, RECORD_WORDS, SEQ_ERR
from model.golden import forward_int, quantize_input
from model.zoo import DOG_IMAGE, REFERENCE_CFG, REFERENCE_WEIGHTS
from sim.cosim import CosimOptions, load_model, perf_address, simulate_program
from sim.ddr import DECERR, SLVERR, DdrTiming

DONE, DONE_ERROR = 0b010, 0b110


@pytest.fixture(scope="module")
def program_runs():
    qnet, x, _, _ = load_model(CosimOptions(cfg=REFERENCE_CFG, weights=REFERENCE_WEIGHTS,
                                            image=DOG_IMAGE))
    x_q = quantize_input(x)
    # Without buffer reuse, so that an error range names one layer's output (the cosimulation
    # test covers reuse).
    program = compile_network(qnet, EngineConfig(), x_q=x_q, reuse=False)
    golden = forward_int(qnet, x_q)
    expected = [golden[layer.output_index] for layer in program.layers]
    timeout = 4 * sum(p.cycles for p in predict_program(program, PerfConfig())) + 100_000
    perf_addr = perf_address(program)

    def segment(layer, kind):
        seg = program.segments[getattr(program.layers[layer], f"{kind}_segment")]
        return seg.addr, seg.end

    desc5 = program.descriptor_addr + 4 * DESCRIPTOR_WORDS * 5
    wrong = [e.copy() for e in expected]  # one wrong golden value: the check must catch it
    wrong[2][5, 1, 2] += 1
    cases = {
        "engine read": ([(*segment(3, "weight"), SLVERR, "r")], {}),
        "engine write": ([(*segment(7, "output"), DECERR, "w")], {}),
        "descriptor": ([(desc5, desc5 + 8, DECERR, "r")], {}),
        "record": ([(perf_addr + 4 * RECORD_WORDS, perf_addr + 4 * RECORD_WORDS + 8, SLVERR,
                     "w")], {}),
        "align": ([], {"prog_addr": program.descriptor_addr + 4}),
        "count": ([], {"count": 3}),
        "mismatch": ([], {"count": 3, "expected": wrong}),
        "recovery": ([], {"timing": DdrTiming(latency=57, write_latency=9, ready_prob=0.7,
                                              rvalid_prob=0.8, seed=11)}),
        # The same program on both memory paths, no backpressure: identical timing.
        "bridge": ([], {}),
        "ddr model": ([], {"bridge": False}),
        "ddr model backpressure": ([], {"bridge": False, "timing": DdrTiming(
            latency=23, write_latency=3, ready_prob=0.6, rvalid_prob=0.7, seed=5)}),
    }
    runs = [{"timing": DdrTiming(), "timeout": timeout, "errors": errors, **extra}
            for errors, extra in cases.values()]
    results, ok = simulate_program(program, expected, runs, "test-sequencer")
    assert len(results) == len(runs), "the simulation stopped early (see the cocotb log)"
    return program, dict(zip(cases, results, strict=True)), ok


def _exact_upto(result, n):
    assert result["checked"] == list(range(n)), result["checked"]
    problems = [m for msgs in result["mismatches"].values() for m in msgs]
    assert not problems, "\n".join(problems)


def _record_ok(record, layer):
    assert record[RECORD.LAYER] == layer
    assert record[RECORD.STATUS] == DONE
    cycles = record[RECORD.COUNTERS + COUNTERS.index("cycles")]
    assert 0 < cycles < record[RECORD.SEQ_CYCLES]


def test_engine_read_error_stops_at_that_layer(program_runs):
    _, results, _ = program_runs
    r = results["engine read"]
    assert (r["status"], r["error"], r["layer"]) == (DONE_ERROR, ERR.READ_SLVERR, 3)
    _exact_upto(r, 3)
    for i in range(3):
        _record_ok(r["records"][i], i)
    # The failing layer's record is written too, with the engine's status and flags.
    assert r["records"][3][RECORD.LAYER] == 3
    assert r["records"][3][RECORD.STATUS] == DONE_ERROR | ERR.READ_SLVERR << 8


def test_engine_write_error_in_last_layer(program_runs):
    _, results, _ = program_runs
    r = results["engine write"]
    assert (r["status"], r["error"], r["layer"]) == (DONE_ERROR, ERR.WRITE_DECERR, 7)
    _exact_upto(r, 7)
    assert r["records"][7][RECORD.STATUS] == DONE_ERROR | ERR.WRITE_DECERR << 8


def test_descriptor_fetch_error(program_runs):
    _, results, _ = program_runs
    r = results["descriptor"]
    assert (r["status"], r["error"], r["layer"]) == (DONE_ERROR, SEQ_ERR.DESC_DECERR, 5)
    _exact_upto(r, 5)


def test_record_write_error(program_runs):
    _, results, _ = program_runs
    r = results["record"]
    assert (r["status"], r["error"], r["layer"]) == (DONE_ERROR, SEQ_ERR.RECORD_SLVERR, 1)
    _exact_upto(r, 1)


def test_misaligned_program_address_runs_nothing(program_runs):
    _, results, _ = program_runs
    r = results["align"]
    assert (r["status"], r["error"], r["layer"]) == (DONE_ERROR, SEQ_ERR.ALIGN, 0)
    assert r["checked"] == []
    assert r["cycles"] < 10


def test_layer_count_and_recovery(program_runs):
    program, results, ok = program_runs
    r = results["count"]
    assert (r["status"], r["error"], r["layer"]) == (DONE, 0, 3)
    _exact_upto(r, 3)
    r = results["recovery"]
    n = len(program.layers)
    assert (r["status"], r["error"], r["layer"]) == (DONE, 0, n)
    _exact_upto(r, n)
    records = np.array(r["records"])
    for i in range(n):
        _record_ok(records[i], i)
    # The run's cycles are the layers' engine cycles plus the sequencer's own.
    engine = records[:, RECORD.COUNTERS + COUNTERS.index("cycles")].sum()
    assert engine < r["cycles"] < engine + 200 * n
    assert ok


def test_bridge_and_ddr_model_agree(program_runs):
    program, results, _ = program_runs
    n = len(program.layers)
    bridge, model = results["bridge"], results["ddr model"]
    for r in (bridge, model, results["ddr model backpressure"]):
        assert (r["status"], r["error"], r["layer"]) == (DONE, 0, n)
        _exact_upto(r, n)
    assert bridge["cycles"] == model["cycles"]
    assert bridge["records"] == model["records"]


def test_a_wrong_value_is_reported_with_its_position(program_runs):
    _, results, _ = program_runs
    r = results["mismatch"]
    assert r["checked"] == [0, 1, 2]
    assert not r["mismatches"]["0"] and not r["mismatches"]["1"]
    msgs = r["mismatches"]["2"]
    assert len(msgs) == 1 and "channel 5, row 1, column 2: expected " in msgs[0], msgs
    expected, actual = (int(v) for v in msgs[0].rsplit("expected ", 1)[1].split(", actual "))
    assert expected == (actual + 1 + 128) % 256 - 128  # the int8 golden value, plus one
