"""The serial example: two shells sharing one console through sDDF's serial virtualisers.

    sddf run serial                 # the console is this terminal (raw mode while it runs)

uart (the pty/terminal driver) → serial_virt_tx ← shell0, shell1 (each in its own colour);
keys → uart → serial_virt_rx → the current shell (shell0 at start). Ctrl-\\ 1 Enter switches
input to shell1, Ctrl-\\ 0 Enter back; Ctrl-\\ twice types a Ctrl-\\. Each shell answers help,
echo, uptime (through the timer driver), counters and clients. ``SDDF_SERIAL_DEVICE=serial:pty``
gives a new pty instead (its path is printed: attach with picocom or screen).
"""
from __future__ import annotations

import os

from sddf.classes import Sddf
from sddf.system import ProtectionDomain, SystemDescription

DEVICE_ENV = "SDDF_SERIAL_DEVICE"
SHELLS = ("shell0", "shell1")


def system(device: str | None = None) -> SystemDescription:
    sdf = SystemDescription("serial")
    timer_driver = sdf.add_pd(ProtectionDomain("timer", "sddf.drivers.timer.timerfd:TimerDriver", priority=150))
    uart = sdf.add_pd(ProtectionDomain("uart", "sddf.drivers.serial.pty:PtySerialDriver", priority=140))
    virt_tx = sdf.add_pd(ProtectionDomain("serial_virt_tx", "sddf.virtualisers.serial.tx:SerialVirtTx", priority=130))
    virt_rx = sdf.add_pd(ProtectionDomain("serial_virt_rx", "sddf.virtualisers.serial.rx:SerialVirtRx", priority=130))
    serial = Sddf.Serial(sdf, uart, virt_tx, virt_rx,
                         device=device or os.environ.get(DEVICE_ENV, "serial:console"))
    timer = Sddf.Timer(sdf, timer_driver)
    for name in SHELLS:
        shell = sdf.add_pd(ProtectionDomain(name, "sddf.apps.serial.shell:Shell", priority=100))
        serial.add_client(shell)
        timer.add_client(shell)
        shell.config["clients"] = list(SHELLS)
    serial.connect()
    timer.connect()
    return sdf
