"""cffi API-mode build of ChaN's FatFs (vendored in sddf/fs/fatfs/, options in its ffconf.h): compiled
at install as ``sddf.fs._fatfs``.

FatFs's disk layer (diskio.h) is served by Python: ``disk_read``/``disk_write`` call the
``extern "Python"`` functions ``fatfs_disk_read``/``fatfs_disk_write`` (bound by
:mod:`sddf.apps.fs.fatdisk`), which move sectors with ``ffi.memmove``. Structs are declared with
``...`` so the compiler lays them out; only the fields pysddf reads are named.
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
FATFS = os.path.join("sddf", "fs", "fatfs")

CDEF = """
typedef unsigned char BYTE;
typedef int... WORD;
typedef int... UINT;
typedef int... DWORD;
typedef int... LBA_t;
typedef int... FSIZE_t;
typedef enum { FR_OK = 0, FR_DISK_ERR, FR_INT_ERR, FR_NOT_READY, FR_NO_FILE, FR_NO_PATH, FR_INVALID_NAME,
               FR_DENIED, FR_EXIST, FR_INVALID_OBJECT, FR_WRITE_PROTECTED, FR_INVALID_DRIVE, FR_NOT_ENABLED,
               FR_NO_FILESYSTEM, FR_MKFS_ABORTED, FR_TIMEOUT, FR_LOCKED, FR_NOT_ENOUGH_CORE,
               FR_TOO_MANY_OPEN_FILES, FR_INVALID_PARAMETER } FRESULT;
typedef struct { WORD csize; DWORD n_fatent; LBA_t database; ...; } FATFS;
typedef struct { FATFS* fs; FSIZE_t objsize; ...; } FFOBJID;
typedef struct { FFOBJID obj; FSIZE_t fptr; DWORD* cltbl; ...; } FIL;
typedef struct { ...; } DIR;
typedef struct { FSIZE_t fsize; BYTE fattrib; char fname[]; ...; } FILINFO;

#define FA_READ ...
#define FA_WRITE ...
#define FA_OPEN_EXISTING ...
#define FA_OPEN_ALWAYS ...
#define AM_DIR ...
#define AM_RDO ...
#define CREATE_LINKMAP ...

FRESULT f_mount(FATFS* fs, const char* path, BYTE opt);
FRESULT f_open(FIL* fp, const char* path, BYTE mode);
FRESULT f_close(FIL* fp);
FRESULT f_read(FIL* fp, void* buff, UINT btr, UINT* br);
FRESULT f_write(FIL* fp, const void* buff, UINT btw, UINT* bw);
FRESULT f_lseek(FIL* fp, FSIZE_t ofs);
FRESULT f_truncate(FIL* fp);
FRESULT f_sync(FIL* fp);
FRESULT f_opendir(DIR* dp, const char* path);
FRESULT f_closedir(DIR* dp);
FRESULT f_readdir(DIR* dp, FILINFO* fno);
FRESULT f_mkdir(const char* path);
FRESULT f_unlink(const char* path);
FRESULT f_rename(const char* path_old, const char* path_new);
FRESULT f_stat(const char* path, FILINFO* fno);

extern "Python" int fatfs_disk_read(BYTE drive, BYTE* buff, LBA_t sector, UINT count);
extern "Python" int fatfs_disk_write(BYTE drive, const BYTE* buff, LBA_t sector, UINT count);
"""

SOURCE = """
#include <time.h>
#include "ff.h"
#include "diskio.h"

static int fatfs_disk_read(BYTE drive, BYTE* buff, LBA_t sector, UINT count);
static int fatfs_disk_write(BYTE drive, const BYTE* buff, LBA_t sector, UINT count);

DSTATUS disk_initialize(BYTE drive) { (void)drive; return 0; }
DSTATUS disk_status(BYTE drive) { (void)drive; return 0; }
DRESULT disk_read(BYTE drive, BYTE* buff, LBA_t sector, UINT count) {
    return fatfs_disk_read(drive, buff, sector, count) ? RES_ERROR : RES_OK;
}
DRESULT disk_write(BYTE drive, const BYTE* buff, LBA_t sector, UINT count) {
    return fatfs_disk_write(drive, buff, sector, count) ? RES_ERROR : RES_OK;
}
/* CTRL_SYNC: the server syncs its cache itself (FILE_SYNC); sector size and count are not asked
   for (FF_MAX_SS == FF_MIN_SS, no mkfs) */
DRESULT disk_ioctl(BYTE drive, BYTE cmd, void* buff) { (void)drive; (void)buff; return cmd == CTRL_SYNC ? RES_OK : RES_PARERR; }

DWORD get_fattime(void) {  /* UTC: gmtime_r reads no time-zone file (the PD is sandboxed) */
    time_t now = time(NULL);
    struct tm t;
    gmtime_r(&now, &t);
    return ((DWORD)(t.tm_year - 80) << 25) | ((DWORD)(t.tm_mon + 1) << 21) | ((DWORD)t.tm_mday << 16)
         | ((DWORD)t.tm_hour << 11) | ((DWORD)t.tm_min << 5) | ((DWORD)t.tm_sec / 2);
}
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source("sddf.fs._fatfs", SOURCE,
                      sources=[os.path.join(FATFS, "ff.c"), os.path.join(FATFS, "ffunicode.c")],
                      include_dirs=[os.path.join(HERE, "fatfs")], extra_compile_args=["-O2"])

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
