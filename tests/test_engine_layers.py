"""cocotb + Verilator layer tests of the engine, bit-exact against the golden model.

Each test runs all its layers on one simulator instance (one build shared by every test, see
``sim.runner``). Layers use random DDR latency and backpressure; a mismatch names layer, channel,
row, column, expected and actual (``WAVES=1`` dumps a waveform into the run directory).
"""

import shutil

import numpy as np
import pytest

from hdl.descriptor import EngineConfig, Pool
from hdl.engine import ERR
from model.darknet import load_darknet
from model.golden import forward_int, quantize_input
from model.pipeline import prepare_input
from model.quant import quantize_network
from model.zoo import DOG_IMAGE, REFERENCE_CFG, REFERENCE_WEIGHTS
from sim.bench import STALLS, VOC_LAYERS, bench_jobs
from sim.ddr import DECERR, SLVERR, DdrTiming
from sim.layer import LayerCase, layer_image, random_case
from sim.runner import run_jobs

STATUS_BUSY, STATUS_DONE, STATUS_ERROR = 1, 2, 4


def _assert_exact(jobs, results, ok):
    assert len(results) == len(jobs), "the simulation stopped early (see the cocotb log)"
    problems = [m for r in results for m in r["mismatches"]]
    assert not problems, "\n".join(problems)
    assert ok
    for r in results:
        assert r["status"] == STATUS_DONE and r["error"] == 0, r
        c = r["counters"]
        # Performance counters: bytes as the DDR model saw them; stalls never exceed the time.
        assert c["bytes_read"] == r["ddr_bytes"]["read_beats"], r
        assert c["bytes_written"] == r["ddr_bytes"]["write_beats"], r
        assert c["mac_active"] + sum(c[k] for k in STALLS) <= c["cycles"], r
        assert c["mac_active"] * 128 >= r["macs"], r  # P_ic·P_oc MAC slots per active cycle


def _random_timing(rng):
    return DdrTiming(latency=int(rng.integers(1, 80)), write_latency=int(rng.integers(1, 20)),
                     ready_prob=float(rng.uniform(0.3, 1.0)),
                     rvalid_prob=float(rng.uniform(0.3, 1.0)), seed=int(rng.integers(1 << 30)))


@pytest.fixture(scope="module")
def reference_cases():
    """Every convolution of the quantized reference network (its maxpool fused), fed with the
    golden model's activations of dog.png."""
    net = load_darknet(REFERENCE_CFG, REFERENCE_WEIGHTS)
    x, _ = prepare_input(DOG_IMAGE, net.input_shape)
    qnet = quantize_network(net, [x])
    x_q = quantize_input(x)
    outputs = forward_int(qnet, x_q)
    cases = []
    for i, layer in enumerate(qnet.layers):
        if layer.kind != "convolutional":
            continue
        pool, last = Pool.NONE, i
        nxt = qnet.layers[i + 1] if i + 1 < len(qnet.layers) else None
        if nxt is not None and nxt.kind == "maxpool":
            pool, last = (Pool.P2S2 if nxt.stride == 2 else Pool.P2S1), i + 1
        case = LayerCase(f"ref.{i}", x_q if i == 0 else outputs[i - 1], layer.weight, layer.bias,
                         layer.m_pos, layer.m_neg, layer.shift, pool, layer.output_int32)
        # The case's golden expectation is the golden network's output of that darknet layer.
        assert np.array_equal(case.expected(), outputs[last])
        cases.append(case)
    return cases


def test_reference_network_layers_bit_exact(reference_cases):
    rng = np.random.default_rng(4)
    jobs = [{"case": case, "timing": _random_timing(rng)} for case in reference_cases]
    results, ok = run_jobs(jobs, "reference")
    _assert_exact(jobs, results, ok)


def _fuzz_cases(rng, n):
    """Random layer configurations: odd and non-square shapes, channel counts off the lane
    widths, 1x1 and 3x3, every pool mode, int32 output, multi-tile maps, extreme multipliers."""
    cases = []
    for i in range(n):
        kernel = int(rng.choice([1, 3]))
        out_int32 = kernel == 1 and rng.random() < 0.5
        pool = Pool.NONE if out_int32 else Pool(int(rng.integers(0, 3)))
        c, o = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        h, w = int(rng.integers(1, 14)), int(rng.integers(1, 14))
        tile = int(rng.integers(1, 4)) if rng.random() < 0.4 else None
        cases.append(random_case(rng, f"fuzz{i}", c, h, w, o, kernel, pool, out_int32, tile,
                                 extreme=rng.random() < 0.5))
    return cases


def test_fuzz_layers_bit_exact():
    rng = np.random.default_rng(2026)
    cases = _fuzz_cases(rng, 10)
    # Hand-picked corners: a 1-pixel map (passes shorter than the pipeline), a one-row map with
    # a 2x2/2 pool (half-empty windows), 2x2/1 on a tiled map (the overlap row), wide channels.
    cases += [
        random_case(rng, "corner.1x1", 5, 1, 1, 3, 3, Pool.NONE, extreme=True),
        random_case(rng, "corner.row", 9, 1, 9, 17, 3, Pool.P2S2),
        random_case(rng, "corner.p2s1tiles", 16, 9, 5, 16, 3, Pool.P2S1, max_tile_rows=2),
        random_case(rng, "corner.wide", 72, 4, 6, 33, 3, Pool.P2S2, extreme=True),
    ]
    jobs = [{"case": case, "timing": _random_timing(rng)} for case in cases]
    results, ok = run_jobs(jobs, "fuzz")
    _assert_exact(jobs, results, ok)


def test_bus_errors_stop_cleanly_and_engine_recovers():
    """SLVERR/DECERR on reads and writes set the error flags and end the layer (never a hang);
    the next layer on the same engine is bit-exact again."""
    rng = np.random.default_rng(7)
    case = random_case(rng, "err", 20, 6, 7, 24, 3, Pool.P2S2)
    segments, _, out_addr, out_bytes = layer_image(case, EngineConfig())
    (in_addr, fm), (w_addr, wts), _ = segments
    timing = DdrTiming(latency=20, ready_prob=0.7, rvalid_prob=0.8, seed=5)
    jobs = [
        {"case": case, "timing": timing, "errors": [(w_addr + 64, w_addr + 72, SLVERR, "r")]},
        {"case": case, "timing": timing, "errors": [(in_addr, in_addr + len(fm), DECERR, "r")]},
        {"case": case, "timing": timing,
         "errors": [(out_addr, out_addr + out_bytes, DECERR, "w")]},
        {"case": case, "timing": timing, "errors": [(out_addr, out_addr + 8, SLVERR, "w")]},
        {"case": case, "timing": timing},
    ]
    results, ok = run_jobs(jobs, "errors")
    assert len(results) == len(jobs)
    expected = [ERR.READ_SLVERR, ERR.READ_DECERR, ERR.WRITE_DECERR, ERR.WRITE_SLVERR]
    for r, err in zip(results, expected, strict=False):
        assert r["status"] == STATUS_DONE | STATUS_ERROR, r
        assert r["error"] == err, r
    _assert_exact(jobs[-1:], results[-1:], ok)


@pytest.mark.slow
def test_voc_13x13x1024_to_1024_layer_bit_exact():
    """The largest tiny-YOLOv2-VOC layer: 9.4 MB of weights streamed once, map kept on chip."""
    layer = [entry for entry in VOC_LAYERS if entry[0] == "voc.13"]
    jobs = bench_jobs(layer, seed=13)
    results, ok = run_jobs(jobs, "voc13")
    _assert_exact(jobs, results, ok)


@pytest.mark.slow
def test_long_fuzz_bit_exact():
    rng = np.random.default_rng(99)
    cases = _fuzz_cases(rng, 120)
    jobs = [{"case": case, "timing": _random_timing(rng)} for case in cases]
    results, ok = run_jobs(jobs, "longfuzz")
    _assert_exact(jobs, results, ok)


@pytest.mark.icarus
def test_icarus_runs_a_layer_bit_exact():
    """SIM=icarus path (about 200 cycles/s here, so one small pooled layer)."""
    if shutil.which("iverilog") is None:
        pytest.fail("iverilog not found: install Icarus Verilog (Debian: apt-get install iverilog)")
    rng = np.random.default_rng(5)
    jobs = [{"case": random_case(rng, "icarus", 8, 4, 5, 16, 3, Pool.P2S2),
             "timing": DdrTiming(latency=5, ready_prob=0.7, seed=2)}]
    results, ok = run_jobs(jobs, "icarus", sim="icarus")
    _assert_exact(jobs, results, ok)
