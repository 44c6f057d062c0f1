/* options.c: every tunable of ebbmalloc, in one table, read once from EBB_<NAME>.
 * Sizes take K, M, G suffixes (powers of 1024); EBB_SOFT_LIMIT also takes a percentage
 * of the container's memory limit ("90%").  mallopt() writes to the same table. */
#include <malloc.h>
#include <string.h>

#include "internal.h"

struct option_row {
    const char *name;
    int64_t def;
    bool is_size;
    bool percent_ok;
};

static const struct option_row rows[EBB_OPT_COUNT] = {
    /* Free pages unused for this long are returned with MADV_DONTNEED.  One second keeps
     * a busy process from re-faulting memory it is about to reuse, and still brings the
     * resident set down to live memory within about two seconds of a load ending. */
    [EBB_OPT_RELEASE_MS] = {"RELEASE_MS", 1000, false, false},
    /* A thread that wakes every RELEASE_MS/4 (at least 100 ms) releases memory of
     * processes that stopped calling malloc. */
    [EBB_OPT_BACKGROUND] = {"BACKGROUND", 1, false, false},
    /* All thread caches together; 0: 2 MiB per CPU the process may use (the cgroup's CPU
     * quota, else its affinity mask), at least 4 MiB.  Only as many threads as CPUs run at
     * once; with hundreds of threads each gets a smaller share, nothing is held beyond. */
    [EBB_OPT_THREAD_CACHE_MAX] = {"THREAD_CACHE_MAX", 0, true, false},
    [EBB_OPT_THREAD_CACHE_ONE] = {"THREAD_CACHE_ONE", 2 << 20, true, false},
    /* Bigger blocks skip the thread caches: a cached 200 KiB block saves one lock for
     * memory that costs far more to fill, and sits resident in whichever thread freed it. */
    [EBB_OPT_THREAD_CACHE_BLOCK] = {"THREAD_CACHE_BLOCK", 32 << 10, true, false},
    /* 0: off.  Near the limit every free page is released at once, not on the timer. */
    [EBB_OPT_SOFT_LIMIT] = {"SOFT_LIMIT", 0, true, true},
    /* Requests from this size up get a mapping of their own, unmapped when freed. */
    [EBB_OPT_MMAP_THRESHOLD] = {"MMAP_THRESHOLD", 32 << 20, true, false},
    /* Free resident pages up to this many bytes are kept whatever their age. */
    [EBB_OPT_TRIM_THRESHOLD] = {"TRIM_THRESHOLD", 0, true, false},
    /* 1: memory is mapped in 2 MiB-aligned chunks so the kernel may back it with huge
     * pages (when THP is "always"), and release works in whole 2 MiB chunks where it can.
     * 0: ask the kernel for no huge pages on ebbmalloc's memory. */
    [EBB_OPT_HUGEPAGES] = {"HUGEPAGES", 1, false, false},
    [EBB_OPT_STATS] = {"STATS", 0, false, false},
    [EBB_OPT_STATS_SHM] = {"STATS_SHM", 1, false, false},
    [EBB_OPT_ARENA_MAX] = {"ARENA_MAX", 0, false, false},
};

int64_t ebbi_options[EBB_OPT_COUNT];

/* "123", "64K", "2M", "1G", and with allow_percent "90%" (stored negated). */
bool ebbi_parse_size(const char *s, int64_t *out, bool allow_percent) {
    if (!s || !*s) return false;
    int64_t v = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (INT64_MAX - 9) / 10) return false;
        v = v * 10 + (*p - '0');
    }
    if (p == s) return false;
    int shift = 0;
    switch (*p) {
    case 0: break;
    case 'k': case 'K': shift = 10; p++; break;
    case 'm': case 'M': shift = 20; p++; break;
    case 'g': case 'G': shift = 30; p++; break;
    case '%':
        if (!allow_percent || v < 1 || v > 100) return false;
        *out = -v;
        return p[1] == 0;
    default: return false;
    }
    if (*p == 'b' || *p == 'B') p++;
    if (*p) return false;
    if (shift && v > (INT64_MAX >> shift)) return false;
    *out = v << shift;
    return true;
}

void ebbi_options_init(void) {
    for (int i = 0; i < EBB_OPT_COUNT; i++) {
        char name[48] = "EBB_";
        strncat(name, rows[i].name, sizeof name - 5);
        int64_t v = rows[i].def;
        const char *s = ebbi_getenv(name);
        if (s && !ebbi_parse_size(s, &v, rows[i].percent_ok)) {
            char msg[160];
            int n = ebbi_snprintf(msg, sizeof msg, "ebbmalloc: ignoring %s=%s (not a %s)\n", name,
                                  s, rows[i].is_size ? "size" : "number");
            ebbi_write_err(msg, (size_t)n);
            v = rows[i].def;
        }
        ebbi_options[i] = v;
    }
    /* glibc's variables mean the same here where they have a meaning. */
    int64_t v;
    if (!ebbi_getenv("EBB_MMAP_THRESHOLD") &&
        ebbi_parse_size(ebbi_getenv("MALLOC_MMAP_THRESHOLD_"), &v, false))
        ebbi_options[EBB_OPT_MMAP_THRESHOLD] = v > (int64_t)EBB_SMALL_MAX ? v : (int64_t)EBB_SMALL_MAX;
    if (!ebbi_getenv("EBB_TRIM_THRESHOLD") &&
        ebbi_parse_size(ebbi_getenv("MALLOC_TRIM_THRESHOLD_"), &v, false))
        ebbi_options[EBB_OPT_TRIM_THRESHOLD] = v;

}

void ebbi_options_set(enum ebb_option o, int64_t v) {
    __atomic_store_n(&ebbi_options[o], v, __ATOMIC_RELAXED);
}

/* glibc's parameters: M_TRIM_THRESHOLD and M_MMAP_THRESHOLD map onto ebbmalloc's
 * options; M_ARENA_MAX, M_ARENA_TEST, M_TOP_PAD, M_MMAP_MAX, M_CHECK_ACTION and
 * M_PERTURB are accepted (ebbmalloc has no arenas to cap and checks always).  Returns
 * 1 on success and 0 for an unknown parameter or a bad value, as glibc does. */
EBB_EXPORT int ebb_mallopt(int param, int value) {
    ebbi_ensure_init();
    switch (param) {
    case M_TRIM_THRESHOLD:
        if (value < 0) return 0;
        ebbi_options_set(EBB_OPT_TRIM_THRESHOLD, value);
        return 1;
    case M_MMAP_THRESHOLD:
        if (value < 0 || (size_t)value > 4u * 1024 * 1024 * sizeof(long)) return 0;
        ebbi_options_set(EBB_OPT_MMAP_THRESHOLD,
                         (size_t)value > EBB_SMALL_MAX ? value : (int64_t)EBB_SMALL_MAX);
        return 1;
    case M_ARENA_MAX:
        if (value <= 0) return 0;
        ebbi_options_set(EBB_OPT_ARENA_MAX, value);
        return 1;
    case M_ARENA_TEST:
        return value > 0;
    case M_TOP_PAD:
    case M_MMAP_MAX:
    case M_CHECK_ACTION:
    case M_PERTURB:
        return 1;
    default:
        return 0;
    }
}

#if EBB_OVERRIDE
int mallopt(int, int) __attribute__((alias("ebb_mallopt"), visibility("default")));
#endif
