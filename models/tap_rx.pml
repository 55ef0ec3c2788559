/* tap_rx.pml: the net driver's rx side (drivers/net/tap.py: TapDriver) over a TAP, as
 * net_pair.pml and net_rx_chain.pml include it (it is not a model itself). The driver's tx side
 * is idle in these models (init's tx_provide finds nothing; nothing notifies its tx channel).
 *
 * The including model defines, before including queue.pml and this file: DRV (the driver's pd),
 * IRQ and RX (its channel bits: the TAP's irq, rx from virt_rx), VIRT and FROM_DRV (virt_rx's pd
 * and its channel bit from the driver), and the buffer counts CONSERVED names; after it, the
 * device process that puts frames in `tap`.
 */

Queue rx_free, rx_active;  /* rx_free: virt_rx -> driver; rx_active: driver -> virt_rx */

byte tap;              /* frames waiting in the TAP (the kernel's queue) */
bit tap_readable = 1;  /* TapDriver.tap_readable: True until a read finds the TAP empty */
bit armed = 1;         /* the irq's EPOLLONESHOT registration: armed until it fires, re-armed by irq_ack */
byte drv_held;         /* rx buffers in the driver's hands (filled, not yet on rx_active) */

/* TapDriver's ledger.track(rx_free, rx_active, tx_free, tx_active): the order a commit publishes
 * them (the tx ends never move here) */
inline driver_commit() {
    if
    :: dirty -> d_step { publish_head(rx_free); publish_tail(rx_active); dirty = 0 }
    :: else
    fi
}

/* TapDriver.rx_return, with rx_provide and _read_frames inlined */
inline rx_return() {
    do
    :: !tap_readable -> break
    :: else ->
        /* rx_provide: peek_many up to a batch on rx free (left there until used); none: request
         * a signal and re-check (work: peek again) */
        do
        :: peek = MIN(BATCH, rx_free.ready);
            if
            :: peek > 0 -> break
            :: else ->
                request_recheck(rx_free, work);
                if
                :: work
                :: else -> break
                fi
            fi
        od;
        if
        :: peek == 0 -> break
        :: else
        fi;
        /* _read_frames: a frame into each buffer (os.readv) until EAGAIN: then not readable and
         * irq_ack (epoll modify: re-armed, level-triggered) */
        filled = 0;
        do
        :: filled == peek -> break
        :: else ->
            atomic {
                if
                :: tap > 0 -> tap--; filled++
                :: else -> tap_readable = 0; armed = 1
                fi
            };
            if
            :: !tap_readable -> break
            :: else
            fi
        od;
        if
        :: filled > 0 ->
            /* rx_free.release(filled), rx_active.enqueue_many(filled) (both staged), then
             * rx_active.signal_needed(): commit, claim; notify(rx channel) */
            atomic { release(rx_free, filled, drv_held); enqueue(rx_active, filled, drv_held); driver_commit() };
            claim(rx_active, yes);
            notify_if(yes, VIRT, FROM_DRV)
        :: else
        fi
    od
}

active proctype driver() {
    byte mask, peek, filled;
    bit work, yes, dirty;
    /* Component.start: init (rx_return; tx_provide has nothing to do), then ledger.commit()
     * commits */
    rx_return();
    driver_commit();
end:
    do
    :: atomic {
            /* Waiter.wait: the channel words, and the irq if armed and the TAP is readable
             * (firing disarms it: EPOLLONESHOT) */
            pend[DRV] != 0 || (armed && tap > 0) ->
            mask = pend[DRV]; pend[DRV] = 0;
            if
            :: armed && tap > 0 -> mask = mask | IRQ; armed = 0
            :: else
            fi
        };
        /* Component.run: notified(ch) then commit, for each ready channel, in any order */
        do
        :: mask & IRQ -> mask = mask & ~IRQ; tap_readable = 1; rx_return(); driver_commit()
        :: mask & RX -> mask = mask & ~RX; rx_return(); driver_commit()
        :: mask == 0 -> break
        od
    od
}
