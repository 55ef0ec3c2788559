/* pysddf's C core: acquire/release accesses, fences, notification words and the ring engine
   (one call per queue batch). Declarations in _ring.h. */
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <time.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include "_ring.h"
#define LOAD(T, N) T load_acquire_##N(const uint8_t *base, size_t off) \
    { return __atomic_load_n((const T *)(base + off), __ATOMIC_ACQUIRE); }
#define STORE(T, N) void store_release_##N(uint8_t *base, size_t off, T value) \
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

static void ring_store_own(sddf_ring *r)
{
    if (r->index_bits == 16)
        __atomic_store_n((uint16_t *)(r->header + r->own_offset), (uint16_t)r->own, __ATOMIC_RELEASE);
    else
        __atomic_store_n((uint32_t *)(r->header + r->own_offset), r->own, __ATOMIC_RELEASE);
}

/* Publish count entries (producer) or release them (consumer) with one store-release; a staged
   ring only moves its private index (its ledger publishes it). */
void ring_advance(sddf_ring *r, uint32_t count)
{
    r->own = (r->own + count) & ring_mask(r);
    if (!r->staged)
        ring_store_own(r);
    else if (r->pending)
        *r->pending = 1;
}

/* Copy count entries from our index on, entry i at slot i % capacity, in contiguous runs: a run
   ends where the slots reach the end of the ring or the index wraps (a capacity need not divide
   2^index_bits: sDDF's block and serial queues may hold 384). */
static void ring_copy(sddf_ring *r, uint8_t *dst, const uint8_t *src, uint32_t count, int out)
{
    size_t size = r->entry_size;
    for (uint32_t done = 0; done < count;) {
        uint32_t index = (r->own + done) & ring_mask(r), slot = index % r->capacity, n = count - done;
        uint64_t to_wrap = (uint64_t)ring_mask(r) + 1 - index;
        if (n > r->capacity - slot)
            n = r->capacity - slot;
        if (n > to_wrap)
            n = (uint32_t)to_wrap;
        if (out)
            memcpy(dst + size * done, r->entries + size * slot, size * n);
        else
            memcpy(r->entries + size * slot, src + size * done, size * n);
        done += n;
    }
}

static int net_desc_ok(const sddf_ring *r, uint64_t io, uint16_t len)
{
    if (len > r->max_len)
        return 0;
    for (uint32_t k = 0; k < r->span_count; k++)
        if (io >= r->spans[k].lo && io <= r->spans[k].hi && (io - r->spans[k].lo) % r->align == 0)
            return 1;
    return 0;
}

/* Check the net descriptors just copied to dst, masking each oid to its 6 bits (a C writer
   may leave the byte's top bits set); move the good ones together. Returns how many. */
static uint32_t net_check(sddf_ring *r, uint8_t *dst, uint32_t count)
{
    uint32_t good = 0;
    r->refused = 0;
    for (uint32_t i = 0; i < count; i++) {
        uint8_t *d = dst + 16 * i;
        uint64_t io;
        uint16_t len;
        memcpy(&io, d, 8);
        memcpy(&len, d + 8, 2);
        d[10] &= 0x3f;
        if (!net_desc_ok(r, io, len)) {
            if (r->refused++ == 0) {
                r->bad_io = io;
                r->bad_len = len;
                r->bad_oid = d[10];
                r->bad_position = i;
            }
            continue;
        }
        if (good != i)
            memcpy(dst + 16 * good, d, 16);
        good++;
    }
    return good;
}

/* Consumer: copy up to max_count entries into dst (private memory: the peer may still write
   the ring) and, if commit, release them. Net descriptors are checked on the copy: bad ones
   are consumed but not handed out (taken - count of them; the first is described in bad_*).
   Returns how many entries dst holds, or -1 for a refused peer index (nothing changed). */
long ring_take(sddf_ring *r, uint8_t *dst, uint32_t max_count, int commit)
{
    long used = ring_refresh(r);
    if (used < 0)
        return -1;
    uint32_t count = (uint32_t)used < max_count ? (uint32_t)used : max_count;
    if (count > r->capacity)  /* dst holds capacity entries, whatever our own index says */
        count = r->capacity;
    r->taken = count;
    r->refused = 0;
    if (count == 0)
        return 0;
    ring_copy(r, dst, NULL, count, 1);
    uint32_t good = r->check_net ? net_check(r, dst, count) : count;
    if (commit)
        ring_advance(r, count);
    return good;
}

/* Producer: copy as many of count entries from src as fit and publish them. Returns how
   many, -1 for a refused peer index, or -2 for a net descriptor whose oid does not fit its
   6 bits (bad_position; nothing written). */
long ring_put(sddf_ring *r, const uint8_t *src, uint32_t count)
{
    long used = ring_refresh(r);
    if (used < 0)
        return -1;
    uint32_t space = r->capacity - (uint32_t)used;
    if (count > space)
        count = space;
    if (r->check_net) {
        for (uint32_t i = 0; i < count; i++) {
            if (src[16 * i + 10] > 0x3f) {
                r->bad_position = i;
                return -2;
            }
        }
    }
    if (count) {
        ring_copy(r, NULL, src, count, 0);
        ring_advance(r, count);
    }
    return count;
}

/* The waiting side before it sleeps (sDDF's protocol): request a signal, seq_cst fence,
   re-check. If work appeared (entries for a consumer, room for a producer) cancel the request
   and return 1: go on instead of sleeping. 0: sleep, the peer will signal. -1: refused index. */
long ring_request_recheck(sddf_ring *r)
{
    __atomic_store_n((uint32_t *)(r->header + r->flag_offset), 0, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    long used = ring_refresh(r);
    if (used < 0)
        return -1;
    if (r->producer ? (uint32_t)used == r->capacity : used == 0)
        return 0;
    __atomic_store_n((uint32_t *)(r->header + r->flag_offset), 1, __ATOMIC_RELEASE);
    return 1;
}

/* The other side after making progress: seq_cst fence, then if a signal was requested
   cancel the request and return 1 (the caller notifies). */
int ring_claim_signal(sddf_ring *r)
{
    return flag_claim_u32(r->header, r->flag_offset);
}

/* The ledger's layout (sddf/ledger.py states it once for Python): u64 count of valid journal
   entries at 0, entries from LEDGER_ENTRIES. */
#define LEDGER_ENTRIES 64
typedef struct {
    uint32_t region, offset, width, reserved;
    uint64_t value;
} ledger_entry;

/* Write a commit's journal: the private index of every ring that moved since it was published
   (where it lives: its ledger_region/offset) and each dirty word (region 0, offset = its index);
   then make it valid with one store-release of the count. Returns the entry count (0: nothing
   to commit), or -1 if it would not fit the capacity (nothing written). */
long ledger_journal(sddf_ledger *l)
{
    ledger_entry *entries = (ledger_entry *)(l->ledger + LEDGER_ENTRIES);
    uint32_t n = 0;
    for (uint32_t i = 0; i < l->nrings; i++) {
        const sddf_ring *r = l->rings[i];
        if (r->own == r->published)
            continue;
        if (n == l->capacity)
            return -1;
        entries[n++] = (ledger_entry){r->ledger_region, r->ledger_offset, r->index_bits / 8, 0, r->own};
    }
    for (uint32_t i = 0; i < l->ndirty; i++) {
        if (n == l->capacity)
            return -1;
        entries[n++] = (ledger_entry){0, l->dirty[i], 8, 0, l->words[l->dirty[i]]};
    }
    if (n)
        __atomic_store_n((uint64_t *)l->ledger, (uint64_t)n, __ATOMIC_RELEASE);
    return n;
}

/* Apply the journalled commit: publish each moved ring index, store each dirty word (clearing
   its dirty flag and the dirty list), then clear the journal (count 0). */
void ledger_apply(sddf_ledger *l)
{
    for (uint32_t i = 0; i < l->nrings; i++) {
        sddf_ring *r = l->rings[i];
        if (r->own != r->published) {
            ring_store_own(r);
            r->published = r->own;
        }
    }
    for (uint32_t i = 0; i < l->ndirty; i++) {
        __atomic_store_n(l->shared_words + l->dirty[i], l->words[l->dirty[i]], __ATOMIC_RELEASE);
        l->dirty_flags[l->dirty[i]] = 0;
    }
    l->ndirty = 0;
    *l->pending = 0;
    if (l->progress)
        ++*l->progress;
    __atomic_store_n((uint64_t *)l->ledger, 0, __ATOMIC_RELEASE);
}

/* Journal, then apply (one call where nothing needs a point between them; sddf.faults splits it). */
long ledger_commit(sddf_ledger *l)
{
    long n = ledger_journal(l);
    if (n > 0)
        ledger_apply(l);
    return n;
}

/* ---- a PD's wait --------------------------------------------------------------------------- */

static void pd_beat(pd_waiter *w)
{
    if (w->heartbeat)
        __atomic_store_n((uint64_t *)w->heartbeat, ++w->beats, __ATOMIC_RELEASE);
}

static int64_t pd_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static inline void pd_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* The bounded poll: spin up to poll_ns watching the notification words (and, every so often,
   epoll without sleeping, for irqs and callbacks). Returns the events epoll reported (> 0), or 0
   when the time ran out (or -errno). A word found set is taken through epoll like any wake (its
   notifier writes the eventfd just after setting it: until then the spin goes on). */
static int pd_poll(pd_waiter *w, struct epoll_event *events, int max)
{
    int64_t deadline = pd_now_ns() + w->poll_ns;
    for (uint32_t spins = 1;; spins++) {
        int look = (spins & 63) == 0;
        for (uint32_t i = 0; i < w->npoll && !look; i++)
            look = __atomic_load_n((uint64_t *)w->poll_words[i], __ATOMIC_ACQUIRE) != 0;
        if (look) {
            int n = epoll_wait(w->epfd, events, max, 0);
            if (n != 0)
                return n < 0 ? (errno == EINTR ? 0 : -errno) : n;
        }
        if ((spins & 15) == 0 && pd_now_ns() >= deadline)
            return 0;
        pd_relax();
    }
}

/* Judge the channels the last wake returned: unproductive if the PD made no progress since. */
void pd_settle(pd_waiter *w)
{
    if (w->nhandled && w->progress && *w->progress == w->seen) {
        w->unproductive += w->nhandled;
        for (uint32_t i = 0; i < w->nhandled; i++)
            w->unproductive_by_channel[w->handled[i] & 63]++;
    }
    w->nhandled = 0;
}

/* Judge the last wake's channels (pd_settle), mark the PD out of its handlers (heartbeat even),
   sleep in epoll until something is ready (or `timeout_ms`: -1 for ever; with poll_ns, after
   the bounded poll), then mark it in them (odd).
   Fill `out` with what woke it: the channel of each notification whose pending word this claimed
   and of each irq that fired, and -(fd + 1) for each callback fd (the publish timer among them:
   it is read and disarmed here). The first wake by anything but that timer arms it. Returns the
   count, or -errno (only before anything was claimed). */
int pd_wait(pd_waiter *w, int timeout_ms, int32_t *out, int max)
{
    struct epoll_event events[64];
    if (max > 64)
        max = 64;
    pd_settle(w);
    if (w->beats & 1)
        pd_beat(w);
    int n = w->poll_ns > 0 && timeout_ms != 0 ? pd_poll(w, events, max) : 0;
    if (n < 0)
        return n;
    if (n == 0)
        n = epoll_wait(w->epfd, events, max, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    int k = 0, woken = 0;  /* woken: by something other than the publish timer */
    for (int i = 0; i < n; i++) {
        int fd = events[i].data.fd;
        pd_source *s = (uint32_t)fd < w->nsources ? &w->sources[fd] : NULL;
        if (!s || s->kind == 0)
            continue;
        if (s->kind == 4) {  /* the publish timer: read (it cannot fail but EAGAIN), now disarmed */
            uint64_t expiries;
            (void)!read(fd, &expiries, sizeof expiries);
            w->timer_armed = 0;
            out[k++] = -(fd + 1);
            continue;
        }
        woken = 1;
        int32_t got;
        if (s->kind == 1) {
            if (!__atomic_exchange_n((uint64_t *)s->word, 0, __ATOMIC_ACQ_REL))
                continue;  /* an edge whose word an earlier wake already claimed */
            got = s->channel;
        } else {
            got = s->kind == 2 ? s->channel : -(fd + 1);
        }
        out[k++] = got;
        if (got >= 0 && w->nhandled < 64)  /* a channel for notified(): judged at the next wait */
            w->handled[w->nhandled++] = got;
    }
    w->wakeups += w->nhandled;
    if (w->progress)
        w->seen = *w->progress;
    pd_beat(w);
    if (woken && !w->timer_armed && w->timerfd >= 0) {
        /* a failure leaves it disarmed, to be tried at the next wake: never lose what was claimed */
        struct itimerspec spec = {{0, 0}, {w->period_ns / 1000000000, w->period_ns % 1000000000}};
        w->timer_armed = timerfd_settime(w->timerfd, 0, &spec, NULL) == 0;
    }
    return k;
}

/* Mark the PD in a handler (heartbeat odd) outside a wait: its init. */
void pd_enter(pd_waiter *w)
{
    if (!(w->beats & 1))
        pd_beat(w);
}

/* A non-blocking CLOCK_MONOTONIC timerfd, or -errno. */
int new_timerfd(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}
