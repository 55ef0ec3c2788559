"""cffi API-mode build of the few C atomics that Python cannot express: compiled at install."""
from cffi import FFI

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
long net_copy_check(uint8_t *dst, const uint8_t *ring, size_t first, size_t count, size_t capacity,
                    uint64_t lo, uint64_t hi, uint32_t max_len, uint32_t max_oid);
"""

SOURCE = """
#include <stdint.h>
#include <stddef.h>
#include <string.h>
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
/* Copy count 16-byte net descriptors from slot first of a ring (wrapping) into dst, then check
   the copy (never the shared ring, which the peer may still change): index of the first
   descriptor outside [lo, hi] or over max_len / max_oid, or -1. */
long net_copy_check(uint8_t *dst, const uint8_t *ring, size_t first, size_t count, size_t capacity,
                    uint64_t lo, uint64_t hi, uint32_t max_len, uint32_t max_oid)
{
    size_t n = capacity - first < count ? capacity - first : count;
    memcpy(dst, ring + 16 * first, 16 * n);
    memcpy(dst + 16 * n, ring, 16 * (count - n));
    for (size_t i = 0; i < count; i++) {
        uint64_t off; uint16_t len; uint8_t oid;
        memcpy(&off, dst + 16 * i, 8); memcpy(&len, dst + 16 * i + 8, 2); oid = dst[16 * i + 10];
        if (off < lo || off > hi || len > max_len || oid > max_oid)
            return (long)i;
    }
    return -1;
}
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source("sddf._atomic", SOURCE, extra_compile_args=["-O2"])

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
