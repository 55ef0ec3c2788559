/*
 * sDDF's shared-memory structs, declared from the byte layouts in DESIGN.md and
 * sddf-facts.md (our own words, same field types and order), for tests/test_layout_c.py.
 *
 *   layouts offsets
 *       print "struct NAME SIZEOF" and "field NAME FIELD OFFSET SIZE" for every field
 *   layouts write PATH NET_CAP BLK_CAP SERIAL_CAP   < state
 *   layouts read  PATH NET_CAP BLK_CAP SERIAL_CAP   > state
 *       write the queue state given on stdin into the file at PATH, or print the state
 *       found there, in one text format (see test_layout_c.render). PATH holds one 4 KiB
 *       section per struct, in the order of enum section; indices are free-running and
 *       slot = index % capacity.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct net_buff_desc {
    uint64_t io_or_offset;
    uint16_t len;
    uint8_t oid : 6;
} net_buff_desc_t;

typedef struct net_queue {
    uint16_t tail;
    uint16_t head;
    uint32_t consumer_signalled;
    net_buff_desc_t buffers[];
} net_queue_t;

typedef enum blk_req_code { BLK_REQ_READ, BLK_REQ_WRITE, BLK_REQ_FLUSH, BLK_REQ_BARRIER } blk_req_code_t;

typedef enum blk_resp_status {
    BLK_RESP_OK, BLK_RESP_ERR_UNSPEC, BLK_RESP_ERR_INVALID_PARAM, BLK_RESP_ERR_IO, BLK_RESP_ERR_NO_DEVICE,
} blk_resp_status_t;

typedef struct blk_req {
    blk_req_code_t code;
    uint64_t io_or_offset;
    uint64_t block_number;
    uint16_t count;
    uint32_t id;
} blk_req_t;

typedef struct blk_resp {
    blk_resp_status_t status;
    uint16_t success_count;
    uint32_t id;
} blk_resp_t;

typedef struct blk_req_queue {
    uint32_t head;
    uint32_t tail;
    bool plugged;
    blk_req_t buffers[];
} blk_req_queue_t;

typedef struct blk_resp_queue {
    uint32_t head;
    uint32_t tail;
    blk_resp_t buffers[];
} blk_resp_queue_t;

#define SERIAL_NUMBER_SIZE 64

typedef struct blk_storage_info {
    char serial_number[SERIAL_NUMBER_SIZE];
    bool read_only;
    bool ready;
    uint16_t sector_size;
    uint16_t block_size;
    uint16_t queue_depth;
    uint16_t cylinders;
    uint16_t heads;
    uint16_t blocks;
    uint64_t capacity;
} blk_storage_info_t;

typedef struct serial_queue {
    uint32_t tail;
    uint32_t head;
    uint32_t producer_signalled;
} serial_queue_t;

/* ---- offsets ------------------------------------------------------------------------- */
#define STRUCT(T) printf("struct %s %zu\n", #T, sizeof(T))
#define FIELD(T, F) printf("field %s %s %zu %zu\n", #T, #F, offsetof(T, F), sizeof(((T *)0)->F))
#define ARRAY(T, F) printf("field %s %s %zu %zu\n", #T, #F, offsetof(T, F), sizeof(((T *)0)->F[0]))

/* offsetof cannot name a bit-field: find the byte that setting every bit of oid changes. */
static size_t oid_offset(void)
{
    net_buff_desc_t d;
    memset(&d, 0, sizeof d);
    d.oid = 0x3f;
    const unsigned char *bytes = (const unsigned char *)&d;
    size_t i = 0;
    while (bytes[i] == 0) {
        i++;
    }
    return i;
}

static void print_offsets(void)
{
    STRUCT(net_buff_desc_t);
    FIELD(net_buff_desc_t, io_or_offset);
    FIELD(net_buff_desc_t, len);
    printf("field net_buff_desc_t oid %zu 1\n", oid_offset());

    STRUCT(net_queue_t);
    FIELD(net_queue_t, tail);
    FIELD(net_queue_t, head);
    FIELD(net_queue_t, consumer_signalled);
    ARRAY(net_queue_t, buffers);

    STRUCT(blk_req_t);
    FIELD(blk_req_t, code);
    FIELD(blk_req_t, io_or_offset);
    FIELD(blk_req_t, block_number);
    FIELD(blk_req_t, count);
    FIELD(blk_req_t, id);

    STRUCT(blk_resp_t);
    FIELD(blk_resp_t, status);
    FIELD(blk_resp_t, success_count);
    FIELD(blk_resp_t, id);

    STRUCT(blk_req_queue_t);
    FIELD(blk_req_queue_t, head);
    FIELD(blk_req_queue_t, tail);
    FIELD(blk_req_queue_t, plugged);
    ARRAY(blk_req_queue_t, buffers);

    STRUCT(blk_resp_queue_t);
    FIELD(blk_resp_queue_t, head);
    FIELD(blk_resp_queue_t, tail);
    ARRAY(blk_resp_queue_t, buffers);

    STRUCT(blk_storage_info_t);
    FIELD(blk_storage_info_t, serial_number);
    FIELD(blk_storage_info_t, read_only);
    FIELD(blk_storage_info_t, ready);
    FIELD(blk_storage_info_t, sector_size);
    FIELD(blk_storage_info_t, block_size);
    FIELD(blk_storage_info_t, queue_depth);
    FIELD(blk_storage_info_t, cylinders);
    FIELD(blk_storage_info_t, heads);
    FIELD(blk_storage_info_t, blocks);
    FIELD(blk_storage_info_t, capacity);

    STRUCT(serial_queue_t);
    FIELD(serial_queue_t, tail);
    FIELD(serial_queue_t, head);
    FIELD(serial_queue_t, producer_signalled);
}

/* ---- the shared file ------------------------------------------------------------------ */
enum section { NET, BLK_REQ, BLK_RESP, STORAGE_INFO, SERIAL, SERIAL_DATA, SECTIONS };
#define SECTION_SIZE 4096

struct state {
    net_queue_t *net;
    blk_req_queue_t *req;
    blk_resp_queue_t *resp;
    blk_storage_info_t *info;
    serial_queue_t *serial;
    unsigned char *serial_data;
    uint32_t net_cap, blk_cap, serial_cap;
};

static _Noreturn void die(const char *what)
{
    fprintf(stderr, "layouts: %s\n", what);
    exit(2);
}

static struct state map_state(char **argv)
{
    int fd = open(argv[2], O_RDWR);
    if (fd < 0) {
        die("cannot open the state file");
    }
    unsigned char *base = mmap(NULL, SECTIONS * SECTION_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        die("cannot map the state file");
    }
    close(fd);
    return (struct state) {
        .net = (net_queue_t *)(base + NET * SECTION_SIZE),
        .req = (blk_req_queue_t *)(base + BLK_REQ * SECTION_SIZE),
        .resp = (blk_resp_queue_t *)(base + BLK_RESP * SECTION_SIZE),
        .info = (blk_storage_info_t *)(base + STORAGE_INFO * SECTION_SIZE),
        .serial = (serial_queue_t *)(base + SERIAL * SECTION_SIZE),
        .serial_data = base + SERIAL_DATA * SECTION_SIZE,
        .net_cap = (uint32_t)strtoul(argv[3], NULL, 10),
        .blk_cap = (uint32_t)strtoul(argv[4], NULL, 10),
        .serial_cap = (uint32_t)strtoul(argv[5], NULL, 10),
    };
}

static void scan(int got, int want, const char *record)
{
    if (got != want) {
        fprintf(stderr, "layouts: malformed '%s' record\n", record);
        exit(2);
    }
}

/* Records fill entries from the head given by the queue's record, which comes first. */
static void write_state(const struct state *s)
{
    char kw[16];
    uint32_t net_i = 0, req_i = 0, resp_i = 0;
    while (scanf("%15s", kw) == 1) {
        if (!strcmp(kw, "net")) {
            unsigned tail, head, signalled;
            scan(scanf("%u %u %u", &tail, &head, &signalled), 3, kw);
            s->net->tail = (uint16_t)tail;
            s->net->head = (uint16_t)head;
            s->net->consumer_signalled = signalled;
            net_i = head;
        } else if (!strcmp(kw, "desc")) {
            unsigned long long io;
            unsigned len, oid;
            scan(scanf("%llu %u %u", &io, &len, &oid), 3, kw);
            net_buff_desc_t *d = &s->net->buffers[net_i++ % s->net_cap];
            d->io_or_offset = io;
            d->len = (uint16_t)len;
            d->oid = oid & 0x3f;
        } else if (!strcmp(kw, "req")) {
            unsigned head, tail, plugged;
            scan(scanf("%u %u %u", &head, &tail, &plugged), 3, kw);
            s->req->head = head;
            s->req->tail = tail;
            s->req->plugged = plugged;
            req_i = head;
        } else if (!strcmp(kw, "request")) {
            unsigned code, count, id;
            unsigned long long io, block;
            scan(scanf("%u %llu %llu %u %u", &code, &io, &block, &count, &id), 5, kw);
            blk_req_t *r = &s->req->buffers[req_i++ % s->blk_cap];
            r->code = (blk_req_code_t)code;
            r->io_or_offset = io;
            r->block_number = block;
            r->count = (uint16_t)count;
            r->id = id;
        } else if (!strcmp(kw, "resp")) {
            unsigned head, tail;
            scan(scanf("%u %u", &head, &tail), 2, kw);
            s->resp->head = head;
            s->resp->tail = tail;
            resp_i = head;
        } else if (!strcmp(kw, "response")) {
            unsigned status, success, id;
            scan(scanf("%u %u %u", &status, &success, &id), 3, kw);
            blk_resp_t *r = &s->resp->buffers[resp_i++ % s->blk_cap];
            r->status = (blk_resp_status_t)status;
            r->success_count = (uint16_t)success;
            r->id = id;
        } else if (!strcmp(kw, "info")) {
            char serial[SERIAL_NUMBER_SIZE];
            unsigned read_only, ready, sector, block, depth, cylinders, heads, blocks;
            unsigned long long capacity;
            scan(scanf("%63s %u %u %u %u %u %u %u %u %llu", serial, &read_only, &ready, &sector, &block,
                       &depth, &cylinders, &heads, &blocks, &capacity), 10, kw);
            blk_storage_info_t *i = s->info;
            strncpy(i->serial_number, serial, SERIAL_NUMBER_SIZE);
            i->read_only = read_only;
            i->sector_size = (uint16_t)sector;
            i->block_size = (uint16_t)block;
            i->queue_depth = (uint16_t)depth;
            i->cylinders = (uint16_t)cylinders;
            i->heads = (uint16_t)heads;
            i->blocks = (uint16_t)blocks;
            i->capacity = capacity;
            __atomic_store_n(&i->ready, (bool)ready, __ATOMIC_RELEASE);
        } else if (!strcmp(kw, "serial")) {
            unsigned tail, head, signalled;
            scan(scanf("%u %u %u", &tail, &head, &signalled), 3, kw);
            for (uint32_t i = head; i != tail; i++) {
                unsigned byte;
                scan(scanf("%2x", &byte), 1, kw);
                s->serial_data[i % s->serial_cap] = (unsigned char)byte;
            }
            s->serial->tail = tail;
            s->serial->head = head;
            s->serial->producer_signalled = signalled;
        } else {
            die("unknown record");
        }
    }
}

/* Entries between head and tail, or none (and say so) if the indices are more than cap apart. */
static uint32_t live(uint32_t used, uint32_t cap, const char *queue)
{
    if (used > cap) {
        printf("bad %s %u entries in a queue of %u\n", queue, used, cap);
        return 0;
    }
    return used;
}

static void print_state(const struct state *s)
{
    const net_queue_t *net = s->net;
    printf("net %u %u %u\n", net->tail, net->head, net->consumer_signalled);
    for (uint32_t n = 0; n < live((uint16_t)(net->tail - net->head), s->net_cap, "net"); n++) {
        const net_buff_desc_t *d = &net->buffers[(net->head + n) % s->net_cap];
        printf("desc %llu %u %u\n", (unsigned long long)d->io_or_offset, d->len, d->oid);
    }
    printf("req %u %u %u\n", s->req->head, s->req->tail, s->req->plugged);
    for (uint32_t n = 0; n < live(s->req->tail - s->req->head, s->blk_cap, "req"); n++) {
        const blk_req_t *r = &s->req->buffers[(s->req->head + n) % s->blk_cap];
        printf("request %u %llu %llu %u %u\n", r->code, (unsigned long long)r->io_or_offset,
               (unsigned long long)r->block_number, r->count, r->id);
    }
    printf("resp %u %u\n", s->resp->head, s->resp->tail);
    for (uint32_t n = 0; n < live(s->resp->tail - s->resp->head, s->blk_cap, "resp"); n++) {
        const blk_resp_t *r = &s->resp->buffers[(s->resp->head + n) % s->blk_cap];
        printf("response %u %u %u\n", r->status, r->success_count, r->id);
    }
    const blk_storage_info_t *i = s->info;
    printf("info %.*s %u %u %u %u %u %u %u %u %llu\n", SERIAL_NUMBER_SIZE, i->serial_number, i->read_only,
           __atomic_load_n(&i->ready, __ATOMIC_ACQUIRE), i->sector_size, i->block_size, i->queue_depth,
           i->cylinders, i->heads, i->blocks, (unsigned long long)i->capacity);
    const serial_queue_t *q = s->serial;
    uint32_t bytes = live(q->tail - q->head, s->serial_cap, "serial");
    printf("serial %u %u %u", q->tail, q->head, q->producer_signalled);
    for (uint32_t n = 0; n < bytes; n++) {
        printf(" %02x", s->serial_data[(q->head + n) % s->serial_cap]);
    }
    printf("\n");
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "offsets")) {
        print_offsets();
    } else if (argc == 6 && !strcmp(argv[1], "write")) {
        struct state s = map_state(argv);
        write_state(&s);
    } else if (argc == 6 && !strcmp(argv[1], "read")) {
        struct state s = map_state(argv);
        print_state(&s);
    } else {
        die("usage: layouts offsets | layouts write|read PATH NET_CAP BLK_CAP SERIAL_CAP");
    }
    return 0;
}
