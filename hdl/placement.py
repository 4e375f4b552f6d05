"""Where nextpnr put each unit of the engine: a PNG map of the placed netlist and each unit's
extent, for reading a timing run at a glance (``make timing`` writes both).

nextpnr's JSON after placement (``--write``) keeps every cell under its netlist name, which
starts with the RTL hierarchy (``sequencer.engine.core.datapath.compute.window.…``), and records
its site in the ``NEXTPNR_BEL`` attribute (``X<column>/Y<row>/<bel>``). The routed delays of the
slowest paths follow the distances on this map far more than their logic depth.
"""

import re
from collections import defaultdict
from pathlib import Path

__all__ = ["placed_units", "plot_placement", "rtl_name", "unit_of", "unit_extents",
           "widest_signals"]

_DATAPATH = "sequencer.engine.core.datapath."
#: Units of the compute unit shown on their own: the rest of it is its pass control.
_COMPUTE_PARTS = ("window", "mac")
_BEL = re.compile(r"X(\d+)/Y(\d+)/")
_HARD_BLOCKS = ("MULT18X18D", "DP16KD")


def rtl_name(name: str) -> str:
    """A netlist name as the RTL signal it comes from: without yosys's ``$``-suffixes and the
    ``_TRELLIS_…`` suffixes under which nextpnr-ecp5 packs cells."""
    name = name.split("$")[0].rstrip(".") or name
    return re.sub(r"_TRELLIS_\w+$", "", name)


def _sites(netlist: dict) -> dict[str, tuple[int, int]]:
    """``{cell name: (column, row)}`` of every placed cell (its ``NEXTPNR_BEL`` attribute)."""
    sites = {}
    for module in netlist["modules"].values():
        for name, cell in module.get("cells", {}).items():
            found = _BEL.match(str(cell.get("attributes", {}).get("NEXTPNR_BEL", "")))
            if found:
                sites[name] = (int(found[1]), int(found[2]))
    return sites


def unit_of(cell: str) -> str:
    """The unit a netlist cell belongs to, from its hierarchical name: a datapath unit
    (``drain``, ``compute.window``), ``engine`` (the engine's layer control, CSRs, parameter
    tables and the datapath's own registers), ``sequencer``, or ``harness`` (anything outside
    the sequencer)."""
    name = cell.lstrip("\\")
    if name.startswith(_DATAPATH):
        parts = name[len(_DATAPATH):].split(".")
        if len(parts) == 1:  # the datapath's own registers (the parameter tables' beats)
            return "engine"
        if parts[0] == "compute" and parts[1] in _COMPUTE_PARTS:
            return f"compute.{parts[1]}"
        return parts[0]
    if name.startswith("sequencer.engine."):
        return "engine"
    if name.startswith("sequencer."):
        return "sequencer"
    return "harness"


def placed_units(netlist: dict) -> dict[str, list[tuple[int, int, str]]]:
    """``{unit: [(column, row, cell type), ...]}`` of every placed cell of nextpnr's JSON
    ``netlist`` (cells without a site are left out)."""
    sites = _sites(netlist)
    units = defaultdict(list)
    for module in netlist["modules"].values():
        for name, cell in module.get("cells", {}).items():
            if name in sites:
                units[unit_of(name)].append((*sites[name], cell["type"]))
    return dict(units)


def unit_extents(units: dict) -> dict[str, dict]:
    """Each unit's cell count and the columns and rows holding its middle 80 % of cells:
    ``{unit: {"cells": n, "x": (lo, hi), "y": (lo, hi)}}`` (10th and 90th percentiles, so a few
    far cells, such as a block RAM at the chip's edge, do not hide where the unit is)."""
    extents = {}
    for unit, cells in units.items():
        n = len(cells)
        xs, ys = sorted(c[0] for c in cells), sorted(c[1] for c in cells)
        lo, hi = n // 10, 9 * n // 10  # 9n // 10 is n - 1 for n <= 10
        extents[unit] = {"cells": n, "x": (xs[lo], xs[hi]), "y": (ys[lo], ys[hi])}
    return extents


def plot_placement(units: dict, path, title: str) -> Path:
    """Draw ``units`` (from :func:`placed_units`) as a map, one colour per unit, hard blocks
    (DSP slices, block RAMs) as larger squares; write it to ``path`` (PNG) and return it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(13, 9))
    colours = plt.get_cmap("tab20")
    for k, (unit, cells) in enumerate(sorted(units.items(), key=lambda u: -len(u[1]))):
        colour = colours(k % 20)
        soft = [(x, y) for x, y, kind in cells if kind not in _HARD_BLOCKS]
        hard = [(x, y) for x, y, kind in cells if kind in _HARD_BLOCKS]
        if soft:
            ax.scatter(*zip(*soft, strict=True), s=3, color=colour, alpha=0.5,
                       label=f"{unit} ({len(cells)})")
        if hard:
            ax.scatter(*zip(*hard, strict=True), s=40, marker="s", color=colour,
                       edgecolors="black", linewidths=0.5,
                       label=None if soft else f"{unit} ({len(cells)})")
    ax.invert_yaxis()  # row 0 at the top, as nextpnr numbers them
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    ax.set_title(title + " (squares: DSP slices and block RAMs)")
    ax.legend(markerscale=3, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _signal_of(net: str) -> str:
    """The RTL signal a netlist net comes from: the name without yosys's and nextpnr's
    suffixes and without the bit index (``sequencer.engine.core.p_data``)."""
    return re.sub(r"(\[\d+\]|__\d+)+$", "", rtl_name(net.lstrip("\\"))) or net


def widest_signals(netlist: dict, n: int = 8) -> list[dict]:
    """The ``n`` RTL signals whose placed nets demand the most routing: for every net, the
    half-perimeter of the box around its driver and loads (in tiles), summed over the nets of
    one signal (its bits, its copies). ``[{"signal", "nets", "loads", "widest", "total"}]``,
    largest ``total`` first; ``widest`` is the largest single net's half-perimeter.

    The placer minimises exactly this sum, so a signal high in this list is one whose
    connections the design itself spreads over the die (a broadcast to every DSP row, a table
    read by every lane), which no placement can shorten."""
    sites = _sites(netlist)
    signals = {}
    for module in netlist["modules"].values():
        pins = defaultdict(list)  # net bit -> sites of the cells on it
        for name, cell in module.get("cells", {}).items():
            if name not in sites:
                continue
            for bits in cell["connections"].values():
                for bit in bits:
                    if isinstance(bit, int):
                        pins[bit].append(sites[name])
        names = {}
        for net, info in module.get("netnames", {}).items():
            for bit in info["bits"]:
                if isinstance(bit, int) and (bit not in names or len(net) < len(names[bit])):
                    names[bit] = net
        for bit, at in pins.items():
            if len(at) < 2 or bit not in names:
                continue
            xs, ys = [p[0] for p in at], [p[1] for p in at]
            span = max(xs) - min(xs) + max(ys) - min(ys)
            entry = signals.setdefault(_signal_of(names[bit]), {"nets": 0, "loads": 0,
                                                                 "widest": 0, "total": 0})
            entry["nets"] += 1
            entry["loads"] += len(at) - 1
            entry["widest"] = max(entry["widest"], span)
            entry["total"] += span
    ranked = sorted(signals.items(), key=lambda kv: -kv[1]["total"])[:n]
    return [{"signal": name, **entry} for name, entry in ranked]
