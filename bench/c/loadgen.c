/* ipbench-style UDP echo load generator (RFC 862 echo servers answer with the same payload).
 *
 * Every request carries {u32 magic, u32 destination index, u64 sequence number, u64 send
 * timestamp}; the reply must bring them back. Two modes:
 *
 *   rate      send at an offered rate (packets/s), paced in ticks (sendmmsg batches), to the
 *             destinations round-robin; drain replies (recvmmsg) every tick; stop sending after
 *             --duration, wait --drain-ms for stragglers. RTTs use the kernel's receive
 *             timestamp (SO_TIMESTAMPNS), so draining once per tick does not inflate them.
 *   pingpong  one request outstanding: send, block for its reply (or --timeout-ms), repeat
 *             --count times (or until --duration); RTT from user space to user space.
 *
 * Prints one JSON object: sent, received (unique), lost, duplicates, bad replies, replies/s,
 * RTT percentiles and a CDF, replies per destination, and its own CPU time (cpu_s).
 *
 *   loadgen --dst 10.0.0.2[,10.0.0.3…] [--port 1235] [--size 64] --mode rate --rate PPS
 *           --duration S [--tick-us 100] [--drain-ms 200]
 *   loadgen --dst … --mode pingpong --count N [--warmup N] [--duration S] [--timeout-ms 200]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x5ddfec40u
#define MAX_DST 16
#define MAX_BATCH 64
#define MAX_SIZE 1472
#define MIN_SIZE 24
#define CDF_POINTS 200
#define RCVBUF (8 << 20)

struct header {
    uint32_t magic;
    uint32_t dst;
    uint64_t seq;
    uint64_t sent_ns;
};

struct options {
    struct sockaddr_in dst[MAX_DST];
    int ndst;
    int port;
    int size;
    int pingpong;
    double rate;
    double duration;
    long count;
    long warmup;
    double tick_us;
    double drain_ms;
    double timeout_ms;
};

struct results {
    uint64_t sent, received, duplicates, bad, send_errors, timeouts;
    uint64_t per_dst[MAX_DST];
    uint8_t *seen;      /* one byte per sequence number: replied already */
    uint32_t *rtt_ns;   /* one RTT per unique reply */
    uint64_t nrtt, cap;
    uint64_t first;     /* replies to sequence numbers below this are warm-up: not counted */
    double elapsed_s;   /* sending window */
};

static void die(const char *what) {
    perror(what);
    exit(2);
}

static uint64_t now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_until(uint64_t deadline_ns) {
    struct timespec ts = {.tv_sec = deadline_ns / 1000000000ull, .tv_nsec = deadline_ns % 1000000000ull};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static void usage(void) {
    fprintf(stderr, "usage: loadgen --dst IP[,IP…] [--port P] [--size BYTES] "
                    "(--mode rate --rate PPS --duration S | --mode pingpong --count N) [see source]\n");
    exit(2);
}

static void parse_dsts(struct options *o, char *list) {
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        if (o->ndst == MAX_DST) usage();
        struct sockaddr_in *a = &o->dst[o->ndst++];
        a->sin_family = AF_INET;
        if (inet_pton(AF_INET, tok, &a->sin_addr) != 1) {
            fprintf(stderr, "loadgen: bad address %s\n", tok);
            exit(2);
        }
    }
}

static struct options parse(int argc, char **argv) {
    struct options o = {.port = 1235, .size = 64, .rate = 10000, .duration = 0, .count = 0,
                        .tick_us = 100, .drain_ms = 200, .timeout_ms = 200};
    static struct option longs[] = {
        {"dst", 1, 0, 'd'}, {"port", 1, 0, 'p'}, {"size", 1, 0, 's'}, {"mode", 1, 0, 'm'},
        {"rate", 1, 0, 'r'}, {"duration", 1, 0, 't'}, {"count", 1, 0, 'n'}, {"warmup", 1, 0, 'w'},
        {"tick-us", 1, 0, 'k'}, {"drain-ms", 1, 0, 'D'}, {"timeout-ms", 1, 0, 'T'}, {0, 0, 0, 0}};
    char dsts[1024] = "";
    for (int c; (c = getopt_long(argc, argv, "", longs, NULL)) != -1;) {
        switch (c) {
        case 'd': snprintf(dsts, sizeof dsts, "%s", optarg); break;
        case 'p': o.port = atoi(optarg); break;
        case 's': o.size = atoi(optarg); break;
        case 'm': o.pingpong = strcmp(optarg, "pingpong") == 0; if (!o.pingpong && strcmp(optarg, "rate")) usage(); break;
        case 'r': o.rate = atof(optarg); break;
        case 't': o.duration = atof(optarg); break;
        case 'n': o.count = atol(optarg); break;
        case 'w': o.warmup = atol(optarg); break;
        case 'k': o.tick_us = atof(optarg); break;
        case 'D': o.drain_ms = atof(optarg); break;
        case 'T': o.timeout_ms = atof(optarg); break;
        default: usage();
        }
    }
    parse_dsts(&o, dsts);
    if (!o.ndst || o.size < MIN_SIZE || o.size > MAX_SIZE || o.rate <= 0 || o.tick_us <= 0) usage();
    if (o.pingpong ? (o.count <= 0 && o.duration <= 0) : o.duration <= 0) usage();
    for (int i = 0; i < o.ndst; i++) o.dst[i].sin_port = htons(o.port);
    return o;
}

static int open_socket(void) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) die("socket");
    int size = RCVBUF, on = 1;
    /* the *FORCE variants pass the sysctl limits as root; fall back to the plain ones */
    if (setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size))
        setsockopt(s, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    if (setsockopt(s, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size))
        setsockopt(s, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    if (setsockopt(s, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on)) die("SO_TIMESTAMPNS");
    return s;
}

static void results_init(struct results *r, uint64_t cap) {
    memset(r, 0, sizeof *r);
    r->cap = cap;
    r->seen = calloc(cap, 1);
    r->rtt_ns = malloc(cap * sizeof *r->rtt_ns);
    if (!r->seen || !r->rtt_ns) die("malloc");
}

/* Account one reply; returns its sequence number (or UINT64_MAX if it is not one of ours). */
static uint64_t account(struct results *r, const struct options *o, const uint8_t *buf, ssize_t len,
                        uint64_t rx_ns) {
    struct header h;
    if (len != o->size) {
        r->bad++;
        return UINT64_MAX;
    }
    memcpy(&h, buf, sizeof h);
    if (h.magic != MAGIC || h.dst >= (uint32_t)o->ndst || h.seq >= r->sent) {
        r->bad++;
        return UINT64_MAX;
    }
    if (r->seen[h.seq]) {
        r->duplicates++;
        return h.seq;
    }
    r->seen[h.seq] = 1;
    if (h.seq < r->first) return h.seq;
    r->received++;
    r->per_dst[h.dst]++;
    uint64_t rtt = rx_ns > h.sent_ns ? rx_ns - h.sent_ns : 0;
    r->rtt_ns[r->nrtt++] = rtt > UINT32_MAX ? UINT32_MAX : (uint32_t)rtt;
    return h.seq;
}

static void fill(uint8_t *buf, const struct options *o, uint64_t seq, uint64_t ts) {
    struct header h = {.magic = MAGIC, .dst = (uint32_t)(seq % (uint64_t)o->ndst), .seq = seq, .sent_ns = ts};
    memcpy(buf, &h, sizeof h);
}

/* ---- rate mode ------------------------------------------------------------------------ */
static uint8_t txbuf[MAX_BATCH][MAX_SIZE], rxbuf[MAX_BATCH][MAX_SIZE + 64];
static char ctrl[MAX_BATCH][CMSG_SPACE(sizeof(struct timespec))];

static uint64_t cmsg_time(struct msghdr *m) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof ts);
            return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
        }
    }
    return now_ns(CLOCK_REALTIME);
}

static void drain_replies(int s, struct results *r, const struct options *o) {
    struct mmsghdr msgs[MAX_BATCH];
    struct iovec iov[MAX_BATCH];
    for (;;) {
        for (int i = 0; i < MAX_BATCH; i++) {
            iov[i] = (struct iovec){rxbuf[i], sizeof rxbuf[i]};
            msgs[i].msg_hdr = (struct msghdr){.msg_iov = &iov[i], .msg_iovlen = 1,
                                              .msg_control = ctrl[i], .msg_controllen = sizeof ctrl[i]};
        }
        int n = recvmmsg(s, msgs, MAX_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) {
            if (n < 0 && errno != EAGAIN && errno != EINTR && errno != ECONNREFUSED) die("recvmmsg");
            return;
        }
        for (int i = 0; i < n; i++)
            account(r, o, rxbuf[i], msgs[i].msg_len, cmsg_time(&msgs[i].msg_hdr));
    }
}

static void run_rate(int s, const struct options *o, struct results *r) {
    struct mmsghdr msgs[MAX_BATCH];
    struct iovec iov[MAX_BATCH];
    double tick_s = o->tick_us * 1e-6;
    if (tick_s < 1.0 / o->rate) tick_s = 1.0 / o->rate;
    uint64_t start = now_ns(CLOCK_MONOTONIC), end = start + (uint64_t)(o->duration * 1e9);
    uint64_t next = start;
    for (;;) {
        uint64_t now = now_ns(CLOCK_MONOTONIC);
        if (now >= end) break;
        uint64_t due = (uint64_t)((double)(now - start) * 1e-9 * o->rate) + 1;
        while (r->sent < due && r->sent < r->cap) {
            int n = (int)(due - r->sent < MAX_BATCH ? due - r->sent : MAX_BATCH);
            uint64_t ts = now_ns(CLOCK_REALTIME);
            for (int i = 0; i < n; i++) {
                uint64_t seq = r->sent + (uint64_t)i;
                fill(txbuf[i], o, seq, ts);
                iov[i] = (struct iovec){txbuf[i], (size_t)o->size};
                msgs[i].msg_hdr = (struct msghdr){.msg_name = (void *)&o->dst[seq % (uint64_t)o->ndst],
                                                  .msg_namelen = sizeof o->dst[0], .msg_iov = &iov[i],
                                                  .msg_iovlen = 1};
            }
            int sent = sendmmsg(s, msgs, (unsigned)n, MSG_DONTWAIT);
            if (sent <= 0) {
                /* a full socket buffer or an ICMP error from an earlier packet: count it, move on */
                r->send_errors++;
                break;
            }
            r->sent += (uint64_t)sent;
        }
        drain_replies(s, r, o);
        next += (uint64_t)(tick_s * 1e9);
        if (next < now) next = now;  /* fell behind: do not try to catch up in one burst later */
        sleep_until(next < end ? next : end);
    }
    r->elapsed_s = (double)(now_ns(CLOCK_MONOTONIC) - start) * 1e-9;
    uint64_t stop = now_ns(CLOCK_MONOTONIC) + (uint64_t)(o->drain_ms * 1e6);
    while (r->received < r->sent && now_ns(CLOCK_MONOTONIC) < stop) {
        drain_replies(s, r, o);
        struct pollfd p = {s, POLLIN, 0};
        poll(&p, 1, 5);
    }
    drain_replies(s, r, o);
}

/* ---- ping-pong mode --------------------------------------------------------------------- */
static void run_pingpong(int s, const struct options *o, struct results *r) {
    uint8_t buf[MAX_SIZE] = {0}, in[MAX_SIZE + 64];
    uint64_t start = now_ns(CLOCK_MONOTONIC);
    uint64_t end = o->duration > 0 ? start + (uint64_t)(o->duration * 1e9) : UINT64_MAX;
    r->first = (uint64_t)o->warmup;
    while (r->sent < r->cap && (r->sent < r->first || now_ns(CLOCK_MONOTONIC) < end)) {
        uint64_t seq = r->sent;
        const struct sockaddr_in *to = &o->dst[seq % (uint64_t)o->ndst];
        uint64_t t0 = now_ns(CLOCK_MONOTONIC);
        fill(buf, o, seq, t0);
        if (sendto(s, buf, (size_t)o->size, 0, (const struct sockaddr *)to, sizeof *to) != o->size) {
            r->send_errors++;
            continue;
        }
        r->sent++;
        if (r->sent == r->first + 1) start = t0;  /* the measured part starts now */
        uint64_t deadline = t0 + (uint64_t)(o->timeout_ms * 1e6);
        for (;;) {
            uint64_t now = now_ns(CLOCK_MONOTONIC);
            if (now >= deadline) {
                r->timeouts += seq >= r->first;
                break;
            }
            struct pollfd p = {s, POLLIN, 0};
            int ms = (int)((deadline - now + 999999) / 1000000);
            if (poll(&p, 1, ms) <= 0) continue;
            ssize_t len = recv(s, in, sizeof in, MSG_DONTWAIT);
            uint64_t t1 = now_ns(CLOCK_MONOTONIC);
            if (len < 0) continue;
            if (account(r, o, in, len, t1) == seq) break;  /* a late reply to an earlier one: keep waiting */
        }
    }
    r->elapsed_s = (double)(now_ns(CLOCK_MONOTONIC) - start) * 1e-9;
    r->sent -= r->first < r->sent ? r->first : r->sent;  /* report the measured part only */
}

/* ---- report ----------------------------------------------------------------------------- */
static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static double quantile_us(const struct results *r, double q) {
    if (!r->nrtt) return -1;
    uint64_t i = (uint64_t)(q * (double)(r->nrtt - 1) + 0.5);
    return r->rtt_ns[i] / 1000.0;
}

static void report(const struct options *o, struct results *r) {
    qsort(r->rtt_ns, r->nrtt, sizeof *r->rtt_ns, cmp_u32);
    uint64_t lost = r->sent - r->received;
    printf("{\"mode\": \"%s\", \"size\": %d, \"destinations\": %d, \"offered_pps\": %.1f, "
           "\"elapsed_s\": %.4f, \"sent\": %" PRIu64 ", \"received\": %" PRIu64 ", \"lost\": %" PRIu64
           ", \"loss_pct\": %.4f, \"duplicates\": %" PRIu64 ", \"bad\": %" PRIu64 ", \"send_errors\": %" PRIu64
           ", \"timeouts\": %" PRIu64 ", \"sent_pps\": %.1f, \"replies_pps\": %.1f, ",
           o->pingpong ? "pingpong" : "rate", o->size, o->ndst, o->pingpong ? 0.0 : o->rate, r->elapsed_s,
           r->sent, r->received, lost, r->sent ? 100.0 * (double)lost / (double)r->sent : 0.0, r->duplicates,
           r->bad, r->send_errors, r->timeouts, r->sent / r->elapsed_s, r->received / r->elapsed_s);
    printf("\"rtt_us\": {\"min\": %.2f, \"p50\": %.2f, \"p90\": %.2f, \"p99\": %.2f, \"p999\": %.2f, "
           "\"max\": %.2f}, ", quantile_us(r, 0), quantile_us(r, 0.5), quantile_us(r, 0.9),
           quantile_us(r, 0.99), quantile_us(r, 0.999), quantile_us(r, 1));
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("\"cpu_s\": %.6f, ", (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                                   (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6);
    printf("\"per_destination\": [");
    for (int i = 0; i < o->ndst; i++) printf("%s%" PRIu64, i ? ", " : "", r->per_dst[i]);
    printf("], \"cdf\": [");
    for (int i = 0; r->nrtt && i <= CDF_POINTS; i++) {
        double q = (double)i / CDF_POINTS;
        printf("%s[%.2f, %.4f]", i ? ", " : "", quantile_us(r, q), q);
    }
    printf("]}\n");
}

int main(int argc, char **argv) {
    struct options o = parse(argc, argv);
    int s = open_socket();
    uint64_t cap = o.pingpong ? (uint64_t)o.warmup + (o.count > 0 ? (uint64_t)o.count : (uint64_t)(o.duration * 1e6))
                              : (uint64_t)(o.rate * o.duration) + MAX_BATCH + 1;
    struct results r;
    results_init(&r, cap);
    if (o.pingpong)
        run_pingpong(s, &o, &r);
    else
        run_rate(s, &o, &r);
    report(&o, &r);
    return 0;
}
