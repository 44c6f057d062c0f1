/* throughput: how fast the allocator is, three ways.
 *
 *  fastpath    one thread frees and allocates small blocks of mixed size classes
 *              (16 B .. 1 KiB) in a loop over a ring of 64 live blocks
 *  larson-2t   larson-style server mix: each thread replaces random blocks of its
 *  larson-8t   own array and passes one freed-to-be block in eight to a neighbour,
 *              which frees it (cross-thread frees); 2 and 8 threads, same total work
 *  pipeline    a producer allocates messages, a consumer on another thread frees
 *              them (handed over in batches of 256)
 *
 * Each section reports "result NAME OPS NS" (wl_common.h).  "--only fastpath
 * --iters N" runs just the loop, which is what ebb-bench fastpath runs under
 * callgrind; "--null" swaps malloc/free for do-nothing functions to measure the
 * loop's own cost.
 */
#define _GNU_SOURCE
#include "wl_common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

static uint64_t seed = 1;

/* ------------------------------------------------------------------ fastpath */

static uint32_t fp_sizes[256];

static void fastpath_sizes(void)
{
    struct wl_rng r;
    wl_rng_seed(&r, seed, 0xfa57, 0);
    for (int i = 0; i < 256; i++) {
        uint64_t k = wl_below(&r, 100);
        if (k < 50)
            fp_sizes[i] = (uint32_t)(16 + wl_below(&r, 113)); /* 16..128 */
        else if (k < 85)
            fp_sizes[i] = (uint32_t)(129 + wl_below(&r, 384)); /* 129..512 */
        else
            fp_sizes[i] = (uint32_t)(513 + wl_below(&r, 512)); /* 513..1024 */
    }
}

static char null_area[64][1024];
static unsigned null_next;

__attribute__((noinline)) static void *null_malloc(size_t n)
{
    (void)n;
    return null_area[null_next++ & 63];
}

__attribute__((noinline)) static void null_free(void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

__attribute__((noinline)) static void fastpath_loop(void *(*m)(size_t), void (*f)(void *),
                                                    uint64_t iters)
{
    void *ring[64] = {0};
    for (uint64_t i = 0; i < iters; i++) {
        unsigned k = (unsigned)(i & 63);
        f(ring[k]);
        char *p = m(fp_sizes[i & 255]);
        p[0] = (char)i;
        ring[k] = p;
    }
    for (unsigned k = 0; k < 64; k++)
        f(ring[k]);
}

static void run_fastpath(uint64_t iters, bool null_alloc)
{
    fastpath_sizes();
    void *(*m)(size_t) = null_alloc ? null_malloc : malloc;
    void (*f)(void *) = null_alloc ? null_free : free;
    uint64_t t0 = wl_now_ns();
    fastpath_loop(m, f, iters);
    uint64_t t1 = wl_now_ns();
    wl_say("result fastpath %llu %llu", (unsigned long long)iters, (unsigned long long)(t1 - t0));
}

/* ------------------------------------------------------------------ larson */

#define LARSON_SLOTS 1000
#define INBOX_CAP 1024

struct inbox {
    pthread_mutex_t mu;
    void *p[INBOX_CAP];
    unsigned n;
};

struct larson_thread {
    pthread_t th;
    unsigned index, nthreads;
    uint64_t ops;
    struct inbox *inboxes;
    pthread_barrier_t *start;
};

static size_t larson_size(struct wl_rng *r)
{
    uint64_t x = wl_rand(r);
    if (x % 64 == 0)
        return 4096 + (size_t)((x >> 8) % 12288); /* now and then a few KiB */
    size_t base = (size_t)16 << ((x >> 8) % 7); /* 16 .. 2 KiB, log-uniform */
    return base + (size_t)((x >> 16) % base);
}

static void inbox_drain(struct inbox *in)
{
    void *got[INBOX_CAP];
    unsigned n;
    pthread_mutex_lock(&in->mu);
    n = in->n;
    memcpy(got, in->p, n * sizeof *got);
    in->n = 0;
    pthread_mutex_unlock(&in->mu);
    for (unsigned i = 0; i < n; i++)
        free(got[i]); /* allocated by another thread */
}

static void *larson_worker(void *arg)
{
    struct larson_thread *t = arg;
    struct wl_rng r;
    wl_rng_seed(&r, seed, 0x1a75, t->index);
    void **slot = calloc(LARSON_SLOTS, sizeof *slot);
    for (unsigned i = 0; i < LARSON_SLOTS; i++) {
        size_t s = larson_size(&r);
        slot[i] = malloc(s);
        memset(slot[i], 1, s < 64 ? s : 64);
    }
    struct inbox *next = &t->inboxes[(t->index + 1) % t->nthreads];
    pthread_barrier_wait(t->start);
    for (uint64_t k = 0; k < t->ops; k++) {
        uint64_t x = wl_rand(&r);
        unsigned i = (unsigned)(x % LARSON_SLOTS);
        void *victim = slot[i];
        bool passed = false;
        if (t->nthreads > 1 && (x >> 20) % 8 == 0) {
            pthread_mutex_lock(&next->mu);
            if (next->n < INBOX_CAP) {
                next->p[next->n++] = victim;
                passed = true;
            }
            pthread_mutex_unlock(&next->mu);
        }
        if (!passed)
            free(victim);
        size_t s = larson_size(&r);
        slot[i] = malloc(s);
        memset(slot[i], (int)k, s < 64 ? s : 64);
        if ((k & 63) == 0)
            inbox_drain(&t->inboxes[t->index]);
    }
    pthread_barrier_wait(t->start); /* everyone done before the inboxes are emptied */
    inbox_drain(&t->inboxes[t->index]);
    for (unsigned i = 0; i < LARSON_SLOTS; i++)
        free(slot[i]);
    free(slot);
    return NULL;
}

static void run_larson(unsigned nthreads, uint64_t total_ops)
{
    struct larson_thread *t = calloc(nthreads, sizeof *t);
    struct inbox *in = calloc(nthreads, sizeof *in);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, nthreads + 1);
    for (unsigned i = 0; i < nthreads; i++) {
        pthread_mutex_init(&in[i].mu, NULL);
        t[i] = (struct larson_thread){0, i, nthreads, total_ops / nthreads, in, &start};
        pthread_create(&t[i].th, NULL, larson_worker, &t[i]);
    }
    pthread_barrier_wait(&start);
    uint64_t t0 = wl_now_ns();
    pthread_barrier_wait(&start);
    uint64_t t1 = wl_now_ns();
    for (unsigned i = 0; i < nthreads; i++)
        pthread_join(t[i].th, NULL);
    pthread_barrier_destroy(&start);
    wl_say("result larson-%ut %llu %llu", nthreads,
           (unsigned long long)(total_ops / nthreads * nthreads), (unsigned long long)(t1 - t0));
    free(t);
    free(in);
}

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

static void *producer(void *arg)
{
    (void)arg;
    struct wl_rng r;
    wl_rng_seed(&r, seed, 0x919e, 1);
    uint64_t k = 0;
    while (k < pq.msgs) {
        pthread_mutex_lock(&pq.mu);
        while (pq.n_free == 0)
            pthread_cond_wait(&pq.not_full, &pq.mu);
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
        while (pq.count == QDEPTH)
            pthread_cond_wait(&pq.not_full, &pq.mu);
        pq.slot_of[(pq.head + pq.count) % QDEPTH] = b;
        pq.count++;
        pthread_cond_signal(&pq.not_empty);
        pthread_mutex_unlock(&pq.mu);
    }
    return NULL;
}

static void *consumer(void *arg)
{
    uint64_t *sum = arg;
    uint64_t got = 0;
    while (got < pq.msgs) {
        pthread_mutex_lock(&pq.mu);
        while (pq.count == 0)
            pthread_cond_wait(&pq.not_empty, &pq.mu);
        unsigned b = pq.slot_of[pq.head];
        pq.head = (pq.head + 1) % QDEPTH;
        pq.count--;
        pthread_mutex_unlock(&pq.mu);
        for (unsigned i = 0; i < BATCH; i++) {
            char *m = pq.batch[b][i];
            if (!m)
                continue;
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

static void run_pipeline(uint64_t msgs)
{
    pthread_t p, c;
    uint64_t sum = 0;
    pq.msgs = msgs;
    pq.n_free = QDEPTH + 1;
    for (unsigned i = 0; i <= QDEPTH; i++)
        pq.free_slots[i] = i;
    uint64_t t0 = wl_now_ns();
    pthread_create(&c, NULL, consumer, &sum);
    pthread_create(&p, NULL, producer, NULL);
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    uint64_t t1 = wl_now_ns();
    wl_say("result pipeline %llu %llu", (unsigned long long)msgs, (unsigned long long)(t1 - t0));
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    uint64_t iters = 50000000, larson_ops = 10000000, msgs = 4000000;
    const char *only = NULL;
    bool null_alloc = false, sync = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (wl_arg_is(a, "--quick")) {
            iters = 20000000;
            larson_ops = 4000000;
            msgs = 2000000;
        } else if (wl_arg_is(a, "--long")) {
            iters *= 5;
            larson_ops *= 5;
            msgs *= 5;
        } else if (wl_arg_is(a, "--iters"))
            iters = wl_arg_num(argc, argv, &i);
        else if (wl_arg_is(a, "--larson-ops"))
            larson_ops = wl_arg_num(argc, argv, &i);
        else if (wl_arg_is(a, "--msgs"))
            msgs = wl_arg_num(argc, argv, &i);
        else if (wl_arg_is(a, "--seed"))
            seed = wl_arg_num(argc, argv, &i);
        else if (wl_arg_is(a, "--only") && i + 1 < argc)
            only = argv[++i];
        else if (wl_arg_is(a, "--null"))
            null_alloc = true;
        else if (wl_arg_is(a, "--sync"))
            sync = true;
        else {
            fprintf(stderr, "usage: ebb-wl-throughput [--quick|--long] [--only "
                            "fastpath|larson|pipeline] [--iters N] [--larson-ops N] [--msgs N] "
                            "[--null] [--seed S] [--sync]\n");
            return 2;
        }
    }
    wl_start(sync);
    if (!only || strcmp(only, "fastpath") == 0)
        run_fastpath(iters, null_alloc);
    if (!only || strcmp(only, "larson") == 0) {
        run_larson(2, larson_ops);
        run_larson(8, larson_ops);
    }
    if (!only || strcmp(only, "pipeline") == 0)
        run_pipeline(msgs);
    return 0;
}
