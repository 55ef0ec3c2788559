"""The echo system with N echo clients, each direct (mapping the rx region) or behind a copier.

Client i is ``client{i}`` at 10.0.0.{2+i}, MAC 02:00:00:00:00:{2+i:02x}; the TAP ``sddf0``'s host
side is 10.0.0.1/24. Otherwise wired like the bundled ``echo`` system (apps/systems/echo.py):
TAP driver, net_virt_rx, net_virt_tx, a timer driver the clients use for TCP timers.

What varies (``system()``'s arguments; ``sddf run`` calls it without arguments, so each comes
from the environment when not given):

* ``n``       clients, 1..16                                         ($ECHO_CLIENTS, default 1)
* ``client``  ``app``: the echo server answering UDP echo as an application over the stack's
              UDP events (``EchoServer``, like sDDF's echo server over lwIP); ``reflector``: the
              stack reflects UDP echo itself, no application (``InStackEchoServer``)
                                                                     ($ECHO_CLIENT, default app)
* ``copiers`` every client behind a copier (sDDF's own echo example), else all direct
                                                                     ($ECHO_COPIERS=1, default 0)
* ``batch``   descriptors every net component moves per pass before it notifies and goes on;
              the queue capacity (512) makes passes uncapped         ($ECHO_BATCH, default 64)
* ``restart`` every PD restarts when it faults, up to 10 000 times a minute (bench/soak.py kills
              them at random), else the default: a fault stops the system
                                                                     ($ECHO_RESTART=1, default 0)

``ECHO_CLIENTS=2 ECHO_COPIERS=1 sddf run bench/systems/echo_n.py``
"""
from __future__ import annotations

import os

from sddf.classes import Sddf
from sddf.net.config import BATCH
from sddf.system import ProtectionDomain, SystemDescription

MAX_CLIENTS = 16
CAPACITY = 512  # descriptors per net queue (Sddf.Net's default)
CLIENTS_ENV, CLIENT_ENV, COPIERS_ENV, BATCH_ENV = "ECHO_CLIENTS", "ECHO_CLIENT", "ECHO_COPIERS", "ECHO_BATCH"
RESTART_ENV = "ECHO_RESTART"
SOAK_MAX_RESTARTS, SOAK_RESTART_WINDOW_S = 10_000, 60.0  # with ``restart``: a soak never runs out
PROGRAMS = {"app": "sddf.apps.echo_server:EchoServer", "reflector": "sddf.apps.echo_server:InStackEchoServer"}


def client_ip(i: int) -> str:
    return f"10.0.0.{2 + i}"


def client_mac(i: int) -> bytes:
    return bytes([2, 0, 0, 0, 0, 2 + i])


def env(n: int | None = None, client: str | None = None, copiers: bool | None = None,
        batch: int | None = None, restart: bool | None = None) -> dict[str, str]:
    """The environment that makes ``system()`` (run by ``sddf run``) build this variant."""
    given = {CLIENTS_ENV: n, CLIENT_ENV: client, COPIERS_ENV: None if copiers is None else int(copiers),
             BATCH_ENV: batch, RESTART_ENV: None if restart is None else int(restart)}
    return {name: str(value) for name, value in given.items() if value is not None}


def system(n: int | None = None, tap: str = "sddf0", client: str | None = None, copiers: bool | None = None,
           batch: int | None = None, restart: bool | None = None) -> SystemDescription:
    """An echo system of ``n`` ``client`` programs (``app``/``reflector``), all behind copiers or all
    direct, every net component moving at most ``batch`` descriptors per pass, every PD restarted
    when it faults if ``restart``; unset → environment."""
    get = os.environ.get
    n = int(get(CLIENTS_ENV, "1")) if n is None else n
    client = get(CLIENT_ENV, "app") if client is None else client
    copiers = get(COPIERS_ENV, "0") not in ("", "0") if copiers is None else copiers
    batch = int(get(BATCH_ENV, str(BATCH))) if batch is None else batch
    restart = get(RESTART_ENV, "0") not in ("", "0") if restart is None else restart
    if not 1 <= n <= MAX_CLIENTS:
        raise ValueError(f"echo_n: {n} clients: choose 1..{MAX_CLIENTS}")
    if client not in PROGRAMS:
        raise ValueError(f"echo_n: client {client!r}: choose {' or '.join(PROGRAMS)}")
    if not 1 <= batch <= CAPACITY:
        raise ValueError(f"echo_n: batch {batch}: choose 1..{CAPACITY}")
    sdf = SystemDescription(f"echo_{n}c")
    timer_driver = sdf.add_pd(ProtectionDomain("timer", "sddf.drivers.timer.timerfd:TimerDriver", priority=150))
    driver = sdf.add_pd(ProtectionDomain("eth_driver", "sddf.drivers.net.tap:TapDriver", priority=110))
    virt_rx = sdf.add_pd(ProtectionDomain("net_virt_rx", "sddf.virtualisers.net.rx:NetVirtRx", priority=108))
    virt_tx = sdf.add_pd(ProtectionDomain("net_virt_tx", "sddf.virtualisers.net.tx:NetVirtTx", priority=109))
    net = Sddf.Net(sdf, driver, virt_tx, virt_rx, tap=tap, capacity=CAPACITY, batch=batch)
    timer = Sddf.Timer(sdf, timer_driver)
    for i in range(n):
        pd = sdf.add_pd(ProtectionDomain(f"client{i}", PROGRAMS[client], priority=100))
        if copiers:
            copier = sdf.add_pd(ProtectionDomain(f"client{i}_copier", "sddf.virtualisers.net.copy:NetCopier",
                                                 priority=105))
            net.add_client_with_copier(pd, copier, client_mac(i), client_ip(i))
        else:
            net.add_client(pd, client_mac(i), client_ip(i))
        timer.add_client(pd)
    net.connect()
    timer.connect()
    if restart:
        for pd in sdf.pds:
            pd.fault_policy, pd.max_restarts, pd.restart_window_s = "restart", SOAK_MAX_RESTARTS, SOAK_RESTART_WINDOW_S
    return sdf
