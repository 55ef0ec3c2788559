"""Network device class: queues (include/sddf/network/queue.h), configs, wiring, client library."""
