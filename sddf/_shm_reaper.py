"""Unlinks named regions listed on stdin ("+name" / "-name") once stdin closes (creator gone)."""
import sys

import posix_ipc


def main() -> None:
    names: set[str] = set()
    for line in sys.stdin:
        name = line.strip()
        if name.startswith("+"):
            names.add(name[1:])
        elif name.startswith("-"):
            names.discard(name[1:])
    for name in names:
        try:
            posix_ipc.unlink_shared_memory(name)
        except posix_ipc.ExistentialError:
            pass


if __name__ == "__main__":
    main()
