"""Private network namespaces for systems with TAP devices (``sddf run --netns``, ``sddf demo``).

As root, a named namespace (``ip netns add``) that other terminals can enter with
``ip netns exec``; otherwise an unprivileged user+network namespace (``unshare -rn``).
Whatever is created is removed on exit, even on failure.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from types import TracebackType


class NetnsError(Exception):
    """A namespace could not be created; the message says what is missing."""


class NetNamespace:
    """A named network namespace, deleted (with everything in it) when the block ends."""

    def __init__(self, tag: str) -> None:
        self.name = f"sddf-{tag}-{os.getpid()}"

    def __enter__(self) -> "NetNamespace":
        if shutil.which("ip") is None:
            raise NetnsError("`ip` (iproute2) is not installed: apt-get install -y iproute2")
        done = subprocess.run(["ip", "netns", "add", self.name], capture_output=True, text=True)
        if done.returncode:
            raise NetnsError(f"ip netns add {self.name}: {done.stderr.strip()} (needs root)")
        self.run(["ip", "link", "set", "lo", "up"])
        self.run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                  "net.ipv6.conf.default.disable_ipv6=1"], check=False)
        return self

    def add_tap(self, name: str, address: str) -> None:
        """A persistent TAP ``name`` in the namespace, up, with the host side at ``address`` (a/len),
        for a program to attach to."""
        self.run(["ip", "tuntap", "add", "dev", name, "mode", "tap"])
        self.run(["ip", "addr", "add", address, "dev", name])
        self.run(["ip", "link", "set", name, "up"])

    def exec_prefix(self) -> list[str]:
        """Prefix a command with this to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def run(self, cmd: list[str], check: bool = True, **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.run(self.exec_prefix() + cmd, check=check, **kwargs)  # type: ignore[call-overload]

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # kill anything still inside, then delete the namespace (its TAPs go with it)
        pids = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


CAP_NET_ADMIN = 12


def tap_unavailable() -> str | None:
    """Why named namespaces with TAP devices cannot be made here, or None (they can)."""
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun for TAP devices"
    if shutil.which("ip") is None:
        return "needs ip(8) from iproute2"
    with open("/proc/self/status") as status:
        caps = next(line for line in status if line.startswith("CapEff:"))
    if not int(caps.split()[1], 16) >> CAP_NET_ADMIN & 1:
        return "needs CAP_NET_ADMIN (run as root) to create a network namespace and a TAP device"
    return None


def can_make_named() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def unshare_prefix() -> list[str]:
    """Run a command in a new unprivileged user+network namespace (when not root)."""
    if shutil.which("unshare") is None:
        raise NetnsError("`unshare` (util-linux) is not installed and we are not root")
    return ["unshare", "-rn"]
