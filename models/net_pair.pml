/* net_pair.pml: one net free/active queue pair between two components, as pysddf implements it.
 *
 * The driver's rx side (tap_rx.pml: TapDriver) fills buffers from the TAP and produces them on
 * rx_active, taking empty ones from rx_free. virt_rx (virtualisers/net/rx.py: NetVirtRx, with no
 * clients) consumes rx_active and produces on rx_free: every frame is for no client, so _demux
 * gives its buffer straight back to the driver. So this is the pair's round trip and nothing
 * else: the producer of each queue is the consumer of the other. The device delivers FRAMES
 * frames at any moments; the pool is POOL buffers.
 *
 * Checked (models/README.md): assertions (buffer conservation, CONSERVED, at every move; queues
 * never overflow; nothing left to do once every process is blocked) and invalid end states.
 */
#ifndef POOL
#define POOL 3
#endif
#ifndef FRAMES
#define FRAMES 4
#endif

#define NPD 2
#define DRV 0       /* the driver, its channels: */
#define IRQ 1       /*   the TAP's irq */
#define RX 2        /*   rx, from virt_rx */
#define VIRT 1      /* virt_rx, its channel: */
#define FROM_DRV 1  /*   from the driver */

#define CONSERVED (IN(rx_free) + IN(rx_active) + drv_held + virt_held == POOL)
#include "queue.pml"

byte virt_held = POOL;  /* buffers in virt_rx's hands (its to_driver): a fresh virt_rx holds the pool */

#include "tap_rx.pml"

/* the device: FRAMES frames reach the TAP, each at any moment */
active proctype device() {
    byte sent;
    do
    :: sent < FRAMES -> tap++; sent++
    :: else -> break
    od
}

/* NetVirtRx's ledger.track(driver_free, driver_active, ...) */
inline virt_commit() {
    if
    :: dirty -> d_step { publish_tail(rx_free); publish_head(rx_active); dirty = 0 }
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

/* NetVirtRx._demux: each frame (for no client) goes on to_driver, then _give_to_driver */
inline demux() {
    give_to_driver(got)
}

/* NetVirtRx.notified (any channel): rx_return = drain(driver_active, _demux); then rx_provide,
 * which with no clients is _give_to_driver: nothing left to give (every batch was given back
 * at once, and the driver's queue never refuses one) */
inline virt_notified() {
    drain(rx_active, virt_held, demux)
}

active proctype virt_rx() {
    byte mask, got;
    bit work, yes, dirty;
    /* init: a fresh ledger puts every buffer in to_driver; notified(driver channel) (rx_return,
     * then rx_provide's _give_to_driver sends them); ledger.commit() commits */
    virt_notified();
    give_to_driver(POOL);
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

/* no lost wake-up: `timeout` holds only when no process can move (every component sleeps and
 * the device is done); nothing may be left to do then: the TAP is empty, no frame is on its way
 * and every buffer is back on the driver's free queue, published */
active proctype watchdog() {
end:
    do
    :: timeout ->
progress:  /* idling once all is done is the one cycle allowed (spin -DNP: no livelock) */
        assert(tap == 0 && IN(rx_active) == 0 && rx_free.ready == POOL)
    od
}
