/* net_tx_chain.pml: the transmit path client -> virt_tx -> driver and the buffers' way back, as
 * pysddf implements it.
 *
 * The client (sddf/net/client.py: NetClient) is asked to send FRAMES frames by its application
 * (a channel of its own, e.g. a timer or a received request: other_notified then send); it
 * moves them from its backlog onto tx active while tx free has buffers. virt_tx
 * (virtualisers/net/tx.py: NetVirtTx) fills the client's tx free queue with its TXB buffers at
 * a fresh start, moves frames to the driver's queue (busy list, turns, room) and gives back the
 * buffers the driver has sent. The driver (drivers/net/tap.py: TapDriver, tx side) writes
 * each frame to the TAP and returns its buffer. Four queues, one pool:
 *   tx_free, tx_active    virt_tx <-> client
 *   drv_free, drv_active  driver <-> virt_tx
 *
 * Checked (models/README.md): assertions (buffer conservation, CONSERVED, at every move; queues
 * never overflow; nothing left to do once every process is blocked) and invalid end states.
 */
#ifndef TXB
#define TXB 2
#endif
#ifndef FRAMES
#define FRAMES 3
#endif
#ifndef BURST
#define BURST 2
#endif

#define CAP TXB  /* each queue holds the whole pool and no more (the tightest Sddf.Net allows) */
#define NPD 3
#define DRV 0          /* the driver, its channel: */
#define TX 1           /*   tx, from virt_tx */
#define VTX 1          /* virt_tx, its channels: */
#define FROM_DRV 1     /*   from the driver */
#define FROM_CLIENT 2  /*   from the client */
#define CL 2           /* the client, its channels: */
#define FROM_VTX 1     /*   tx, from virt_tx */
#define APP 2          /*   its application's */

/* every buffer is in exactly one queue or one component's hands */
#define CONSERVED (IN(tx_free) + IN(tx_active) + IN(drv_free) + IN(drv_active) + cl_held + vtx_held + drv_held == TXB)

#include "queue.pml"

Queue tx_free, tx_active, drv_free, drv_active;

byte cl_held;           /* buffers in the client's hands */
byte vtx_held = TXB;    /* buffers in virt_tx's hands (its client's `returns`): a fresh virt_tx holds them */
byte drv_held;          /* buffers in the driver's hands */
byte due;               /* frames the application has asked the client to send, not yet taken */
byte backlog;           /* NetClient.backlog: frames taken, waiting for a tx buffer */

/* the application: FRAMES frames to send, BURST at a time, each burst at any moment (before
 * virt_tx's init too), with a notification on its channel */
active proctype app() {
    byte asked, n;
    do
    :: asked < FRAMES ->
        n = MIN(BURST, FRAMES - asked);
        atomic { due = due + n; pend[CL] = pend[CL] | APP };
        asked = asked + n
    :: else -> break
    od
}

/* ---- client ------------------------------------------------------------------------------- */

/* NetClient's ledger.track(rx_free, rx_active, tx_free, tx_active) (its rx side is idle here) */
inline client_commit() {
    if
    :: dirty -> d_step { publish_head(tx_free); publish_tail(tx_active); dirty = 0 }
    :: else
    fi
}

/* NetClient.transmit: while the backlog lasts, take free buffers (none: request a signal and
 * re-check), fill them, enqueue them on tx active; signal_needed() (commit, claim), notify */
inline transmit() {
    do
    :: backlog == 0 -> break
    :: else ->
        atomic { want = MIN(backlog, BATCH); dequeue(tx_free, want, got, cl_held) };
        if
        :: got == 0 ->
            request_recheck(tx_free, work);
            if
            :: work
            :: else -> break
            fi
        :: else ->
            atomic { backlog = backlog - got; enqueue(tx_active, got, cl_held); client_commit() };
            claim(tx_active, yes);
            notify_if(yes, VTX, FROM_CLIENT)
        fi
    od
}

active proctype client() {
    byte mask, got, want;
    bit work, yes, dirty;
    /* init: setup, receive (rx idle), transmit (nothing yet); ledger.commit() commits nothing */
end:
    do
    :: wait(CL, mask);
        /* Component.run: notified(ch) then commit, for each ready channel, in any order;
         * notified: the application's channel: other_notified (its frames to the backlog);
         * then, whichever the channel, transmit */
        do
        :: mask & APP -> mask = mask & ~APP; d_step { backlog = backlog + due; due = 0 }; transmit(); client_commit()
        :: mask & FROM_VTX -> mask = mask & ~FROM_VTX; transmit(); client_commit()
        :: mask == 0 -> break
        od
    od
}

/* ---- virt_tx ------------------------------------------------------------------------------ */

/* NetVirtTx's ledger.track(driver_free, driver_active, c.free, c.active) */
inline vtx_commit() {
    if
    :: dirty -> d_step { publish_head(drv_free); publish_tail(drv_active); publish_tail(tx_free); publish_head(tx_active); dirty = 0 }
    :: else
    fi
}

/* NetVirtTx._completed: each buffer the driver sent goes to its client's returns; then
 * _return_all: _return_to(c) puts them on c's free queue, signal_needed(), notify */
inline completed() {
    atomic { enqueue(tx_free, got, vtx_held); vtx_commit() };
    claim(tx_free, yes);
    notify_if(yes, CL, FROM_VTX)
}

/* NetVirtTx.tx_return: drain(driver_free, _completed), then _return_all: nothing left (each
 * batch was returned with its own: the client's free queue never refuses one) */
inline tx_return() {
    drain(drv_free, vtx_held, completed)
}

/* NetVirtTx.tx_provide: round robin over the busy clients while the driver's queue has room:
 * take up to min(batch, room) frames; fewer than that: request a signal and re-check (nothing:
 * the client ran dry and leaves the busy list); put them on the driver's queue, signal_needed(),
 * notify the driver; a client not drained takes its next turn */
inline tx_provide() {
    do
    :: !busy -> break
    :: else ->
        room = CAP - drv_active.staged - drv_active.ready - drv_active.taken;  /* free_slots: load the head */
        if
        :: room == 0 -> break  /* the driver's returns (always asked for) wake us to go on */
        :: else
        fi;
        busy = 0;  /* popleft */
        want = MIN(BATCH, room);
        dequeue(tx_active, want, got, vtx_held);
        drained = 0;
        if
        :: got < want ->
            request_recheck(tx_active, work);
            drained = !work
        :: else
        fi;
        if
        :: got > 0 ->
            atomic { enqueue(drv_active, got, vtx_held); vtx_commit() };
            claim(drv_active, yes);
            notify_if(yes, DRV, TX)
        :: else
        fi;
        busy = !drained
    od
}

active proctype virt_tx() {
    byte mask, got, room, want;
    bit work, yes, dirty, drained;
    bit busy = 1;  /* NetVirtTx.busy: the client may have frames (one client: in the list or not) */
    /* init: a fresh ledger: fill_free(c.free), then signal_needed() on it (commit, claim) and
     * notify a client that asked before virt_tx started (models/README.md, Found);
     * notified(driver channel); ledger.commit() */
    atomic { enqueue(tx_free, TXB, vtx_held); vtx_commit() };
#ifndef NO_FRESH_NOTIFY
    claim(tx_free, yes);
    notify_if(yes, CL, FROM_VTX);
#endif
    tx_return();
    tx_provide();
    vtx_commit();
end:
    do
    :: wait(VTX, mask);
        /* notified(ch), then commit, for each ready channel in any order: a client's channel
         * puts it on the busy list (if not there); then tx_return, tx_provide */
        do
        :: mask & FROM_CLIENT -> mask = mask & ~FROM_CLIENT; busy = 1; tx_return(); tx_provide(); vtx_commit()
        :: mask & FROM_DRV -> mask = mask & ~FROM_DRV; tx_return(); tx_provide(); vtx_commit()
        :: mask == 0 -> break
        od
    od
}

/* ---- driver ------------------------------------------------------------------------------- */

/* TapDriver's ledger.track(rx_free, rx_active, tx_free, tx_active): virt_tx reads both indices a
 * tx commit publishes (returned buffers on tx free, room on tx active), so they are two steps,
 * in that order */
inline driver_commit() {
    if
    :: dirty ->
        d_step { publish_tail(drv_free) };
        d_step { publish_head(drv_active); dirty = 0 }
    :: else
    fi
}

/* TapDriver.tx_return: write each frame to the TAP, every buffer back on tx free;
 * signal_needed() (commit, claim), notify virt_tx */
inline tap_tx_return() {
    enqueue(drv_free, got, drv_held);
    driver_commit();
    claim(drv_free, yes);
    notify_if(yes, VTX, FROM_DRV)
}

active proctype driver() {
    byte mask, got;
    bit work, yes, dirty;
    /* init: rx_return (rx idle), tx_provide = drain(tx_active, tx_return); ledger.commit() */
    drain(drv_active, drv_held, tap_tx_return);
    driver_commit();
end:
    do
    :: wait(DRV, mask);  /* notified(tx channel): tx_provide */
        drain(drv_active, drv_held, tap_tx_return);
        driver_commit()
    od
}

/* no lost wake-up: `timeout` holds only when no process can move (every component sleeps and
 * the application is done); nothing may be left to do then: every frame sent, every buffer back
 * on the client's free queue, published */
active proctype watchdog() {
end:
    do
    :: timeout ->
progress:  /* idling once all is done is the one cycle allowed (spin -DNP: no livelock) */
        assert(due == 0 && backlog == 0 && IN(tx_active) == 0 && IN(drv_active) == 0 &&
               IN(drv_free) == 0 && tx_free.ready == TXB)
    od
}
