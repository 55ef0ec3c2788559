/*
 * The machine's ceiling for bench/queue.py: an SPSC ring of 16-byte net descriptors
 * (sDDF's net queue layout: u16 tail, u16 head, then the descriptors) between two processes
 * over shared memory, both busy-polling, indices published with release stores and read
 * with acquire loads.
 *
 * usage: ring BATCH DURATION_S WARMUP_S [PRODUCER_CPU CONSUMER_CPU]
 * The producer (child) copies BATCH descriptors in at a time once BATCH slots are free;
 * the consumer (parent) copies out up to BATCH at a time, counts them from WARMUP_S on for
 * DURATION_S and prints {"batch": …, "descriptors": …, "seconds": …, "rate": …, "checksum": …}.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "net_desc.h"

#define CAPACITY 512u
#define BUFFER_SIZE 2048u


struct ring {
    uint16_t tail;  /* written by the producer only */
    uint16_t head;  /* written by the consumer only */
    uint32_t stop;  /* set by the consumer when it has measured */
    struct desc descs[CAPACITY];
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void produce(struct ring *r, unsigned batch)
{
    struct desc local[batch];
    uint16_t tail = 0;
    memset(local, 0, sizeof local);
    while (!__atomic_load_n(&r->stop, __ATOMIC_RELAXED)) {
        uint16_t head = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
        if (CAPACITY - (uint16_t)(tail - head) < batch)
            continue;
        for (unsigned i = 0; i < batch; i++) {
            local[i].io_or_offset = (uint64_t)((tail + i) % CAPACITY) * BUFFER_SIZE;
            local[i].len = 64;
        }
        /* BATCH divides CAPACITY and the producer always moves whole batches: no wrap. */
        memcpy(&r->descs[tail % CAPACITY], local, batch * sizeof *local);
        tail += batch;
        __atomic_store_n(&r->tail, tail, __ATOMIC_RELEASE);
    }
}

static void consume(struct ring *r, unsigned batch, double warmup, double duration)
{
    struct desc local[batch];
    uint16_t head = 0;
    uint64_t count = 0, counted_from = 0, checksum = 0;
    double start = now() + warmup, stop = start + duration, t0 = 0, t;
    for (unsigned long polls = 1;; polls++) {
        uint16_t avail = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE) - head;
        if (avail) {
            unsigned n = avail < batch ? avail : batch;
            unsigned first = head % CAPACITY;
            unsigned k = CAPACITY - first < n ? CAPACITY - first : n;
            memcpy(local, &r->descs[first], k * sizeof *local);
            memcpy(local + k, r->descs, (n - k) * sizeof *local);
            for (unsigned i = 0; i < n; i++)
                checksum += local[i].io_or_offset + local[i].len;
            head += n;
            __atomic_store_n(&r->head, head, __ATOMIC_RELEASE);
            count += n;
        }
        if (avail && polls % 64)
            continue;
        t = now();
        if (t0 == 0 && t >= start) {
            t0 = t;
            counted_from = count;
        }
        if (t >= stop)
            break;
    }
    __atomic_store_n(&r->stop, 1, __ATOMIC_RELAXED);
    printf("{\"batch\": %u, \"descriptors\": %llu, \"seconds\": %.6f, \"rate\": %.1f, \"checksum\": %llu}\n",
           batch, (unsigned long long)(count - counted_from), t - t0, (count - counted_from) / (t - t0),
           (unsigned long long)checksum);
}

static void pin(const char *cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(atoi(cpu), &set);
    if (sched_setaffinity(0, sizeof set, &set) < 0)
        perror("sched_setaffinity");
}

int main(int argc, char **argv)
{
    if (argc != 4 && argc != 6) {
        fprintf(stderr, "usage: %s BATCH DURATION_S WARMUP_S [PRODUCER_CPU CONSUMER_CPU]\n", argv[0]);
        return 2;
    }
    unsigned batch = (unsigned)atoi(argv[1]);
    if (batch == 0 || batch > CAPACITY || CAPACITY % batch) {
        fprintf(stderr, "BATCH must divide %u\n", CAPACITY);
        return 2;
    }
    struct ring *r = mmap(NULL, sizeof *r, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    pid_t parent = getpid(), child = fork();
    if (child < 0) {
        perror("fork");
        return 1;
    }
    if (child == 0) {
        /* Never outlive the consumer (e.g. if the bench kills it on a timeout). */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
            _exit(1);
        if (argc == 6)
            pin(argv[4]);
        produce(r, batch);
        _exit(0);
    }
    if (argc == 6)
        pin(argv[5]);
    consume(r, batch, atof(argv[3]), atof(argv[2]));
    int status;
    waitpid(child, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
