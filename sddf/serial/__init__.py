"""Serial device class: queues (include/sddf/serial/queue.h)."""
