"""The echo system with N echo clients, all mapping the rx region directly (no copiers).

Client i is ``client{i}`` at 10.0.0.{2+i}, MAC 02:00:00:00:00:{2+i:02x}; the TAP ``sddf0``'s host
side is 10.0.0.1/24. Otherwise wired like the bundled ``echo`` system (apps/systems/echo.py):
TAP driver, net_virt_rx, net_virt_tx, a timer driver the clients use for TCP timers.

``sddf run`` calls ``system()`` without arguments, so the client count comes from the
environment when not given: ``ECHO_CLIENTS=4 sddf run bench/systems/echo_n.py``.
"""
from __future__ import annotations

import os

from sddf.classes import Sddf
from sddf.system import ProtectionDomain, SystemDescription

MAX_CLIENTS = 16
CLIENTS_ENV = "ECHO_CLIENTS"


def client_ip(i: int) -> str:
    return f"10.0.0.{2 + i}"


def client_mac(i: int) -> bytes:
    return bytes([2, 0, 0, 0, 0, 2 + i])


def system(n: int | None = None, tap: str = "sddf0") -> SystemDescription:
    """An echo system with ``n`` clients (default: $ECHO_CLIENTS, else 1)."""
    n = int(os.environ.get(CLIENTS_ENV, "1")) if n is None else n
    if not 1 <= n <= MAX_CLIENTS:
        raise ValueError(f"echo_n: {n} clients: choose 1..{MAX_CLIENTS}")
    sdf = SystemDescription(f"echo_{n}c")
    timer_driver = sdf.add_pd(ProtectionDomain("timer", "sddf.drivers.timer.timerfd:TimerDriver", priority=150))
    driver = sdf.add_pd(ProtectionDomain("eth_driver", "sddf.drivers.net.tap:TapDriver", priority=110))
    virt_rx = sdf.add_pd(ProtectionDomain("net_virt_rx", "sddf.virtualisers.net.rx:NetVirtRx", priority=108))
    virt_tx = sdf.add_pd(ProtectionDomain("net_virt_tx", "sddf.virtualisers.net.tx:NetVirtTx", priority=109))
    net = Sddf.Net(sdf, driver, virt_tx, virt_rx, tap=tap)
    timer = Sddf.Timer(sdf, timer_driver)
    for i in range(n):
        client = sdf.add_pd(ProtectionDomain(f"client{i}", "sddf.apps.echo_server:EchoServer", priority=100))
        net.add_client(client, client_mac(i), client_ip(i))
        timer.add_client(client)
    net.connect()
    timer.connect()
    return sdf
