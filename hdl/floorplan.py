"""Where the engine's hard blocks sit on the ECP5-85F: its multipliers and block RAMs fixed to
sites (nextpnr's ``BEL`` attribute) in yosys's netlist, before place and route
(:func:`hdl.ecp5.prepare_netlist_file`).

Why: the 128-MAC engine uses 144 of the 85F's 156 MULT18X18D and 162 of its 208 DP16KD, in
three DSP rows and four block-RAM rows that span the die. Left to itself, nextpnr's placer
scattered them: one output channel's multipliers over two DSP rows, one accumulator-bank slice
over two block-RAM rows 48 rows apart, and every wide structure between them (the weights into
the multipliers, the sums into the banks, the banks into the drain) crossed the chip. The plan
here keeps together what moves data every cycle:

- the multipliers of an output channel side by side in one DSP row, channel after channel
  (``p_ic`` sites each, six channels to a row), then the drain's requantization multipliers;
- each accumulator-bank slice (both banks' memories of its channels) in the free block-RAM
  sites nearest its channels' multipliers;
- the weight store, then the input buffer lane by lane (a lane's memories share their read and
  write addresses), in the free sites nearest the middle of the multipliers, whose operands
  they feed.

On the netlist of ``3b2f40b`` this cut the wire length after placement by 40 % and let router2
converge where it had diverged (``docs/engine.md``, "Floorplan"). Everything else (the soft
logic, the output FIFO's block RAMs, a board's DRAM controller) nextpnr places around these
anchors.

The site grid of the LFE5U-85F (nextpnr-ecp5's names ``X<column>/Y<row>/<bel>``, read off placed
netlists): DSP rows 10, 34, 58 and block-RAM rows 22, 46, 70, 82, each with 13 blocks of four
sites (``MULT18_0, _1, _4, _5`` at columns c, c+1, c+4, c+5; ``EBR0``–``EBR3`` at c, c+2, c+4,
c+6) starting at the columns in :data:`BLOCK_COLUMNS`: 156 multipliers and 208 block RAMs.
"""

import re

__all__ = ["BLOCK_COLUMNS", "DSP_ROWS", "EBR_ROWS", "Site", "dsp_sites", "ebr_sites",
           "engine_floorplan", "floorplan_netlist"]

DSP_ROWS = (10, 34, 58)
EBR_ROWS = (22, 46, 70, 82)
BLOCK_COLUMNS = (4, 13, 22, 31, 40, 49, 58, 69, 78, 87, 96, 105, 114)
#: Output channels whose multipliers go to one DSP row (6 × 8 of its 52 sites): the 13th block
#: of each row stays free, so a row's channels and the requantization never share a block.
_CHANNELS_PER_ROW = 6
_DATAPATH = r"engine\.core\.datapath\."
_MAC = re.compile(_DATAPATH + r"compute\.mac\.mult_(\d+)_(\d+)\.mult$")
_REQUANT = re.compile(_DATAPATH + r"drain\.requant\.mul_(lo|hi)(\d+)\.mult$")
_BANK = re.compile(_DATAPATH + r"banks\.bank(\d+)_(\d+)\.mem\.")
_WEIGHTS = re.compile(_DATAPATH + r"w_loader\.store\.")
_INPUT = re.compile(_DATAPATH + r"in_loader\.buf\.bank(\d+)_lane(\d+)\.mem\.")


class Site(tuple):
    """``(column, row, name)`` of one hard-block site; ``name`` is nextpnr's bel name."""

    __slots__ = ()

    def __new__(cls, column, row, name):
        return super().__new__(cls, (column, row, name))

    column = property(lambda self: self[0])
    row = property(lambda self: self[1])
    name = property(lambda self: self[2])


def dsp_sites(rows=DSP_ROWS, blocks=None) -> list[Site]:
    """The MULT18X18D sites of ``rows`` (in that order), each row's ``blocks`` (indices into
    :data:`BLOCK_COLUMNS`; default all) left to right."""
    blocks = range(len(BLOCK_COLUMNS)) if blocks is None else blocks
    return [Site(BLOCK_COLUMNS[b] + dx, row, f"X{BLOCK_COLUMNS[b] + dx}/Y{row}/MULT18_{dx}")
            for row in rows for b in blocks for dx in (0, 1, 4, 5)]


def ebr_sites(rows=EBR_ROWS) -> list[Site]:
    """The DP16KD sites of ``rows``, left to right."""
    return [Site(c + 2 * k, row, f"X{c + 2 * k}/Y{row}/EBR{k}")
            for row in rows for c in BLOCK_COLUMNS for k in range(4)]


def _centre(sites):
    return (sum(s.column for s in sites) / len(sites), sum(s.row for s in sites) / len(sites))


def _nearest(free, target, n, what):
    """Take ``n`` free sites near ``target``: the run of ``n`` free sites next to each other in
    one block-RAM row whose summed Manhattan distance (in tiles) to the target is least (ties
    to the upper row, then the left); the ``n`` nearest anywhere only when no row has such a
    run. Returned left to right.

    One run per group because a group's memories share their address and enable nets."""
    if n > len(free):
        raise ValueError(f"floorplan: {what} needs {n} block RAMs, only {len(free)} sites left")
    x, y = target

    def distance(site):
        return abs(site.column - x) + abs(site.row - y)

    runs = [sites[i:i + n] for row in EBR_ROWS for sites in [ebr_sites([row])]
            for i in range(len(sites) - n + 1) if all(s in free for s in sites[i:i + n])]
    taken = (min(runs, key=lambda run: (sum(map(distance, run)), run[0].row, run[0].column))
             if runs else sorted(free, key=lambda s: (distance(s), s.row, s.column))[:n])
    for site in taken:
        free.remove(site)
    return sorted(taken, key=lambda s: (s.row, s.column))


def _index_key(name):
    """Sort yosys's memory cells ``….mem.0.10`` by their numbers, not as text."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def engine_floorplan(cells) -> dict[str, str]:
    """``{cell name: site name}`` for the engine's multipliers and block RAMs among ``cells``
    (netlist cell names, ``…engine.core.datapath.…`` anywhere in them, so any top will do);
    empty without the engine's multipliers.

    Raises
    ------
    ValueError
        If the engine needs more sites of a kind than the 85F has.
    """
    cells = list(cells)
    plan = {}
    macs = {}
    for name in cells:
        if found := _MAC.search(name):
            macs[int(found[1]), int(found[2])] = name
    if not macs:
        return plan
    channels = sorted({o for o, _ in macs})
    lanes = sorted({i for _, i in macs})
    # Multipliers: a channel's lanes side by side, _CHANNELS_PER_ROW channels to a DSP row.
    slots = [s for row in DSP_ROWS for s in dsp_sites(
        [row], range(_CHANNELS_PER_ROW * len(lanes) // 4))]
    spare = [s for s in dsp_sites() if s not in slots]
    # a lane's two partial products side by side, the low one first
    requant = sorted((int(f[2]), f[1] != "lo", name) for name in cells
                     if (f := _REQUANT.search(name)))
    needed = len(macs) + len(requant)
    if needed > len(slots) + len(spare):
        raise ValueError(f"floorplan: the engine has {needed} multipliers, the 85F has "
                         f"{len(slots) + len(spare)}")
    order = iter(slots + spare)
    channel_sites = {}
    for o in channels:
        channel_sites[o] = [next(order) for _ in lanes]
        for i, site in zip(lanes, channel_sites[o], strict=True):
            plan[macs[o, i]] = site.name
    for *_, name in requant:
        plan[name] = next(order).name
    # Block RAMs: each group in the free sites nearest the multipliers it serves; first the
    # weight store, whose beats go to every channel.
    free = ebr_sites()
    middle = _centre([site for sites in channel_sites.values() for site in sites])
    weights = sorted((n for n in cells if _WEIGHTS.search(n)), key=_index_key)
    for name, site in zip(weights, _nearest(free, middle, len(weights), "the weight store"),
                          strict=True):
        plan[name] = site.name
    banks = {}
    for name in cells:
        if found := _BANK.search(name):
            banks.setdefault(int(found[2]), []).append(name)
    per_slice = len(channels) // max(1, len(banks))
    for s, names in sorted(banks.items()):
        # interleave the two banks' memories so that a channel's bits of both sit together
        names.sort(key=lambda n: (_index_key(n.split(".mem.")[1]), _index_key(n)))
        near = [site for o in channels[s * per_slice:(s + 1) * per_slice]
                for site in channel_sites[o]]
        for name, site in zip(names, _nearest(free, _centre(near), len(names),
                                              f"accumulator slice {s}"), strict=True):
            plan[name] = site.name
    by_lane = {}
    for name in cells:
        if found := _INPUT.search(name):
            by_lane.setdefault(int(found[2]), []).append(name)
    for lane, names in sorted(by_lane.items()):
        names.sort(key=_index_key)
        for name, site in zip(names, _nearest(free, middle, len(names), f"input lane {lane}"),
                              strict=True):
            plan[name] = site.name
    return plan


def floorplan_netlist(netlist: dict) -> int:
    """Fix the engine's hard blocks in yosys's JSON ``netlist`` (changed in place: a ``BEL``
    attribute on each, which nextpnr honours) by :func:`engine_floorplan`; returns how many
    cells were fixed."""
    fixed = 0
    for module in netlist["modules"].values():
        cells = module.get("cells", {})
        hard = [n for n, c in cells.items() if c["type"] in ("MULT18X18D", "DP16KD")]
        for name, site in engine_floorplan(hard).items():
            cells[name].setdefault("attributes", {})["BEL"] = site
            fixed += 1
    return fixed

