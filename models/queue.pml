/* queue.pml: what every model includes (it is not a model itself).
 *
 * A net queue as pysddf implements it (sddf/queue/ring.py, sddf/_ring.c, sddf/ledger.py), its
 * ends' operations, and seL4-style notifications (sddf/channel.py). Which buffer is where never
 * matters to the signalling protocol, so a queue holds counts, not descriptors.
 *
 * Memory model: spin interleaves whole statements, i.e. it is sequentially consistent. The two
 * seq_cst fences of the protocol (request -> fence -> re-check; publish -> fence -> flag check)
 * are what makes the real machine behave so for these store-buffering pairs, so a fence is a
 * no-op here; a model cannot show what leaving one out would do.
 *
 * Granularity: every load or store of shared memory that another process reads (an index, a
 * signal flag, a notification word, the TAP) is its own step, so a peer can act between any two.
 * Private work (a component's locals, its staged index moves) joins the step it leads to, and a
 * step that would change nothing visible (a commit with nothing staged) is no step at all. The
 * stores of one commit are one step where no other process reads two of them (see publish_tail).
 */

/* Every queue holds its whole pool, as Sddf.Net sizes them (sddf/net/wiring.py: _pair). */
#ifndef CAP
#define CAP 4
#endif
/* Entries a component moves per pass (the `batch` of drain() and of each component's config):
 * smaller than a pool, so both full batches ("maybe more") and partial ones happen. */
#ifndef BATCH
#define BATCH 2
#endif

#define MIN(a, b) ((a) < (b) -> (a) : (b))

/* One net queue (header: u16 tail, u16 head, u32 consumer_signalled). Both ends of every net
 * queue are tracked by their component's ledger, so an end's index moves privately (it is
 * *staged*) and is published by the next commit. The indices as counts:
 *   staged = producer's private tail - published tail   (enqueued, not yet visible)
 *   ready  = published tail - consumer's private head    (what the consumer can take)
 *   taken  = consumer's private head - published head    (taken, slots not yet free)
 * The consumer sees ready entries; the producer sees staged + ready + taken slots in use. */
typedef Queue {
    byte staged;
    byte ready;
    byte taken;
    bit  flag;   /* consumer_signalled: 0 = the consumer asked for a signal; memory starts zeroed */
}

/* Buffers logically in a queue (enqueued, whether published yet or not). */
#define IN(q) (q.staged + q.ready)

/* The ends' private index moves. Each is one indivisible step that asserts buffer conservation
 * (CONSERVED, which the model defines: every buffer of each pool is in exactly one queue or one
 * component's hands), so conservation is checked in every state where a buffer moved. `held`
 * counts the buffers in the caller's hands; the caller's local `dirty` says its ledger has
 * something to commit. */

/* EntryProducer.enqueue_many -> ring_put: the private tail moves (staged). Every queue holds its
 * whole pool, so it never refuses a buffer: asserted (one that could not would lose it). */
inline enqueue(q, n, held) {
    d_step {
        assert(q.staged + q.ready + q.taken + n <= CAP);
        q.staged = q.staged + n;
        held = held - n;
        dirty = 1;
        assert(CONSERVED)
    }
}

/* EntryConsumer.dequeue_many -> ring_take: load the tail, take up to `max`: `n` (staged head). */
inline dequeue(q, max, n, held) {
    d_step {
        n = MIN(max, q.ready);
        q.ready = q.ready - n;
        q.taken = q.taken + n;
        held = held + n;
        dirty = dirty | (n > 0);
        assert(CONSERVED)
    }
}

/* EntryConsumer.release after peek_many: the first n entries looked at are taken (staged head). */
inline release(q, n, held) {
    d_step {
        q.ready = q.ready - n;
        q.taken = q.taken + n;
        held = held + n;
        dirty = 1;
        assert(CONSERVED)
    }
}

/* Ledger.commit -> ledger_apply: publish every staged index of the component, one store-release
 * per queue end in the order the component tracked them (ledger.track): a producer end its tail,
 * a consumer end its head; nothing if nothing moved (ledger_journal returns 0). A model's commit
 * does the stores in one step where no other process reads two of them (so their order cannot
 * be seen), in several where one does. */
#define publish_tail(q) q.ready = q.ready + q.staged; q.staged = 0
#define publish_head(q) q.taken = 0

/* drain (sddf/queue/ring.py): consume q until it stays empty under the protocol: take a batch
 * (got, into the caller's `held`) and handle() it; after a full batch go on (maybe more), else
 * request a signal and re-check: sleep if nothing appeared. Uses the caller's got and work. */
#define drain(q, held, handle) \
    do \
    :: dequeue(q, BATCH, got, held); \
        if \
        :: got > 0 -> handle() \
        :: else \
        fi; \
        if \
        :: got == BATCH \
        :: else -> \
            request_recheck(q, work); \
            if \
            :: work \
            :: else -> break \
            fi \
        fi \
    od

/* RingEnd.request_and_recheck -> ring_request_recheck: request a signal (store 0), seq_cst fence,
 * re-check (load the tail); if work appeared cancel the request (store 1) and go on (work = 1),
 * else sleep (work = 0): the producer will signal.
 * NO_RECHECK, the broken variant: request and sleep without looking again. */
inline request_recheck(q, work) {
    q.flag = 0;
#ifdef NO_RECHECK
    work = 0
#else
    if
    :: q.ready > 0 -> q.flag = 1; work = 1
    :: else -> work = 0
    fi
#endif
}

/* The signalling end's claim, after the component has committed (a tracked end's signal_needed
 * commits first, ledger._committing): ring_claim_signal -> flag_claim_u32: seq_cst fence, load
 * the flag; if 0, store 1 (a load then a store, not an atomic exchange) and the caller notifies. */
inline claim(q, yes) {
    if
    :: q.flag == 0 -> q.flag = 1; yes = 1
    :: else -> yes = 0
    fi
}

/* Notifications (sddf/channel.py): one pending word per channel direction; notify_word sets it
 * (and writes the receiver's eventfd if it was clear), so notifies coalesce until the receiver
 * takes them. pend[pd] holds a bit per channel of that PD. */
byte pend[NPD];

#ifdef SKIP_NOTIFY
bit skipped;  /* the broken variant: one notify, any one, is lost after its claim succeeded */
#endif

/* Component.notify(ch) after a claim that said yes: its ledger commit has nothing left to publish
 * (signal_needed just committed), then notify_word. */
inline notify_if(yes, pd, ch) {
    if
    :: yes ->
#ifdef SKIP_NOTIFY
        if
        :: !skipped -> skipped = 1
        :: true -> pend[pd] = pend[pd] | ch
        fi
#else
        pend[pd] = pend[pd] | ch
#endif
    :: else
    fi
}

/* Waiter.wait: sleep until a channel of `pd` is pending, then take every pending channel and
 * clear their words (Notification.consume). The loop that calls it is labelled end: sleeping
 * there is a valid end state; whether it was right to sleep is the watchdog's question. */
inline wait(pd, mask) {
    atomic { pend[pd] != 0 -> mask = pend[pd]; pend[pd] = 0 }
}
