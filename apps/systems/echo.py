"""sDDF's echo-server system on host processes: TAP driver → virt_rx → (copier →) clients → virt_tx.

Two echo clients answer ping, UDP echo (1235) and TCP echo (1236): client0 at 10.0.0.2 maps the
shared rx region read-only, client1 at 10.0.0.3 sits behind a copier. The TAP's host side is
10.0.0.1/24. Any PD that faults (the driver, a virtualiser, a copier, a client) is restarted; the
rest of the system runs on, and no buffer is lost (each PD's ledger, sddf.ledger). TAP devices need
CAP_NET_ADMIN: run it with `sddf run echo --netns`. The clients' log lines go through the serial
console (uart ← serial_virt_tx ← client0, client1), as a LionsOS system's do: on `sddf run`'s stdout.
"""
from sddf.classes import Sddf
from sddf.system import ProtectionDomain, SystemDescription

# the NIC interrupt for the Microkit export: an example board number (set your board's)
NIC_IRQ_NUMBER = 79
RESTARTS = 5  # a faulting PD is restarted (with backoff) this often within a minute before the system stops
CLIENTS = (("client0", bytes.fromhex("020000000002"), "10.0.0.2", False),
           ("client1", bytes.fromhex("020000000003"), "10.0.0.3", True))


def system(tap: str = "sddf0") -> SystemDescription:
    sdf = SystemDescription("echo")
    def pd(name: str, program: str, priority: int) -> ProtectionDomain:
        return sdf.add_pd(ProtectionDomain(name, program, priority=priority, fault_policy="restart",
                                           max_restarts=RESTARTS))
    timer_driver = pd("timer", "sddf.drivers.timer.timerfd:TimerDriver", 150)
    driver = pd("eth_driver", "sddf.drivers.net.tap:TapDriver", 110)
    virt_rx = pd("net_virt_rx", "sddf.virtualisers.net.rx:NetVirtRx", 108)
    virt_tx = pd("net_virt_tx", "sddf.virtualisers.net.tx:NetVirtTx", 109)
    net = Sddf.Net(sdf, driver, virt_tx, virt_rx, tap=tap, irq_number=NIC_IRQ_NUMBER)
    timer = Sddf.Timer(sdf, timer_driver)
    serial = Sddf.Serial(sdf, pd("uart", "sddf.drivers.serial.pty:PtySerialDriver", 100),
                         pd("serial_virt_tx", "sddf.virtualisers.serial.tx:SerialVirtTx", 99))
    for name, mac, ip, copied in CLIENTS:
        client = pd(name, "sddf.apps.echo_server:EchoServer", 100)
        if copied:
            copier = pd(f"{name}_copier", "sddf.virtualisers.net.copy:NetCopier", 105)
            net.add_client_with_copier(client, copier, mac, ip)
        else:
            net.add_client(client, mac, ip)
        timer.add_client(client)
        serial.add_client(client)
    net.connect()
    timer.connect()
    serial.connect()
    return sdf
