"""bench/hops.py's framework chain: $HOPS_N stages (bench.hop_components) in a ring of net queues.

Stage k's outgoing queue is stage k+1's incoming one (stage N-1's goes back to stage 0); each has
its own region and a channel. $HOPS_ROUNDS timed trips after $HOPS_WARMUP untimed ones;
$HOPS_TRACE=1 runs the traced stages; $HOPS_CPUS ("0,1") pins stage k to the k-th, round robin;
$HOPS_POLL_US is every stage's bounded poll (``ProtectionDomain.poll_us``).
"""
from __future__ import annotations

import os

from sddf.net.queue import queue_size
from sddf.shm import PAGE_SIZE
from sddf.system import Channel, Map, MemoryRegion, ProtectionDomain, SystemDescription

CAPACITY = 512


def system() -> SystemDescription:
    n, rounds, warmup = (int(os.environ[k]) for k in ("HOPS_N", "HOPS_ROUNDS", "HOPS_WARMUP"))
    program = "bench.hop_components:" + ("TracedHopStage" if os.environ.get("HOPS_TRACE") == "1" else "HopStage")
    sdf = SystemDescription(f"hops{n}")
    size = -(-queue_size(CAPACITY) // PAGE_SIZE) * PAGE_SIZE
    cpus = [int(c) for c in os.environ.get("HOPS_CPUS", "").split(",") if c]
    poll_us = int(os.environ.get("HOPS_POLL_US", "0"))
    stages = [sdf.add_pd(ProtectionDomain(f"stage{k}", program, priority=100, cpu=cpus[k % len(cpus)] if cpus else None,
                                          poll_us=poll_us))
              for k in range(n)]
    for k, stage in enumerate(stages):
        nxt = stages[(k + 1) % n]
        queue = sdf.add_mr(MemoryRegion(f"hop{k}", size))
        stage.add_map(Map(queue, "rw"))
        nxt.add_map(Map(queue, "rw"))
        ch = sdf.add_channel(Channel(stage, nxt))
        stage.config.update(outq=queue.name, out_channel=ch.pd_a_id)
        nxt.config.update(inq=queue.name, in_channel=ch.pd_b_id)
    for k, stage in enumerate(stages):
        stage.config.update(capacity=CAPACITY, n=n, rounds=rounds, warmup=warmup, origin=k == 0)
    return sdf
