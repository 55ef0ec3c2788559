/* sDDF's net buffer descriptor (include/sddf/network/queue.h), for the C baselines. */
#ifndef BENCH_NET_DESC_H
#define BENCH_NET_DESC_H
#include <stdint.h>

struct desc {
    uint64_t io_or_offset;
    uint16_t len;
    uint8_t oid;
    uint8_t pad[5];
};
_Static_assert(sizeof(struct desc) == 16, "a net descriptor is 16 bytes");

#endif
