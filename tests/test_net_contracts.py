"""sDDF's component contracts on the echo system, in-process through ``sddf.testing``.

Every test runs the real components (TAP driver, virt_rx, virt_tx, copier, echo clients, timer)
of the bundled echo system on a fake TAP, and checks after every step that each net buffer is in
exactly one queue or one component's hands (:mod:`helpers.net_audit`).
"""
from __future__ import annotations

import socket
import struct
from typing import Iterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from helpers.net_audit import NetAudit
from helpers.netframes import BROADCAST_MAC, arp, ethernet, ipv4, udp
from sddf.apps.systems import echo
from sddf.testing import Bench

CLIENTS = {name: (mac, ip) for name, mac, ip, _copied in echo.CLIENTS}
DIRECT, COPIED = "client0", "client1"  # client1 sits behind a copier
UDP_ECHO_PORT = 1235
ARP_REPLY = 2
POOL = 512  # rx buffers shared by the driver, virt_rx and every client (the echo system's capacity)


class EchoBench:
    """The echo system on a bench, with a host side that answers ARP and collects UDP echoes."""

    def __init__(self) -> None:
        self.bench = Bench(echo.system())
        self.bench.start()
        self.audit = NetAudit(self.bench)
        self.tap = self.bench.frames("eth_driver")
        self.replies: dict[str, list[bytes]] = {name: [] for name in CLIENTS}

    @staticmethod
    def to(client: str, payload: bytes, *, dst_mac: bytes | None = None) -> bytes:
        """A UDP echo request for ``client`` (sent to ``dst_mac`` instead of its MAC if given)."""
        mac, ip = CLIENTS[client]
        return ethernet(ipv4(udp(payload, 40000, UDP_ECHO_PORT, dst=ip), 17, dst=ip), dst=dst_mac or mac)

    def send(self, frames: list[bytes], *, audit: bool = True) -> None:
        """Put ``frames`` on the TAP and run the system until it is quiet, auditing every step."""
        for frame in frames:
            self.tap.send(frame)
        self.run(audit)

    def run(self, audit: bool = True) -> None:
        for _ in range(10_000):
            handled = self.bench.step()
            if audit:
                self.audit.check_conservation()
            handled += self.host()
            if not handled:
                return
        raise AssertionError("the echo system did not settle")

    def host(self) -> int:
        """Read what the system transmitted: answer ARP requests, keep UDP replies by sender."""
        count = 0
        while True:
            try:
                frame = self.tap.recv(4096)
            except BlockingIOError:
                return count
            count += 1
            ethertype = struct.unpack_from("!H", frame, 12)[0]
            if ethertype == 0x0806 and struct.unpack_from("!H", frame, 20)[0] == 1:  # who-has 10.0.0.1
                sender_mac, sender_ip = frame[22:28], socket.inet_ntoa(frame[28:32])
                self.tap.send(ethernet(arp(ARP_REPLY, tha=sender_mac, tpa=sender_ip), dst=sender_mac,
                                       ethertype=0x0806))
            elif ethertype == 0x0800 and frame[23] == 17:
                src = socket.inet_ntoa(frame[26:30])
                client = next(name for name, (_, ip) in CLIENTS.items() if ip == src)
                self.replies[client].append(frame[42:])

    def echoes(self, client: str, count: int, tag: bytes) -> int:
        """Send ``count`` UDP echoes to ``client``; how many came back intact."""
        before = len(self.replies[client])
        payloads = [tag + b"%06d" % i for i in range(count)]
        for start in range(0, count, 64):  # in bursts the TAP driver's batch can take
            self.send([self.to(client, p) for p in payloads[start:start + 64]])
        return sum(1 for reply in self.replies[client][before:] if reply in set(payloads))

    def close(self) -> None:
        self.bench.close()


@pytest.fixture
def system() -> Iterator[EchoBench]:
    bench = EchoBench()
    try:
        yield bench
    finally:
        bench.close()


def test_both_clients_echo_and_every_buffer_is_accounted_for(system: EchoBench) -> None:
    for client in CLIENTS:
        assert system.echoes(client, 200, client.encode()) == 200


def test_a_stalled_client_behind_a_copier_does_not_stop_the_other(system: EchoBench) -> None:
    """sDDF's copier never waits on its client: with no free client buffer the frame is dropped
    (counted) and the shared buffer goes straight back, so the pool stays with the driver."""
    system.bench.stall(COPIED)
    system.send([system.to(COPIED, b"flood %d" % i) for i in range(3 * POOL)])
    assert system.bench.counters(f"{COPIED}_copier")["dropped_no_client_buffer"] >= 2 * POOL
    assert system.echoes(DIRECT, 200, b"direct") == 200, "the other client must keep echoing"
    system.bench.resume(COPIED)
    system.run()
    assert system.echoes(COPIED, 50, b"back") == 50, "the stalled client echoes again once resumed"


def test_the_pool_runs_dry_behind_a_stalled_client_and_recovers(system: EchoBench) -> None:
    """A stalled client without a copier can hold the whole pool (as in sDDF); once it runs again
    and returns its buffers, virt_rx (which asked to be told of returns) hands them back to the
    driver, and both clients echo again."""
    assert system.echoes(DIRECT, 10, b"warm") == 10  # the queues' first signals are spent
    system.bench.stall(DIRECT)
    system.send([system.to(DIRECT, b"hold %d" % i) for i in range(POOL)])
    assert system.echoes(COPIED, 10, b"dry") == 0, "the pool is expected to be dry"
    system.bench.resume(DIRECT)
    system.run()
    assert system.echoes(COPIED, 100, b"wet") == 100
    assert system.echoes(DIRECT, 100, b"again") == 100


def test_a_restarted_client_drains_what_arrived_while_it_was_down(system: EchoBench) -> None:
    """A client that died after taking its notification (so the flag says "no signal needed")
    comes back, examines its rx queue in init, and answers what waited there."""
    system.bench.stall(DIRECT)
    system.send([system.to(DIRECT, b"waiting %d" % i) for i in range(100)])
    system.bench.component(DIRECT)._waiter.wait(0)  # the dead instance consumed the wake-up
    system.bench.restart(DIRECT)
    system.run()
    # the fresh stack must resolve the sender by ARP first and queues a bounded number of replies
    answered = len(system.replies[DIRECT]) + system.bench.counters(DIRECT)["arp_queue_full"]
    assert system.replies[DIRECT] and answered == 100, "every datagram that waited was handled"
    assert system.echoes(DIRECT, 100, b"after") == 100


def test_a_hostile_client_cannot_make_the_copier_write_outside_its_region(system: EchoBench) -> None:
    """The copier takes only whole buffers of its client's region from the client's free queue:
    the rest is refused and counted, and the client goes on being served."""
    system.bench.stall(COPIED)
    system.send([system.to(COPIED, b"first %d" % i) for i in range(2)])  # two free slots for garbage
    client = system.bench.component(COPIED)
    assert client.rx_free.enqueue_many([(10 ** 9, 0, 0), (3, 0, 0)]) == 2  # outside; not a buffer start
    client.ledger.commit()  # published, as the client's loop would
    system.send([system.to(COPIED, b"then %d" % i) for i in range(POOL)], audit=False)
    counters = system.bench.counters(f"{COPIED}_copier")
    assert counters["client.rx.free.refused"] == 2, counters
    system.bench.resume(COPIED)
    system.run(audit=False)
    assert system.echoes(COPIED, 20, b"still") == 20


def test_broadcast_reaches_every_client_and_its_buffer_returns_once(system: EchoBench) -> None:
    system.send([system.to(DIRECT, b"to all %d" % i, dst_mac=BROADCAST_MAC) for i in range(40)])
    assert system.bench.counters("net_virt_rx")["broadcast"] == 40
    assert not any(system.bench.component("net_virt_rx").holders), "every client gave its copy back"


class EchoMachine(RuleBasedStateMachine):
    """Random traffic, stalls and restarts; every buffer accounted for after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.system = EchoBench()

    @rule(client=st.sampled_from(list(CLIENTS)), count=st.integers(1, 300),
          kind=st.sampled_from(["unicast", "broadcast", "unknown"]))
    def traffic(self, client: str, count: int, kind: str) -> None:
        mac = {"unicast": None, "broadcast": BROADCAST_MAC, "unknown": bytes.fromhex("02aabbccddee")}[kind]
        self.system.send([self.system.to(client, b"%s %d" % (kind.encode(), i), dst_mac=mac)
                          for i in range(count)])

    @rule(client=st.sampled_from(list(CLIENTS)))
    def stall(self, client: str) -> None:
        self.system.bench.stall(client)

    @rule(client=st.sampled_from(list(CLIENTS)))
    def resume(self, client: str) -> None:
        self.system.bench.resume(client)
        self.system.run()

    @precondition(lambda self: not self.system.bench.stalled)
    @rule(client=st.sampled_from(list(CLIENTS)))
    def restart(self, client: str) -> None:
        self.system.bench.restart(client)
        self.system.run()

    @precondition(lambda self: not self.system.bench.stalled)
    @rule()
    def everyone_echoes(self) -> None:
        for client in CLIENTS:
            assert self.system.echoes(client, 5, b"probe") == 5

    @invariant()
    def conserved(self) -> None:
        self.system.audit.check_conservation()

    def teardown(self) -> None:
        self.system.close()


TestEchoMachine = EchoMachine.TestCase
TestEchoMachine.settings = settings(max_examples=15, stateful_step_count=12, deadline=None,
                                    suppress_health_check=[HealthCheck.too_slow])


def test_the_driver_notifies_after_a_batch_not_after_the_whole_burst(system: EchoBench) -> None:
    """A pass is capped: with 300 frames waiting, virt_rx is notified once the first batch is on
    its queue, so it can run while the driver reads on (DESIGN §3)."""
    driver = system.bench.component("eth_driver")
    rx_channel, queued_at_notify = driver.config.rx.channel, []
    send = driver._sends[rx_channel]

    def recording_send() -> int:
        queued_at_notify.append(driver.rx_active.length())
        return send()
    driver._sends[rx_channel] = recording_send
    system.send([system.to(DIRECT, b"burst %d" % i) for i in range(300)])
    assert queued_at_notify and queued_at_notify[0] == driver.config.batch, queued_at_notify


def test_a_frame_longer_than_a_buffer_is_counted_and_dropped_not_truncated(system: EchoBench) -> None:
    too_long = system.to(DIRECT, b"x" * 2100)  # 2142 bytes: more than a 2048-byte buffer
    system.send([too_long, system.to(DIRECT, b"after")])
    assert system.bench.counters("eth_driver")["rx_oversize"] == 1
    assert system.replies[DIRECT] == [b"after"], "only the frame that fits reaches the client"


def test_a_replacement_starts_on_a_queue_header_its_predecessor_left_corrupt(system: EchoBench) -> None:
    """client0's tx tail jumps far past virt_tx's head (a dying or hostile client can leave that):
    a restarted client0 resets the queue instead of faulting in init, and both clients echo."""
    assert system.echoes(DIRECT, 10, b"before") == 10
    client = system.bench.component(DIRECT)
    tail_at = client.tx_active._ring.own_offset
    struct.pack_into("<H", system.bench.monitor.regions[client.config.tx.active].view, tail_at,
                     (client.tx_active.index + 20000) & 0xFFFF)
    system.bench.restart(DIRECT)
    system.run(audit=False)
    assert system.bench.counters(DIRECT)["tx.active.protocol_errors"] == 1
    assert system.echoes(COPIED, 20, b"other") == 20
    assert system.echoes(DIRECT, 20, b"again") == 20


@pytest.mark.parametrize("pd", ["eth_driver", "net_virt_rx", "net_virt_tx", f"{COPIED}_copier", DIRECT, COPIED])
def test_a_pd_restarted_between_bursts_loses_no_buffer(system: EchoBench, pd: str) -> None:
    """Killed while idle, twenty times in a row, no component takes a buffer with it: every
    buffer is accounted for after each restart and both clients still echo."""
    for round_ in range(20):
        assert system.echoes(DIRECT if round_ % 2 else COPIED, 8, b"round %d" % round_) == 8
        system.bench.restart(pd)
        system.run()  # audits every buffer
    for client in (DIRECT, COPIED):
        assert system.echoes(client, 50, b"after") == 50


@pytest.mark.parametrize("pd", ["eth_driver", "net_virt_rx", "net_virt_tx", f"{COPIED}_copier", DIRECT, COPIED])
def test_a_pd_killed_at_any_write_loses_no_buffer(system: EchoBench, pd: str) -> None:
    """Killed just before its 1st, 2nd, … write to shared memory (a queue move, a signal flag, a
    step of its ledger's commit, a notify) while unicast and broadcast traffic for both clients is
    in flight: every buffer is accounted for at every step, dead or alive, and once restarted both
    clients echo. A PD's ledger commits each pass's queue moves (and who holds what) as one step,
    so a kill anywhere leaves the work undone in the queues or done, never half done: a virtualiser
    or copier killed anywhere loses no request of the burst. (A driver loses the frames it had read
    from the TAP before its commit; a client, the answers its netstack still held, e.g. waiting
    for ARP.)"""
    assert system.echoes(DIRECT, 8, b"warm") == 8 and system.echoes(COPIED, 8, b"warm") == 8

    def burst(tag: bytes) -> list[bytes]:
        return [system.to(client, tag + b"%d" % i, dst_mac=mac)
                for i in range(6) for client in CLIENTS for mac in (None, BROADCAST_MAC if i == 0 else None)]
    system.bench.kill_at(pd, 10 ** 9)  # count its writes: a restart, then the burst
    system.send(burst(b"count "))
    positions = system.bench.writes[pd]
    assert positions > 10 and not system.bench.killed
    for write in range(1, positions + 1):
        tag = b"w%d " % write
        system.bench.kill_at(pd, write)
        system.send(burst(tag))  # audits every step
        if pd not in system.bench.components:
            system.bench.restart(pd)
            system.run()
        system.bench.disarm()
        for client in CLIENTS if pd in ("net_virt_rx", "net_virt_tx", f"{COPIED}_copier") else ():
            unanswered = {tag + b"%d" % i for i in range(6)} - set(system.replies[client])
            assert not unanswered, f"{pd} killed before its write {write}: {client} never answered {unanswered}"
        assert system.echoes(DIRECT, 3, b"w%d" % write) == 3 and system.echoes(COPIED, 3, b"w%d" % write) == 3
    # a restarted PD's path varies (it may find more or less to do), so not every position is reached
    assert system.bench.killed.count(pd) >= positions // 2, "most positions must kill it while it works"


def test_every_queue_can_hold_every_buffer_it_carries(system: EchoBench) -> None:
    """The driver's tx queues carry every client's tx buffers: sized like that (as sdfgen sizes
    them), no return can find its queue full. A killed virt_tx once left the driver holding more
    than its tx free queue could take back, and the buffers that did not fit were lost."""
    for q in system.bench.sdf.queues:
        buffers = sum(size for _, _, size in q.pools) // 2048
        assert q.capacity >= buffers, f"{q.label}: capacity {q.capacity} for {buffers} buffers"
    assert {q.capacity for q in system.bench.sdf.queues if q.label.startswith("net_drv_tx")} == {1024}


def test_a_wake_up_that_finds_no_work_is_counted_per_channel(system: EchoBench) -> None:
    """A notification with nothing queued is an unproductive wake-up (counted for its channel);
    one that moves frames is not."""
    virt_rx = system.bench.component("net_virt_rx")
    driver_ch = virt_rx.config.driver.channel
    system.bench.component("eth_driver").notify(system.bench.component("eth_driver").config.rx.channel)
    system.run()
    assert virt_rx.counters[f"unproductive_wakeups.ch{driver_ch}"] == 1
    assert system.echoes(DIRECT, 5, b"work") == 5
    assert virt_rx.counters[f"unproductive_wakeups.ch{driver_ch}"] == 1, "frames moved: not unproductive"
    assert virt_rx.counters["wakeups"] >= 5
