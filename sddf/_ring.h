/* The C core of pysddf's queues and notifications, declared once: read by cffi (sddf/_atomic_build.py)
   and included by _ring.c. Plain declarations only (cffi's parser takes no preprocessor lines). */
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

/* Where a net consumer accepts buffers: descriptors naming [lo, hi] in steps of `align`. */
typedef struct {
    uint64_t lo, hi;
} sddf_span;

/* One end of an SPSC queue (sddf/queue/ring.py keeps the Python face): our own index and the
   last accepted value of the peer's are private; the peer's is validated on every read. */
typedef struct {
    uint8_t *header;
    uint8_t *entries;
    uint32_t own_offset, peer_offset, index_bits, capacity, entry_size, producer;
    uint32_t flag_offset;    /* the u32 signal flag in the header (0 = signal requested) */
    uint32_t own, peer;
    uint32_t refused_peer;   /* the peer index last refused by ring_refresh */
    /* net descriptors: a consumer checks each one it takes against spans/align/max_len and
       masks oid to 6 bits; a producer refuses to write an oid over 63 */
    uint32_t check_net;
    const sddf_span *spans;
    uint32_t span_count;
    uint32_t align, max_len;
    uint32_t taken;          /* entries the last ring_take consumed (good and refused) */
    uint32_t refused;        /* of those, refused (not handed out) */
    uint64_t bad_io;         /* the first refused descriptor of that batch */
    uint32_t bad_len, bad_oid, bad_position;
    /* a ring tracked by its PD's ledger (sddf/ledger.py) stages its index: ring_advance moves
       `own` only, and ledger_apply publishes it; where its index lives, for the journal */
    uint32_t staged, published;
    uint32_t ledger_region, ledger_offset;
    uint8_t *pending;        /* a staged ring sets its ledger's pending mark when it moves */
} sddf_ring;

long ring_refresh(sddf_ring *r);
void ring_advance(sddf_ring *r, uint32_t count);
long ring_take(sddf_ring *r, uint8_t *dst, uint32_t max_count, int commit);
long ring_put(sddf_ring *r, const uint8_t *src, uint32_t count);
long ring_request_recheck(sddf_ring *r);
int ring_claim_signal(sddf_ring *r);

/* A PD's ledger: its commits are journalled (new ring indices and words) before they are applied,
   so a PD killed mid-commit finds the journal and applies it again when restarted. */
typedef struct {
    uint8_t *ledger;         /* the ledger page: journal count, entries, then the shared words */
    uint32_t capacity;       /* journal entries it holds */
    sddf_ring **rings;       /* the tracked queue ends */
    uint32_t nrings;
    uint64_t *shared_words;  /* the committed words, in the page */
    const uint64_t *words;   /* the PD's own copy, which set() changes first */
    uint32_t *dirty;         /* the words changed since the last commit */
    uint32_t ndirty;
    uint8_t *dirty_flags;    /* per word: listed in dirty */
    uint8_t *pending;        /* set when a tracked ring moves; cleared by ledger_apply */
    uint64_t *progress;      /* the PD's progress count (NULL: none), which ledger_apply bumps */
} sddf_ledger;

long ledger_journal(sddf_ledger *l);
void ledger_apply(sddf_ledger *l);
long ledger_commit(sddf_ledger *l);

/* A PD's wait (sddf/channel.py's Waiter): one epoll set and what each fd in it is. */
typedef struct {
    uint8_t kind;            /* 0 none, 1 notification word, 2 irq, 3 callback, 4 publish timer */
    int32_t channel;
    uint8_t *word;           /* a notification's pending word */
} pd_source;

typedef struct {
    int epfd;
    uint32_t nsources;       /* sources[fd] describes fd, for fd < nsources */
    pd_source *sources;
    uint8_t *heartbeat;      /* the PD's heartbeat u64 (NULL: none): even while it waits, odd after */
    uint64_t beats;
    int timerfd;             /* the counters' publish timer (-1: none), armed by the first wake after a publish */
    int timer_armed;
    int64_t period_ns;
    int64_t poll_ns;         /* spin this long before sleeping (0: never), watching poll_words */
    uint8_t **poll_words;    /* the pending words of the notifications */
    uint32_t npoll;
    /* wake-up accounting: a wake whose handlers made no progress (no commit published, nobody
       notified: *progress unchanged) is unproductive, for each channel it handled */
    uint64_t *progress;      /* the PD's progress count (NULL: no accounting) */
    uint64_t seen;           /* *progress when the last wake returned */
    uint32_t nhandled;       /* the channels the last wake returned, still to be judged */
    int32_t handled[64];
    uint64_t wakeups;        /* channels handled */
    uint64_t unproductive;   /* of them, in wakes that made no progress */
    uint64_t unproductive_by_channel[64];
} pd_waiter;

int pd_wait(pd_waiter *w, int timeout_ms, int32_t *out, int max);
void pd_enter(pd_waiter *w);
void pd_settle(pd_waiter *w);
int new_timerfd(void);
