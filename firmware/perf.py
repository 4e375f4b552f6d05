"""The analytic performance model: cycles, DDR traffic and roofline of a program on the engine.

Per layer, :func:`predict_program` replays the engine's loop nest (``docs/engine.md``) at the
granularity of passes and bursts, not cycles: the input loader (one slot load per tile, output
group and input group, two slots), the weight loader (requant table then weights per tile and
output group, 512-beat FIFO credits, two parameter slots), the round-robin AR arbiter (one grant
every two cycles), a DDR that serves bursts in AR order after a fixed latency at a given number of
bytes per cycle, the compute unit (a pass of ``max(pixels, min_pass)`` cycles needs its input slot
full, its 16-beat weight set in the shadow register and, on the first pass of an output group, a
free accumulator bank), the drain (one window per cycle, a flush of the requant latency + 5) and
the writer (a burst leaves when all its beats wait in the output FIFO). Every latency in it is the
RTL's, so the prediction matches the RTL's ``cycles`` counter within a few percent (validated in
``tests/test_cosim.py``); ``docs/performance.md`` explains the model and the numbers.

The roofline bounds are the classic ones: compute = useful MACs / (P_ic·P_oc), memory = DDR
bytes / bytes per cycle; a layer cannot be faster than the larger of the two. AXI4 has separate
read and write channels, and so has the simulation's DDR model: the memory bound is the larger of
the reads at the configured bandwidth and the writes at one beat per cycle.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from firmware.executor import descriptors
from firmware.program import Program, ProgramLayer
from hdl.axi import WISHBONE_SLICE_LATENCY
from hdl.descriptor import DESC_LATENCY, DESCRIPTOR_WORDS, EngineConfig, Pool
from hdl.engine import COUNTERS
from hdl.engine.drain import DRAIN_FLUSH, DRAIN_LATENCY
from hdl.engine.loader import IBUF_READ_LATENCY
from hdl.engine.mac import OPERAND_LATENCY, mac_latency
from hdl.engine.weights import WEIGHT_STORE_LATENCY
from hdl.sequencer import CSR_SLICES, RECORD_WORDS

__all__ = [
    "BOARD_MEMORY",
    "DEFAULT_CLOCK_MHZ",
    "BoardMemory",
    "LayerPerf",
    "PerfConfig",
    "layer_macs",
    "minimum_traffic",
    "predict_network",
    "predict_program",
    "program_cycles",
    "sequencer_overhead",
]

#: Projection clock of the default ECP5-85F build (docs/performance.md: why 50 MHz).
DEFAULT_CLOCK_MHZ = 50.0
_BEAT = 8  # bytes per AXI beat at the default data width
_FIFO_LATENCY = 2  # SyncFIFOBuffered: a beat written in cycle c can be read in c + 2
_R_REGISTER = 1  # read data is registered before it reaches the loaders
_DRAIN_TO_FIFO = DRAIN_LATENCY  # drain issue -> the output FIFO's write
_FLUSH = DRAIN_FLUSH  # drain flush cycles
# first cycle a unit acts: the units' copies of the descriptor hold the layer DESC_LATENCY
# cycles after the launch, and the last of those cycles resets the datapath
_START = 1 + DESC_LATENCY
_TAGS = 16  # bursts a loader may have outstanding (its tag FIFO)


@dataclass(frozen=True)
class PerfConfig:
    """The memory system and clock the engine runs with.

    clock_mhz : engine clock for the fps projection
    ddr_bytes_per_cycle : sustained read bandwidth of the DDR port (8 = one 64-bit beat/cycle)
    ddr_latency : cycles from a read address handshake to its first data beat
    write_latency : cycles from the last write beat to the write response
    """

    clock_mhz: float = DEFAULT_CLOCK_MHZ
    ddr_bytes_per_cycle: float = 8.0
    ddr_latency: int = 30
    write_latency: int = 4


@dataclass(frozen=True)
class BoardMemory:
    """What a board's memory sustains for the engine (``owlet perf --board``).

    name : the ``--board`` name
    description : the memory and its controller
    mb_per_s : sustained bandwidth in MB/s for the engine's access pattern; None: the engine's
        AXI port itself is the limit (one 64-bit beat per engine cycle)
    source : where the figure comes from (measured, or why it is assumed)
    """

    name: str
    description: str
    mb_per_s: float | None
    source: str

    def bytes_per_cycle(self, clock_mhz: float) -> float:
        """Sustained bytes per engine cycle at ``clock_mhz``, capped by the 64-bit port."""
        if self.mb_per_s is None:
            return float(_BEAT)
        return min(float(_BEAT), self.mb_per_s / clock_mhz)


#: The memories of the boards Owlet targets (docs/board.md, docs/performance.md).
BOARD_MEMORY = {m.name: m for m in (
    BoardMemory("ideal", "a 64-bit memory that serves one beat per engine cycle", None,
                "the engine's AXI port width (the simulation's DDR model)"),
    BoardMemory("ulx3s", "ULX3S-85F: 32 MB SDR SDRAM, 16 bit, LiteDRAM GENSDRPHY at 50 MHz", 72.3,
                "measured: the board cosimulation with LiteDRAM's generated core (docs/board.md)"),
    BoardMemory("ecpix5", "ECPIX-5 85F: 512 MB DDR3L, 16 bit, LiteDRAM ECP5DDRPHY at 75 MHz",
                1200.0, "peak of the 128-bit native port at 75 MHz; not measured yet"),
)}


@dataclass
class LayerPerf:
    """The model's numbers for one program layer.

    cycles : predicted engine cycles, start to done (the RTL's ``cycles`` counter)
    macs : useful multiply-accumulates (real channels)
    mac_cycles : cycles the array computes (sum of pass lengths, padded lanes included)
    bytes_read, bytes_written : DDR traffic of the engine
    compute_bound, memory_bound : roofline bounds in cycles (memory: the larger of the read and
        the write channel's transfer time)
    """

    name: str
    cycles: int
    macs: int
    mac_cycles: int
    bytes_read: int
    bytes_written: int
    compute_bound: float
    memory_bound: float

    @property
    def roofline(self) -> float:
        """The roofline bound: the larger of the compute and memory bounds, in cycles."""
        return max(self.compute_bound, self.memory_bound)


def layer_macs(layer: ProgramLayer, out_channels: int | None = None) -> int:
    """Useful MACs of a program layer: O·C·K·K·H·W over the convolution's (un-pooled) map; none
    for an identity layer (a copy that carries a pool, not the network's arithmetic)."""
    if layer.conv_index is None:
        return 0
    c, h, w = layer.in_shape
    o = layer.out_shape[0] if out_channels is None else out_channels
    return o * c * layer.kernel * layer.kernel * h * w


def sequencer_overhead(cfg: EngineConfig, perf: PerfConfig) -> int:
    """Sequencer cycles per layer beyond the engine's own ``cycles`` (``hdl/sequencer.py``).

    The descriptor fetch (read latency, then its beats), the descriptor and start writes and the
    error, status and counter reads on the engine's Wishbone port (three cycles per write, four
    per read: the engine registers the request, a read's group and the ACK; plus the
    sequencer's ``CSR_SLICES`` register stages in front of it), the record burst and its write
    response, two state transitions and the registered start (268 cycles per layer at the
    default latencies, plus one per run).
    """
    beats = cfg.data_width // 32
    desc_beats = -(-DESCRIPTOR_WORDS // beats)
    slice_ = CSR_SLICES * WISHBONE_SLICE_LATENCY
    wishbone = (3 + slice_) * (DESCRIPTOR_WORDS + 1) + (4 + slice_) * (len(COUNTERS) + 2)
    return (perf.ddr_latency + desc_beats + wishbone + RECORD_WORDS // beats
            + perf.write_latency + 3)


def program_cycles(layers: list[LayerPerf], cfg: EngineConfig, perf: PerfConfig) -> int:
    """Predicted cycles of a whole run (the sequencer's CYCLES CSR): the layers, the sequencer's
    overhead per layer, and the cycle that leaves its idle state."""
    return sum(p.cycles for p in layers) + len(layers) * sequencer_overhead(cfg, perf) + 1


def _bursts(addr: int, beats: int, max_burst: int):
    """INCR bursts of at most ``max_burst`` beats that never cross 4 KB (hdl.axi.BurstPlanner)."""
    out = []
    while beats:
        n = min(beats, max_burst, (4096 - addr % 4096) // _BEAT)
        out.append(n)
        addr += n * _BEAT
        beats -= n
    return out


class _Kernel:
    """A tiny discrete-event scheduler: processes are generators that yield either a time (resume
    then) or a predicate (resume when it holds, checked after every step). Times are cycles."""

    def __init__(self):
        self._heap, self._waiting, self._seq, self.now = [], [], 0, 0

    def spawn(self, gen):
        self._push(0, gen)

    def _push(self, t, gen):
        heapq.heappush(self._heap, (t, self._seq, gen))
        self._seq += 1

    def _step(self, gen):
        try:
            req = next(gen)
        except StopIteration:
            return
        if callable(req):
            self._waiting.append((req, gen))
        else:
            self._push(max(req, self.now), gen)

    def run(self):
        while self._heap:
            self.now, _, gen = heapq.heappop(self._heap)
            self._step(gen)
            woke = True
            while woke:
                woke = False
                for entry in self._waiting:
                    if entry[0]():
                        self._waiting.remove(entry)
                        self._step(entry[1])
                        woke = True
                        break


def _known(values, index):
    """Predicate: ``values[index]`` has been computed."""
    return lambda: len(values) > index


def _simulate(d: dict, cfg: EngineConfig, perf: PerfConfig) -> tuple[int, int, int, int]:
    """Replay one descriptor; returns (cycles, mac_cycles, bytes_read, bytes_written)."""
    k3, width, plane = d["kernel3"], d["width"], d["in_plane"]
    kk = 9 if k3 else 1
    p2s1 = d["pool"] == Pool.P2S1.value
    pooled = d["pool"] != Pool.NONE.value
    n_sub = cfg.p_oc // cfg.p_ic
    spacing = _BEAT / min(perf.ddr_bytes_per_cycle, _BEAT)  # cycles per read beat

    # The loop nest, flattened: tiles -> output groups -> input groups -> kernel positions.
    tiles = []
    c0w, c0 = 0, 0
    while c0w < plane:
        c1w = min(c0w + d["tile_pix"] + (width if p2s1 else 0), plane)
        i0w = c0w - width if k3 and c0 else c0w
        i1w = min(c1w + (width if k3 else 0), plane)
        tiles.append((c1w - c0w, i0w, i1w - i0w))
        c0w, c0 = c0w + d["tile_pix"], c0 + d["tile_conv_rows"]
    # Input loads ("chunks": one input group of one tile), grouped into units that hold one half
    # of the buffer (or all of it) until the compute unit releases them: resident, a unit is a
    # tile's chunks, loaded once; streaming, every (tile, og, ig) is a unit of one chunk.
    groups, passes = d["in_groups"], d["og_passes"]
    resident = d["resident"]
    loads, units = [], []
    for _, i0w, beats in tiles:
        for _og in range(1 if resident else passes):
            for ig in range(groups):
                if resident and ig == 0 or not resident:
                    units.append(len(loads))
                loads.append((d["in_addr"] + (ig * plane + i0w) * _BEAT, beats))
    unit_gap = 1 if d["single_region"] else 2  # a unit waits for the release of unit u - gap
    replay = d["weights_resident"]
    # weight beats of a tile, the period of the replayed stream
    total = passes * d["og_weight_beats"] if replay else 1 << 62
    ogs = [(t, og) for t in range(len(tiles)) for og in range(d["og_passes"])]
    passes_per_og = d["in_groups"] * kk

    k = _Kernel()
    slot_full, slot_free = [], []  # per input load
    wbeat_ready = []  # per weight beat: first cycle the shadow register can pop it
    pops = []  # cycle of every weight-FIFO pop
    shadow_valid, pass_start = [], []  # per pass
    bank_full, og_free, drain_start, table_ready = [], [], [], []  # per (tile, og)
    requests = {}  # client -> (request cycle, beats, on_grant)
    grants = {}
    read = {"bytes": 0, "next": 0}
    done = {}

    outstanding = {0: [], 1: []}  # per client: the last-beat cycle of every burst granted

    def grant_wait(client, t, n, kind):
        ends = outstanding[client]
        if len(ends) >= _TAGS:  # the tag FIFO is full until that burst's last beat arrives
            t = max(t, ends[-_TAGS] + _R_REGISTER + 1)
            yield t
        requests[client] = (t, n, kind)
        yield lambda: client in grants
        hs, last_beat = grants.pop(client)
        ends.append(last_beat)
        return hs, last_beat

    def arbiter():
        last = 0
        free = 0
        while True:
            yield lambda: bool(requests)
            t0 = max(free, min(r[0] for r in requests.values()))
            yield t0  # let every process acting in cycle t0 post its request first
            ready = [c for c, r in requests.items() if r[0] <= t0]
            client = next(c for c in ((last + 1) % 2, last) if c in ready)
            _, n, kind = requests.pop(client)
            hs = t0 + 1
            first = max(hs + perf.ddr_latency, read["next"])
            times = [first + int(i * spacing) for i in range(n)]
            read["next"] = first + int(n * spacing)  # the burst's last beat takes its share too
            read["bytes"] += n * _BEAT
            if kind == "weights":
                wbeat_ready.extend(t + _R_REGISTER + WEIGHT_STORE_LATENCY for t in times)
            grants[client] = (hs, times[-1])
            last, free = client, t0 + 2

    def in_loader():
        t, u = _START, -1
        for j, (addr, beats) in enumerate(loads):
            if u + 1 < len(units) and units[u + 1] == j:  # a unit's first chunk claims it
                u += 1
                if u >= unit_gap:
                    yield _known(slot_free, u - unit_gap)
                    t = max(t, slot_free[u - unit_gap])
            yield t
            t += 6  # SLOT (claim), SPAN0, SPAN1, SPAN1B, SPAN2, CALC -> BURST
            for n in _bursts(addr, beats, cfg.max_burst):
                hs, last_beat = yield from grant_wait(0, t, n, "input")
                t = hs + 2  # CALC -> BURST
            # the last burst returns to SLOT through NEXT (as the others through CALC)
            # the chunk count, then the compute unit's registered "input ready" compare
            slot_full.append(last_beat + 2 + _R_REGISTER)

    def w_loader():
        t, taken, credits = _START, 0, cfg.weight_fifo_depth
        woff = 0
        for q, (t_index, og) in enumerate(ogs):
            if og == 0:
                woff = 0
            if q >= 2:
                yield _known(og_free, q - 2)
                t = max(t, og_free[q - 2])
            yield t
            t += 2  # SLOT, PCALC
            param_addr = d["param_addr"] + og * 2 * cfg.p_oc * _BEAT
            for n in _bursts(param_addr, 2 * cfg.p_oc, cfg.max_burst):
                hs, last_beat = yield from grant_wait(1, t, n, "params")
                t = hs + 2  # PCALC or WCALC
            table_ready.append(last_beat + 1 + _R_REGISTER)  # the slot's "table whole" flag
            if replay and t_index:
                continue  # PARAMS returns to SLOT through NEXT: the store replays the weights
            for n in _bursts(d["w_addr"] + woff * _BEAT, d["og_weight_beats"], cfg.max_burst):
                need = taken + n - credits  # pops needed before this burst fits the FIFO
                if need > 0 and not replay:
                    yield _known(pops, need - 1)
                    t = max(t, pops[need - 1] + 1)
                hs, _ = yield from grant_wait(1, t, n, "weights")
                taken += n
                woff += n
                t = hs + 2  # WCALC
            # the last burst returns to SLOT through NEXT (as the others through WCALC)

    def shadow():
        for p in range(len(ogs) * passes_per_og):
            start = _START
            if p:
                yield _known(pass_start, p - 1)
                # the shadow refills from the cycle the MAC array takes the previous pass's
                # weights, with its first pixel at the multipliers: A, the buffer read, X, the
                # operand copies
                start = pass_start[p - 1] + 2 + IBUF_READ_LATENCY + OPERAND_LATENCY
            prev = start - 1
            for b in range(p * cfg.p_oc, (p + 1) * cfg.p_oc):
                b %= total  # replayed: the first tile's beats, already in the store
                yield _known(wbeat_ready, b)
                prev = max(prev + 1, wbeat_ready[b])
                pops.append(prev)
            shadow_valid.append(prev + 1)

    def compute():
        end, mac_cycles, p = _START, 0, 0
        for q, (tile, og) in enumerate(ogs):
            npix = tiles[tile][0]
            rlen = max(npix, cfg.min_pass)
            for ig in range(groups):
                j = (tile * groups + ig) if resident else q * groups + ig
                yield _known(slot_full, j)
                for kpos in range(kk):
                    yield _known(shadow_valid, p)
                    t = max(end, slot_full[j], shadow_valid[p])
                    if ig == 0 and kpos == 0:  # the bank, and its table for the bias
                        yield _known(table_ready, q)
                        t = max(t, table_ready[q])
                        if q >= 2:
                            yield _known(og_free, q - 2)
                            t = max(t, og_free[q - 2])
                    yield t
                    pass_start.append(t)
                    end = t + rlen
                    mac_cycles += rlen
                    p += 1
                if not resident or (og == passes - 1 and ig == groups - 1):
                    slot_free.append(end + 1)  # the unit's last pass released it
            # pipeline A, the registered buffer address, the buffer read and its registered bank
            # mux, X, the MAC array, S, W: the bank is FULL after the last write
            bank_full.append(end - rlen + npix + 6 + mac_latency(cfg.p_ic))
        done["mac_cycles"] = mac_cycles

    out_w, out_h = d["out_width"], d["out_height"]
    # Beats the drain emits and the writer writes per output pixel: an int32 pixel is four, and
    # so is an upsampled one (its 2x2 block: each row drained twice, each pixel twice).
    bpp = 4 if d["out_int32"] or d["upsample"] else 1
    cpb = 4 if pooled else 1  # drain cycles per output beat

    def rows_of(tile):
        return min(d["tile_rows"], out_h - tile * d["tile_rows"])

    def active_subs(og):
        return min(n_sub, d["out_groups"] - og * n_sub)

    def drain():
        ready = 0
        for q, (tile, og) in enumerate(ogs):
            yield _known(bank_full, q)
            w = max(bank_full[q], ready) + 1  # PREP: the walker's first bounds registered
            drain_start.append(w)
            n = active_subs(og)
            issue = n * rows_of(tile) * out_w * bpp * cpb
            ready = w + issue + _FLUSH + 1  # the walk ends with the last real sub-group
            og_free.append(ready)

    def writer():
        t, last_w, written = _START + 1, 0, 0  # RUN waits a cycle for its registered tests
        for q, (tile, og) in enumerate(ogs):
            beats = rows_of(tile) * out_w * bpp
            p0b = tile * d["tile_rows"] * out_w * bpp
            for sub in range(n_sub):
                group = og * n_sub + sub
                if group >= d["out_groups"]:
                    t += 3  # RUN -> NEXT -> SETTLE
                    continue
                t += 2  # RUN, PREP
                yield _known(drain_start, q)
                base = drain_start[q] + 1 + sub * beats * cpb + _DRAIN_TO_FIFO + _FIFO_LATENCY
                addr = d["out_addr"] + (group * d["out_plane"] + p0b) * _BEAT
                off = 0
                for n in _bursts(addr, beats, cfg.max_burst):
                    off += n
                    # DATA, then ISSUE until the whole burst is in the FIFO
                    t = max(t + 1, base + off * cpb - 1)
                    t += 2 + n  # ISSUE, ADDR, BURST
                    last_w = t - 1
                    written += n * _BEAT
                t += 3  # DATA (nothing left), NEXT, SETTLE
        # Done when the writer is idle (DONE state after RUN) and the last response is in.
        done["cycles"] = max(t, last_w + perf.write_latency)
        done["written"] = written

    for proc in (arbiter(), in_loader(), w_loader(), shadow(), compute(), drain(), writer()):
        k.spawn(proc)
    k.run()
    return done["cycles"], done["mac_cycles"], read["bytes"], done["written"]


def minimum_traffic(layer: ProgramLayer) -> tuple[int, int]:
    """The least DDR traffic a layer can have: (bytes read, bytes written).

    Its weights and requantization table (16 bytes per output channel) and its input map read
    once, its output map written once, all with real channel counts (no padding to the lane
    widths). A frame's minimum is the sum over its layers.
    """
    c, h, w = layer.in_shape
    o = layer.out_shape[0]
    itemsize = 4 if layer.out_int32 else 1
    read = o * c * layer.kernel * layer.kernel + 16 * o + c * h * w
    written = itemsize * layer.out_shape[0] * layer.out_shape[1] * layer.out_shape[2]
    return read, written


def predict_program(program: Program, perf: PerfConfig | None = None) -> list[LayerPerf]:
    """Model every layer of ``program`` on its engine configuration.

    Returns
    -------
    list of LayerPerf, one per program layer, in execution order.
    """
    perf = perf or PerfConfig()
    cfg = program.config
    peak = cfg.p_ic * cfg.p_oc
    out = []
    for layer, d in zip(program.layers, descriptors(program), strict=True):
        cycles, mac_cycles, rd, wr = _simulate(d, cfg, perf)
        macs = layer_macs(layer)
        out.append(LayerPerf(layer.covers, cycles, macs, mac_cycles, rd, wr, macs / peak,
                             max(rd / perf.ddr_bytes_per_cycle, wr / _BEAT)))
    return out


def predict_network(qnet, cfg: EngineConfig | None = None,
                    perf: PerfConfig | None = None) -> list[LayerPerf]:
    """Compile ``qnet`` (a :class:`model.quant.QuantizedNetwork`) for ``cfg`` and model it."""
    from firmware.compiler import compile_network

    return predict_program(compile_network(qnet, cfg or EngineConfig()), perf)
