/* Helpers shared by the ebbmalloc benchmark workloads (bench/wl-*.c).
 *
 * A workload talks to the driver (ebb-bench) through its standard output, one
 * line per message, each written with a single write() so that lines from
 * different threads never interleave:
 *
 *   ready                      libraries are loaded; with --sync the workload
 *                              then waits for one byte on stdin before it starts
 *   malloc-from PATH           the object that provides the malloc this program calls
 *   live MS BYTES              bytes the workload itself holds right now
 *   live-peak BYTES            the most bytes it held at any moment (if it tracks that)
 *   phase NAME MS              load-start, drop (live fell to the small kept set), end
 *   result NAME OPS NS [K=V..] a timed section: operations done and nanoseconds taken, then
 *                              optional fields: minflt= majflt= (page faults of the whole
 *                              process during the section, getrusage), bytes= (allocated)
 *   ebbstats WHEN K=V ...      ebbmalloc's own breakdown (ebb_stats) at a moment: WHEN is
 *                              peak, after or end; keys rss_kib, in_use, thread_cache,
 *                              central, page_free, released, metadata, resident
 *   note TEXT                  free text, shown by the driver with -v
 *
 * MS is milliseconds since the workload started.  Everything meant for a person
 * goes to stderr.
 */
#ifndef EBB_WL_COMMON_H
#define EBB_WL_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t wl_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t wl_t0_ns;

static inline uint64_t wl_ms(void) { return (wl_now_ns() - wl_t0_ns) / 1000000ull; }

/* splitmix64: seeds and one-off hashes. */
static inline uint64_t wl_mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* xorshift64*: fast per-thread stream; the state must never be 0. */
struct wl_rng {
    uint64_t s;
};

static inline void wl_rng_seed(struct wl_rng *r, uint64_t a, uint64_t b, uint64_t c) {
    r->s = wl_mix64(a ^ wl_mix64(b ^ wl_mix64(c))) | 1;
}

static inline uint64_t wl_rand(struct wl_rng *r) {
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* Uniform in [0, n); n > 0.  The small bias of the multiply-shift is irrelevant here. */
static inline uint64_t wl_below(struct wl_rng *r, uint64_t n) {
    return (uint64_t)(((unsigned __int128)wl_rand(r) * n) >> 64);
}

/* One protocol line to stdout with a single write(). */
__attribute__((format(printf, 1, 2))) static void wl_say(const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n > sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    const char *p = line;
    while (n > 0) {
        ssize_t w = write(1, p, (size_t)n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return;
        }
        p += w;
        n -= (int)w;
    }
}

/* Page faults of the whole process so far (every thread), for "result ... minflt=". */
struct wl_faults {
    uint64_t minflt, majflt;
};

static inline struct wl_faults wl_faults_now(void) {
    struct rusage ru;
    struct wl_faults f = {0, 0};
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        f.minflt = (uint64_t)ru.ru_minflt;
        f.majflt = (uint64_t)ru.ru_majflt;
    }
    return f;
}

/* "result NAME OPS NS minflt=.. majflt=.." for a section that started at t0 with
 * faults f0. */
static inline void wl_result(const char *name, uint64_t ops, uint64_t t0, struct wl_faults f0) {
    uint64_t t1 = wl_now_ns();
    struct wl_faults f1 = wl_faults_now();
    wl_say("result %s %llu %llu minflt=%llu majflt=%llu", name, (unsigned long long)ops,
           (unsigned long long)(t1 - t0), (unsigned long long)(f1.minflt - f0.minflt),
           (unsigned long long)(f1.majflt - f0.majflt));
}

/* Announce ourselves; with sync, wait until the driver has looked at our maps. */
static void wl_start(int sync) {
    wl_t0_ns = wl_now_ns();
    Dl_info info;
    void *fn = (void *)malloc;
    if (dladdr(fn, &info) && info.dli_fname) wl_say("malloc-from %s", info.dli_fname);
    else wl_say("malloc-from ?");
    wl_say("ready");
    if (sync) {
        char c;
        while (read(0, &c, 1) < 0 && errno == EINTR) {}
    }
}

static inline int wl_arg_is(const char *a, const char *name) { return strcmp(a, name) == 0; }

static inline unsigned long long wl_arg_num(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "%s needs a value\n", argv[*i]);
        exit(2);
    }
    char *end;
    const char *s = argv[++*i];
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s) {
        fprintf(stderr, "bad number for %s: %s\n", argv[*i - 1], s);
        exit(2);
    }
    if (*end == 'k' || *end == 'K') v *= 1000ull;
    else if (*end == 'm' || *end == 'M') v *= 1000000ull;
    return v;
}

#endif
