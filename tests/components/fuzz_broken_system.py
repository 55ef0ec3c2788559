"""A producer and the broken consumer of ``fuzz_broken.py``, sharing one net queue and a data
region: ``sddf fuzz tests/components/fuzz_broken_system.py:consumer`` finds its bug."""
from fuzz_broken import BUFFERS

from sddf.net.queue import NET_BUFFER_SIZE, queue_size
from sddf.shm import round_to_pages
from sddf.system import Channel, Map, MemoryRegion, ProtectionDomain, QueueInfo, SystemDescription

CAPACITY = 16


def system() -> SystemDescription:
    sdf = SystemDescription("fuzz_broken")
    producer = sdf.add_pd(ProtectionDomain("producer", "fuzz_broken:Idle", priority=100))
    consumer = sdf.add_pd(ProtectionDomain("consumer", "fuzz_broken:TrustingConsumer", priority=101))
    queue = sdf.add_mr(MemoryRegion("queue", round_to_pages(queue_size(CAPACITY))))
    data = sdf.add_mr(MemoryRegion("data", BUFFERS * NET_BUFFER_SIZE))
    for pd, perms in ((producer, "rw"), (consumer, "r")):
        pd.add_map(Map(queue, "rw"))
        pd.add_map(Map(data, perms))
    sdf.add_queue(QueueInfo("queue", "queue", 0, "net", CAPACITY, (("data", 0, data.size),)))
    sdf.add_channel(Channel(producer, consumer))
    consumer.config.update(queue="queue", capacity=CAPACITY)
    return sdf
