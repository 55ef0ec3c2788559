"""cffi API-mode build of pysddf's C core (sddf/_ring.c, declared in sddf/_ring.h): compiled at install."""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

with open(os.path.join(HERE, "_ring.h")) as header:
    CDEF = header.read()

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source("sddf._atomic", '#include "_ring.h"', sources=[os.path.join("sddf", "_ring.c")],
                      include_dirs=[HERE], extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"])

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
