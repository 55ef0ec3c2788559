"""sdfgen-style helpers that wire drivers, virtualisers and clients (``Sddf.Timer``, …)."""
from __future__ import annotations

from dataclasses import asdict

from sddf.config import TimerClientConfig, TimerDriverConfig
from sddf.system import Channel, Irq, ProtectionDomain, SystemDescription


class Timer:
    """A timer driver on a host timerfd and its clients (each calls it by PPC)."""

    def __init__(self, sdf: SystemDescription, driver: ProtectionDomain, source: str = "timerfd") -> None:
        self.sdf = sdf
        self.driver = driver
        self.source = source
        self.clients: list[tuple[ProtectionDomain, dict]] = []

    def add_client(self, client: ProtectionDomain, **options: object) -> None:
        """Add a client; ``options`` go into its TimerClientConfig (e.g. timeouts_ns, rounds)."""
        self.clients.append((client, options))

    def connect(self) -> None:
        irq = self.sdf.add_irq(Irq(self.driver, self.source))
        channels = []
        for client, options in self.clients:
            ch = self.sdf.add_channel(Channel(client, self.driver, pp_a=True))
            channels.append(ch.pd_b_id)
            client.config.update(asdict(TimerClientConfig(timer=ch.pd_a_id, **options)))
        self.driver.config.update(asdict(TimerDriverConfig(irq=irq.id, clients=channels)))


class Sddf:
    """Namespace mirroring sdfgen's ``Sddf`` (Net, Blk and Serial arrive with their drivers)."""

    Timer = Timer
