"""Two components bouncing counters over an sDDF net queue pair (the smallest real system)."""
from sddf.net.queue import NET_BUFFER_SIZE, queue_size
from sddf.shm import round_to_pages
from sddf.system import Channel, Map, MemoryRegion, ProtectionDomain, QueueInfo, SystemDescription

CAPACITY = 64


def system() -> SystemDescription:
    sdf = SystemDescription("pingpong")
    ping = sdf.add_pd(ProtectionDomain("ping", "sddf.apps.pingpong:Ping", priority=100))
    pong = sdf.add_pd(ProtectionDomain("pong", "sddf.apps.pingpong:Pong", priority=101))
    regions = {
        "free": sdf.add_mr(MemoryRegion("pp_free", round_to_pages(queue_size(CAPACITY)))),
        "active": sdf.add_mr(MemoryRegion("pp_active", round_to_pages(queue_size(CAPACITY)))),
        "data": sdf.add_mr(MemoryRegion("pp_data", CAPACITY * NET_BUFFER_SIZE)),
    }
    for pd in (ping, pong):
        for local, mr in regions.items():
            pd.add_map(Map(mr, "rw", local))
    ch = sdf.add_channel(Channel(ping, pong))
    ping.config.update(peer=ch.pd_a_id, capacity=CAPACITY)
    pong.config.update(peer=ch.pd_b_id, capacity=CAPACITY)
    for label in ("free", "active"):
        sdf.add_queue(QueueInfo(f"ping<->pong {label}", f"pp_{label}", 0, "net", CAPACITY))
    return sdf
