/* Randomized model test of the ebb_ API.
 *
 * T threads each run a seeded stream of operations on their own table of live blocks:
 * malloc, calloc, realloc, reallocarray, posix_memalign, aligned_alloc, memalign, valloc,
 * pvalloc, free, free_sized, malloc_usable_size, and hand-offs of blocks to the next
 * thread (which frees or reallocates them: cross-thread frees).  The model knows, for
 * every live block, its requested size, alignment and usable size, and the pattern it
 * holds; every byte of the usable size is filled with a pattern derived from the block's
 * address and a serial number, and checked before the block is freed or reallocated.
 * Checked on every operation: alignment (16, or the requested one), usable size (at least
 * the request, at most a class's rounding for plain malloc, and unchanged while live),
 * calloc zeroing, realloc keeping the prefix.  Run in epochs: at each epoch boundary all
 * threads stop and one checks that no two live blocks overlap (sorted by address, over
 * their usable sizes), and that ebb_stats adds up.  At the end in_use is back where it
 * started.
 *
 * Reproducible: the streams depend only on the seed (hand-offs travel between epochs,
 * so no operation depends on thread timing).  A failure prints seed and operation.
 *
 *   model [--seed N] [--ops N] [--threads N] [--epochs N] [--long]
 *   env EBB_MODEL_SEED / EBB_MODEL_OPS (per thread) / EBB_MODEL_THREADS
 * Default: 4 threads x 1,000,000 operations, seed 1.  --long: 50,000,000 per thread. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ebbmalloc.h"

#define NSLOT 2048
#define MAILCAP 256
#define MAXT 64

struct block {
    unsigned char *p;
    size_t req;    /* bytes asked for */
    size_t usable; /* malloc_usable_size when it was handed out */
    size_t align;  /* 0: plain (malloc's 16) */
    uint64_t serial;
};

struct thread {
    int id;
    uint64_t rng;
    uint64_t serial;
    uint64_t op; /* index of the operation running, for messages */
    const char *op_name;
    struct block slot[NSLOT];
    /* Blocks from the previous thread: it writes box[e % 2] in epoch e, this thread
     * reads that box at the start of epoch e + 1 (a barrier between). */
    struct block mail[2][MAILCAP];
    int nmail[2];
    int epoch;
    uint64_t counts[16];
} __attribute__((aligned(64)));

static struct thread *threads;
static int nthreads = 4, nepochs = 20;
static uint64_t seed = 1, ops_per_thread = 1000000;
static pthread_barrier_t barrier;
static _Atomic uint64_t total_ops;

/* ---------------------------------------------------------------- failure */
static void fail(struct thread *t, const struct block *b, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
static void fail(struct thread *t, const struct block *b, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "model: FAILED seed=%" PRIu64 " threads=%d thread=%d op=%" PRIu64 " (%s): %s\n", seed,
            nthreads, t ? t->id : -1, t ? t->op : 0, t ? t->op_name : "-", msg);
    if (b)
        fprintf(stderr, "model: block %p req=%zu usable=%zu align=%zu serial=%" PRIu64 "\n", (void *)b->p,
                b->req, b->usable, b->align, b->serial);
    fprintf(stderr, "model: reproduce with: model --seed %" PRIu64 " --threads %d --ops %" PRIu64 "\n", seed,
            nthreads, ops_per_thread);
    exit(1);
}

/* ---------------------------------------------------------------- random */
static uint64_t next(struct thread *t) { /* splitmix64 */
    uint64_t z = (t->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static uint64_t below(struct thread *t, uint64_t n) { return next(t) % n; }

/* Mostly small, sometimes medium and large, rarely a block with its own mapping (main
 * lowers the mmap threshold to MMAP_AT so that those stay cheap to fill). */
#define MMAP_AT (2u << 20)
static size_t random_size(struct thread *t) {
    uint64_t r = below(t, 100000);
    if (r < 60000) return below(t, 129);                       /* 0..128 */
    if (r < 92000) return 129 + below(t, 4096 - 128);          /* ..4 KiB */
    if (r < 98000) return 4097 + below(t, 60000);              /* ..64 KiB */
    if (r < 99700) return 65536 + below(t, 200000);            /* ..256 KiB, class boundary */
    if (r < 99990) return 262144 + below(t, MMAP_AT - 262144); /* large, page heap */
    return MMAP_AT + below(t, 1 << 20);                        /* own mapping */
}

/* ---------------------------------------------------------------- patterns */
static inline uint64_t key_of(const struct block *b) {
    return ((uintptr_t)b->p ^ (b->serial << 40) ^ (b->serial >> 24)) * 0x9E3779B97F4A7C15ull;
}
#define WORD_MIX 0xD6E8FEB86659FD93ull
/* The pattern's byte at offset i: word i/8 is key ^ (its offset * WORD_MIX). */
static inline unsigned char byte_at(uint64_t k, size_t i) {
    return (unsigned char)((k ^ ((i & ~(size_t)7) * WORD_MIX)) >> ((i & 7) * 8));
}
static void fill(struct block *b) {
    uint64_t k = key_of(b);
    size_t n = b->usable, i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v = k ^ (i * WORD_MIX);
        memcpy(b->p + i, &v, 8);
    }
    for (; i < n; i++) b->p[i] = byte_at(k, i);
}
/* First offset in [0, n) of p that does not hold the pattern of b, or n. */
static size_t first_bad(const struct block *b, const unsigned char *p, size_t n) {
    uint64_t k = key_of(b);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        if (v != (k ^ (i * WORD_MIX))) break;
    }
    for (; i < n; i++)
        if (p[i] != byte_at(k, i)) return i;
    return n;
}
static void verify(struct thread *t, const struct block *b) {
    size_t bad = first_bad(b, b->p, b->usable);
    if (bad != b->usable) fail(t, b, "pattern broken at offset %zu (byte 0x%02x)", bad, b->p[bad]);
}

/* ---------------------------------------------------------------- checks on new blocks */
static size_t round_up(size_t n, size_t a) { return (n + a - 1) & ~(a - 1); }

static void check_new(struct thread *t, struct block *b, bool plain) {
    if ((uintptr_t)b->p % 16) fail(t, b, "not 16-byte aligned");
    if (b->align && (uintptr_t)b->p % b->align) fail(t, b, "not aligned to %zu", b->align);
    b->usable = ebb_malloc_usable_size(b->p);
    if (b->usable < b->req) fail(t, b, "usable size below the request");
    if (plain) { /* a size class wastes at most 12.5% (16 bytes below 128); pages above */
        size_t most = b->req <= 256 * 1024 ? b->req + b->req / 8 + 16 : round_up(b->req, 8192);
        if (b->usable > most) fail(t, b, "usable size %zu above %zu", b->usable, most);
    }
    b->serial = ++t->serial;
}

/* ---------------------------------------------------------------- operations */
enum {
    OP_MALLOC,
    OP_CALLOC,
    OP_MEMALIGN_ANY,
    OP_REALLOC,
    OP_FREE,
    OP_FREE_SIZED,
    OP_USABLE,
    OP_HANDOFF,
    OP_VERIFY,
    OP_STATS,
    OP_TRIM,
    OP_COUNT
};
static const char *op_names[] = {"malloc",      "calloc",   "aligned", "realloc", "free", "free_sized",
                                 "usable_size", "hand-off", "verify",  "stats",   "trim"};

static void allocate(struct thread *t, struct block *b) {
    size_t n = random_size(t);
    uint64_t r = below(t, 100);
    memset(b, 0, sizeof *b);
    b->req = n;
    if (r < 70) {
        t->op_name = "malloc";
        t->counts[OP_MALLOC]++;
        b->p = ebb_malloc(n);
        if (!b->p) fail(t, b, "malloc(%zu) returned NULL", n);
        check_new(t, b, true);
        fill(b);
    } else if (r < 85) {
        t->op_name = "calloc";
        t->counts[OP_CALLOC]++;
        size_t size = 1 + below(t, 16), nmemb = n / size;
        b->req = nmemb * size;
        b->p = ebb_calloc(nmemb, size);
        if (!b->p) fail(t, b, "calloc(%zu, %zu) returned NULL", nmemb, size);
        check_new(t, b, false);
        for (size_t i = 0; i < b->req; i++)
            if (b->p[i]) fail(t, b, "calloc: byte %zu is 0x%02x", i, b->p[i]);
        fill(b);
    } else {
        t->op_name = "aligned";
        t->counts[OP_MEMALIGN_ANY]++;
        unsigned shift = (unsigned)below(t, 100) < 90 ? 3 + (unsigned)below(t, 10)  /* 8..4096 */
                                                      : 13 + (unsigned)below(t, 9); /* ..2 MiB */
        size_t al = (size_t)1 << shift;
        if (n > (4u << 20)) n = below(t, 300000); /* no aligned block with its own mapping */
        b->req = n;
        b->align = al;
        switch (below(t, 5)) {
        case 0: {
            void *p = NULL;
            int rc = ebb_posix_memalign(&p, al, n);
            if (rc) fail(t, b, "posix_memalign(%zu, %zu) = %d", al, n, rc);
            b->p = p;
            break;
        }
        case 1: b->p = ebb_aligned_alloc(al, n); break;
        case 2: b->p = ebb_memalign(al, n); break;
        case 3:
            b->align = (size_t)sysconf(_SC_PAGESIZE);
            b->p = ebb_valloc(n);
            break;
        default:
            b->align = (size_t)sysconf(_SC_PAGESIZE);
            b->req = n ? round_up(n, b->align) : b->align;
            b->p = ebb_pvalloc(n);
            break;
        }
        if (!b->p) fail(t, b, "aligned allocation of %zu returned NULL", n);
        check_new(t, b, false);
        fill(b);
    }
}

static void release(struct thread *t, struct block *b, bool sized) {
    verify(t, b);
    size_t us = ebb_malloc_usable_size(b->p);
    if (us != b->usable) fail(t, b, "usable size changed to %zu", us);
    if (sized) b->align ? ebb_free_aligned_sized(b->p, b->align, b->req) : ebb_free_sized(b->p, b->req);
    else ebb_free(b->p);
    b->p = NULL;
}

static void reallocate(struct thread *t, struct block *b) {
    verify(t, b);
    struct block old = *b;
    size_t n = random_size(t);
    if (below(t, 4) == 0) n = b->req + below(t, 64); /* small growth, often in place */
    if (n == 0) n = 1;                               /* realloc(p, 0) frees: not here */
    unsigned char *q;
    if (below(t, 8) == 0) {
        size_t size = 1 + below(t, 8);
        n = n / size ? n / size * size : size;
        q = ebb_reallocarray(b->p, n / size, size);
    } else {
        q = ebb_realloc(b->p, n);
    }
    if (!q) fail(t, b, "realloc(%zu) returned NULL", n);
    b->p = q;
    b->req = n;
    b->align = 0;           /* realloc promises malloc's alignment only */
    check_new(t, b, false); /* may keep a block larger than a fresh malloc would give */
    size_t keep = old.req < n ? old.req : n;
    size_t bad = first_bad(&old, q, keep);
    if (bad != keep)
        fail(t, b, "realloc from %p (%zu bytes) to %zu lost byte %zu", (void *)old.p, old.req, n, bad);
    fill(b);
}

static void handoff(struct thread *t, struct block *b) {
    struct thread *to = &threads[(t->id + 1) % nthreads];
    int box = t->epoch % 2;
    if (to->nmail[box] >= MAILCAP || to == t) {
        release(t, b, false);
        return;
    }
    to->mail[box][to->nmail[box]++] = *b; /* read by `to` in the next epoch */
    b->p = NULL;
}

/* Blocks the previous thread sent in the last epoch: keep some, free or reallocate the
 * rest right away (frees from a thread other than the allocating one). */
static void take_mail(struct thread *t, int box) {
    for (int i = 0; i < t->nmail[box]; i++) {
        struct block *m = &t->mail[box][i];
        struct block *s = &t->slot[below(t, NSLOT)];
        uint64_t r = below(t, 3);
        if (r == 0 && !s->p) {
            *s = *m;
            continue;
        }
        t->op_name = "mail";
        if (r == 1) {
            reallocate(t, m);
        }
        release(t, m, false);
    }
    t->nmail[box] = 0;
}

/* ebb_stats counts the whole (resident, from the OS layer) and the parts (from the tiers)
 * separately.  While other threads run, a snapshot reads them at different moments and
 * may be off by what moved meanwhile: RACY_SLACK at most here (a few spans and blocks of
 * each thread).  With every model thread stopped (`quiet`) only ebbmalloc's release
 * thread may still move memory: the sum must come out exact, polled for up to 5 s. */
#define RACY_SLACK ((int64_t)8 << 20)
static int64_t stats_gap(struct ebb_stats *s) {
    ebb_stats(s);
    if (s->mapped != s->resident + s->released) return INT64_MAX;
    return (int64_t)(s->resident - (s->in_use + s->thread_cache + s->central + s->page_free + s->metadata));
}

static void stats_check_at(struct thread *t, bool quiet) {
    struct ebb_stats s;
    int64_t d = stats_gap(&s);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (quiet && d != 0) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec >= 5) break;
        d = stats_gap(&s);
    }
    if (d == INT64_MAX) fail(t, NULL, "stats: mapped %" PRIu64 " != resident + released", s.mapped);
    if (quiet ? d != 0 : d > RACY_SLACK || d < -RACY_SLACK)
        fail(t, NULL, "stats: resident %" PRIu64 " is %" PRId64 " bytes off the sum of its parts%s",
             s.resident, d, quiet ? " with every thread stopped" : "");
}
static void stats_check(struct thread *t) { stats_check_at(t, false); }

static void one_op(struct thread *t) {
    struct block *b = &t->slot[below(t, NSLOT)];
    if (!b->p) {
        allocate(t, b);
        return;
    }
    uint64_t r = below(t, 10000);
    int op = r < 3500   ? OP_FREE
             : r < 5000 ? OP_FREE_SIZED
             : r < 7500 ? OP_REALLOC
             : r < 8400 ? OP_USABLE
             : r < 9400 ? OP_HANDOFF
             : r < 9996 ? OP_VERIFY
             : r < 9999 ? OP_STATS
                        : OP_TRIM;
    t->op_name = op_names[op];
    t->counts[op]++;
    switch (op) {
    case OP_FREE: release(t, b, false); break;
    case OP_FREE_SIZED: release(t, b, true); break;
    case OP_REALLOC: reallocate(t, b); break;
    case OP_USABLE:
        if (ebb_malloc_usable_size(b->p) != b->usable) fail(t, b, "usable size changed");
        break;
    case OP_HANDOFF: handoff(t, b); break;
    case OP_VERIFY: verify(t, b); break;
    case OP_STATS: stats_check(t); break;
    case OP_TRIM:
        if (below(t, 10) == 0) ebb_malloc_trim(0);
        break;
    }
}

/* ---------------------------------------------------------------- overlap */
static int by_addr(const void *a, const void *b) {
    const struct block *x = *(struct block *const *)a, *y = *(struct block *const *)b;
    return x->p < y->p ? -1 : x->p > y->p;
}

static void check_no_overlap(void) {
    static struct block *all[MAXT * (NSLOT + MAILCAP)];
    size_t n = 0;
    for (int i = 0; i < nthreads; i++) {
        for (int k = 0; k < NSLOT; k++)
            if (threads[i].slot[k].p) all[n++] = &threads[i].slot[k];
        for (int box = 0; box < 2; box++)
            for (int k = 0; k < threads[i].nmail[box]; k++) all[n++] = &threads[i].mail[box][k];
    }
    qsort(all, n, sizeof *all, by_addr);
    for (size_t i = 1; i < n; i++)
        if (all[i - 1]->p + all[i - 1]->usable > all[i]->p)
            fail(NULL, all[i], "overlaps the live block %p (usable %zu)", (void *)all[i - 1]->p,
                 all[i - 1]->usable);
}

/* ---------------------------------------------------------------- threads */
static void *run(void *arg) {
    struct thread *t = arg;
    uint64_t per_epoch = ops_per_thread / (uint64_t)nepochs + 1;
    for (int e = 0; e < nepochs; e++) {
        pthread_barrier_wait(&barrier);
        t->epoch = e;
        take_mail(t, (e + 1) % 2); /* what came in during epoch e - 1 */
        for (uint64_t i = 0; i < per_epoch && t->op < ops_per_thread; i++, t->op++) one_op(t);
        pthread_barrier_wait(&barrier); /* mail delivered, everyone stopped */
        if (t->id == 0) {
            check_no_overlap();
            stats_check_at(t, true);
        }
    }
    pthread_barrier_wait(&barrier);
    take_mail(t, (nepochs + 1) % 2);
    t->op_name = "final free";
    for (int k = 0; k < NSLOT; k++)
        if (t->slot[k].p) release(t, &t->slot[k], false);
    total_ops += t->op;
    return NULL;
}

static uint64_t env_u64(const char *name, uint64_t def) {
    const char *s = getenv(name);
    return s && *s ? strtoull(s, NULL, 0) : def;
}

int main(int argc, char **argv) {
    seed = env_u64("EBB_MODEL_SEED", seed);
    ops_per_thread = env_u64("EBB_MODEL_OPS", ops_per_thread);
    nthreads = (int)env_u64("EBB_MODEL_THREADS", (uint64_t)nthreads);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--long")) ops_per_thread = 50000000, nepochs = 200;
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--ops") && i + 1 < argc) ops_per_thread = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) nthreads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--epochs") && i + 1 < argc) nepochs = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: model [--seed N] [--ops N] [--threads N] [--epochs N] [--long]\n");
            return 2;
        }
    }
    if (nthreads < 1 || nthreads > MAXT || nepochs < 1) return 2;
    printf("model: seed=%" PRIu64 " threads=%d ops/thread=%" PRIu64 " epochs=%d\n", seed, nthreads,
           ops_per_thread, nepochs);
    fflush(stdout);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ebb_free(ebb_malloc(1));
    if (ebb_mallopt(M_MMAP_THRESHOLD, MMAP_AT) != 1) fail(NULL, NULL, "mallopt");
    struct ebb_stats s0, s1;
    ebb_stats(&s0);
    threads = calloc((size_t)nthreads, sizeof *threads);
    pthread_barrier_init(&barrier, NULL, (unsigned)nthreads);
    pthread_t tid[MAXT];
    for (int i = 0; i < nthreads; i++) {
        threads[i].id = i;
        threads[i].rng = seed * 0x100000001B3ull + (uint64_t)i * 0x9E3779B97F4A7C15ull;
        threads[i].op_name = "start";
        if (pthread_create(&tid[i], NULL, run, &threads[i])) fail(NULL, NULL, "pthread_create");
    }
    for (int i = 0; i < nthreads; i++) pthread_join(tid[i], NULL);
    ebb_stats(&s1);
    if (s1.in_use != s0.in_use)
        fail(NULL, NULL, "in_use %" PRIu64 " after freeing everything, %" PRIu64 " before", s1.in_use,
             s0.in_use);
    stats_check_at(NULL, true);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    uint64_t c[OP_COUNT] = {0};
    for (int i = 0; i < nthreads; i++)
        for (int k = 0; k < OP_COUNT; k++) c[k] += threads[i].counts[k];
    printf("model: ok, %" PRIu64 " operations in %.1f s (", (uint64_t)total_ops, secs);
    for (int k = 0; k < OP_COUNT; k++) printf("%s%s %" PRIu64, k ? ", " : "", op_names[k], c[k]);
    printf("); peak in use %.1f MiB\n", (double)s1.peak_in_use / (1 << 20));
    free(threads);
    return 0;
}
