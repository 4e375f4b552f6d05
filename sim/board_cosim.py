"""The ULX3S board cosimulation, host side: the simulated board behind a TCP socket, driven by
:class:`firmware.driver.BoardDriver` over :class:`firmware.link.Link` exactly as a real board is
driven over USB-serial.

:class:`BoardSim` builds :class:`sim.board_top.BoardSimTop` (LiteDRAM's ``--sim`` core, the
bridge, the glue, the sequencer; Verilator, cached) and runs :mod:`sim.board_cocotb` in a
background thread; that cocotb test listens on 127.0.0.1, pumps each connection's bytes into
the bridge's byte stream, a byte per cycle, and serves one connection after another until
:meth:`BoardSim.__exit__` stops it. Its control port arms faults on the board's side of the
socket (:meth:`BoardSim.arm`, :meth:`BoardSim.hold`). ``owlet run --sim`` starts one;
``python -m sim.board_cosim`` starts one and waits, for ``owlet run --sim-port PORT``.

:func:`run_board_cosim` is the whole flow on the small default model with every layer's output
read back and compared with the golden model; ``docs/board.md`` ("Board cosimulation") has the
measured numbers.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from firmware.link import Link, TcpTransport
from hdl.descriptor import EngineConfig
from sim.board_top import TOPLEVEL, build_board
from sim.runner import run_payload

__all__ = ["BoardCosim", "BoardSim", "run_board_cosim"]


class BoardSim:
    """The simulated ULX3S board behind a socket (context manager; see the module docstring).

    Parameters
    ----------
    cfg : EngineConfig, optional
    engine_mhz : float
        The engine clock of the simulation (the LiteDRAM and bridge clock is 50 MHz, as on the
        board).
    run_name : str
    idle_timeout_s : float
        The simulation ends when no host has been connected (or a connected host has sent
        nothing) for this many wall seconds.
    start_timeout_s : float
        How long the build and the simulator's start may take.

    Attributes
    ----------
    port : int
        The host port on 127.0.0.1 (after ``__enter__``).
    results : list
        One dict per connection served (simulated time, byte counts), after ``__exit__``.
    """

    def __init__(self, cfg=None, engine_mhz=100.0, *, run_name="board", idle_timeout_s=600.0,
                 start_timeout_s=600.0):
        self.cfg, self.engine_mhz, self.run_name = cfg or EngineConfig(), engine_mhz, run_name
        self.idle_timeout_s, self.start_timeout_s = idle_timeout_s, start_timeout_s
        self.port = self.control_port = None
        self.results, self.ok, self.error = [], None, None

    def __enter__(self):
        build_dir, _ = build_board(self.cfg, self.engine_mhz)
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        port_file = Path(build_dir) / "runs" / f"{self.run_name}-{worker}.port"
        port_file.parent.mkdir(parents=True, exist_ok=True)
        port_file.unlink(missing_ok=True)
        payload = {"port_file": str(port_file), "sys_period_ns": 20,
                   "eng_period_ns": round(1000 / self.engine_mhz, 3),
                   "idle_timeout_s": self.idle_timeout_s}

        def simulate():
            try:
                self.results, self.ok = run_payload(build_dir, TOPLEVEL, "sim.board_cocotb",
                                                    self.run_name, payload)
            except Exception as exc:  # reported by __exit__
                self.error = exc

        self.thread = threading.Thread(target=simulate, name="board-cosim", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not (port_file.exists() and len(port_file.read_text().split()) == 2):
            if not self.thread.is_alive():
                why = self.error or f"see the cocotb log in {port_file.parent}"
                raise RuntimeError(f"board cosim: the simulator ended before listening ({why})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"board cosim: the simulator did not listen within "
                                   f"{self.start_timeout_s:.0f} s (port file {port_file})")
            time.sleep(0.05)
        self.port, self.control_port = map(int, port_file.read_text().split())
        return self

    def link(self, timeout=60.0, retries=3):
        """A :class:`firmware.link.Link` on a new connection to the simulated board
        (simulation is slower than the wire: ``timeout`` is wall seconds per frame)."""
        return Link(TcpTransport(self.port), timeout=timeout, retries=retries)

    # -- control port -------------------------------------------------------------------------
    def control(self, op, timeout_s=60.0, **args):
        """Send one control command (:mod:`sim.board_cocotb`) and return its answer."""
        with socket.create_connection(("127.0.0.1", self.control_port), timeout=timeout_s) as s:
            s.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
            reply = b""
            deadline = time.monotonic() + timeout_s
            while not reply.endswith(b"\n"):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"board cosim: no answer to control command {op!r} "
                                       f"within {timeout_s:.0f} s")
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError(f"board cosim: control port closed during {op!r}")
                reply += chunk
        answer = json.loads(reply)
        if not answer["ok"]:
            raise ValueError(f"board cosim: control command refused: {answer['error']}")
        return answer

    def arm(self, kind, **spec):
        """Arm a fault: ``kind`` ``corrupt_request``, ``corrupt_answer`` or ``drop_answer``,
        matching ``cmd`` (name or number) and ``addr``, ``times`` frames."""
        self.control("arm", kind=kind, **spec)

    def hold(self, layer):
        """Hold the sequencer's reads while it is at ``layer``: that layer never finishes."""
        self.control("hold", layer=layer)

    def release(self):
        """End :meth:`hold`: the held layer goes on."""
        self.control("release")

    def fired(self):
        """The faults applied so far: dicts with ``kind``, ``cmd`` (name), ``addr``."""
        return self.control("fired")["fired"]

    def __exit__(self, *exc):
        if self.thread.is_alive():
            try:
                self.control("stop", timeout_s=30.0)
            except OSError:
                pass  # the simulator has just ended by itself: join below reports it
        self.thread.join(timeout=120.0)
        if self.thread.is_alive():
            raise TimeoutError("board cosim: the simulator did not end within 120 s after "
                               "the stop command")
        if self.error is not None and exc[0] is None:
            raise self.error


@dataclass
class BoardCosim:
    """:func:`run_board_cosim`'s result: the :class:`firmware.driver.Frame`, the mismatch
    ``messages`` (empty: bit-exact), the simulation's own report ``sim`` (``sim_ns``,
    ``sys_cycles``, byte counts, ``wall_s``), the ``program``, the golden outputs per layer
    (``expected``) and the number of layers run (``count``)."""

    frame: object
    messages: list
    sim: dict
    program: object
    expected: list
    count: int

    def bandwidth(self, engine_mhz=100.0):
        """Per layer run: (bytes read + written, engine cycles, MB/s at ``engine_mhz``), from
        the engine's own counters."""
        rows = []
        for i in range(self.count):
            c = self.frame.counters(i)
            moved = c["bytes_read"] + c["bytes_written"]
            rows.append((moved, c["cycles"], moved / c["cycles"] * engine_mhz))
        return rows


def run_board_cosim(count=None, *, cfg=None, engine_mhz=100.0, run_name="board", say=print,
                    timeout_s=1800.0):
    """The whole flow on the small default model (``model/zoo/owlet-tiny``, ``shapes.png``):
    compile without buffer reuse (every layer's output stays in DRAM to be read back), simulate,
    drive it with :class:`firmware.driver.BoardDriver`, compare with the golden model.

    Returns
    -------
    BoardCosim
    """
    from firmware.compiler import compile_network
    from firmware.driver import BoardDriver, check_outputs, expected_outputs
    from model.golden import quantize_input
    from model.pipeline import prepare_input
    from model.quant import QuantizedNetwork
    from model.zoo import DEFAULT_IMAGE, DEFAULT_QMODEL

    qnet = QuantizedNetwork.load(DEFAULT_QMODEL)
    x_q = quantize_input(prepare_input(DEFAULT_IMAGE, qnet.input_shape)[0])
    with BoardSim(cfg, engine_mhz, run_name=run_name) as board:
        say(f"board: simulated ULX3S on 127.0.0.1:{board.port}")
        with board.link() as link:
            driver = BoardDriver(link, "ulx3s", sim_core=True, timeout_s=timeout_s, say=say)
            driver.connect()
            program = compile_network(qnet, driver.cfg, reuse=False,
                                      memory_size=driver.memory_size)
            count = len(program.layers) if count is None else count
            driver.init_dram()
            driver.load(program)
            frame = driver.run(program, x_q, count=count, read_all=True)
    expected = expected_outputs(qnet, program, x_q)
    return BoardCosim(frame, check_outputs(program, expected, frame.mem, count),
                      board.results[0] if board.results else {}, program, expected, count)


if __name__ == "__main__":
    with BoardSim() as sim:
        print(f"board cosim: simulated ULX3S on 127.0.0.1:{sim.port} (owlet run --sim-port "
              f"{sim.port} ...); ends after {sim.idle_timeout_s:.0f} s without a host, or Ctrl-C",
              flush=True)
        sim.thread.join()
