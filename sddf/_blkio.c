/* The block driver's I/O engine (sddf/blk/io.py): threads that run requests' reads, writes and
   fdatasyncs without Python, so no request pays for the GIL or a Python frame on a worker.

   Jobs go in a ring guarded by a mutex (workers wait on a condition variable); results come back
   in a second ring; a worker that puts a result into an empty result ring writes the eventfd (the
   driver's irq), so one wake-up covers every result until the driver drains them. Declared in
   _blkio.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include "_blkio.h"

#define TRANSFER 4096
#define MAX_REGIONS 256

typedef struct {
    uint32_t slot, code;
    int fd;
    uint32_t region;
    uint64_t region_offset, length, file_offset;
} job_t;

struct blkio {
    pthread_mutex_t lock;
    pthread_cond_t work;
    job_t *jobs;
    blkio_result *results;
    uint32_t capacity, jobs_head, jobs_count, results_head, results_count;
    int eventfd, stopping;
    uint64_t delay_ns;
    uint32_t threads;
    pthread_t *tids;
    uint8_t *region_base[MAX_REGIONS];
    uint64_t region_size[MAX_REGIONS];
};

/* One request's I/O: (status, transfers done). */
static blkio_result run_job(const blkio *io, const job_t *job) {
    blkio_result r = {job->slot, BLKIO_OK, 0};
    if (io->delay_ns) {
        struct timespec t = {(time_t)(io->delay_ns / 1000000000u), (long)(io->delay_ns % 1000000000u)};
        while (nanosleep(&t, &t) != 0 && errno == EINTR) {}
    }
    if (job->code == BLKIO_FLUSH) {
        if (fdatasync(job->fd) != 0) r.status = BLKIO_ERR_IO;
        return r;
    }
    uint8_t *data = io->region_base[job->region] + job->region_offset;
    uint64_t done = 0;
    while (done < job->length) {
        ssize_t moved = job->code == BLKIO_READ
            ? pread(job->fd, data + done, job->length - done, (off_t)(job->file_offset + done))
            : pwrite(job->fd, data + done, job->length - done, (off_t)(job->file_offset + done));
        if (moved < 0 && errno == EINTR) continue;
        if (moved <= 0) {  /* an I/O error, a full disk, or the end of an image that shrank */
            r.status = BLKIO_ERR_IO;
            break;
        }
        done += (uint64_t)moved;
    }
    r.done = (uint32_t)(done / TRANSFER);
    return r;
}

static void *worker(void *arg) {
    blkio *io = arg;
    pthread_mutex_lock(&io->lock);
    for (;;) {
        while (!io->jobs_count && !io->stopping) pthread_cond_wait(&io->work, &io->lock);
        if (io->stopping) break;
        job_t job = io->jobs[io->jobs_head];
        io->jobs_head = (io->jobs_head + 1) % io->capacity;
        io->jobs_count--;
        pthread_mutex_unlock(&io->lock);
        blkio_result r = run_job(io, &job);
        pthread_mutex_lock(&io->lock);
        io->results[(io->results_head + io->results_count) % io->capacity] = r;
        if (io->results_count++ == 0) {
            uint64_t one = 1;
            ssize_t ignored = write(io->eventfd, &one, sizeof one);
            (void)ignored;  /* the eventfd cannot be full: it counts to 2^64-2 */
        }
    }
    pthread_mutex_unlock(&io->lock);
    return NULL;
}

blkio *blkio_new(uint32_t threads, int eventfd, uint32_t capacity, uint64_t delay_ns) {
    blkio *io = calloc(1, sizeof *io);
    if (!io) return NULL;
    io->jobs = calloc(capacity, sizeof *io->jobs);
    io->results = calloc(capacity, sizeof *io->results);
    io->tids = calloc(threads, sizeof *io->tids);
    io->capacity = capacity;
    io->eventfd = eventfd;
    io->delay_ns = delay_ns;
    if (!io->jobs || !io->results || !io->tids || pthread_mutex_init(&io->lock, NULL)
        || pthread_cond_init(&io->work, NULL)) {
        free(io->jobs), free(io->results), free(io->tids), free(io);
        return NULL;
    }
    for (; io->threads < threads; io->threads++)
        if (pthread_create(&io->tids[io->threads], NULL, worker, io) != 0) break;
    if (io->threads < threads) {
        blkio_free(io);
        return NULL;
    }
    return io;
}

void blkio_free(blkio *io) {
    pthread_mutex_lock(&io->lock);
    io->stopping = 1;
    pthread_cond_broadcast(&io->work);
    pthread_mutex_unlock(&io->lock);
    for (uint32_t i = 0; i < io->threads; i++) pthread_join(io->tids[i], NULL);
    pthread_cond_destroy(&io->work);
    pthread_mutex_destroy(&io->lock);
    free(io->jobs), free(io->results), free(io->tids), free(io);
}

int blkio_region(blkio *io, uint32_t index, uint8_t *base, uint64_t size) {
    if (index >= MAX_REGIONS) return -1;
    io->region_base[index] = base;
    io->region_size[index] = size;
    return 0;
}

/* Whether a job's data lies inside its region (the driver checked: a miss is its bug). */
static int inside(const blkio *io, const job_t *job) {
    return job->code == BLKIO_FLUSH || (job->region < MAX_REGIONS && io->region_base[job->region]
                                        && job->region_offset <= io->region_size[job->region]
                                        && job->length <= io->region_size[job->region] - job->region_offset);
}

int blkio_submit(blkio *io, uint32_t slot, uint32_t code, int fd, uint32_t region, uint64_t region_offset,
                 uint64_t length, uint64_t file_offset) {
    job_t job = {slot, code, fd, region, region_offset, length, file_offset};
    if (!inside(io, &job)) return -2;
    pthread_mutex_lock(&io->lock);
    if (io->jobs_count + io->results_count >= io->capacity) {  /* every job's result needs room too */
        pthread_mutex_unlock(&io->lock);
        return -1;
    }
    io->jobs[(io->jobs_head + io->jobs_count) % io->capacity] = job;
    io->jobs_count++;
    pthread_cond_signal(&io->work);
    pthread_mutex_unlock(&io->lock);
    return 0;
}

blkio_result blkio_run(blkio *io, uint32_t slot, uint32_t code, int fd, uint32_t region, uint64_t region_offset,
                       uint64_t length, uint64_t file_offset) {
    job_t job = {slot, code, fd, region, region_offset, length, file_offset};
    if (!inside(io, &job)) return (blkio_result){slot, BLKIO_ERR_IO, 0};
    return run_job(io, &job);
}

uint32_t blkio_complete(blkio *io, blkio_result *out, uint32_t max) {
    pthread_mutex_lock(&io->lock);
    uint32_t n = io->results_count < max ? io->results_count : max;
    for (uint32_t i = 0; i < n; i++) out[i] = io->results[(io->results_head + i) % io->capacity];
    io->results_head = (io->results_head + n) % io->capacity;
    io->results_count -= n;
    pthread_mutex_unlock(&io->lock);
    return n;
}
