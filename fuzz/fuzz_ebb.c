/* Coverage-guided fuzz target for the ebb_ API.
 *
 * The input is a program: each operation is an opcode byte followed by argument bytes
 * (a slot, sizes, alignments), run against a table of 64 live blocks.  Sizes range from
 * zero through every class boundary and large blocks to hostile ones (SIZE_MAX, near
 * PTRDIFF_MAX, calloc products that overflow) and alignments from valid powers of two to
 * invalid values.  The same checks as the model test apply: exact glibc results and
 * errno for refused requests; alignment, usable size and non-overlap of every new block;
 * each block holds a pattern derived from its address and a serial number, checked
 * before it is freed or reallocated; realloc keeps the prefix; calloc zeroes.  Some
 * frees and allocations run on a second thread.  After each input every block is freed
 * and ebb_stats must show in_use back at its starting value.
 *
 * Built three ways (see fuzz/README.md):
 *   libFuzzer:   clang -fsanitize=fuzzer,address,undefined  (fuzz/build.sh)
 *   standalone:  -DFUZZ_STANDALONE: replays files and directories, or runs seeded random
 *                inputs (--random N [--seed S]); this is the CI smoke test
 *   AFL++:       afl-clang-fast -DFUZZ_STANDALONE, input file as argument */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ebbmalloc.h"
#include "procfs.h"

#define NSLOT 64
#define FULL_FILL ((size_t)256 << 10) /* larger blocks get a sparse pattern */
#define MMAP_THRESHOLD_DEFAULT (32 << 20)

struct block {
    unsigned char *p;
    size_t req, usable, align;
    uint64_t serial;
};

static struct block slots[NSLOT];
static uint64_t serial;

/* ---------------------------------------------------------------- failure */
static void fail(const struct block *b, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
#include <stdarg.h>
static void fail(const struct block *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz_ebb: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (b)
        fprintf(stderr, " [block %p req %zu usable %zu align %zu]", (void *)b->p, b->req, b->usable,
                b->align);
    fprintf(stderr, " (errno %d)\n", errno);
    /* Where the process stands: address space, mappings, ebbmalloc's books. */
    struct ebb_stats st;
    ebb_stats(&st);
    fprintf(stderr, "fuzz_ebb: in_use %llu mapped %llu released %llu page_free %llu threads %llu\n",
            (unsigned long long)st.in_use, (unsigned long long)st.mapped, (unsigned long long)st.released,
            (unsigned long long)st.page_free, (unsigned long long)st.threads);
    fprintf(stderr, "fuzz_ebb: VmSize %lld kB, VmRSS %lld kB\n", procfs_status_kib(0, "VmSize"),
            procfs_status_kib(0, "VmRSS"));
    char *text = NULL;
    size_t cap = 0;
    int maps = 0;
    struct procfs_map m;
    if (procfs_read("/proc/self/maps", &text, &cap, NULL) == 0)
        for (const char *c = text; procfs_maps_next(&c, &m);) maps++;
    free(text);
    fprintf(stderr, "fuzz_ebb: %d mappings\n", maps);
    abort();
}

/* ---------------------------------------------------------------- input */
struct reader {
    const uint8_t *d;
    size_t n, i;
};
static uint8_t u8(struct reader *r) { return r->i < r->n ? r->d[r->i++] : 0; }
static uint32_t u32(struct reader *r) {
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) v |= (uint32_t)u8(r) << (8 * k);
    return v;
}

static const size_t boundaries[] = {0,    1,     16,     17,     48,     128,    129,    1024,   1025,   4096,
                                    8192, 65536, 131072, 245760, 262143, 262144, 262145, 270336, 1 << 20};
static const size_t hostile[] = {SIZE_MAX,
                                 SIZE_MAX - 1,
                                 SIZE_MAX - 4095,
                                 SIZE_MAX - 8192,
                                 SIZE_MAX / 2,
                                 SIZE_MAX / 2 + 1,
                                 (size_t)PTRDIFF_MAX,
                                 (size_t)PTRDIFF_MAX + 1,
                                 (size_t)PTRDIFF_MAX - 4096,
                                 (size_t)1 << 47,
                                 (size_t)1 << 48,
                                 (size_t)1 << 62};
#define NHOSTILE (sizeof hostile / sizeof *hostile)

static size_t size_arg(struct reader *r) {
    uint8_t sel = u8(r);
    uint32_t v = u32(r);
    switch (sel % 64) {
    case 0 ... 23: return v % 129;
    case 24 ... 39: return v % 4097;
    case 40 ... 51: return v % 300000;
    case 52 ... 55: return 262144 + v % (2 << 20);
    case 56: return (32u << 20) + v % (2 << 20); /* own mapping */
    case 57:
    case 58: return hostile[v % NHOSTILE];
    case 59 ... 62: {
        size_t b = boundaries[v % (sizeof boundaries / sizeof *boundaries)];
        return b + (v >> 16) % 3 - (b ? 1 : 0);
    }
    default: return v % (8u << 20);
    }
}

/* Any requests above this cannot be met on x86-64 Linux (47-bit user space). */
static bool impossible(size_t n) { return n >= ((size_t)1 << 47); }

/* Valid but absurd alignments (2^36 .. 2^46) make ebbmalloc reserve that much address
 * space for good (tests/hardening/test_pending.c); until that is fixed they are drawn
 * only with FUZZ_EBB_ABSURD_ALIGN=1, so that long runs find other things. */
static bool absurd_aligns;

static size_t align_arg(struct reader *r) {
    uint8_t a = u8(r);
    if (a < 200) return (size_t)1 << (a % 24); /* 1 .. 8 MiB */
    if (a < 230) return a;                     /* mostly not powers of two */
    static const size_t odd[] = {0,
                                 3,
                                 24,
                                 48,
                                 4095,
                                 4097,
                                 SIZE_MAX,
                                 SIZE_MAX / 2 + 1,
                                 SIZE_MAX / 2 + 2,
                                 (size_t)1 << 47,
                                 (size_t)1 << 63,
                                 (size_t)1 << 36,
                                 (size_t)1 << 46};
    size_t n = sizeof odd / sizeof *odd - (absurd_aligns ? 0 : 2);
    return odd[a % n];
}

/* ---------------------------------------------------------------- patterns
 * Blocks up to FULL_FILL are filled entirely (their whole usable size); larger ones in
 * their first and last 64 KiB and at 31 words between. */
static inline uint64_t word_at(const struct block *b, size_t off) {
    uint64_t k = ((uintptr_t)b->p ^ (b->serial << 40)) * 0x9E3779B97F4A7C15ull;
    return k ^ ((off & ~(size_t)7) * 0xD6E8FEB86659FD93ull);
}
static inline unsigned char byte_at(const struct block *b, size_t off) {
    return (unsigned char)(word_at(b, off) >> ((off & 7) * 8));
}

/* Calls fn(b, start, end) on each range of the block's pattern plan within [0, n). */
#define FOR_PLAN(n, START, END, BODY)                                 \
    do {                                                              \
        size_t n_ = (n);                                              \
        if (n_ <= FULL_FILL) {                                        \
            size_t START = 0, END = n_;                               \
            BODY;                                                     \
        } else {                                                      \
            size_t START = 0, END = 65536;                            \
            BODY;                                                     \
            START = n_ - 65536, END = n_;                             \
            BODY;                                                     \
            for (size_t k_ = 1; k_ < 32; k_++) {                      \
                START = (n_ / 32 * k_) & ~(size_t)7, END = START + 8; \
                BODY;                                                 \
            }                                                         \
        }                                                             \
    } while (0)

static void fill(struct block *b) {
    FOR_PLAN(b->usable, s, e, {
        size_t i = s;
        for (; i < e && (i & 7); i++) b->p[i] = byte_at(b, i);
        for (; i + 8 <= e; i += 8) {
            uint64_t w = word_at(b, i);
            memcpy(b->p + i, &w, 8);
        }
        for (; i < e; i++) b->p[i] = byte_at(b, i);
    });
}
/* Does memory at p hold the pattern of `as` over [0, n)? */
static bool holds(const struct block *as, const unsigned char *p, size_t n) {
    bool ok = true;
    FOR_PLAN(n, s, e, {
        size_t i = s;
        for (; i < e && (i & 7) && ok; i++) ok = p[i] == byte_at(as, i);
        for (; i + 8 <= e && ok; i += 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            ok = w == word_at(as, i);
        }
        for (; i < e && ok; i++) ok = p[i] == byte_at(as, i);
    });
    return ok;
}
static void verify(const struct block *b) {
    if (!holds(b, b->p, b->usable)) fail(b, "pattern broken");
    if (ebb_malloc_usable_size(b->p) != b->usable) fail(b, "usable size changed");
}

/* ---------------------------------------------------------------- bookkeeping */
static void check_new(struct block *b, size_t req, size_t align) {
    b->req = req;
    b->align = align;
    if ((uintptr_t)b->p % 16) fail(b, "not 16-byte aligned");
    if (align > 16 && (uintptr_t)b->p % align) fail(b, "not aligned to %zu", align);
    b->usable = ebb_malloc_usable_size(b->p);
    if (b->usable < req) fail(b, "usable size below the request");
    for (int i = 0; i < NSLOT; i++) {
        const struct block *o = &slots[i];
        if (o == b || !o->p) continue;
        if (o->p < b->p + b->usable && b->p < o->p + o->usable)
            fail(b, "overlaps live block %p (usable %zu)", (void *)o->p, o->usable);
    }
    b->serial = ++serial;
}

static void expect_refused(void *p, int err, int want, const char *what, size_t n) {
    if (p || err != want)
        fail(NULL, "%s(%zu) gave %p, errno %d; expected NULL, errno %d", what, n, p, err, want);
}

/* ---------------------------------------------------------------- second thread */
static pthread_t other;
static sem_t go, done;
static void *other_ptr;
static size_t other_size;
static int other_op; /* 1 free, 2 malloc */
static void *other_main(void *arg) {
    (void)arg;
    for (;;) {
        sem_wait(&go);
        if (other_op == 1) ebb_free(other_ptr);
        else other_ptr = ebb_malloc(other_size);
        sem_post(&done);
    }
    return NULL;
}
static void on_other(int op, void *p, size_t n) {
    other_op = op, other_ptr = p, other_size = n;
    sem_post(&go);
    sem_wait(&done);
}

/* ---------------------------------------------------------------- operations */
static void drop(struct block *b) {
    if (!b->p) return;
    verify(b);
    ebb_free(b->p);
    b->p = NULL;
}

static void take(struct block *b, void *p, size_t req, size_t align) {
    b->p = p;
    check_new(b, req, align);
    fill(b);
}

static void op_alloc_aligned(struct reader *r, struct block *b, int kind) {
    size_t al = align_arg(r), n = size_arg(r);
    drop(b);
    bool pow2 = al && !(al & (al - 1));
    errno = 0;
    if (kind == 0) {
        void *p = (void *)&slots; /* must stay untouched on failure */
        int rc = ebb_posix_memalign(&p, al, n);
        if (!pow2 || al % sizeof(void *)) {
            if (rc != EINVAL || p != (void *)&slots) fail(NULL, "posix_memalign(%zu) = %d", al, rc);
        } else if (impossible(n) || n > PTRDIFF_MAX) {
            if (rc != ENOMEM || p != (void *)&slots) fail(NULL, "posix_memalign(%zu, %zu) = %d", al, n, rc);
        } else if (rc == 0) {
            take(b, p, n, al);
        } else if (rc != ENOMEM) {
            fail(NULL, "posix_memalign(%zu, %zu) = %d", al, n, rc);
        }
        return;
    }
    void *p;
    size_t eff = al;
    bool bad;
    if (kind == 1) { /* aligned_alloc: C17, power of two only */
        p = ebb_aligned_alloc(al, n);
        bad = !pow2;
    } else { /* memalign: rounds up; too large is EINVAL */
        p = ebb_memalign(al, n);
        bad = al > SIZE_MAX / 2 + 1;
        if (!bad && !pow2) {
            eff = 16;
            while (eff < al) eff <<= 1;
        }
    }
    int err = errno;
    if (bad) {
        expect_refused(p, err, EINVAL, kind == 1 ? "aligned_alloc" : "memalign", al);
    } else if (impossible(n) || n > PTRDIFF_MAX) {
        expect_refused(p, err, ENOMEM, "aligned allocation", n);
    } else if (p) {
        take(b, p, n, eff);
    } else if (err != ENOMEM) {
        fail(NULL, "aligned allocation of %zu (align %zu) failed with errno %d", n, al, err);
    }
}

static void op_realloc(struct reader *r, struct block *b, bool array) {
    size_t n = size_arg(r), nmemb = 1, size = n;
    if (array) {
        nmemb = u8(r) % 2 ? hostile[u8(r) % NHOSTILE] : u8(r);
        size = size_arg(r);
    }
    size_t total;
    bool ovf = __builtin_mul_overflow(nmemb, size, &total);
    if (!array) total = n;
    if (b->p) verify(b);
    struct block old = *b;
    errno = 0;
    unsigned char *q = array ? ebb_reallocarray(b->p, nmemb, size) : ebb_realloc(b->p, n);
    int err = errno;
    if (!ovf && total == 0 && old.p) { /* glibc: frees, returns NULL */
        if (q) fail(NULL, "realloc(p, 0) returned %p", (void *)q);
        b->p = NULL;
        return;
    }
    if (ovf || impossible(total) || total > PTRDIFF_MAX) {
        expect_refused(q, err, ENOMEM, "realloc", total);
        if (old.p) verify(&old); /* untouched */
        return;
    }
    if (!q) {
        if (err != ENOMEM) fail(NULL, "realloc(%zu) failed with errno %d", total, err);
        if (old.p) verify(&old);
        return;
    }
    b->p = q;
    check_new(b, total, 0);
    if (old.p) { /* the first min(old size, new size) bytes move with the block */
        size_t keep = old.req < total ? old.req : total;
        if (old.usable > FULL_FILL && keep > 65536) keep = 65536; /* sparse beyond */
        if (!holds(&old, q, keep < FULL_FILL ? keep : FULL_FILL))
            fail(b, "realloc from %p lost content", (void *)old.p);
    }
    fill(b);
}

static void run_input(const uint8_t *data, size_t size) {
    struct reader r = {data, size, 0};
    int ops = 0;
    while (r.i < r.n && ops++ < 4096) {
        uint8_t op = u8(&r);
        struct block *b = &slots[u8(&r) % NSLOT];
        switch (op % 20) {
        case 0:
        case 1:
        case 2: { /* malloc */
            size_t n = size_arg(&r);
            drop(b);
            errno = 0;
            void *p = ebb_malloc(n);
            int err = errno;
            if (impossible(n) || n > PTRDIFF_MAX) expect_refused(p, err, ENOMEM, "malloc", n);
            else if (p) take(b, p, n, 0);
            else if (err != ENOMEM) fail(NULL, "malloc(%zu) failed with errno %d", n, err);
            break;
        }
        case 3: { /* calloc */
            size_t nmemb = u8(&r) % 4 ? u8(&r) : hostile[u8(&r) % NHOSTILE];
            size_t n = size_arg(&r), total;
            drop(b);
            bool ovf = __builtin_mul_overflow(nmemb, n, &total);
            errno = 0;
            unsigned char *p = ebb_calloc(nmemb, n);
            int err = errno;
            if (ovf || impossible(total) || total > PTRDIFF_MAX) {
                expect_refused(p, err, ENOMEM, "calloc", total);
            } else if (p) {
                b->p = p;
                check_new(b, total, 0);
                bool zero = true;
                FOR_PLAN(total, s, e, {
                    for (size_t i = s; i < e && zero; i++) zero = !p[i];
                });
                if (!zero) fail(b, "calloc memory not zero");
                fill(b);
            } else if (err != ENOMEM) {
                fail(NULL, "calloc failed with errno %d", err);
            }
            break;
        }
        case 4:
        case 5: op_realloc(&r, b, false); break;
        case 6: op_realloc(&r, b, true); break;
        case 7: op_alloc_aligned(&r, b, 0); break;
        case 8: op_alloc_aligned(&r, b, 1); break;
        case 9: op_alloc_aligned(&r, b, 2); break;
        case 10: { /* valloc, pvalloc */
            size_t n = size_arg(&r), ps = (size_t)sysconf(_SC_PAGESIZE);
            bool pv = u8(&r) & 1;
            drop(b);
            errno = 0;
            void *p = pv ? ebb_pvalloc(n) : ebb_valloc(n);
            int err = errno;
            if (impossible(n) || n > PTRDIFF_MAX)
                expect_refused(p, err, ENOMEM, pv ? "pvalloc" : "valloc", n);
            else if (p) take(b, p, pv ? (n ? (n + ps - 1) / ps * ps : ps) : n, ps);
            else if (err != ENOMEM) fail(NULL, "valloc failed with errno %d", err);
            break;
        }
        case 11:
        case 12: drop(b); break;
        case 13: /* sized frees */
            if (b->p) {
                verify(b);
                if (b->align > 16) ebb_free_aligned_sized(b->p, b->align, b->req);
                else ebb_free_sized(b->p, b->req);
                b->p = NULL;
            }
            break;
        case 14:
            if (b->p && ebb_malloc_usable_size(b->p) != b->usable) fail(b, "usable size changed");
            if (ebb_malloc_usable_size(NULL) != 0) fail(NULL, "usable_size(NULL)");
            break;
        case 15:
            if (b->p) verify(b);
            break;
        case 16: /* the other thread frees, or allocates a block this one will free */
            if (b->p) {
                verify(b);
                on_other(1, b->p, 0);
                b->p = NULL;
            } else {
                size_t n = size_arg(&r) % (1 << 20);
                on_other(2, NULL, n);
                if (!other_ptr) fail(NULL, "malloc(%zu) on the other thread failed", n);
                take(b, other_ptr, n, 0);
            }
            break;
        case 17:
            if (u8(&r) % 4 == 0) ebb_malloc_trim(0);
            break;
        case 18: { /* thresholds, restored after the input */
            uint32_t v = u32(&r) % (64u << 20);
            int rc = ebb_mallopt(u8(&r) & 1 ? M_MMAP_THRESHOLD : M_TRIM_THRESHOLD, (int)v);
            if (rc != 0 && rc != 1) fail(NULL, "mallopt returned %d", rc);
            break;
        }
        case 19: /* the program rewrites its block */
            if (b->p) {
                verify(b);
                b->serial = ++serial;
                fill(b);
            }
            break;
        }
    }
}

static uint64_t in_use_at_start;
static bool started;

static void start(void) {
    if (started) return;
    started = true;
    const char *e = getenv("FUZZ_EBB_ABSURD_ALIGN");
    absurd_aligns = e && *e == '1';
    sem_init(&go, 0, 0);
    sem_init(&done, 0, 0);
    pthread_create(&other, NULL, other_main, NULL);
    ebb_free(ebb_malloc(1));
    on_other(1, NULL, 0);
    struct ebb_stats st;
    ebb_stats(&st);
    in_use_at_start = st.in_use;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    start();
    run_input(data, size);
    for (int i = 0; i < NSLOT; i++) drop(&slots[i]);
    ebb_mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_DEFAULT);
    ebb_mallopt(M_TRIM_THRESHOLD, 0);
    struct ebb_stats st;
    ebb_stats(&st);
    if (st.in_use != in_use_at_start)
        fail(NULL, "in_use is %llu after freeing everything, %llu at start", (unsigned long long)st.in_use,
             (unsigned long long)in_use_at_start);
    if (st.resident != st.in_use + st.thread_cache + st.central + st.page_free + st.metadata ||
        st.mapped != st.resident + st.released)
        fail(NULL, "stats do not add up");
    return 0;
}

#ifdef FUZZ_STANDALONE
/* ---------------------------------------------------------------- standalone driver
 *   fuzz_ebb_replay [PATH...] [--random N] [--seed S]
 *       PATH: an input file, a directory of them, or a pack (*.pack)
 *   fuzz_ebb_replay --pack OUT.pack DIR...     pack the inputs of directories into one
 *   fuzz_ebb_replay --unpack IN.pack DIR       write a pack's inputs as files into DIR
 * A pack is "EBBFUZZ1" then, per input, its length (4 bytes, little-endian) and bytes;
 * it keeps the seed corpus (fuzz/corpus.pack) one file in the repository. */
#include <dirent.h>
#include <sys/stat.h>

static const char pack_magic[8] = {'E', 'B', 'B', 'F', 'U', 'Z', 'Z', '1'};
static uint8_t buf[1 << 20];

static size_t read_all(const char *path, uint8_t *b, size_t cap, bool *ok) {
    FILE *f = fopen(path, "rb");
    *ok = f != NULL;
    if (!f) {
        perror(path);
        return 0;
    }
    size_t n = fread(b, 1, cap, f);
    fclose(f);
    return n;
}

static bool is_pack(const char *path) {
    size_t l = strlen(path);
    return l > 5 && !strcmp(path + l - 5, ".pack");
}

/* Calls fn on each input of a pack; returns the number, or -1 if malformed. */
static long each_in_pack(const char *path, void (*fn)(const uint8_t *, size_t, long, void *), void *arg) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    char magic[8];
    long count = 0;
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, pack_magic, 8)) count = -1;
    uint8_t len[4];
    while (count >= 0 && fread(len, 1, 4, f) == 4) {
        uint32_t n =
            (uint32_t)len[0] | (uint32_t)len[1] << 8 | (uint32_t)len[2] << 16 | (uint32_t)len[3] << 24;
        if (n > sizeof buf || fread(buf, 1, n, f) != n) {
            count = -1;
            break;
        }
        fn(buf, n, count++, arg);
    }
    fclose(f);
    if (count < 0) fprintf(stderr, "%s: not a pack\n", path);
    return count;
}

static void run_one(const uint8_t *d, size_t n, long i, void *arg) {
    (void)i, (void)arg;
    LLVMFuzzerTestOneInput(d, n);
}

static void write_one(const uint8_t *d, size_t n, long i, void *arg) {
    char p[4096];
    snprintf(p, sizeof p, "%s/seed-%05ld", (const char *)arg, i);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(d, 1, n, f) != n) perror(p);
    if (f) fclose(f);
}

/* Runs (or, with `out`, appends to a pack) every input under path. */
static int walk(const char *path, size_t *count, FILE *out) {
    struct stat st;
    if (stat(path, &st)) {
        perror(path);
        return 1;
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        int rc = 0;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", path, e->d_name);
            rc |= walk(p, count, out);
        }
        if (d) closedir(d);
        return rc;
    }
    if (!out && is_pack(path)) {
        long n = each_in_pack(path, run_one, NULL);
        if (n < 0) return 1;
        *count += (size_t)n;
        return 0;
    }
    bool ok;
    size_t n = read_all(path, buf, sizeof buf, &ok);
    if (!ok) return 1;
    (*count)++;
    if (out) {
        uint8_t len[4] = {(uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16), (uint8_t)(n >> 24)};
        fwrite(len, 1, 4, out);
        fwrite(buf, 1, n, out);
    } else {
        LLVMFuzzerTestOneInput(buf, n);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "--pack")) {
        FILE *out = fopen(argv[2], "wb");
        if (!out) {
            perror(argv[2]);
            return 1;
        }
        fwrite(pack_magic, 1, 8, out);
        size_t count = 0;
        int rc = 0;
        for (int i = 3; i < argc; i++) rc |= walk(argv[i], &count, out);
        rc |= fclose(out) != 0;
        printf("packed %zu inputs into %s\n", count, argv[2]);
        return rc;
    }
    if (argc == 4 && !strcmp(argv[1], "--unpack")) {
        mkdir(argv[3], 0777);
        long n = each_in_pack(argv[2], write_one, argv[3]);
        if (n < 0) return 1;
        printf("unpacked %ld inputs into %s\n", n, argv[3]);
        return 0;
    }
    unsigned long long seed = 1, random_inputs = 0;
    size_t files = 0;
    int rc = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--random") && i + 1 < argc) random_inputs = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 0);
        else rc |= walk(argv[i], &files, NULL);
    }
    /* Random programs: random bytes, biased towards small sizes by the decoder. */
    static uint8_t rbuf[2048];
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (unsigned long long k = 0; k < random_inputs; k++) {
        size_t n = 16 + (size_t)(x % (sizeof rbuf - 16));
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            rbuf[i] = (uint8_t)(x >> 24);
        }
        LLVMFuzzerTestOneInput(rbuf, n);
    }
    printf("fuzz_ebb: %zu inputs and %llu random ones (seed %llu) passed\n", files, random_inputs, seed);
    return rc;
}
#endif
