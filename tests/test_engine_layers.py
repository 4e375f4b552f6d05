"""cocotb + Verilator layer tests of the engine, bit-exact against the golden model.

Each test runs all its layers on one simulator instance (one build shared by every test, see
``sim.runner``). Layers use random DDR latency and gaps on all five AXI channels; a mismatch names
layer, channel, row, column, expected and actual, a write outside the output region names the
region and the address (``WAVES=1`` dumps a waveform into the run directory).

Random draws come from the session's seed (the ``fuzz_seed`` fixture): fresh every run, named in
every failure message as ``OWLET_SEED=<n>``, and ``OWLET_SEED=<n> pytest ...`` reproduces it.
The fuzz draws its layers with :func:`sim.layer.fuzz_case` (the distribution is documented there).
"""

import shutil

import numpy as np
import pytest

from hdl.descriptor import EngineConfig, Pool, plan_layer
from hdl.engine import ERR
from model.darknet import load_darknet
from model.golden import forward_int, quantize_input
from model.pipeline import prepare_input
from model.quant import quantize_network
from model.zoo import DOG_IMAGE, REFERENCE_CFG, REFERENCE_WEIGHTS
from sim.bench import STALLS, VOC_LAYERS, bench_jobs
from sim.ddr import DECERR, SLVERR, DdrTiming
from sim.engine_cocotb import memory_changes
from sim.layer import LayerCase, fuzz_case, layer_image, random_case, tile_width_limits
from sim.runner import run_jobs

STATUS_BUSY, STATUS_DONE, STATUS_ERROR = 1, 2, 4


#: Default and slow fuzz: layers per simulator run, and runs (xdist spreads them).
FUZZ_PARTS, FUZZ_SLOW_PARTS, FUZZ_PART_LAYERS = 2, 18, 28


def _problems(jobs, results):
    """Every failure message of a run, plus one if the simulation ended before the last job."""
    problems = [m for r in results for m in r["mismatches"]]
    if len(results) < len(jobs):
        problems.append(f"the simulation stopped after {len(results)} of {len(jobs)} jobs, in "
                        f"layer {jobs[len(results)]['case'].name} (see the cocotb log)")
    return problems


def _assert_exact(jobs, results, ok, seed=None):
    where = "fixed data and timing" if seed is None else f"OWLET_SEED={seed}"
    problems = _problems(jobs, results)
    assert not problems, f"{where}\n" + "\n".join(problems)
    assert ok, f"{where}: the cocotb test failed (see its log)"
    for r in results:
        assert r["status"] == STATUS_DONE and r["error"] == 0, f"{where}: {r}"
        c = r["counters"]
        # Performance counters: bytes as the DDR model saw them; stalls never exceed the time.
        assert c["bytes_read"] == r["ddr_bytes"]["read_beats"], f"{where}: {r}"
        assert c["bytes_written"] == r["ddr_bytes"]["write_beats"], f"{where}: {r}"
        assert c["mac_active"] + sum(c[k] for k in STALLS) <= c["cycles"], f"{where}: {r}"
        # P_ic·P_oc MAC slots per active cycle
        assert c["mac_active"] * 128 >= r["macs"], f"{where}: {r}"


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


def test_reference_network_layers_bit_exact(reference_cases, fuzz_seed):
    rng = np.random.default_rng([fuzz_seed, 1])
    jobs = [{"case": case, "timing": DdrTiming.random(rng)} for case in reference_cases]
    results, ok = run_jobs(jobs, "reference")
    _assert_exact(jobs, results, ok, fuzz_seed)


def test_upsample_layers_bit_exact(fuzz_seed):
    """Upsample on the write: each output pixel in its 2x2 block, over several row tiles (the
    last one short), output channels not a multiple of P_oc (a padding sub-group), the widest
    1x1 map the planner takes, and YOLOv3-tiny's layer 18 -> 19 shape at half its channels."""
    rng = np.random.default_rng([fuzz_seed, 4])
    cases = [
        random_case(rng, "up.tiles", 11, 7, 6, 20, 3, max_tile_rows=2, addr_offset=0x1F8,
                    upsample=True),
        random_case(rng, "up.wide", 8, 3, 1024, 9, 1, extreme=True, upsample=True),
        random_case(rng, "up.yolo18", 128, 13, 13, 64, 1, upsample=True),
    ]
    jobs = [{"case": case, "timing": DdrTiming.random(rng)} for case in cases]
    results, ok = run_jobs(jobs, "upsample")
    _assert_exact(jobs, results, ok, fuzz_seed)


def _fuzz_jobs(seed, stream, part):
    """Layers ``part · FUZZ_PART_LAYERS`` ... of fuzz ``stream``, each with its DDR timing, all
    drawn from ``seed`` (so one part reproduces alone)."""
    rng = np.random.default_rng([seed, stream, part])
    first = part * FUZZ_PART_LAYERS
    return [{"case": fuzz_case(rng, i), "timing": DdrTiming.random(rng)}
            for i in range(first, first + FUZZ_PART_LAYERS)]


def _coverage(jobs):
    """The corners a fuzz must reach, each with whether ``jobs`` reach it."""
    cfg = EngineConfig()
    cases, timings = [job["case"] for job in jobs], [job["timing"] for job in jobs]
    int8 = [case.expected() for case in cases if not case.out_int32]
    plans = [layer_image(case, cfg).plan for case in cases]

    def width_at(case, rows, above=0):
        return case.x.shape[2] == tile_width_limits(cfg, case.kernel, case.pool, rows) + above

    def mode(case):
        return "int32" if case.out_int32 else "upsample" if case.upsample else case.pool.name

    return {
        **{f"{k}x{k} {m}": any(case.kernel == k and mode(case) == m for case in cases)
           for k in (1, 3) for m in ("NONE", "P2S2", "P2S1", "int32", "upsample")},

        "C not a multiple of P_ic": any(case.x.shape[0] % cfg.p_ic for case in cases),
        "O not a multiple of 8": any(case.w.shape[0] % 8 for case in cases),
        "O a multiple of 8, not of P_oc": any(case.w.shape[0] % cfg.p_oc == 8 for case in cases),
        "C at the descriptor limit": any(case.x.shape[0] > 2032 for case in cases),
        "O at the descriptor limit": any(case.w.shape[0] > 2032 for case in cases),
        "width at the planner's limit": any(width_at(case, 1) for case in cases),
        "width one above a tile-rows step": any(width_at(case, r, 1) for case in cases
                                                for r in (2, 3)),
        "several row tiles": any(plan.fields["tile_rows"] < plan.out_hw[0] for plan in plans),
        **{f"{name}, several tiles": any(
            plan.fields["tile_rows"] < plan.out_hw[0] and (
                plan.fields["resident"], plan.fields["single_region"]) == key for plan in plans)
           for name, key in (("resident in two halves", (1, 0)),
                             ("resident in one region", (1, 1)), ("streaming", (0, 0)))},
        "a region off its page start": any(case.addr_offset for case in cases),
        "m_pos and m_neg 0": all(any((getattr(case, m) == 0).any() for case in cases)
                                 for m in ("m_pos", "m_neg")),
        "m_pos and m_neg 65535": all(any((getattr(case, m) == 65535).any() for case in cases)
                                     for m in ("m_pos", "m_neg")),
        "shift 1 and 47": all(any((case.shift == s).any() for case in cases) for s in (1, 47)),
        "saturation at 127 and -128": all(any((y == v).any() for y in int8) for v in (127, -128)),
        "DDR read and write latency 1": all(any(getattr(t, k) == 1 for t in timings)
                                            for k in ("latency", "write_latency")),
        "gaps on every AXI channel": all(any(getattr(t, k) < 1 for t in timings)
                                         for k in DdrTiming.CHANNELS),
        "an AXI channel without gaps": any(getattr(t, k) == 1 for t in timings
                                           for k in DdrTiming.CHANNELS),
    }


def test_fuzz_draw_covers_every_corner(fuzz_seed):
    """The default fuzz reaches every corner the engine supports (checked on the draw itself,
    from the cases' own shapes and values)."""
    jobs = [job for part in range(FUZZ_PARTS) for job in _fuzz_jobs(fuzz_seed, 0, part)]
    assert len(jobs) >= 50
    missed = [corner for corner, hit in _coverage(jobs).items() if not hit]
    assert not missed, f"OWLET_SEED={fuzz_seed}: the fuzz missed {missed}"


@pytest.mark.parametrize("part", range(FUZZ_PARTS))
def test_fuzz_layers_bit_exact(part, fuzz_seed):
    jobs = _fuzz_jobs(fuzz_seed, 0, part)
    results, ok = run_jobs(jobs, f"fuzz{part}")
    _assert_exact(jobs, results, ok, fuzz_seed)


@pytest.mark.slow
@pytest.mark.parametrize("part", range(FUZZ_SLOW_PARTS))
def test_long_fuzz_bit_exact(part, fuzz_seed):
    jobs = _fuzz_jobs(fuzz_seed, 1, part)
    results, ok = run_jobs(jobs, f"longfuzz{part}")
    _assert_exact(jobs, results, ok, fuzz_seed)


#: The widest map per (kernel, pool) in the default configuration, worked out from the buffer
#: sizes (acc_depth 1024 pixels, ibuf_depth 22528 words): the accumulators bound every mode,
#: since half the input buffer holds a 1024-wide row plus two halo rows (3 · 1024 <= 11264):
#: one conv row (1024), or two (2x2/2) or one plus the overlap row (2x2/1): 1024 // 2 = 512.
WIDTH_LIMITS = {(1, Pool.NONE): 1024, (3, Pool.NONE): 1024, (1, Pool.P2S2): 512,
                (3, Pool.P2S2): 512, (1, Pool.P2S1): 512, (3, Pool.P2S1): 512}


@pytest.mark.parametrize(("kernel", "pool"), WIDTH_LIMITS)
def test_planner_width_limits(kernel, pool):
    """The planner takes a map at the limit width and refuses one column more (the fuzz runs
    the widths at and below the limit on the RTL)."""
    limit = WIDTH_LIMITS[kernel, pool]
    assert tile_width_limits(EngineConfig(), kernel, pool, 1) == limit
    for out_int32 in (False, True) if pool == Pool.NONE else (False,):
        plan = plan_layer(EngineConfig(), (8, 3, limit), 16, kernel, pool, out_int32, in_addr=0,
                          out_addr=0, w_addr=0, param_addr=0)
        assert plan.fields["tile_rows"] == 1
        with pytest.raises(ValueError, match="too wide"):
            plan_layer(EngineConfig(), (8, 3, limit + 1), 16, kernel, pool, out_int32,
                       in_addr=0, out_addr=0, w_addr=0, param_addr=0)


def test_memory_check_names_region_address_and_values():
    """The guard-band check (host side, on a layer's real memory image): a write anywhere
    outside the output region is reported with the layer, the region, the address and both
    values; writes inside the output region are the output check's business."""
    case = random_case(np.random.default_rng(0), "guarded", 9, 3, 5, 13, 3, Pool.P2S2,
                       addr_offset=0x238)
    image = layer_image(case, EngineConfig())
    before = np.full(image.segments[-1][1] + 2 * 4096, 0xA5, np.uint8)
    for _, addr, blob in image.segments:
        before[addr:addr + len(blob)] = np.frombuffer(blob, np.uint8)
    after = before.copy()
    end = image.out_addr + image.out_bytes
    after[image.out_addr:end] = 0  # the output itself: not reported
    (_, in_addr, _), (_, w_addr, _), (_, p_addr, _), (_, g_addr, _), _ = image.segments
    hits = {g_addr + 4095: "guard band before the output", end: "guard band after the output",
            in_addr: "input map", w_addr + 7: "weights", p_addr + 16: "requant table",
            len(after) - 1: "unused memory"}
    for addr in hits:
        after[addr] ^= 0x10
    msgs = memory_changes(case.name, image, before, after)
    assert msgs == [f"layer guarded: {hits[a]}: byte {a:#x} changed: expected {before[a]:#04x}, "
                    f"actual {after[a]:#04x}" for a in sorted(hits)]
    assert image.out_addr % 4096 == 0x238 and g_addr + 4096 == image.out_addr


def test_a_hang_is_a_failure_with_a_message(fuzz_seed):
    """A layer that does not finish in its cycle budget fails with a message naming the layer and
    what the testbench waited for; the engine is reset and the next jobs run (bit-exact, and a
    job's DDR timing does not depend on the jobs before it: the same job twice takes the same
    cycles). A testbench that dies mid-run (here: a layer the planner refuses) leaves the jobs
    that finished, and the pytest side reports where it stopped."""
    rng = np.random.default_rng([fuzz_seed, 2])
    case = random_case(rng, "hang", 8, 4, 5, 16, 3, Pool.P2S2)
    other = random_case(rng, "other", 12, 5, 3, 20, 1, Pool.P2S1)
    timing, other_timing = DdrTiming.random(rng), DdrTiming.random(rng)
    wide = random_case(rng, "too-wide", 1, 1, 2000, 1, 3)
    jobs = [{"case": case, "timing": timing, "timeout": 50},
            {"case": case, "timing": timing}, {"case": other, "timing": other_timing},
            {"case": case, "timing": timing}, {"case": wide}]
    results, ok = run_jobs(jobs, "hang")
    where = f"OWLET_SEED={fuzz_seed}"
    assert not ok, where
    assert len(results) == 4, where
    assert results[0]["mismatches"] == ["layer hang: engine: no done interrupt within 50 cycles"], \
        f"{where}: {results[0]}"
    _assert_exact(jobs[1:4], results[1:4], True, fuzz_seed)
    assert results[1]["counters"] == results[3]["counters"], where
    with pytest.raises(AssertionError, match=r"OWLET_SEED=\d+\n(.|\n)*stopped after 4 of 5 "
                       r"jobs, in layer too-wide"):
        _assert_exact(jobs, results, ok, fuzz_seed)


def test_bus_errors_stop_cleanly_and_engine_recovers(fuzz_seed):
    """SLVERR/DECERR on reads and writes set the error flags and end the layer (never a hang),
    nothing outside the output region is written; the next layer on the same engine is
    bit-exact again."""
    rng = np.random.default_rng([fuzz_seed, 3])
    case = random_case(rng, "err", 20, 6, 7, 24, 3, Pool.P2S2)
    image = layer_image(case, EngineConfig())
    (_, in_addr, fm), (_, w_addr, _) = image.segments[:2]
    out_addr, out_bytes = image.out_addr, image.out_bytes
    timing = DdrTiming.random(rng)
    jobs = [
        {"case": case, "timing": timing, "errors": [(w_addr + 64, w_addr + 72, SLVERR, "r")]},
        {"case": case, "timing": timing, "errors": [(in_addr, in_addr + len(fm), DECERR, "r")]},
        {"case": case, "timing": timing,
         "errors": [(out_addr, out_addr + out_bytes, DECERR, "w")]},
        {"case": case, "timing": timing, "errors": [(out_addr, out_addr + 8, SLVERR, "w")]},
        {"case": case, "timing": timing},
    ]
    results, ok = run_jobs(jobs, "errors")
    where = f"OWLET_SEED={fuzz_seed}"
    assert not _problems(jobs, results), f"{where}\n" + "\n".join(_problems(jobs, results))
    expected = [ERR.READ_SLVERR, ERR.READ_DECERR, ERR.WRITE_DECERR, ERR.WRITE_SLVERR]
    for r, err in zip(results, expected, strict=False):
        assert r["status"] == STATUS_DONE | STATUS_ERROR, f"{where}: {r}"
        assert r["error"] == err, f"{where}: {r}"
    _assert_exact(jobs[-1:], results[-1:], ok, fuzz_seed)


@pytest.mark.slow
def test_voc_13x13x1024_to_1024_layer_bit_exact():
    """The largest tiny-YOLOv2-VOC layer: 9.4 MB of weights streamed once, map kept on chip."""
    layer = [entry for entry in VOC_LAYERS if entry[0] == "voc.13"]
    jobs = bench_jobs(layer, seed=13)
    results, ok = run_jobs(jobs, "voc13")
    _assert_exact(jobs, results, ok)


@pytest.mark.icarus
def test_icarus_runs_a_layer_bit_exact():
    """SIM=icarus path (about 200 cycles/s here, so one small pooled layer)."""
    if shutil.which("iverilog") is None:
        pytest.fail("iverilog not found: install Icarus Verilog (Debian: apt-get install iverilog)")
    rng = np.random.default_rng(5)
    jobs = [{"case": random_case(rng, "icarus", 8, 4, 5, 16, 3, Pool.P2S2),
             "timing": DdrTiming(latency=5, arready_prob=0.7, wready_prob=0.8, bvalid_prob=0.5,
                                 seed=2)}]
    results, ok = run_jobs(jobs, "icarus", sim="icarus")
    _assert_exact(jobs, results, ok)
