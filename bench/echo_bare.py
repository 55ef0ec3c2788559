#!/usr/bin/env python3
"""The floor for the UDP echo benchmark: sDDF's echo pipeline as bare Python processes.

usage: python bench/echo_bare.py --tap NAME --ip A.B.C.D --mac 02:00:00:00:00:02 [--port 1235]

The pysddf echo system's shape — TAP driver → net virt_rx → client (our sans-I/O netstack
answering UDP echo as an application) → net virt_tx → driver — with no framework: no
Component, ledger, monitor or sandbox. Four processes forked from this one after everything
is made, over eight sDDF net queues (bench/hops_bare.py's ``Queue``: sDDF's layout, acquire/
release indices, and its signalling protocol) in one shared anonymous mapping with the rx and
tx data regions (512 buffers of 2048 bytes each; descriptors carry offsets into their region).
Each process blocks in the kernel when it has nothing to do: the driver in epoll on the TAP
(edge-triggered: sDDF's irq) and its eventfd, the others in a read of their eventfd. Each runs
at the nice value pysddf gives the PD it stands for (bench/systems/echo_n.py's priorities).

- driver (sDDF's ethernet driver): the buffers it took from rx free are its "hardware ring";
  it reads frames from the TAP straight into them while the TAP has frames, publishes them on
  rx active, then writes every frame on tx active to the TAP and returns the buffers on tx free.
  It asks for signals on tx active, and on rx free only when it has run out of rx buffers.
- virt_rx: frames for the client's MAC (or broadcast/multicast: ARP) go to the client's rx
  active, others straight back to rx free; buffers the client returns go back to the driver.
  It always asks for signals on both queues it consumes, as sDDF's virt_rx does.
- client: each frame goes through ``NetStack.receive`` (read in place, no copy) and the UDP
  events through ``EchoService`` (``udp_in_stack=False``), as ``apps/echo_server.py`` does; the
  frames the stack answers with are copied into tx buffers, then the rx buffers are returned.
  A reply with no free tx buffer is dropped and counted (reported on exit).
- virt_tx: client tx active → driver tx active, driver tx free → client tx free.

It attaches to an existing TAP, prints ``echo_bare: answering IP:PORT on TAP (pids …)`` (driver,
virt_rx, client, virt_tx), serves until SIGTERM or SIGINT, then kills its processes and exits 0
(1 if one of them died first). They also die with it (PR_SET_PDEATHSIG).
"""
from __future__ import annotations

import _common  # noqa: F401  first: bench/signal.py and bench/queue.py would shadow the stdlib

import argparse
import contextlib
import ctypes
import fcntl
import mmap
import os
import select
import signal
import struct
import sys
import time
import traceback
from typing import Callable, NoReturn

from hops_bare import CAPACITY, DESC, PR_SET_PDEATHSIG, QUEUE_BYTES, Desc, Queue, load16, store16, store32
from sddf import atomic
from sddf.apps.netstack import EchoService, NetStack
from sddf.devices import IFF_NO_PI, IFF_TAP, TUNSETIFF
from sddf.runtime import nice_for

BUFFER_SIZE = 2048
REGION = CAPACITY * BUFFER_SIZE  # each data region: one buffer per queue slot
RX_DATA, TX_DATA = 0, REGION
QUEUES = 2 * REGION
# the eight queues, in the mapping after the data regions (producer → consumer: what)
(RX_FREE,           # virt_rx → driver: empty rx buffers
 RX_ACTIVE,         # driver → virt_rx: received frames
 CLIENT_RX_ACTIVE,  # virt_rx → client: frames for the client
 CLIENT_RX_FREE,    # client → virt_rx: rx buffers it is done with
 CLIENT_TX_FREE,    # virt_tx → client: empty tx buffers
 CLIENT_TX_ACTIVE,  # client → virt_tx: frames to send
 TX_ACTIVE,         # virt_tx → driver: frames to send
 TX_FREE) = range(8)  # driver → virt_tx: sent buffers
DROPS = QUEUES + 8 * QUEUE_BYTES  # u64: replies the client dropped for want of a tx buffer
MAPPING = DROPS + 8
TCP_PORT = 1236  # listened on as by apps/echo_server.py (the benchmark sends only UDP)
NAMES = ("driver", "virt_rx", "client", "virt_tx")


class NetQueue(Queue):
    """hops_bare's queue, plus taking at most a given number of descriptors."""

    __slots__ = ()

    def send(self, descs: list[Desc], eventfd: int) -> None:
        """Producer: enqueue ``descs`` (if any) and wake the consumer if it asked."""
        if descs:
            self.enqueue(descs)
            self.notify(eventfd)

    def take(self, limit: int) -> list[Desc]:
        """Consumer: take at most ``limit`` descriptors."""
        ptr, mem, unpack, slots = self.ptr, self.mem, DESC.unpack_from, self.slots
        head = load16(ptr, self.head)
        count = min(limit, (load16(ptr, self.tail) - head) & 0xFFFF)
        descs = [unpack(mem, slots + (head + i) % CAPACITY * DESC.size) for i in range(count)]
        store16(ptr, self.head, (head + count) & 0xFFFF)
        return descs


def attach_tap(name: str) -> int:
    """A non-blocking fd on the existing TAP ``name`` (IFF_TAP | IFF_NO_PI)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def driver(q: list[NetQueue], mem: mmap.mmap, tap: int, me: int, virt_rx: int, virt_tx: int) -> NoReturn:
    rx_free, rx_active, tx_active, tx_free = q[RX_FREE], q[RX_ACTIVE], q[TX_ACTIVE], q[TX_FREE]
    view = memoryview(mem)
    rx_iov = [[view[RX_DATA + off:RX_DATA + off + BUFFER_SIZE]] for off in range(0, REGION, BUFFER_SIZE)]
    tx = view[TX_DATA:TX_DATA + REGION]
    readv, write, eventfd_read = os.readv, os.write, os.eventfd_read
    epoll = select.epoll()
    epoll.register(tap, select.EPOLLIN | select.EPOLLET)
    epoll.register(me, select.EPOLLIN)
    wait = epoll.poll
    ring: list[int] = []  # rx buffers taken from rx free, not yet filled
    readable = True  # until a read finds the TAP empty; then until epoll says it has frames
    while True:
        if readable:
            filled = []
            while True:
                if not ring:
                    ring = [off for off, _, _ in rx_free.dequeue()]
                    if not ring:
                        break
                off = ring[-1]
                try:
                    n = readv(tap, rx_iov[off // BUFFER_SIZE])
                except BlockingIOError:
                    readable = False
                    break
                ring.pop()
                filled.append((off, n, 0))
            rx_active.send(filled, virt_rx)
        sent = tx_active.dequeue()
        for off, n, _ in sent:
            write(tap, tx[off:off + n])
        tx_free.send(sent, virt_tx)
        if tx_active.rearm() and (not readable or rx_free.rearm()):
            for fd, _ in wait():
                if fd == tap:
                    readable = True
                else:
                    eventfd_read(me)


def virt_rx(q: list[NetQueue], mem: mmap.mmap, mac: bytes, me: int, driver: int, client: int) -> NoReturn:
    from_driver, to_driver = q[RX_ACTIVE], q[RX_FREE]
    to_client, from_client = q[CLIENT_RX_ACTIVE], q[CLIENT_RX_FREE]
    eventfd_read = os.eventfd_read
    while True:
        frames = from_driver.dequeue()
        if frames:
            ours, others = [], []
            for desc in frames:
                off = RX_DATA + desc[0]
                dst = mem[off:off + 6]
                (ours if dst == mac or dst[0] & 1 else others).append(desc)
            to_client.send(ours, client)
            to_driver.send(others, driver)
        to_driver.send(from_client.dequeue(), driver)
        if from_driver.rearm() and from_client.rearm():
            eventfd_read(me)


def client(q: list[NetQueue], mem: mmap.mmap, mac: str, ip: str, port: int, me: int, virt_rx: int,
           virt_tx: int) -> NoReturn:
    rx_active, rx_free = q[CLIENT_RX_ACTIVE], q[CLIENT_RX_FREE]
    tx_free, tx_active = q[CLIENT_TX_FREE], q[CLIENT_TX_ACTIVE]
    stack = NetStack(mac=mac, ip=ip)
    echo = EchoService(stack, udp_port=port, tcp_port=TCP_PORT, udp_in_stack=False)
    view = memoryview(mem)
    rx, tx = view[RX_DATA:RX_DATA + REGION], view[TX_DATA:TX_DATA + REGION]
    receive, events, take_frames, handle = stack.receive, stack.events, stack.take_frames, echo.handle
    take, eventfd_read, now = tx_free.take, os.eventfd_read, time.monotonic_ns
    drops = 0
    while True:
        descs = rx_active.dequeue()
        if descs:
            t = now()
            for off, n, _ in descs:
                receive(rx[off:off + n], t)
            handle(events())
            replies = take_frames()
            if replies:
                out = []
                for (off, _, _), frame in zip(take(len(replies)), replies):
                    n = len(frame)
                    tx[off:off + n] = frame
                    out.append((off, n, 0))
                tx_active.send(out, virt_tx)
                if len(out) < len(replies):
                    drops += len(replies) - len(out)
                    atomic.store_release_u64(tx_free.ptr, DROPS, drops)
                    tx_free.rearm()  # told when virt_tx returns buffers, as sDDF's clients ask
            rx_free.send(descs, virt_rx)
        if rx_active.rearm():
            eventfd_read(me)


def virt_tx(q: list[NetQueue], me: int, driver: int, client: int) -> NoReturn:
    from_client, to_driver = q[CLIENT_TX_ACTIVE], q[TX_ACTIVE]
    from_driver, to_client = q[TX_FREE], q[CLIENT_TX_FREE]
    eventfd_read = os.eventfd_read
    while True:
        to_driver.send(from_client.dequeue(), driver)
        to_client.send(from_driver.dequeue(), client)
        if from_client.rearm() and from_driver.rearm():
            eventfd_read(me)


def start(body: Callable[[], NoReturn], parent: int, priority: int) -> int:
    """Fork a process that runs ``body`` (at the nice value pysddf gives a PD of Microkit
    ``priority``) until it dies with the parent; return its pid."""
    pid = os.fork()
    if pid:
        return pid
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
        with contextlib.suppress(PermissionError):  # raising it needs CAP_SYS_NICE
            os.setpriority(os.PRIO_PROCESS, 0, nice_for(priority))
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        body()
    except Exception:
        traceback.print_exc()
    finally:
        os._exit(1)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tap", required=True, help="an existing TAP device to attach to")
    parser.add_argument("--ip", required=True)
    parser.add_argument("--mac", required=True)
    parser.add_argument("--port", type=int, default=1235)
    args = parser.parse_args(argv)
    mac = bytes.fromhex(args.mac.replace(":", ""))
    tap = attach_tap(args.tap)
    mem = mmap.mmap(-1, MAPPING, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    ptr = atomic.pointer(mem)
    q = [NetQueue(mem, ptr, QUEUES + i * QUEUE_BYTES) for i in range(8)]
    buffers = [(off, 0, 0) for off in range(0, REGION, BUFFER_SIZE)]
    q[RX_FREE].enqueue(buffers)
    q[CLIENT_TX_FREE].enqueue(buffers)
    for full in (q[RX_FREE], q[CLIENT_TX_FREE]):  # their consumers have buffers: not waiting
        store32(ptr, full.flag, 1)
    drv, vrx, cli, vtx = (os.eventfd(0, os.EFD_CLOEXEC) for _ in NAMES)
    parent = os.getpid()
    stops = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    sys.stdout.flush()
    pids: list[int] = []
    try:
        for body, priority in ((lambda: driver(q, mem, tap, drv, vrx, vtx), 110),
                               (lambda: virt_rx(q, mem, mac, vrx, drv, cli), 108),
                               (lambda: client(q, mem, args.mac, args.ip, args.port, cli, vrx, vtx), 100),
                               (lambda: virt_tx(q, vtx, drv, cli), 109)):
            pids.append(start(body, parent, priority))
        print(f"echo_bare: answering {args.ip}:{args.port} on {args.tap} (pids {','.join(map(str, pids))})",
              flush=True)
        while signal.sigwait(stops) == signal.SIGCHLD:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid:  # else a child stopped or went on
                name = NAMES[pids.index(pid)]
                pids.remove(pid)
                print(f"echo_bare: {name} (pid {pid}) died ({os.waitstatus_to_exitcode(status)}); stopping",
                      file=sys.stderr)
                return 1
        return 0
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        drops = atomic.load_acquire_u64(ptr, DROPS)
        if drops:
            print(f"echo_bare: client dropped {drops} replies (no free tx buffer)", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
