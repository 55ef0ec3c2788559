/*
 * Hop latency baseline in C, the same protocol as bench/hops_bare.py (see its docstring):
 * a ring of N processes passing one descriptor around.
 *
 * build: gcc -O2 -o hops hops.c
 * usage: hops N ROUNDS WARMUP          (2 <= N <= 8; $HOPS_CPUS="0,1" pins stage k to the k-th, round robin)
 *
 * Stage 0 (this process) forks stages 1..N-1, which die with it (PR_SET_PDEATHSIG). Queue i
 * carries from stage i to stage (i+1) % N: sDDF's net queue layout (u16 tail, u16 head,
 * u32 consumer_signalled, 512 16-byte descriptors) in one shared anonymous mapping, indices
 * free-running u16, published with release stores and read with acquire loads. The consumer
 * requests a signal before sleeping (consumer_signalled = 0, seq_cst fence, re-check the
 * queue, cancel with 1 if it is not empty); the producer, after publishing, fences and if
 * consumer_signalled is 0 stores 1 and writes the consumer's eventfd. Waiting is a blocking
 * read of the stage's own eventfd.
 *
 * Stage 0 runs WARMUP untimed round trips, prints READY, idles 0.3 s, runs ROUNDS timed round
 * trips (CLOCK_MONOTONIC before the enqueue on queue 0 to after the dequeue from queue N-1),
 * prints RESULT {"impl": "c", "n", "rounds", "rtt_ns": [...], "pids": [...]}, then waits
 * for SIGTERM, kills the other stages and exits 0.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "net_desc.h"

#define CAPACITY 512u
#define MAX_STAGES 8


struct queue {
    uint16_t tail;               /* written by the producer */
    uint16_t head;               /* written by the consumer */
    uint32_t consumer_signalled; /* 0: the consumer asks to be woken */
    struct desc descs[CAPACITY];
};
_Static_assert(sizeof(struct queue) == 8 + CAPACITY * 16, "sDDF's net queue layout");

static struct queue *queues;
static int eventfds[MAX_STAGES];

static int empty(struct queue *q)
{
    return __atomic_load_n(&q->tail, __ATOMIC_ACQUIRE) == __atomic_load_n(&q->head, __ATOMIC_ACQUIRE);
}

/* Consumer: take every descriptor there is into out (room for CAPACITY); returns how many. */
static unsigned dequeue(struct queue *q, struct desc *out)
{
    uint16_t head = __atomic_load_n(&q->head, __ATOMIC_ACQUIRE);
    uint16_t tail = __atomic_load_n(&q->tail, __ATOMIC_ACQUIRE);
    unsigned count = 0;
    for (; head != tail; head++)
        out[count++] = q->descs[head % CAPACITY];
    __atomic_store_n(&q->head, head, __ATOMIC_RELEASE);
    return count;
}

/* Producer: put count descriptors on the queue and publish them. */
static void enqueue(struct queue *q, const struct desc *descs, unsigned count)
{
    uint16_t tail = __atomic_load_n(&q->tail, __ATOMIC_ACQUIRE);
    if ((uint16_t)(tail - __atomic_load_n(&q->head, __ATOMIC_ACQUIRE)) + count > CAPACITY) {
        fprintf(stderr, "hops: queue full\n");
        exit(1);
    }
    for (unsigned i = 0; i < count; i++)
        q->descs[tail++ % CAPACITY] = descs[i];
    __atomic_store_n(&q->tail, tail, __ATOMIC_RELEASE);
}

/* Producer, after publishing: wake the consumer (stage `to`) if it asked to be woken. */
static void notify(struct queue *q, int to)
{
    static const uint64_t one = 1;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&q->consumer_signalled, __ATOMIC_ACQUIRE) == 0) {
        __atomic_store_n(&q->consumer_signalled, 1, __ATOMIC_RELEASE);
        if (write(eventfds[to], &one, sizeof one) != sizeof one) {
            perror("hops: eventfd write");
            exit(1);
        }
    }
}

/* Consumer (stage `self`), queue drained: request a signal, fence, re-check; sleep on the
   eventfd unless work came meanwhile (then cancel). Then take it all; returns how many. */
static unsigned receive(struct queue *q, int self, struct desc *out)
{
    uint64_t count;
    for (;;) {
        __atomic_store_n(&q->consumer_signalled, 0, __ATOMIC_RELEASE);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (!empty(q))
            __atomic_store_n(&q->consumer_signalled, 1, __ATOMIC_RELEASE);
        else if (read(eventfds[self], &count, sizeof count) != sizeof count) {
            perror("hops: eventfd read");
            exit(1);
        }
        unsigned taken = dequeue(q, out);
        if (taken) /* else a wakeup left over from a cancelled request */
            return taken;
    }
}

static _Noreturn void forward(int k, int n)
{
    static struct desc batch[CAPACITY];
    struct queue *in = &queues[k - 1], *out = &queues[k];
    for (;;) {
        enqueue(out, batch, receive(in, k, batch));
        notify(out, (k + 1) % n);
    }
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Stage 0: send descriptor `number` round the ring and take it back. */
static void round_trip(int n, uint64_t number)
{
    struct desc sent = {.io_or_offset = number, .len = 64, .oid = 0}, got[CAPACITY];
    enqueue(&queues[0], &sent, 1);
    notify(&queues[0], 1);
    unsigned count = receive(&queues[n - 1], 0, got);
    if (count != 1 || got[0].io_or_offset != number) {
        fprintf(stderr, "hops: sent descriptor %llu, got back %u (first %llu)\n",
                (unsigned long long)number, count, (unsigned long long)got[0].io_or_offset);
        exit(1);
    }
}

static pid_t pids[MAX_STAGES];
static int stages;

/* Pin stage k to the k-th (round robin) of the CPUs listed in $HOPS_CPUS ("0,1"), if set. */
static void pin(int k)
{
    const char *list = getenv("HOPS_CPUS");
    int cpus[64], count = 0;
    for (const char *p = list; p && *p && count < 64; p++) {
        cpus[count++] = atoi(p);
        while (*p && *p != ',')
            p++;
        if (!*p)
            break;
    }
    if (!count)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpus[k % count], &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        perror("hops: sched_setaffinity");
}

static void kill_stages(void)
{
    for (int k = 1; k < stages; k++) {
        kill(pids[k], SIGKILL);
        waitpid(pids[k], NULL, 0);
    }
}

int main(int argc, char **argv)
{
    if (argc != 4 || atoi(argv[1]) < 2 || atoi(argv[1]) > MAX_STAGES) {
        fprintf(stderr, "usage: hops N ROUNDS WARMUP   (2 <= N <= %d)\n", MAX_STAGES);
        return 2;
    }
    int n = atoi(argv[1]);
    long rounds = atol(argv[2]), warmup = atol(argv[3]);
    uint64_t *samples = malloc(sizeof *samples * (rounds > 0 ? rounds : 1));
    queues = mmap(NULL, sizeof *queues * n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (queues == MAP_FAILED || samples == NULL) {
        perror("hops: memory");
        return 1;
    }
    for (int k = 0; k < n; k++)
        if ((eventfds[k] = eventfd(0, 0)) < 0) {
            perror("hops: eventfd");
            return 1;
        }
    pids[0] = getpid();
    fflush(stdout);
    for (stages = 1; stages < n; stages++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("hops: fork");
            kill_stages();
            return 1;
        }
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != pids[0])
                _exit(1);
            pin(stages);
            forward(stages, n);
        }
        pids[stages] = pid;
    }
    atexit(kill_stages);
    pin(0);

    for (long r = 0; r < warmup; r++)
        round_trip(n, (uint64_t)r);
    printf("READY\n");
    fflush(stdout);
    nanosleep(&(struct timespec){.tv_nsec = 300000000}, NULL);
    for (long r = 0; r < rounds; r++) {
        uint64_t t0 = now_ns();
        round_trip(n, (uint64_t)r);
        samples[r] = now_ns() - t0;
    }

    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigprocmask(SIG_BLOCK, &term, NULL);
    printf("RESULT {\"impl\": \"c\", \"n\": %d, \"rounds\": %ld, \"rtt_ns\": [", n, rounds);
    for (long r = 0; r < rounds; r++)
        printf(r ? ", %llu" : "%llu", (unsigned long long)samples[r]);
    printf("], \"pids\": [");
    for (int k = 0; k < n; k++)
        printf(k ? ", %d" : "%d", (int)pids[k]);
    printf("]}\n");
    fflush(stdout);
    int sig;
    sigwait(&term, &sig);
    return 0;
}
