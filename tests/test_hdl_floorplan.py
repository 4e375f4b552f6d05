"""The engine's floorplan (``hdl.floorplan``): the 85F's site grid against sites nextpnr placed
cells on, and the plan's contracts on the default engine's cell names (as yosys names them)."""

import pytest

from hdl.floorplan import dsp_sites, ebr_sites, engine_floorplan, floorplan_netlist

D = "sequencer.engine.core.datapath."


def _engine_cells(p_oc=16, p_ic=8, slices=4, lanes=8):
    """The hard-block cell names of an engine as yosys writes them (``make timing``'s netlist)."""
    cells = [f"{D}compute.mac.mult_{o}_{i}.mult" for o in range(p_oc) for i in range(p_ic)]
    cells += [f"{D}drain.requant.mul_{half}{j}.mult" for j in range(p_ic) for half in ("lo", "hi")]
    cells += [f"{D}banks.bank{b}_{s}.mem.0.{k}" for b in range(2) for s in range(slices)
              for k in range(8)]
    cells += [f"{D}w_loader.store.mem.mem.0.{k}" for k in range(8)]
    cells += [f"{D}in_loader.buf.bank{bank}_lane{lane}.mem.0.{k}" for lane in range(lanes)
              for bank, n in ((0, 8), (1, 2), (2, 1)) for k in range(n)]
    return cells + [f"{D}drain.ofifo.storage.0.0"]


def _site(name):
    column, row, _ = name.split("/")
    return int(column[1:]), int(row[1:])


def test_the_site_grid_is_the_85f_s():
    """156 multipliers and 208 block RAMs; among them sites on which nextpnr placed cells in a
    routed build of 2026-11-29 (``build/timing``'s ``placed.json``)."""
    dsp, ebr = dsp_sites(), ebr_sites()
    assert len(dsp) == len({s.name for s in dsp}) == 156
    assert len(ebr) == len({s.name for s in ebr}) == 208
    placed = {"X4/Y10/MULT18_0", "X5/Y10/MULT18_1", "X8/Y10/MULT18_4", "X9/Y10/MULT18_5",
              "X119/Y34/MULT18_5", "X69/Y58/MULT18_0", "X101/Y58/MULT18_5",
              "X4/Y22/EBR0", "X6/Y22/EBR1", "X120/Y22/EBR3", "X31/Y46/EBR0", "X118/Y82/EBR2",
              "X75/Y70/EBR3"}
    assert placed <= {s.name for s in dsp + ebr}


def test_a_channel_s_multipliers_sit_side_by_side_six_channels_to_a_row():
    plan = engine_floorplan(_engine_cells())
    assert plan[f"{D}compute.mac.mult_0_0.mult"] == "X4/Y10/MULT18_0"
    assert plan[f"{D}compute.mac.mult_0_7.mult"] == "X18/Y10/MULT18_5"
    assert plan[f"{D}compute.mac.mult_6_0.mult"] == "X4/Y34/MULT18_0"
    assert plan[f"{D}compute.mac.mult_15_7.mult"] == "X74/Y58/MULT18_5"
    # the requantization after the last channel, lo and hi of a lane side by side
    assert plan[f"{D}drain.requant.mul_lo0.mult"] == "X78/Y58/MULT18_0"
    assert plan[f"{D}drain.requant.mul_hi0.mult"] == "X79/Y58/MULT18_1"
    for o in range(16):
        sites = [_site(plan[f"{D}compute.mac.mult_{o}_{i}.mult"]) for i in range(8)]
        assert len({row for _, row in sites}) == 1, f"channel {o}: {sites}"
        # two neighbouring blocks: 14 columns, 16 across the die's middle (columns 64-68)
        assert max(c for c, _ in sites) - min(c for c, _ in sites) <= 16, f"channel {o}"


def test_every_cell_gets_its_own_site_and_the_output_fifo_is_left_to_nextpnr():
    cells = _engine_cells()
    plan = engine_floorplan(cells)
    assert len(set(plan.values())) == len(plan) == len(cells) - 1
    assert f"{D}drain.ofifo.storage.0.0" not in plan
    assert set(plan.values()) <= {s.name for s in dsp_sites() + ebr_sites()}


def _runs(plan, names):
    """The rows and the column span of ``names``' block RAMs, and how many free sites lie inside
    that span."""
    sites = [_site(plan[n]) for n in names]
    rows = {row for _, row in sites}
    lo, hi = min(c for c, _ in sites), max(c for c, _ in sites)
    inside = [s for s in ebr_sites(rows) if lo <= s.column <= hi]
    return rows, len(inside) - len(sites)


def test_a_bank_slice_is_one_run_of_block_rams_next_to_its_channels():
    cells = _engine_cells()
    plan = engine_floorplan(cells)
    for s in range(4):
        names = [n for n in cells if f"banks.bank0_{s}." in n or f"banks.bank1_{s}." in n]
        rows, gaps = _runs(plan, names)
        assert len(rows) == 1 and gaps == 0, f"slice {s}: rows {rows}, {gaps} gaps"
        channel_rows = {_site(plan[f"{D}compute.mac.mult_{o}_0.mult"])[1]
                        for o in range(4 * s, 4 * s + 4)}
        [row] = rows
        assert min(abs(row - r) for r in channel_rows) == 12, f"slice {s}"
        # both banks' memory k of a slice side by side (a channel's bits of both banks)
        for k in range(8):
            a = _site(plan[f"{D}banks.bank0_{s}.mem.0.{k}"])
            b = _site(plan[f"{D}banks.bank1_{s}.mem.0.{k}"])
            assert a[1] == b[1] and 0 < b[0] - a[0] <= 3, f"slice {s} memory {k}: {a} {b}"


def test_an_input_lane_and_the_weight_store_are_each_one_run():
    cells = _engine_cells()
    plan = engine_floorplan(cells)
    for lane in range(8):
        rows, gaps = _runs(plan, [n for n in cells if f"_lane{lane}." in n])
        assert len(rows) == 1 and gaps == 0, f"lane {lane}: rows {rows}, {gaps} gaps"
    rows, gaps = _runs(plan, [n for n in cells if "w_loader.store" in n])
    assert len(rows) == 1 and gaps == 0


def test_too_many_multipliers_is_an_error_that_says_so():
    with pytest.raises(ValueError, match="168 multipliers, the 85F has 156"):
        engine_floorplan(_engine_cells(p_oc=19))


def test_the_netlist_pass_sets_bel_attributes_on_the_engine_s_cells_only():
    cells = _engine_cells()
    netlist = {"modules": {
        "top": {"cells": {name: {"type": "DP16KD" if ".mem." in name or "storage" in name
                                 else "MULT18X18D", "attributes": {}} for name in cells}},
        "lib": {"cells": {"x": {"type": "DP16KD"}}}}}
    top = netlist["modules"]["top"]["cells"]
    assert floorplan_netlist(netlist) == len(cells) - 1
    assert top[cells[0]]["attributes"]["BEL"] == "X4/Y10/MULT18_0"
    assert "BEL" not in top[f"{D}drain.ofifo.storage.0.0"]["attributes"]
    assert netlist["modules"]["lib"]["cells"]["x"] == {"type": "DP16KD"}
