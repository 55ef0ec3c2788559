"""cffi API-mode build of pysddf's C core (sddf/_ring.c and the block I/O engine sddf/_blkio.c, declared in
_ring.h and _blkio.h): compiled at install."""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

CDEF = ""
for name in ("_ring.h", "_blkio.h"):
    with open(os.path.join(HERE, name)) as header:
        CDEF += header.read()

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source("sddf._atomic", '#include "_ring.h"\n#include "_blkio.h"',
                      sources=[os.path.join("sddf", "_ring.c"), os.path.join("sddf", "_blkio.c")],
                      include_dirs=[HERE], extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11", "-pthread"],
                      extra_link_args=["-pthread"])

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
