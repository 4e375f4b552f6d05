"""cocotb side of the board cosimulation: clocks, reset and a byte pump between a TCP socket on
127.0.0.1 and the bridge's byte streams of :class:`sim.board_top.BoardSimTop`.

The test :func:`serve` listens on a free port, writes it to the payload's ``port_file`` and
serves one host connection: host bytes go into ``host_rx_*`` one per ``clk_sys`` cycle, answer
bytes from ``host_tx_*`` go back to the socket as they come. The host is anything speaking the
bridge protocol over TCP (``firmware.link.Link`` with ``TcpTransport``): the simulated board
sees exactly what the host sends, no memory is preloaded behind the bridge. The test ends when
the host closes the connection; its results are the simulated time and the byte counts.

Timing of the pump (Ref: :class:`sim.board_top.BoardSimTop`): at each falling edge it samples
``host_tx_valid``/``host_tx_data`` (taken at the next rising edge: ``ready`` is always 1) and
offers the next host byte if ``host_rx_rdy`` (a function of registers only) is high, so the
next rising edge takes it. With nothing to send and no answer byte pending it sleeps
``poll_ns`` of simulated time (or until ``host_tx_valid`` rises) between non-blocking socket
reads, so the simulation runs at full speed while the host waits.
"""

import socket
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge, Timer
from cocotb.utils import get_sim_time

from sim.runner import load_payload, write_results

__all__ = ["serve"]


class _Host:
    """The accepted connection, non-blocking."""

    def __init__(self, conn):
        self.conn = conn
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.closed = False

    def recv(self):
        """Bytes available now (empty if none); sets ``closed`` when the host has gone."""
        try:
            data = self.conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            data = b""
        if not data:
            self.closed = True
        return data

    def send(self, data):
        self.conn.setblocking(True)
        try:
            self.conn.sendall(data)
        except OSError:
            self.closed = True
        finally:
            self.conn.setblocking(False)


def _accept(payload):
    """Listen on 127.0.0.1, publish the port, accept one host within ``accept_timeout_s``."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", payload.get("port", 0)))
    server.listen(1)
    port = server.getsockname()[1]
    with open(payload["port_file"], "w") as f:
        f.write(str(port))
    server.settimeout(payload.get("accept_timeout_s", 120.0))
    try:
        conn, _ = server.accept()
    except TimeoutError:
        raise TimeoutError(f"board cosim: no host connected to 127.0.0.1:{port} within "
                           f"{server.gettimeout():.0f} s") from None
    finally:
        server.close()
    return _Host(conn)


@cocotb.test()
async def serve(dut):
    """Serve one host connection on the simulated board (see the module docstring)."""
    payload = load_payload()
    sys_ns, eng_ns = payload["sys_period_ns"], payload["eng_period_ns"]
    poll_ns = payload.get("poll_ns", 2000)
    idle_limit = payload.get("idle_timeout_s", 600.0)
    Clock(dut.clk_sys, sys_ns, unit="ns", impl="gpi").start()
    Clock(dut.clk_eng, eng_ns, unit="ns", impl="gpi").start()
    dut.host_rx_valid.value = 0
    dut.host_rx_data.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk_sys, 8)
    dut.rst.value = 0
    await ClockCycles(dut.clk_sys, 8)

    host = _accept(payload)
    t0 = time.perf_counter()
    start_ns = get_sim_time("ns")
    clk = dut.clk_sys
    rx, tx = bytearray(), bytearray()
    driving = False
    stats = {"host_bytes": 0, "answer_bytes": 0}
    last_traffic = time.monotonic()
    while not host.closed:
        if not driving and not rx and not int(dut.host_tx_valid.value):
            data = host.recv()
            if data:
                rx += data
                stats["host_bytes"] += len(data)
                last_traffic = time.monotonic()
            elif time.monotonic() - last_traffic > idle_limit:
                raise TimeoutError(f"board cosim: the host sent nothing for {idle_limit:.0f} s "
                                   "(wall) and did not close the connection")
            else:
                await First(Timer(poll_ns, unit="ns"), RisingEdge(dut.host_tx_valid))
            continue
        await FallingEdge(clk)
        if int(dut.host_tx_valid.value):
            tx.append(int(dut.host_tx_data.value))
        elif tx:  # the end of a run of answer bytes: hand them over
            host.send(bytes(tx))
            stats["answer_bytes"] += len(tx)
            tx.clear()
            last_traffic = time.monotonic()
        if rx and int(dut.host_rx_rdy.value):
            dut.host_rx_data.value = rx.pop(0)
            dut.host_rx_valid.value = 1
            driving = True
        else:
            dut.host_rx_valid.value = 0
            driving = False
    dut.host_rx_valid.value = 0
    host.conn.close()
    sim_ns = get_sim_time("ns") - start_ns
    write_results([{**stats, "sim_ns": sim_ns, "sys_cycles": int(sim_ns // sys_ns),
                    "wall_s": time.perf_counter() - t0}])
