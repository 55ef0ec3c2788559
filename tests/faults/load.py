"""A steady UDP echo load on the echo clients, run inside the test's namespace (a script).

    python load.py PROGRESS RATE SECONDS IP...

Sends ``RATE`` requests/s to each IP's UDP echo port for at most ``SECONDS`` and, every few
milliseconds, rewrites ``PROGRESS`` (JSON) with each IP's answers so far and when the last came
(time.monotonic: the clock the test reads too). While a file ``PROGRESS.pause`` exists it sends
nothing (the test audits a quiet system). Stops when ``PROGRESS.stop`` appears.
"""
from __future__ import annotations

import json
import os
import selectors
import socket
import sys
import time

PORT = 1235
WRITE_EVERY_S = 0.005


def main() -> None:
    progress, rate, seconds, ips = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
    socks = {}
    sel = selectors.DefaultSelector()
    for ip in ips:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((ip, PORT))
        s.setblocking(False)
        socks[ip] = s
        sel.register(s, selectors.EVENT_READ, ip)
    answered = {ip: 0 for ip in ips}
    last = {ip: 0.0 for ip in ips}
    sent, start = 0, time.monotonic()
    end, written = start + seconds, 0.0
    while (now := time.monotonic()) < end and not os.path.exists(progress + ".stop"):
        due = int((now - start) * rate)
        if sent < due and not os.path.exists(progress + ".pause"):
            for ip, s in socks.items():
                try:
                    s.send(sent.to_bytes(8, "big"))
                except OSError:
                    pass  # a full socket buffer or an unanswered ARP: counted as not answered
            sent += 1
        elif sent < due:
            sent = due  # paused: no backlog to catch up on
        for key, _ in sel.select(min(1 / rate, 0.002)):
            while True:
                try:
                    key.fileobj.recv(64)
                except OSError:
                    break
                answered[key.data] += 1
                last[key.data] = time.monotonic()
        if now - written > WRITE_EVERY_S:
            with open(progress + ".tmp", "w") as f:
                json.dump({"answered": answered, "last": last, "sent": sent}, f)
            os.replace(progress + ".tmp", progress)
            written = now


if __name__ == "__main__":
    main()
