"""``Sddf.Timer``: wires a timer driver and its clients the way sdfgen does."""
from __future__ import annotations

from dataclasses import asdict

from sddf.system import Channel, Irq, ProtectionDomain, SystemDescription
from sddf.timer.config import TimerDriverConfig


class Timer:
    """A timer driver on a host timerfd and its clients (each calls it by PPC)."""

    def __init__(self, sdf: SystemDescription, driver: ProtectionDomain, source: str = "timerfd",
                 irq_number: int = 30) -> None:
        """``irq_number`` is for the Microkit export: 30 is the ARM generic timer's."""
        self.sdf = sdf
        self.driver = driver
        self.source = source
        self.irq_number = irq_number
        self.clients: list[tuple[ProtectionDomain, dict]] = []

    def add_client(self, client: ProtectionDomain, **options: object) -> None:
        """Add a client; its config gets ``timer`` (the channel id) and ``options`` (e.g. the
        ``timeouts_ns`` and ``rounds`` of a TimerClientConfig)."""
        self.clients.append((client, options))

    def connect(self) -> None:
        irq = self.sdf.add_irq(Irq(self.driver, self.source, number=self.irq_number))
        channels = []
        for client, options in self.clients:
            ch = self.sdf.add_channel(Channel(client, self.driver, pp_a=True))
            channels.append(ch.pd_b_id)
            client.config.update(timer=ch.pd_a_id, **options)
        self.driver.config.update(asdict(TimerDriverConfig(irq=irq.id, clients=channels)))
        self.driver.ledger_words = len(channels)  # each client's pending deadline (sddf.ledger)
