"""cffi API-mode build of the few C atomics that Python cannot express, and of the ring
index/copy steps of a queue end (one C call per batch): compiled at install."""
from cffi import FFI

# One end of an SPSC queue, declared once for cffi (CDEF) and for the C below (SOURCE).
RING = """
/* One end of an SPSC queue (sddf/queue/ring.py keeps the Python face): our own index and the
   last accepted value of the peer's are private; the peer's is validated on every read. */
typedef struct {
    uint8_t *header;
    uint8_t *entries;
    uint32_t own_offset, peer_offset, index_bits, capacity, entry_size, producer;
    uint32_t own, peer;
    uint32_t refused_peer;   /* the peer index last refused by ring_refresh */
    uint32_t check_net;      /* consumers of net descriptors: check each one taken */
    uint64_t lo, hi;
    uint32_t max_len, max_oid;
    int32_t bad_position;    /* the first bad descriptor of the batch ring_take refused */
} sddf_ring;
"""

CDEF = """
uint8_t  load_acquire_u8(const uint8_t *base, size_t off);
uint16_t load_acquire_u16(const uint8_t *base, size_t off);
uint32_t load_acquire_u32(const uint8_t *base, size_t off);
uint64_t load_acquire_u64(const uint8_t *base, size_t off);
void store_release_u8(uint8_t *base, size_t off, uint8_t value);
void store_release_u16(uint8_t *base, size_t off, uint16_t value);
void store_release_u32(uint8_t *base, size_t off, uint32_t value);
void store_release_u64(uint8_t *base, size_t off, uint64_t value);
void fence_seq_cst(void);
uint64_t exchange_u64(uint8_t *base, size_t off, uint64_t value);
uint64_t fetch_or_u64(uint8_t *base, size_t off, uint64_t bits);
int flag_claim_u32(uint8_t *base, size_t off);
int notify_word(uint8_t *base, size_t off, int eventfd);
""" + RING + """
long ring_refresh(sddf_ring *r);
void ring_advance(sddf_ring *r, uint32_t count);
long ring_take(sddf_ring *r, uint8_t *dst, uint32_t max_count, int commit);
long ring_put(sddf_ring *r, const uint8_t *src, uint32_t count);
"""

SOURCE = """
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#define LOAD(T, N) T load_acquire_##N(const uint8_t *base, size_t off) \\
    { return __atomic_load_n((const T *)(base + off), __ATOMIC_ACQUIRE); }
#define STORE(T, N) void store_release_##N(uint8_t *base, size_t off, T value) \\
    { __atomic_store_n((T *)(base + off), value, __ATOMIC_RELEASE); }
LOAD(uint8_t, u8) LOAD(uint16_t, u16) LOAD(uint32_t, u32) LOAD(uint64_t, u64)
STORE(uint8_t, u8) STORE(uint16_t, u16) STORE(uint32_t, u32) STORE(uint64_t, u64)
void fence_seq_cst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
uint64_t exchange_u64(uint8_t *base, size_t off, uint64_t value)
    { return __atomic_exchange_n((uint64_t *)(base + off), value, __ATOMIC_SEQ_CST); }
uint64_t fetch_or_u64(uint8_t *base, size_t off, uint64_t bits)
    { return __atomic_fetch_or((uint64_t *)(base + off), bits, __ATOMIC_SEQ_CST); }
/* sDDF's producer step after publishing: seq_cst fence, then if the consumer requested a
   signal (flag 0), cancel it (store 1) and return 1: the caller notifies. */
int flag_claim_u32(uint8_t *base, size_t off)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n((uint32_t *)(base + off), __ATOMIC_ACQUIRE) != 0)
        return 0;
    __atomic_store_n((uint32_t *)(base + off), 1, __ATOMIC_RELEASE);
    return 1;
}
/* A notification: set the pending word; if it was clear, write the eventfd (a new edge for
   the receiver's epoll). 0: already pending; 1: written; -errno: the write failed. */
int notify_word(uint8_t *base, size_t off, int eventfd)
{
    if (__atomic_exchange_n((uint64_t *)(base + off), 1, __ATOMIC_SEQ_CST) != 0)
        return 0;
    uint64_t one = 1;
    return write(eventfd, &one, sizeof one) == (ssize_t)sizeof one ? 1 : -errno;
}

""" + RING + """

static uint32_t ring_mask(const sddf_ring *r)
    { return r->index_bits == 16 ? 0xFFFFu : 0xFFFFFFFFu; }

static uint32_t ring_used(const sddf_ring *r, uint32_t peer)
    { return (r->producer ? r->own - peer : peer - r->own) & ring_mask(r); }

/* Load and validate the peer's index: the number of entries in the queue, or -1 (nothing
   changed; refused_peer holds the value) if it moved backwards or past the capacity. */
long ring_refresh(sddf_ring *r)
{
    uint32_t peer = r->index_bits == 16
        ? __atomic_load_n((uint16_t *)(r->header + r->peer_offset), __ATOMIC_ACQUIRE)
        : __atomic_load_n((uint32_t *)(r->header + r->peer_offset), __ATOMIC_ACQUIRE);
    if (peer != r->peer) {
        uint32_t moved = (peer - r->peer) & ring_mask(r), before = ring_used(r, r->peer);
        if (r->producer ? moved > before : (uint64_t)before + moved > r->capacity) {
            r->refused_peer = peer;
            return -1;
        }
        r->peer = peer;
    }
    return ring_used(r, peer);
}

/* Publish count entries (producer) or release them (consumer) with one store-release. */
void ring_advance(sddf_ring *r, uint32_t count)
{
    r->own = (r->own + count) & ring_mask(r);
    if (r->index_bits == 16)
        __atomic_store_n((uint16_t *)(r->header + r->own_offset), (uint16_t)r->own, __ATOMIC_RELEASE);
    else
        __atomic_store_n((uint32_t *)(r->header + r->own_offset), r->own, __ATOMIC_RELEASE);
}

static void ring_copy(sddf_ring *r, uint8_t *dst, const uint8_t *src, uint32_t count, int out)
{
    uint32_t first = r->own & (r->capacity - 1), n = r->capacity - first < count ? r->capacity - first : count;
    size_t size = r->entry_size;
    if (out) {
        memcpy(dst, r->entries + size * first, size * n);
        memcpy(dst + size * n, r->entries, size * (count - n));
    } else {
        memcpy(r->entries + size * first, src, size * n);
        memcpy(r->entries, src + size * n, size * (count - n));
    }
}

/* Consumer: copy up to max_count entries into dst (private memory: the peer may still write
   the ring) and, if commit, release them. Returns the count, -1 for a refused peer index,
   -2 for a bad net descriptor (bad_position; nothing released). Checks run on the copy. */
long ring_take(sddf_ring *r, uint8_t *dst, uint32_t max_count, int commit)
{
    long used = ring_refresh(r);
    if (used < 0)
        return -1;
    uint32_t count = (uint32_t)used < max_count ? (uint32_t)used : max_count;
    if (count == 0)
        return 0;
    ring_copy(r, dst, NULL, count, 1);
    if (r->check_net) {
        for (uint32_t i = 0; i < count; i++) {
            uint64_t off; uint16_t len; uint8_t oid;
            memcpy(&off, dst + 16 * i, 8); memcpy(&len, dst + 16 * i + 8, 2); oid = dst[16 * i + 10];
            if (off < r->lo || off > r->hi || len > r->max_len || oid > r->max_oid) {
                r->bad_position = (int32_t)i;
                return -2;
            }
        }
    }
    if (commit)
        ring_advance(r, count);
    return count;
}

/* Producer: copy as many of count entries from src as fit and publish them. Returns how
   many, or -1 for a refused peer index. */
long ring_put(sddf_ring *r, const uint8_t *src, uint32_t count)
{
    long used = ring_refresh(r);
    if (used < 0)
        return -1;
    uint32_t space = r->capacity - (uint32_t)used;
    if (count > space)
        count = space;
    if (count) {
        ring_copy(r, NULL, src, count, 0);
        ring_advance(r, count);
    }
    return count;
}
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source("sddf._atomic", SOURCE, extra_compile_args=["-O2"])

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
