"""The serial benchmark's system: the pty driver on a tty the benchmark made, virt_tx, virt_rx and
one client: ``flood`` (bench.serial_components:Flood, $SERIAL_BENCH_BYTES bytes) or ``shell``
(the shell, which echoes what is typed). The device is $SERIAL_BENCH_DEVICE (``serial:tty=PATH``)."""
from __future__ import annotations

import os

from sddf.classes import Sddf
from sddf.system import ProtectionDomain, SystemDescription

DEVICE_ENV, CLIENT_ENV, BYTES_ENV = "SERIAL_BENCH_DEVICE", "SERIAL_BENCH_CLIENT", "SERIAL_BENCH_BYTES"
PROGRAMS = {"flood": "bench.serial_components:Flood", "shell": "sddf.apps.serial.shell:Shell"}


def system() -> SystemDescription:
    client_kind = os.environ.get(CLIENT_ENV, "flood")
    sdf = SystemDescription("serial_bench")
    uart = sdf.add_pd(ProtectionDomain("uart", "sddf.drivers.serial.pty:PtySerialDriver", priority=140))
    virt_tx = sdf.add_pd(ProtectionDomain("serial_virt_tx", "sddf.virtualisers.serial.tx:SerialVirtTx", priority=130))
    virt_rx = sdf.add_pd(ProtectionDomain("serial_virt_rx", "sddf.virtualisers.serial.rx:SerialVirtRx", priority=130))
    serial = Sddf.Serial(sdf, uart, virt_tx, virt_rx, enable_color=False, device=os.environ[DEVICE_ENV])
    client = sdf.add_pd(ProtectionDomain(client_kind, PROGRAMS[client_kind], priority=100))
    serial.add_client(client)
    if client_kind == "flood":
        client.config["total"] = int(os.environ.get(BYTES_ENV, 8 << 20))
    serial.connect()
    return sdf
