"""The placement map of ``make timing`` (``hdl.placement``): cells to units by their names, units'
extents, and the PNG, on hand-written netlists in the form nextpnr's ``--write`` gives."""

import pytest
from PIL import Image

from hdl.placement import placed_units, plot_placement, unit_extents, unit_of, widest_signals


@pytest.mark.parametrize("cell,unit", [
    ("sequencer.engine.core.datapath.drain.requant.lane3$abc$12_LUT4", "drain"),
    ("\\sequencer.engine.core.datapath.compute.window.rowaddr_TRELLIS_FF_Q_9", "compute.window"),
    ("sequencer.engine.core.datapath.compute.mac.mult_9_7.mult", "compute.mac"),
    ("sequencer.engine.core.datapath.compute.ctrl.$signal$34_TRELLIS_FF_Q", "compute"),
    ("sequencer.engine.core.datapath.in_loader.remaining$abc$7", "in_loader"),
    ("sequencer.engine.core.datapath.p_beat_TRELLIS_FF_Q_9", "engine"),
    ("sequencer.engine.core.p_data_TRELLIS_FF_Q_3", "engine"),
    ("sequencer.csr_slice1.sub__adr_TRELLIS_FF_Q", "sequencer"),
    ("taken_TRELLIS_FF_Q_119", "harness"),
    ("$gbuf$clk", "harness"),
])
def test_a_cell_belongs_to_the_unit_its_name_starts_with(cell, unit):
    assert unit_of(cell) == unit


def _netlist(cells):
    return {"modules": {"top": {"cells": {
        name: {"type": kind, "attributes": {"NEXTPNR_BEL": bel} if bel else {}}
        for name, kind, bel in cells}}}}


def test_placed_cells_are_grouped_by_unit_with_their_sites():
    netlist = _netlist([
        ("sequencer.engine.core.datapath.drain.a", "TRELLIS_COMB", "X12/Y34/SLICEA"),
        ("sequencer.engine.core.datapath.drain.b", "MULT18X18D", "X40/Y58/MULT18_0"),
        ("sequencer.fsm_state", "TRELLIS_FF", "X3/Y4/SLICEB"),
        ("sequencer.unplaced", "TRELLIS_FF", None),
    ])
    assert placed_units(netlist) == {
        "drain": [(12, 34, "TRELLIS_COMB"), (40, 58, "MULT18X18D")],
        "sequencer": [(3, 4, "TRELLIS_FF")],
    }


def test_extents_hold_the_middle_80_percent_of_a_units_cells():
    # 20 cells in columns 0..19, all in row 7 but one far block RAM in row 90: the 10th and
    # 90th percentiles are the 3rd and 19th cells, columns 2 and 18, and the row stays 7.
    cells = [(x, 7, "TRELLIS_COMB") for x in range(19)] + [(19, 90, "DP16KD")]
    assert unit_extents({"writer": cells}) == {"writer": {"cells": 20, "x": (2, 18),
                                                          "y": (7, 7)}}
    # fewer than ten cells: the whole range
    assert unit_extents({"arbiter": [(5, 1, "X"), (9, 3, "X")]})["arbiter"]["x"] == (5, 9)


def test_the_map_is_a_png(tmp_path):
    units = {"drain": [(x, x // 2, "TRELLIS_COMB") for x in range(50)] + [(3, 58, "MULT18X18D")],
             "banks": [(70, 82, "DP16KD")]}
    path = plot_placement(units, tmp_path / "placement.png", "test")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 500 and image.height > 400


def test_signals_are_ranked_by_the_routing_their_nets_span():
    """Half-perimeters worked by hand: ``bus[0]`` from (0, 0) to (10, 4) and (2, 9): box 10 × 9,
    19 tiles; ``bus[1]`` from (0, 0) to (3, 0): 3 tiles; together 22, widest 19, three loads.
    ``en`` spans (10, 4) to (12, 5): 3 tiles. An unplaced cell's pins do not count."""
    netlist = {"modules": {"top": {
        "cells": {
            "a": {"type": "TRELLIS_FF", "attributes": {"NEXTPNR_BEL": "X0/Y0/SLICEA"},
                  "connections": {"Q": [2, 3]}},
            "b": {"type": "DP16KD", "attributes": {"NEXTPNR_BEL": "X10/Y4/DP16KD"},
                  "connections": {"DI0": [2], "CE": [5]}},
            "c": {"type": "TRELLIS_FF", "attributes": {"NEXTPNR_BEL": "X2/Y9/SLICEB"},
                  "connections": {"DI": [2]}},
            "d": {"type": "TRELLIS_FF", "attributes": {"NEXTPNR_BEL": "X3/Y0/SLICEC"},
                  "connections": {"DI": [3]}},
            "e": {"type": "TRELLIS_FF", "attributes": {"NEXTPNR_BEL": "X12/Y5/SLICED"},
                  "connections": {"Q": [5]}},
            "f": {"type": "TRELLIS_FF", "attributes": {}, "connections": {"DI": [5]}},
        },
        "netnames": {
            "sequencer.bus": {"bits": [2, 3]},
            "sequencer.bus_TRELLIS_FF_Q_DI": {"bits": [2]},  # a longer alias of bus[0]
            "sequencer.en$abc$9": {"bits": [5]},
        },
    }}}
    assert widest_signals(netlist) == [
        {"signal": "sequencer.bus", "nets": 2, "loads": 3, "widest": 19, "total": 22},
        {"signal": "sequencer.en", "nets": 1, "loads": 1, "widest": 3, "total": 3},
    ]
