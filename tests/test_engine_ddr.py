"""The DDR model under cocotb, checked by cocotbext-axi's AxiMaster (also its cocotb 2.x smoke
test): data integrity against a shadow memory, read latency, error responses; once without gaps
and once with gaps on all five AXI channels (their pattern from the session's seed)."""

import json
from dataclasses import asdict, replace

import pytest

from sim.axi_wire import AxiWire
from sim.ddr import DdrTiming
from sim.runner import build_top, run_cocotb


@pytest.mark.parametrize("timing", [
    DdrTiming(latency=30),
    DdrTiming(latency=3, write_latency=9, arready_prob=0.4, rvalid_prob=0.5, awready_prob=0.6,
              wready_prob=0.45, bvalid_prob=0.3),
], ids=["latency30", "backpressure"])
def test_ddr_model_against_axi_master(timing, request, fuzz_seed):
    build_dir = build_top(AxiWire, "axi_wire", "AxiWire()")
    timing = replace(timing, seed=fuzz_seed)
    _, ok = run_cocotb(build_dir, "axi_wire", "sim.ddr_cocotb", request.node.callspec.id,
                       {"OWLET_DDR_TIMING": json.dumps(asdict(timing))})
    assert ok, f"OWLET_SEED={fuzz_seed}: see the cocotb log above"
