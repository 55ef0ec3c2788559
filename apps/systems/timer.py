"""The timer example: a timerfd driver and two clients that set timeouts over PPC."""
from sddf.classes import Sddf
from sddf.system import ProtectionDomain, SystemDescription


def system() -> SystemDescription:
    sdf = SystemDescription("timer")
    driver = sdf.add_pd(ProtectionDomain("timer_driver", "sddf.drivers.timer.timerfd:TimerDriver",
                                         priority=150))
    timer = Sddf.Timer(sdf, driver)
    for i, timeouts_ms in enumerate(([5, 20, 50], [1, 2, 3, 7, 100]), start=1):
        client = sdf.add_pd(ProtectionDomain(f"client{i}", "sddf.apps.timer_client:TimerClient",
                                             priority=100))
        timer.add_client(client, timeouts_ns=[ms * 1_000_000 for ms in timeouts_ms])
    timer.connect()
    return sdf
