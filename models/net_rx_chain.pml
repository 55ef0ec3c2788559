/* net_rx_chain.pml: the receive path driver -> virt_rx -> copier -> client, as pysddf implements it.
 *
 * The driver (tap_rx.pml) fills SHARED buffers of the rx data region from the TAP; virt_rx
 * (virtualisers/net/rx.py) passes each frame to the one client's copier and returns the buffers
 * the copier gives back; the copier (virtualisers/net/copy.py) copies each frame into one of the
 * client's CLIENT own buffers, or drops it when the client has none free (sDDF's contract: it
 * never waits on its client), and gives the shared buffer straight back; the client
 * (sddf/net/client.py: NetClient, owning its rx buffers) takes each frame and returns its buffer.
 * Six queues, two pools:
 *   rx_free, rx_active  driver <-> virt_rx   (tap_rx.pml)   shared pool
 *   cp_free, cp_active  virt_rx <-> copier                  shared pool
 *   cl_free, cl_active  copier <-> client                   the client's pool
 *
 * Checked (models/README.md): assertions (conservation of both pools, CONSERVED, at every move;
 * queues never overflow; nothing left to do once every process is blocked) and invalid end states.
 */
#ifndef SHARED
#define SHARED 2
#endif
#ifndef CLIENT
#define CLIENT 1
#endif
#ifndef BURST
#define BURST 2
#endif
#ifndef LATER
#define LATER 1
#endif

#define NPD 4
#define DRV 0          /* the driver, its channels: */
#define IRQ 1          /*   the TAP's irq */
#define RX 2           /*   rx, from virt_rx */
#define VIRT 1         /* virt_rx, its channels: */
#define FROM_DRV 1     /*   from the driver */
#define FROM_COPIER 2  /*   from the copier (its client port) */
#define COPIER 2       /* the copier, its channels: */
#define FROM_VIRT 1    /*   from virt_rx */
#define FROM_CLIENT 2  /*   from the client */
#define CL 3           /* the client, its channel: */
#define FROM_CP 1      /*   rx, from the copier */

/* every buffer of each pool is in exactly one queue or one component's hands */
#define CONSERVED \
    (IN(rx_free) + IN(rx_active) + IN(cp_free) + IN(cp_active) + drv_held + virt_held + cp_shared == SHARED && \
     IN(cl_free) + IN(cl_active) + cp_own + cl_held == CLIENT)

#include "queue.pml"

Queue cp_free, cp_active, cl_free, cl_active;

byte virt_held = SHARED;  /* shared buffers in virt_rx's hands (to_driver): a fresh virt_rx holds them all */
byte cp_shared;           /* shared buffers in the copier's hands */
byte cp_own;              /* client buffers in the copier's hands */
byte cl_held = CLIENT;    /* client buffers in the client's hands: it owns them at first */

#include "tap_rx.pml"

/* the device: BURST frames at once at any moment (racing with every component's init), then
 * LATER more, one at a time, each once the whole system is idle (two frames arriving apart
 * while both are on their way multiply the states past what CI can explore: net_pair covers
 * frames at any moments) */
active proctype device() {
    byte later;
    tap = BURST;
end:
    do
    :: atomic { timeout && later < LATER -> tap++; later++ }
    od
}

/* ---- virt_rx ------------------------------------------------------------------------------ */

/* NetVirtRx's ledger.track(driver_free, driver_active, c.free, c.active) */
inline virt_commit() {
    if
    :: dirty -> d_step { publish_tail(rx_free); publish_head(rx_active); publish_head(cp_free); publish_tail(cp_active); dirty = 0 }
    :: else
    fi
}

/* NetVirtRx._give_to_driver with n buffers in to_driver: enqueue them on the driver's free
 * queue; signal_needed() (commit, claim); notify the driver */
inline give_to_driver(n) {
    atomic { enqueue(rx_free, n, virt_held); virt_commit() };
    claim(rx_free, yes);
    notify_if(yes, DRV, RX)
}

/* NetVirtRx._demux: every frame is for the client (its MAC, or broadcast: the same with one
 * client); _deliver enqueues them on its active queue; _give_to_driver has nothing to give;
 * then signal_needed() (commit, claim) and notify the copier */
inline demux() {
    atomic { enqueue(cp_active, got, virt_held); virt_commit() };
    claim(cp_active, yes);
    notify_if(yes, COPIER, FROM_VIRT)
}

/* NetVirtRx._returned: each buffer the copier gave back was its last holder's: to_driver, then
 * _give_to_driver */
inline returned() {
    give_to_driver(got)
}

/* NetVirtRx.notified (any channel): rx_return = drain(driver_active, _demux); rx_provide =
 * drain(c.free, _returned), then _give_to_driver: nothing left (every batch was given back with
 * its own, and the driver's queue never refuses one) */
inline virt_notified() {
    drain(rx_active, virt_held, demux);
    drain(cp_free, virt_held, returned)
}

active proctype virt_rx() {
    byte mask, got;
    bit work, yes, dirty;
    /* init: a fresh ledger puts every buffer in to_driver; notified(driver channel) (its
     * rx_provide's _give_to_driver sends them); ledger.commit() commits */
    virt_notified();
    give_to_driver(SHARED);
    virt_commit();
end:
    do
    :: wait(VIRT, mask);
        do
        :: mask != 0 -> mask = mask & (mask - 1); virt_notified(); virt_commit()
        :: else -> break
        od
    od
}

/* ---- copier ------------------------------------------------------------------------------- */

/* NetCopier's ledger.track(virt_free, virt_active, client_free, client_active) */
inline copier_commit() {
    if
    :: dirty -> d_step { publish_tail(cp_free); publish_head(cp_active); publish_head(cl_free); publish_tail(cl_active); dirty = 0 }
    :: else
    fi
}

/* NetCopier._copy: a free client buffer for each frame (client_free.dequeue_many; it never waits:
 * frames beyond them are dropped, counted), the copies on client_active, every shared buffer
 * back on virt_free; notify the client if some were sent and it asked, virt_rx if it asked */
inline copy() {
    dequeue(cl_free, got, spare, cp_own);
    if
    :: spare > 0 ->
        atomic { enqueue(cl_active, spare, cp_own); enqueue(cp_free, got, cp_shared); copier_commit() };
        claim(cl_active, yes);
        notify_if(yes, CL, FROM_CP)
    :: else -> atomic { enqueue(cp_free, got, cp_shared); copier_commit() }
    fi;
    claim(cp_free, yes);
    notify_if(yes, VIRT, FROM_COPIER)
}

active proctype copier() {
    byte mask, got, spare;
    bit work, yes, dirty;
    /* init: rx_return = drain(virt_active, _copy); notified (any channel): the same */
    drain(cp_active, cp_shared, copy);
    copier_commit();
end:
    do
    :: wait(COPIER, mask);
        do
        :: mask != 0 -> mask = mask & (mask - 1); drain(cp_active, cp_shared, copy); copier_commit()
        :: else -> break
        od
    od
}

/* ---- client ------------------------------------------------------------------------------- */

/* NetClient's ledger.track(rx_free, rx_active, tx_free, tx_active) (its tx side is idle here) */
inline client_commit() {
    if
    :: dirty -> d_step { publish_tail(cl_free); publish_head(cl_active); dirty = 0 }
    :: else
    fi
}

/* NetClient._receive: every buffer back on rx free; signal_needed(): notify the copier */
inline receive() {
    atomic { enqueue(cl_free, got, cl_held); client_commit() };
    claim(cl_free, yes);
    notify_if(yes, COPIER, FROM_CLIENT)
}

active proctype client() {
    byte mask, got;
    bit work, yes, dirty;
    /* init: fill_free(rx_free) (a fresh client owns its rx buffers; staged, no signal), then
     * receive = drain(rx_active, _receive) (transmit: nothing to send); ledger.commit() commits */
    enqueue(cl_free, CLIENT, cl_held);
    drain(cl_active, cl_held, receive);
    client_commit();
end:
    do
    :: wait(CL, mask);  /* notified(rx channel): receive (then transmit: nothing) */
        drain(cl_active, cl_held, receive);
        client_commit()
    od
}

/* no lost wake-up: `timeout` holds only when no process can move (every component sleeps; the
 * device waits for just this to send its next frame); nothing may be left to do then: the TAP is
 * empty, no frame is on its way and every buffer is back where it waits for a frame, published */
active proctype watchdog() {
end:
    do
    :: timeout ->
progress:  /* idling once all is done is the one cycle allowed (spin -DNP: no livelock) */
        assert(tap == 0 && IN(rx_active) == 0 && IN(cp_active) == 0 && IN(cl_active) == 0 &&
               rx_free.ready == SHARED && cl_free.ready == CLIENT)
    od
}
