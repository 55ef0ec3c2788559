/* The block driver's I/O engine (sddf/_blkio.c): read by cffi (sddf/_atomic_build.py) and included
   by _blkio.c. Plain declarations only (cffi's parser takes no preprocessor lines). */
enum { BLKIO_READ = 0, BLKIO_WRITE = 1, BLKIO_FLUSH = 2 };
enum { BLKIO_OK = 0, BLKIO_ERR_IO = 3 };
typedef struct blkio blkio;
typedef struct {
    uint32_t slot, status, done;  /* done: whole 4 KiB transfers moved */
} blkio_result;
blkio *blkio_new(uint32_t threads, int eventfd, uint32_t capacity, uint64_t delay_ns);
void blkio_free(blkio *io);
int blkio_region(blkio *io, uint32_t index, uint8_t *base, uint64_t size);
int blkio_submit(blkio *io, uint32_t slot, uint32_t code, int fd, uint32_t region, uint64_t region_offset,
                 uint64_t length, uint64_t file_offset);
blkio_result blkio_run(blkio *io, uint32_t slot, uint32_t code, int fd, uint32_t region, uint64_t region_offset,
                       uint64_t length, uint64_t file_offset);
uint32_t blkio_complete(blkio *io, blkio_result *out, uint32_t max);
