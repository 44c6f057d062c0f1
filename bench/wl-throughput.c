/* throughput: how fast the allocator is, section by section.
 *
 *  fastpath        one thread frees and allocates small blocks of mixed size classes
 *                  (16 B .. 1 KiB) in a loop over a ring of 64 live blocks
 *  fastpath-burst  one thread allocates 256 blocks of 8 size classes (16 .. 256 B) in a
 *                  row, then frees them in two halves: the second half last-in first-out,
 *                  the first half first-in first-out; again and again
 *  larson-2t       larson-style server mix: each thread replaces random blocks of its
 *  larson-8t       own array and passes one freed-to-be block in eight to a neighbour,
 *                  which frees it (cross-thread frees); 2 and 8 threads, same total work
 *  larson-sizes    the same on 2 threads with sizes spread from 8 B to 64 KiB
 *  threads-64      the larson mix on 64 and on 256 threads (far more threads than
 *  threads-256     CPUs), 256 live blocks each, same total work
 *  pipeline        a producer allocates messages, a consumer on another thread frees
 *                  them (handed over in batches of 256)
 *  prodcons        one producer thread allocates, four consumer threads free (batches
 *                  of 64 dealt round-robin)
 *  large           one thread allocates blocks of 5 .. 25 MiB, writes a byte of every
 *                  4 KiB page, and frees one of the 4 it keeps live at each step
 *  bulk            one thread builds a structure of 500,000 small blocks (8 .. 256 B,
 *                  most under 64), frees every other one and allocates them again, then
 *                  frees them all in random order (a parse tree, a hash table, a cache
 *                  built and dropped); again and again
 *  realloc         one thread grows 256 buffers with realloc, by 1/8 to 1/4 each time,
 *                  writing what was added, up to a size drawn for each buffer from 64 B
 *                  to 4 MiB (string builders, growing arrays); then frees and restarts it
 *  bursts          one thread allocates a burst of 100, 400 or 1600 blocks of one size
 *                  (16, 64 or 256 B), writes every byte, frees the first half first-in
 *                  first-out and the second last-in first-out; again and again (glibc's
 *                  bench-malloc-simple: a request's blocks, a structure built and dropped)
 *  pauses          two threads work in bursts (16 MiB each of 16 B .. 16 KiB blocks,
 *                  allocated, written and freed four times, half by the other thread)
 *                  with 1.5 s pauses between them, not timed (a service polled every few
 *                  seconds, a batch job's rounds)
 *
 * Each section reports "result NAME OPS NS minflt=.. majflt=.." (wl_common.h).
 * "--only LIST" runs the named sections (comma-separated; "larson" is larson-2t and
 * larson-8t).  ebb-bench fastpath runs "--only fastpath" and "--only fastpath-burst"
 * under callgrind; "--null" swaps malloc/free for do-nothing functions there to measure
 * the loops' own cost.
 */
#define _GNU_SOURCE
#include "wl_common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

static uint64_t seed = 1;

/* ------------------------------------------------------------------ fastpath */

static uint32_t fp_sizes[256];

static void fastpath_sizes(void) {
    struct wl_rng r;
    wl_rng_seed(&r, seed, 0xfa57, 0);
    for (int i = 0; i < 256; i++) {
        uint64_t k = wl_below(&r, 100);
        if (k < 50) fp_sizes[i] = (uint32_t)(16 + wl_below(&r, 113));       /* 16..128 */
        else if (k < 85) fp_sizes[i] = (uint32_t)(129 + wl_below(&r, 384)); /* 129..512 */
        else fp_sizes[i] = (uint32_t)(513 + wl_below(&r, 512));             /* 513..1024 */
    }
}

static char null_area[64][1024];
static unsigned null_next;

__attribute__((noinline)) static void *null_malloc(size_t n) {
    (void)n;
    return null_area[null_next++ & 63];
}

__attribute__((noinline)) static void null_free(void *p) { __asm__ volatile("" : : "r"(p) : "memory"); }

static void *(*fp_malloc_fn)(size_t) = malloc;
static void (*fp_free_fn)(void *) = free;

/* Every allocator call of the fastpath loops goes through these two functions.  Under
 * callgrind, the calls made from them hold exactly the allocator's instructions
 * (ebb-bench fastpath sums those call arcs by these names), while the loops' own work and
 * these wrappers' few instructions stay outside.  The empty asm after each call keeps it
 * a call rather than a tail jump, so that the wrappers have the same shape under every
 * compiler (callgrind counts a tail jump into a function as a call too). */
__attribute__((noinline, used)) void *ebb_fp_malloc(size_t n) {
    void *p = fp_malloc_fn(n);
    __asm__ volatile("" : "+r"(p));
    return p;
}

__attribute__((noinline, used)) void ebb_fp_free(void *p) {
    fp_free_fn(p);
    __asm__ volatile("" : : : "memory");
}

__attribute__((noinline)) static void fastpath_loop(uint64_t iters) {
    void *ring[64] = {0};
    for (uint64_t i = 0; i < iters; i++) {
        unsigned k = (unsigned)(i & 63);
        ebb_fp_free(ring[k]);
        char *p = ebb_fp_malloc(fp_sizes[i & 255]);
        p[0] = (char)i;
        ring[k] = p;
    }
    for (unsigned k = 0; k < 64; k++) ebb_fp_free(ring[k]);
}

#define BURST 256
static const uint32_t burst_sizes[8] = {16, 32, 48, 64, 96, 128, 192, 256};

/* rounds x (256 mallocs, then 128 frees LIFO, then 128 frees FIFO). */
__attribute__((noinline)) static void burst_loop(uint64_t rounds) {
    void *blk[BURST];
    for (uint64_t r = 0; r < rounds; r++) {
        for (unsigned i = 0; i < BURST; i++) {
            char *p = ebb_fp_malloc(burst_sizes[i & 7]);
            p[0] = (char)i;
            blk[i] = p;
        }
        for (unsigned i = BURST; i-- > BURST / 2;) ebb_fp_free(blk[i]);
        for (unsigned i = 0; i < BURST / 2; i++) ebb_fp_free(blk[i]);
    }
}

static struct {
    uint64_t iters, larson_ops, msgs, large_iters, bulk_rounds, reallocs, pause_rounds;
    bool null_alloc;
    bool large_write_all; /* large: every byte, not one byte per 4 KiB page */
} P = {50000000, 10000000, 4000000, 1000, 10, 2000000, 10, false, false};

static void use_null_allocator(void) {
    if (P.null_alloc) {
        fp_malloc_fn = null_malloc;
        fp_free_fn = null_free;
    }
}

static void run_fastpath(void) {
    fastpath_sizes();
    use_null_allocator();
    struct wl_faults f0 = wl_faults_now();
    uint64_t t0 = wl_now_ns();
    fastpath_loop(P.iters);
    wl_result("fastpath", P.iters, t0, f0);
}

/* OPS is malloc+free pairs: iters rounded down to whole rounds of 256. */
static void run_fastpath_burst(void) {
    use_null_allocator();
    uint64_t rounds = P.iters / BURST;
    struct wl_faults f0 = wl_faults_now();
    uint64_t t0 = wl_now_ns();
    burst_loop(rounds);
    wl_result("fastpath-burst", rounds * BURST, t0, f0);
}

/* Every (size, count) pair gets the same number of blocks: iters / 4 over the nine. */
static void run_bursts(void) {
    static const size_t sizes[3] = {16, 64, 256};
    static const unsigned counts[3] = {100, 400, 1600};
    static char *blk[1600];
    const uint64_t per = P.iters / 4 / 9;
    uint64_t pairs = 0;
    struct wl_faults f0 = wl_faults_now();
    uint64_t t0 = wl_now_ns();
    for (int si = 0; si < 3; si++)
        for (int ci = 0; ci < 3; ci++) {
            const size_t size = sizes[si];
            const unsigned n = counts[ci];
            for (uint64_t r = 0; r < per / n; r++) {
                for (unsigned i = 0; i < n; i++) {
                    char *p = malloc(size);
                    if (!p) {
                        fprintf(stderr, "throughput: bursts: malloc(%zu) failed\n", size);
                        exit(1);
                    }
                    for (size_t g = 0; g < size; g++) p[g] = (char)(g + i);
                    blk[i] = p;
                }
                for (unsigned i = 0; i < n; i++)
                    if (blk[i][size - 1] != (char)(size - 1 + i)) {
                        fprintf(stderr, "throughput: bursts: block %u lost its end\n", i);
                        exit(1);
                    }
                for (unsigned i = 0; i < n / 2; i++) free(blk[i]);
                for (unsigned i = n; i-- > n / 2;) free(blk[i]);
                pairs += n;
            }
        }
    wl_result("bursts", pairs, t0, f0);
}

/* ------------------------------------------------------------------ larson */

#define INBOX_CAP 1024

struct inbox {
    pthread_mutex_t mu;
    void *p[INBOX_CAP];
    unsigned n;
};

/* One larson-style run: threads, live blocks per thread, the size mix. */
struct larson_kind {
    const char *name;
    unsigned nthreads, slots;
    size_t (*size)(struct wl_rng *r);
};

struct larson_thread {
    pthread_t th;
    unsigned index;
    const struct larson_kind *k;
    uint64_t ops;
    struct inbox *inboxes;
    pthread_barrier_t *start;
};

static size_t larson_size(struct wl_rng *r) {
    uint64_t x = wl_rand(r);
    if (x % 64 == 0) return 4096 + (size_t)((x >> 8) % 12288); /* now and then a few KiB */
    size_t base = (size_t)16 << ((x >> 8) % 7);                /* 16 .. 2 KiB, log-uniform */
    return base + (size_t)((x >> 16) % base);
}

/* 8 B .. 64 KiB, log-uniform: every small class and blocks of several pages. */
static size_t spread_size(struct wl_rng *r) {
    uint64_t x = wl_rand(r);
    size_t base = (size_t)8 << ((x >> 8) % 13);
    return base + (size_t)((x >> 24) % base);
}

static void inbox_drain(struct inbox *in) {
    void *got[INBOX_CAP];
    unsigned n;
    pthread_mutex_lock(&in->mu);
    n = in->n;
    memcpy(got, in->p, n * sizeof *got);
    in->n = 0;
    pthread_mutex_unlock(&in->mu);
    for (unsigned i = 0; i < n; i++) free(got[i]); /* allocated by another thread */
}

/* Hands the block to the neighbour, or says it could not (its inbox is full). */
static bool inbox_pass(struct inbox *next, void *victim) {
    bool passed = false;
    pthread_mutex_lock(&next->mu);
    if (next->n < INBOX_CAP) {
        next->p[next->n++] = victim;
        passed = true;
    }
    pthread_mutex_unlock(&next->mu);
    return passed;
}

static void *larson_worker(void *arg) {
    struct larson_thread *t = arg;
    const struct larson_kind *k = t->k;
    struct wl_rng r;
    wl_rng_seed(&r, seed, 0x1a75, t->index);
    void **slot = calloc(k->slots, sizeof *slot);
    for (unsigned i = 0; i < k->slots; i++) {
        size_t s = k->size(&r);
        slot[i] = malloc(s);
        memset(slot[i], 1, s < 64 ? s : 64);
    }
    struct inbox *next = &t->inboxes[(t->index + 1) % k->nthreads];
    pthread_barrier_wait(t->start);
    for (uint64_t n = 0; n < t->ops; n++) {
        uint64_t x = wl_rand(&r);
        unsigned i = (unsigned)(x % k->slots);
        bool pass = k->nthreads > 1 && (x >> 20) % 8 == 0;
        if (!pass || !inbox_pass(next, slot[i])) free(slot[i]);
        size_t s = k->size(&r);
        slot[i] = malloc(s);
        memset(slot[i], (int)n, s < 64 ? s : 64);
        if ((n & 63) == 0) inbox_drain(&t->inboxes[t->index]);
    }
    pthread_barrier_wait(t->start); /* everyone done before the inboxes are emptied */
    inbox_drain(&t->inboxes[t->index]);
    for (unsigned i = 0; i < k->slots; i++) free(slot[i]);
    free(slot);
    return NULL;
}

static void run_larson_kind(const struct larson_kind *k, uint64_t total_ops) {
    unsigned nt = k->nthreads;
    struct larson_thread *t = calloc(nt, sizeof *t);
    struct inbox *in = calloc(nt, sizeof *in);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, nt + 1);
    for (unsigned i = 0; i < nt; i++) {
        pthread_mutex_init(&in[i].mu, NULL);
        t[i] = (struct larson_thread){0, i, k, total_ops / nt, in, &start};
        int e = pthread_create(&t[i].th, NULL, larson_worker, &t[i]);
        if (e) {
            fprintf(stderr, "throughput: pthread_create: %s\n", strerror(e));
            exit(1);
        }
    }
    pthread_barrier_wait(&start);
    struct wl_faults f0 = wl_faults_now();
    uint64_t t0 = wl_now_ns();
    pthread_barrier_wait(&start);
    wl_result(k->name, total_ops / nt * nt, t0, f0);
    for (unsigned i = 0; i < nt; i++) pthread_join(t[i].th, NULL);
    pthread_barrier_destroy(&start);
    free(t);
    free(in);
}

static const struct larson_kind larson_kinds[] = {
    {"larson-2t", 2, 1000, larson_size},    {"larson-8t", 8, 1000, larson_size},
    {"larson-sizes", 2, 1000, spread_size}, {"threads-64", 64, 256, larson_size},
    {"threads-256", 256, 256, larson_size},
};

static void run_larson_named(const char *name) {
    for (size_t i = 0; i < sizeof larson_kinds / sizeof larson_kinds[0]; i++)
        if (strcmp(larson_kinds[i].name, name) == 0) run_larson_kind(&larson_kinds[i], P.larson_ops);
}

static void run_larson_2t(void) { run_larson_named("larson-2t"); }
static void run_larson_8t(void) { run_larson_named("larson-8t"); }
static void run_larson_sizes(void) { run_larson_named("larson-sizes"); }
static void run_threads_64(void) { run_larson_named("threads-64"); }
static void run_threads_256(void) { run_larson_named("threads-256"); }

/* ------------------------------------------------------------------ pipeline */

/* Messages travel in batches through a bounded queue with blocking hand-off, so
 * the figure does not depend on how two spinning threads share the cores. */
#define BATCH 256
#define QDEPTH 16

static struct {
    pthread_mutex_t mu;
    pthread_cond_t not_full, not_empty;
    void *batch[QDEPTH + 1][BATCH]; /* one spare for the producer to fill */
    unsigned slot_of[QDEPTH];       /* which batch buffer each queued entry is */
    unsigned head, count;
    unsigned free_slots[QDEPTH + 1];
    unsigned n_free;
    uint64_t msgs;
} pq = {.mu = PTHREAD_MUTEX_INITIALIZER,
        .not_full = PTHREAD_COND_INITIALIZER,
        .not_empty = PTHREAD_COND_INITIALIZER};

static void *producer(void *arg) {
    (void)arg;
    struct wl_rng r;
    wl_rng_seed(&r, seed, 0x919e, 1);
    uint64_t k = 0;
    while (k < pq.msgs) {
        pthread_mutex_lock(&pq.mu);
        while (pq.n_free == 0) pthread_cond_wait(&pq.not_full, &pq.mu);
        unsigned b = pq.free_slots[--pq.n_free];
        pthread_mutex_unlock(&pq.mu);
        for (unsigned i = 0; i < BATCH; i++, k++) {
            if (k < pq.msgs) {
                size_t sz = 32 + (size_t)wl_below(&r, 4064);
                char *m = malloc(sz);
                memset(m, (int)k, sz < 128 ? sz : 128);
                pq.batch[b][i] = m;
            } else {
                pq.batch[b][i] = NULL;
            }
        }
        pthread_mutex_lock(&pq.mu);
        while (pq.count == QDEPTH) pthread_cond_wait(&pq.not_full, &pq.mu);
        pq.slot_of[(pq.head + pq.count) % QDEPTH] = b;
        pq.count++;
        pthread_cond_signal(&pq.not_empty);
        pthread_mutex_unlock(&pq.mu);
    }
    return NULL;
}

static void *consumer(void *arg) {
    uint64_t *sum = arg;
    uint64_t got = 0;
    while (got < pq.msgs) {
        pthread_mutex_lock(&pq.mu);
        while (pq.count == 0) pthread_cond_wait(&pq.not_empty, &pq.mu);
        unsigned b = pq.slot_of[pq.head];
        pq.head = (pq.head + 1) % QDEPTH;
        pq.count--;
        pthread_mutex_unlock(&pq.mu);
        for (unsigned i = 0; i < BATCH; i++) {
            char *m = pq.batch[b][i];
            if (!m) continue;
            *sum += (unsigned char)m[0];
            free(m); /* allocated by the producer thread */
            got++;
        }
        pthread_mutex_lock(&pq.mu);
        pq.free_slots[pq.n_free++] = b;
        pthread_cond_signal(&pq.not_full);
        pthread_mutex_unlock(&pq.mu);
    }
    return NULL;
}

static void run_pipeline(void) {
    pthread_t p, c;
    uint64_t sum = 0;
    pq.msgs = P.msgs;
    pq.n_free = QDEPTH + 1;
    for (unsigned i = 0; i <= QDEPTH; i++) pq.free_slots[i] = i;
    struct wl_faults f0 = wl_faults_now();
    uint64_t t0 = wl_now_ns();
    pthread_create(&c, NULL, consumer, &sum);
    pthread_create(&p, NULL, producer, NULL);
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    wl_result("pipeline", P.msgs, t0, f0);
}

/* ------------------------------------------------------------------ prodcons */

/* One producer deals batches of messages round-robin to PC_CONSUMERS consumers, each
 * through its own bounded channel with blocking hand-off; every free is of a block
 * another thread allocated, and several threads free at once. */
#define PC_CONSUMERS 4
#define PC_BATCH 64
#define PC_DEPTH 8

struct pc_chan {
    pthread_mutex_t mu;
    pthread_cond_t not_full, not_empty;
    void *buf[PC_DEPTH][PC_BATCH];
    unsigned head, count;
    bool closed;
    pthread_t th;
};

static struct pc_chan pc_chans[PC_CONSUMERS];

static void pc_put(struct pc_chan *ch, void *const *batch) {
    pthread_mutex_lock(&ch->mu);
    while (ch->count == PC_DEPTH) pthread_cond_wait(&ch->not_full, &ch->mu);
    memcpy(ch->buf[(ch->head + ch->count) % PC_DEPTH], batch, sizeof ch->buf[0]);
    ch->count++;
    pthread_cond_signal(&ch->not_empty);
    pthread_mutex_unlock(&ch->mu);
}

/* False once the channel is closed and empty. */
static bool pc_get(struct pc_chan *ch, void **batch) {
    pthread_mutex_lock(&ch->mu);
    while (ch->count == 0 && !ch->closed) pthread_cond_wait(&ch->not_empty, &ch->mu);
    bool got = ch->count > 0;
    if (got) {
        memcpy(batch, ch->buf[ch->head], sizeof ch->buf[0]);
        ch->head = (ch->head + 1) % PC_DEPTH;
        ch->count--;
        pthread_cond_signal(&ch->not_full);
    }
    pthread_mutex_unlock(&ch->mu);
    return got;
}

static void *pc_consumer(void *arg) {
    struct pc_chan *ch = arg;
    void *batch[PC_BATCH];
    uint64_t sum = 0;
    while (pc_get(ch, batch))
        for (unsigned i = 0; i < PC_BATCH; i++) {
            if (!batch[i]) continue;
            sum += *(unsigned char *)batch[i];
            free(batch[i]); /* allocated by the producer */
        }
    return (void *)(uintptr_t)sum;
}

static void pc_produce(uint64_t msgs) {
    struct wl_rng r;
    wl_rng_seed(&r, seed, 0x9c0d, 0);
    void *batch[PC_BATCH];
    for (uint64_t k = 0, b = 0; k < msgs; b++) {
        for (unsigned i = 0; i < PC_BATCH; i++, k++) {
            batch[i] = NULL;
            if (k >= msgs) continue;
            size_t base = (size_t)16 << wl_below(&r, 6); /* 16 B .. 1 KiB, log-uniform */
            size_t sz = base + (size_t)wl_below(&r, base);
            char *m = malloc(sz);
            memset(m, (int)k, sz < 64 ? sz : 64);
            batch[i] = m;
        }
        pc_put(&pc_chans[b % PC_CONSUMERS], batch);
    }
}

static void run_prodcons(void) {
    struct wl_faults f0 = wl_faults_now();
    uint64_t t0 = wl_now_ns();
    for (unsigned i = 0; i < PC_CONSUMERS; i++) {
        struct pc_chan *ch = &pc_chans[i];
        pthread_mutex_init(&ch->mu, NULL);
        pthread_cond_init(&ch->not_full, NULL);
        pthread_cond_init(&ch->not_empty, NULL);
        pthread_create(&ch->th, NULL, pc_consumer, ch);
    }
    pc_produce(P.msgs);
    for (unsigned i = 0; i < PC_CONSUMERS; i++) {
        pthread_mutex_lock(&pc_chans[i].mu);
        pc_chans[i].closed = true;
        pthread_cond_signal(&pc_chans[i].not_empty);
        pthread_mutex_unlock(&pc_chans[i].mu);
    }
    for (unsigned i = 0; i < PC_CONSUMERS; i++) pthread_join(pc_chans[i].th, NULL);
    wl_result("prodcons", P.msgs, t0, f0);
}

/* ------------------------------------------------------------------ large */

/* Blocks of 5 .. 25 MiB, 4 live at a time: memory that is freed is asked for again
 * within milliseconds.  One byte of every 4 KiB page of a new block is written (all of
 * it with --large-write-all), so the time is mostly what the kernel takes to fault in
 * the pages the allocator gave back; minflt/OPS against bytes/OPS shows what share of
 * each new block was faulted in (4 KiB pages, fewer with huge pages). */
#define LARGE_LIVE 4

static void run_large(void) {
    struct wl_rng r;
    wl_rng_seed(&r, seed, 0x1a26e, 0);
    void *live[LARGE_LIVE] = {0};
    uint64_t bytes = 0;
    struct wl_faults f0 = wl_faults_now();
    uint64_t t0 = wl_now_ns();
    for (uint64_t k = 0; k < P.large_iters; k++) {
        unsigned j = (unsigned)wl_below(&r, LARGE_LIVE);
        free(live[j]);
        size_t sz = ((size_t)5 << 20) + (size_t)wl_below(&r, (20u << 20) + 1);
        char *p = malloc(sz);
        if (!p) {
            fprintf(stderr, "throughput: malloc(%zu) failed\n", sz);
            exit(1);
        }
        if (P.large_write_all) memset(p, (int)k, sz);
        else
            for (size_t o = 0; o < sz; o += 4096) p[o] = (char)k;
        live[j] = p;
        bytes += sz;
    }
    uint64_t t1 = wl_now_ns();
    struct wl_faults f1 = wl_faults_now();
    for (unsigned j = 0; j < LARGE_LIVE; j++) free(live[j]);
    wl_say("result large %llu %llu minflt=%llu majflt=%llu bytes=%llu", (unsigned long long)P.large_iters,
           (unsigned long long)(t1 - t0), (unsigned long long)(f1.minflt - f0.minflt),
           (unsigned long long)(f1.majflt - f0.majflt), (unsigned long long)bytes);
}

/* ------------------------------------------------------------------ bulk */

#define BULK_N 500000

static uint32_t bulk_size(struct wl_rng *r) {
    uint64_t k = wl_below(r, 100);
    if (k < 70) return (uint32_t)(8 + wl_below(r, 57));  /* 8..64 */
    if (k < 95) return (uint32_t)(65 + wl_below(r, 96)); /* 65..160 */
    return (uint32_t)(161 + wl_below(r, 96));            /* 161..256 */
}

static void run_bulk(void) {
    struct wl_rng r;
    wl_rng_seed(&r, seed, 0xb01c, 0);
    char **v = malloc(BULK_N * sizeof *v);
    uint32_t *order = malloc(BULK_N * sizeof *order);
    if (!v || !order) exit(1);
    uint64_t ops = 0;
    struct wl_faults f0 = wl_faults_now();
    uint64_t t0 = wl_now_ns();
    for (uint64_t round = 0; round < P.bulk_rounds; round++) {
        for (uint32_t i = 0; i < BULK_N; i++) {
            v[i] = malloc(bulk_size(&r));
            memcpy(v[i], &i, sizeof i);
        }
        for (uint32_t i = 0; i < BULK_N; i += 2) free(v[i]);
        for (uint32_t i = 0; i < BULK_N; i += 2) {
            v[i] = malloc(bulk_size(&r));
            memcpy(v[i], &i, sizeof i);
        }
        for (uint32_t i = 0; i < BULK_N; i++) order[i] = i;
        for (uint32_t i = BULK_N - 1; i > 0; i--) { /* the teardown's order */
            uint32_t j = (uint32_t)wl_below(&r, i + 1), t = order[i];
            order[i] = order[j], order[j] = t;
        }
        for (uint32_t i = 0; i < BULK_N; i++) {
            uint32_t k = order[i], got;
            memcpy(&got, v[k], sizeof got);
            if (got != k) {
                fprintf(stderr, "throughput: bulk block %u holds %u\n", k, got);
                exit(1);
            }
            free(v[k]);
        }
        ops += BULK_N * 3;
    }
    wl_result("bulk", ops, t0, f0);
    free(order);
    free(v);
}

/* ------------------------------------------------------------------ realloc */

#define REALLOC_BUFS 256

static size_t realloc_cap(struct wl_rng *r) {
    /* log-uniform from 64 B to 4 MiB */
    unsigned e = 6 + (unsigned)wl_below(r, 16);
    return ((size_t)1 << e) + (size_t)wl_below(r, (uint64_t)1 << e);
}

static void run_realloc(void) {
    struct wl_rng r;
    wl_rng_seed(&r, seed, 0x4ea1, 0);
    struct {
        char *p;
        size_t len, cap;
    } b[REALLOC_BUFS] = {{0}};
    for (unsigned i = 0; i < REALLOC_BUFS; i++) b[i].cap = realloc_cap(&r);
    struct wl_faults f0 = wl_faults_now();
    uint64_t t0 = wl_now_ns();
    for (uint64_t k = 0; k < P.reallocs; k++) {
        unsigned i = (unsigned)wl_below(&r, REALLOC_BUFS);
        if (b[i].len >= b[i].cap) {
            if (b[i].len && (unsigned char)b[i].p[b[i].len - 1] != (unsigned char)(b[i].len - 1)) {
                fprintf(stderr, "throughput: realloc buffer %u lost its end\n", i);
                exit(1);
            }
            free(b[i].p);
            b[i].p = NULL, b[i].len = 0, b[i].cap = realloc_cap(&r);
        }
        size_t grow = 16 + b[i].len / 8 + (size_t)wl_below(&r, b[i].len / 8 + 1);
        char *q = realloc(b[i].p, b[i].len + grow);
        if (!q) {
            fprintf(stderr, "throughput: realloc(%zu) failed\n", b[i].len + grow);
            exit(1);
        }
        memset(q + b[i].len, 0, grow);
        q[b[i].len + grow - 1] = (char)(b[i].len + grow - 1);
        b[i].p = q, b[i].len += grow;
    }
    wl_result("realloc", P.reallocs, t0, f0);
    for (unsigned i = 0; i < REALLOC_BUFS; i++) free(b[i].p);
}

/* ------------------------------------------------------------------ pauses */
/* A program that works in bursts with pauses between them (a service polled every few
 * seconds, a batch job's rounds; mimalloc-bench's rptest is one): two threads, and in
 * each burst PAUSE_CYCLES times each allocates PAUSE_N blocks of 16 B-16 KiB (about
 * 16 MiB), writes their first bytes and one byte in each 4 KiB page, and frees them in
 * a shuffled order, half of them the other thread's.  Then both wait PAUSE_MS (1.5 s:
 * longer than a time-based release of idle memory at 1 s, shorter than a 10 s decay), not
 * timed: the time is that of the bursts, and the faults are what the pauses gave back
 * and the bursts faulted in again. */
#define PAUSE_N 2048
#define PAUSE_CYCLES 4
#define PAUSE_MS 1500
static struct {
    pthread_barrier_t bar;
    char *blk[2][PAUSE_N];
    uint64_t busy_ns;
} pz;

static void *pause_worker(void *arg) {
    const unsigned me = (unsigned)(uintptr_t)arg, other = me ^ 1;
    struct wl_rng r;
    wl_rng_seed(&r, seed, 0x9a05, me);
    static _Thread_local uint32_t order[PAUSE_N];
    for (uint64_t round = 0; round < P.pause_rounds; round++) {
        pthread_barrier_wait(&pz.bar);
        uint64_t t0 = wl_now_ns();
        for (unsigned c = 0; c < PAUSE_CYCLES; c++) {
            for (unsigned i = 0; i < PAUSE_N; i++) {
                size_t n = 16 + (size_t)wl_below(&r, 16384 - 16 + 1);
                char *p = malloc(n);
                if (!p) exit(1);
                memset(p, (int)(i & 0xff), n < 16 ? n : 16);
                for (size_t off = 4096; off < n; off += 4096) p[off] = 1;
                p[n - 1] = 1;
                pz.blk[me][i] = p;
            }
            pthread_barrier_wait(&pz.bar);
            for (unsigned i = 0; i < PAUSE_N; i++) order[i] = i;
            for (unsigned i = PAUSE_N - 1; i > 0; i--) {
                unsigned j = (unsigned)wl_below(&r, i + 1), t = order[i];
                order[i] = order[j], order[j] = t;
            }
            for (unsigned k = 0; k < PAUSE_N; k++) { /* even blocks its own, odd the other's */
                unsigned i = order[k];
                char *p = pz.blk[(i & 1) ? other : me][i];
                if ((unsigned char)p[0] != (i & 0xff)) {
                    fprintf(stderr, "throughput: pauses block %u holds %u\n", i, (unsigned char)p[0]);
                    exit(1);
                }
                free(p);
            }
            pthread_barrier_wait(&pz.bar);
        }
        if (me == 0) pz.busy_ns += wl_now_ns() - t0;
        if (round + 1 < P.pause_rounds && me == 0) {
            struct timespec ts = {PAUSE_MS / 1000, (PAUSE_MS % 1000) * 1000000L};
            while (nanosleep(&ts, &ts) != 0) {}
        }
    }
    return NULL;
}

static void run_pauses(void) {
    pthread_barrier_init(&pz.bar, NULL, 2);
    pz.busy_ns = 0;
    struct wl_faults f0 = wl_faults_now();
    pthread_t t[2];
    for (uintptr_t i = 0; i < 2; i++)
        if (pthread_create(&t[i], NULL, pause_worker, (void *)i)) exit(1);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    /* the bursts' time alone: a start that far back */
    wl_result("pauses", P.pause_rounds * PAUSE_CYCLES * PAUSE_N * 4, wl_now_ns() - pz.busy_ns, f0);
    pthread_barrier_destroy(&pz.bar);
}

/* ------------------------------------------------------------------ main */

static const struct section {
    const char *name;
    void (*run)(void);
} sections[] = {
    {"fastpath", run_fastpath},
    {"fastpath-burst", run_fastpath_burst},
    {"larson-2t", run_larson_2t},
    {"larson-8t", run_larson_8t},
    {"larson-sizes", run_larson_sizes},
    {"threads-64", run_threads_64},
    {"threads-256", run_threads_256},
    {"pipeline", run_pipeline},
    {"prodcons", run_prodcons},
    {"large", run_large},
    {"bulk", run_bulk},
    {"realloc", run_realloc},
    {"bursts", run_bursts},
    {"pauses", run_pauses},
};
#define N_SECTIONS (sizeof sections / sizeof sections[0])

static void usage(void) {
    fprintf(stderr, "usage: ebb-wl-throughput [--quick|--long] [--only SECTION,...] [--iters N] "
                    "[--larson-ops N] [--msgs N] [--large-iters N] [--large-write-all] [--bulk-rounds N] "
                    "[--reallocs N] [--pause-rounds N] [--null] [--seed S] "
                    "[--sync]\n"
                    "sections:");
    for (size_t i = 0; i < N_SECTIONS; i++) fprintf(stderr, " %s", sections[i].name);
    fprintf(stderr, " (larson = larson-2t,larson-8t)\n");
    exit(2);
}

/* Marks the sections named in a comma-separated list; exits on an unknown name. */
static void select_sections(const char *list, bool *want) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", list);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        bool known = false;
        for (size_t i = 0; i < N_SECTIONS; i++) {
            bool alias = strcmp(tok, "larson") == 0 && (strcmp(sections[i].name, "larson-2t") == 0 ||
                                                        strcmp(sections[i].name, "larson-8t") == 0);
            if (alias || strcmp(tok, sections[i].name) == 0) want[i] = known = true;
        }
        if (!known) {
            fprintf(stderr, "ebb-wl-throughput: unknown section '%s'\n", tok);
            usage();
        }
    }
}

int main(int argc, char **argv) {
    const char *only = NULL;
    bool sync = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (wl_arg_is(a, "--quick")) {
            P.iters = 20000000;
            P.larson_ops = 4000000;
            P.msgs = 2000000;
            P.large_iters = 300;
            P.bulk_rounds = 4;
            P.reallocs = 300000;
            P.pause_rounds = 6;
        } else if (wl_arg_is(a, "--long")) {
            P.iters *= 5;
            P.larson_ops *= 5;
            P.msgs *= 5;
            P.large_iters *= 5;
            P.bulk_rounds *= 5;
            P.reallocs *= 5;
            P.pause_rounds *= 2;
        } else if (wl_arg_is(a, "--iters")) P.iters = wl_arg_num(argc, argv, &i);
        else if (wl_arg_is(a, "--larson-ops")) P.larson_ops = wl_arg_num(argc, argv, &i);
        else if (wl_arg_is(a, "--msgs")) P.msgs = wl_arg_num(argc, argv, &i);
        else if (wl_arg_is(a, "--large-iters")) P.large_iters = wl_arg_num(argc, argv, &i);
        else if (wl_arg_is(a, "--large-write-all")) P.large_write_all = true;
        else if (wl_arg_is(a, "--bulk-rounds")) P.bulk_rounds = wl_arg_num(argc, argv, &i);
        else if (wl_arg_is(a, "--reallocs")) P.reallocs = wl_arg_num(argc, argv, &i);
        else if (wl_arg_is(a, "--pause-rounds")) P.pause_rounds = wl_arg_num(argc, argv, &i);
        else if (wl_arg_is(a, "--seed")) seed = wl_arg_num(argc, argv, &i);
        else if (wl_arg_is(a, "--only") && i + 1 < argc) only = argv[++i];
        else if (wl_arg_is(a, "--null")) P.null_alloc = true;
        else if (wl_arg_is(a, "--sync")) sync = true;
        else usage();
    }
    bool want[N_SECTIONS];
    for (size_t i = 0; i < N_SECTIONS; i++) want[i] = only == NULL;
    if (only) select_sections(only, want);
    wl_start(sync);
    for (size_t i = 0; i < N_SECTIONS; i++)
        if (want[i]) sections[i].run();
    return 0;
}
