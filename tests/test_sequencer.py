"""The sequencer's control and error paths on the RTL (cocotb + Verilator, one instance).

The reference network's program runs repeatedly on one sequencer: with bus errors injected into the
engine's reads and writes, a descriptor fetch and a performance-record write, with a misaligned
program address and with a shorter layer count. Each run must stop cleanly at the right layer with
the right flags, every layer completed before it must be bit-exact, and a full run under random DDR
latency and gaps on all five AXI channels must be bit-exact again (recovery), also after a run that
hung (a cycle budget too small: a failure with a message, then a reset), and after a layer whose
memory stopped answering for longer than the watchdog (the watchdog stops it: SEQ_ERR.WATCHDOG, the
layer named, the bus idle). The same random timing run twice on the burst bridge takes the same
cycles (its gaps restart from the run's seed). The last runs check the two memory paths of
``hdl.top.SimTop`` against each other: the burst bridge (the default) and the cocotb DDR model give
the same cycle counts, and the DDR model's own random gaps give a bit-exact run too. The random
timings come from the session's seed (``fuzz_seed``), named in failure messages as
``OWLET_SEED=<n>``.
"""

import numpy as np
import pytest

from firmware.compiler import compile_network
from firmware.perf import PerfConfig, predict_program, sequencer_overhead
from hdl.descriptor import DESCRIPTOR_WORDS, EngineConfig
from hdl.engine import COUNTERS, ERR
from hdl.sequencer import RECORD, RECORD_WORDS, SEQ_ERR
from model.golden import forward_int, quantize_input
from model.zoo import DOG_IMAGE, REFERENCE_CFG, REFERENCE_WEIGHTS
from sim.cosim import CosimOptions, load_model, perf_address, simulate_program
from sim.ddr import DECERR, SLVERR, DdrTiming

DONE, DONE_ERROR = 0b010, 0b110
WATCHDOG, STALL = 20_000, 50_000  # cycles: the watchdog's limit, the memory's silence


@pytest.fixture(scope="module")
def program_runs(fuzz_seed):
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
    rng = np.random.default_rng([fuzz_seed, 4])
    recovery = DdrTiming.random(rng)
    cases = {
        "engine read": ([(*segment(3, "weight"), SLVERR, "r")], {}),
        "engine write": ([(*segment(7, "output"), DECERR, "w")], {}),
        "descriptor": ([(desc5, desc5 + 8, DECERR, "r")], {}),
        "record": ([(perf_addr + 4 * RECORD_WORDS, perf_addr + 4 * RECORD_WORDS + 8, SLVERR,
                     "w")], {}),
        "align": ([], {"prog_addr": program.descriptor_addr + 4}),
        "count": ([], {"count": 3}),
        "mismatch": ([], {"count": 3, "expected": wrong}),
        "hang": ([], {"timeout": 100}),
        "recovery": ([], {"timing": recovery}),
        "recovery again": ([], {"timing": recovery}),
        # The memory stops answering reads 1000 cycles into layer 1, for longer than the
        # watchdog (layer 0 computes for more than 2000 cycles between two handshakes): the
        # watchdog stops the layer; the run after it ("bridge") is bit-exact.
        "watchdog": ([], {"bridge": False, "watchdog": WATCHDOG,
                          "stall": {"layer": 1, "after": 1000, "cycles": STALL}}),
        # The same program on both memory paths, no backpressure: identical timing.
        "bridge": ([], {}),
        "ddr model": ([], {"bridge": False}),
        "ddr model backpressure": ([], {"bridge": False, "timing": DdrTiming.random(rng)}),
    }
    runs = [{"name": name, "timing": DdrTiming(), "timeout": timeout, "errors": errors, **extra}
            for name, (errors, extra) in cases.items()]
    results, ok = simulate_program(program, expected, runs, "test-sequencer")
    where = f"OWLET_SEED={fuzz_seed}"
    assert len(results) == len(runs), f"{where}: the simulation stopped after {len(results)} " \
        f"of {len(runs)} runs (see the cocotb log)"
    hung = {name: r["failure"] for name, r in zip(cases, results, strict=True) if r["failure"]}
    assert list(hung) == ["hang"], f"{where}: {hung}"
    return program, dict(zip(cases, results, strict=True)), ok, where


def _exact_upto(result, n, where):
    assert result["checked"] == list(range(n)), f"{where}: checked {result['checked']}"
    problems = [m for msgs in result["mismatches"].values() for m in msgs]
    assert not problems, f"{where}\n" + "\n".join(problems)


def _flags(result, expected, where):
    got = (result["status"], result["error"], result["layer"])
    assert got == expected, f"{where}: (status, error, layer) {got}, expected {expected}"


def _record_ok(record, layer, where):
    assert record[RECORD.LAYER] == layer, f"{where}: record {layer}: {record}"
    assert record[RECORD.STATUS] == DONE, f"{where}: record {layer}: {record}"
    cycles = record[RECORD.COUNTERS + COUNTERS.index("cycles")]
    assert 0 < cycles < record[RECORD.SEQ_CYCLES], f"{where}: record {layer}: {record}"


def test_engine_read_error_stops_at_that_layer(program_runs):
    _, results, _, where = program_runs
    r = results["engine read"]
    _flags(r, (DONE_ERROR, ERR.READ_SLVERR, 3), where)
    _exact_upto(r, 3, where)
    for i in range(3):
        _record_ok(r["records"][i], i, where)
    # The failing layer's record is written too, with the engine's status and flags.
    assert r["records"][3][RECORD.LAYER] == 3, where
    assert r["records"][3][RECORD.STATUS] == DONE_ERROR | ERR.READ_SLVERR << 8, where


def test_engine_write_error_in_last_layer(program_runs):
    _, results, _, where = program_runs
    r = results["engine write"]
    _flags(r, (DONE_ERROR, ERR.WRITE_DECERR, 7), where)
    _exact_upto(r, 7, where)
    assert r["records"][7][RECORD.STATUS] == DONE_ERROR | ERR.WRITE_DECERR << 8, where


def test_descriptor_fetch_error(program_runs):
    _, results, _, where = program_runs
    r = results["descriptor"]
    _flags(r, (DONE_ERROR, SEQ_ERR.DESC_DECERR, 5), where)
    _exact_upto(r, 5, where)


def test_record_write_error(program_runs):
    _, results, _, where = program_runs
    r = results["record"]
    _flags(r, (DONE_ERROR, SEQ_ERR.RECORD_SLVERR, 1), where)
    _exact_upto(r, 1, where)


def test_misaligned_program_address_runs_nothing(program_runs):
    _, results, _, where = program_runs
    r = results["align"]
    _flags(r, (DONE_ERROR, SEQ_ERR.ALIGN, 0), where)
    assert r["checked"] == [], where
    assert r["cycles"] < 10, where


def test_layer_count_and_recovery(program_runs):
    program, results, ok, where = program_runs
    r = results["count"]
    _flags(r, (DONE, 0, 3), where)
    _exact_upto(r, 3, where)
    r = results["recovery"]
    n = len(program.layers)
    _flags(r, (DONE, 0, n), where)
    _exact_upto(r, n, where)
    records = np.array(r["records"])
    for i in range(n):
        _record_ok(records[i], i, where)
    # The run's cycles are the layers' engine cycles plus the sequencer's own: at most twice
    # the model's overhead (firmware.perf) at the slowest latencies DdrTiming.random draws
    # (the random gaps on every channel stretch its few beats).
    engine = records[:, RECORD.COUNTERS + COUNTERS.index("cycles")].sum()
    own = sequencer_overhead(program.config, PerfConfig(ddr_latency=79, write_latency=19))
    assert engine < r["cycles"] < engine + 2 * own * n, where
    assert ok, where


def test_a_hang_is_a_failure_and_the_next_run_recovers(program_runs):
    """A run whose cycle budget is too small ends with a message naming the run and what the
    testbench waited for (the sequencer is then reset: "recovery" runs next and is bit-exact)."""
    _, results, _, where = program_runs
    r = results["hang"]
    assert r["failure"] == "run hang: sequencer: no done interrupt within 100 cycles", where
    assert r["status"] & 1, f"{where}: the sequencer was busy when the budget ran out: {r}"


def test_bridge_timing_follows_the_runs_seed(program_runs):
    """The same random timing twice on the burst bridge: the same cycles and records (the
    bridge's gaps restart from the run's seed, whatever ran before)."""
    program, results, _, where = program_runs
    first, again = results["recovery"], results["recovery again"]
    _flags(again, (DONE, 0, len(program.layers)), where)
    _exact_upto(again, len(program.layers), where)
    assert (first["cycles"], first["records"]) == (again["cycles"], again["records"]), where


def test_bridge_and_ddr_model_agree(program_runs):
    program, results, _, where = program_runs
    n = len(program.layers)
    bridge, model = results["bridge"], results["ddr model"]
    for r in (bridge, model, results["ddr model backpressure"]):
        _flags(r, (DONE, 0, n), where)
        _exact_upto(r, n, where)
    assert bridge["cycles"] == model["cycles"], where
    assert bridge["records"] == model["records"], where


def test_a_wrong_value_is_reported_with_its_position(program_runs):
    _, results, _, where = program_runs
    r = results["mismatch"]
    assert r["checked"] == [0, 1, 2], where
    assert not r["mismatches"]["0"] and not r["mismatches"]["1"], where
    msgs = r["mismatches"]["2"]
    assert len(msgs) == 1 and "channel 5, row 1, column 2: expected " in msgs[0], (where, msgs)
    expected, actual = (int(v) for v in msgs[0].rsplit("expected ", 1)[1].split(", actual "))
    assert expected == (actual + 1 + 128) % 256 - 128, where  # the int8 golden value, plus one


def test_watchdog_stops_a_layer_whose_memory_stops_answering(program_runs):
    """ARREADY and R VALID held low during layer 1 for longer than the watchdog: the watchdog
    aborts the engine, whose outstanding reads complete when the memory answers again (AXI4
    A3.4.4); the run ends done | error with SEQ_ERR.WATCHDOG naming layer 1, the bus idle, the
    layer's record written with the engine's (error-free) status; "bridge" runs next, bit-exact
    (test_bridge_and_ddr_model_agree)."""
    _, results, _, where = program_runs
    r = results["watchdog"]
    _flags(r, (DONE_ERROR, SEQ_ERR.WATCHDOG, 1), where)
    assert r["bus"] == [], f"{where}: after the watchdog stop the bus is busy: {r['bus']}"
    _exact_upto(r, 1, where)
    _record_ok(r["records"][0], 0, where)
    stopped, full = r["records"][1], results["recovery"]["records"][1]
    assert stopped[RECORD.LAYER] == 1 and stopped[RECORD.STATUS] == DONE, (where, stopped)
    # The engine stopped early (less written than the whole layer) and only after the stall.
    written = RECORD.COUNTERS + COUNTERS.index("bytes_written")
    assert stopped[written] < full[written], (where, stopped, full)
    assert stopped[RECORD.SEQ_CYCLES] > 1000 + STALL, (where, stopped)
