"""sDDF queues between real processes: net, blk and serial, with real notifications.

Each test runs two worker processes (``tests/xproc``) over memfd regions and a channel
passed with ``pass_fds``; they block on notifications through a Waiter and never poll.
Batch sizes are random from a seed printed by the test (replay with ``XPROC_SEED``).
"""
from __future__ import annotations

import pytest

from xproc import blk, net, serial
from xproc.procs import fresh_seed

NET_DESCRIPTORS = 1_000_000
NET_LIMIT_S = 90.0
BLK_REQUESTS = 100_000
SERIAL_BYTES = 20 << 20
SERIAL_CAPACITY = 4096
NEAR_U32_WRAP = (1 << 32) - 12_345  # blk and serial indices start here, so they wrap early on
STALL_S = 10.0  # blk and serial workers fail if they sleep this long without being woken


@pytest.mark.timeout(NET_LIMIT_S + 10)
def test_net_million_descriptors_through_a_free_active_pair() -> None:
    producer, consumer = net.run_pair(capacity=512, count=NET_DESCRIPTORS, max_batch=64, segment=50_000,
                                      timeout_s=NET_LIMIT_S / 4, jitter=0, seed=fresh_seed(),
                                      limit_s=NET_LIMIT_S)
    print(f"net: {NET_DESCRIPTORS / consumer['seconds']:,.0f} descriptors/s; "
          f"sleeps: producer {producer['sleeps']}, consumer {consumer['sleeps']}")


@pytest.mark.timeout(60)
def test_blk_requests_round_trip_with_checked_data() -> None:
    client, server = blk.run_pair(capacity=64, count=BLK_REQUESTS, max_batch=32, first_index=NEAR_U32_WRAP,
                                  seed=fresh_seed(), stall_s=STALL_S, limit_s=50)
    print(f"blk: {BLK_REQUESTS / client['seconds']:,.0f} requests/s; "
          f"sleeps: client {client['sleeps']}, server {server['sleeps']}")


@pytest.mark.timeout(60)
def test_serial_stream_through_a_small_queue() -> None:
    writer, reader = serial.run_pair(capacity=SERIAL_CAPACITY, size=SERIAL_BYTES, max_chunk=SERIAL_CAPACITY + 1000,
                                     first_index=NEAR_U32_WRAP, seed=fresh_seed(), stall_s=STALL_S, limit_s=50)
    assert reader["bytes"] == writer["bytes"] == SERIAL_BYTES
    assert reader["crc32"] == writer["crc32"]
    print(f"serial: {SERIAL_BYTES / reader['seconds'] / 1e6:.0f} MB/s; "
          f"writer waited for space {writer['sleeps']} times, reader for data {reader['sleeps']}")
