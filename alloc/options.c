/* options.c: every tunable of ebbmalloc, in one table, read once from EBB_<NAME>.
 * Sizes take K, M, G suffixes (powers of 1024); EBB_SOFT_LIMIT also takes a percentage
 * of the container's memory limit ("90%").  mallopt() writes to the same table. */
#include <malloc.h>
#include <string.h>

#include "internal.h"

/* `at_start`: read once at initialisation into state derived from it (budgets, limits,
 * the huge-page policy); every other option is looked at where it is used, so that a
 * new value takes effect from then on. */
struct option_row {
    const char *name;
    int64_t def;
    bool is_size;
    bool percent_ok;
    bool at_start;
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
     * quota, else its affinity mask), at least 4 MiB, shared by the threads with a cache,
     * and never less than 256 KiB a thread: with hundreds of threads the total grows to
     * 256 KiB each, up to 64 MiB (thread_cache.c; the value here changes then, under its
     * list lock). */
    [EBB_OPT_THREAD_CACHE_MAX] = {"THREAD_CACHE_MAX", 0, true, false, true},
    [EBB_OPT_THREAD_CACHE_ONE] = {"THREAD_CACHE_ONE", 2 << 20, true, false, true},
    /* Bigger blocks skip the thread caches: a cached 200 KiB block saves one lock for
     * memory that costs far more to fill, and sits resident in whichever thread freed it. */
    [EBB_OPT_THREAD_CACHE_BLOCK] = {"THREAD_CACHE_BLOCK", 32 << 10, true, false, true},
    /* 0: off.  Near the limit every free page is released at once, not on the timer. */
    [EBB_OPT_SOFT_LIMIT] = {"SOFT_LIMIT", 0, true, true, true},
    /* Requests from this size up get a mapping of their own, unmapped when freed. */
    [EBB_OPT_MMAP_THRESHOLD] = {"MMAP_THRESHOLD", 32 << 20, true, false},
    /* Free resident pages up to this many bytes are kept whatever their age. */
    [EBB_OPT_TRIM_THRESHOLD] = {"TRIM_THRESHOLD", 0, true, false},
    /* 1: memory is mapped in chunks aligned to the kernel's huge page (2 MiB; 32 MiB with
     * 16 KiB kernel pages) so the kernel may back it with huge pages (when THP is
     * "always"), and release works in whole huge pages where it can.  0, and a huge page
     * of 512 MiB (64 KiB kernel pages): ask the kernel for no huge pages on ebbmalloc's
     * memory (release.c). */
    [EBB_OPT_HUGEPAGES] = {"HUGEPAGES", 1, false, false, true},
    [EBB_OPT_STATS] = {"STATS", 0, false, false},
    [EBB_OPT_STATS_SHM] = {"STATS_SHM", 1, false, false},
    [EBB_OPT_ARENA_MAX] = {"ARENA_MAX", 0, false, false},
    /* 1: say once on stderr what the environment refused ebbmalloc (a system call a
     * seccomp filter refuses, no /proc, no /dev/shm) and what that costs. */
    [EBB_OPT_VERBOSE] = {"VERBOSE", 0, false, false},
    /* The heap profile (profile.c): which call stacks hold the live memory, sampled,
     * published next to the stats page.  0: off (nothing is sampled or recorded). */
    [EBB_OPT_PROF] = {"PROF", 1, false, false},
    /* Mean bytes between samples.  A sampled small block takes a span of its own: at
     * most a page (8 KiB, of which one 4 KiB kernel page is touched for a small block)
     * per EBB_PROF_SAMPLE live bytes; with 256 MiB live in blocks of 16 B-1 KiB, RSS
     * grew 0.2% at 2 MiB, 0.3-0.4% at 1 MiB.  A sample costs about 3,000 instructions
     * (a short stack whose unwind rows are cached) and about a microsecond: a loop that
     * only allocates and fills blocks of 64 B-1 KiB ran 0.6% more instructions at
     * 2 MiB, 1.0% at 1 MiB.  2 MiB (google/tcmalloc's default) keeps both well under
     * 1%, for deeper stacks too; jemalloc's 512 KiB would not. */
    [EBB_OPT_PROF_SAMPLE] = {"PROF_SAMPLE", 2 << 20, true, false},
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
    case 'k':
    case 'K':
        shift = 10;
        p++;
        break;
    case 'm':
    case 'M':
        shift = 20;
        p++;
        break;
    case 'g':
    case 'G':
        shift = 30;
        p++;
        break;
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

/* The value of row i from the environment; false if the variable is unset or bad (a bad
 * value is said on stderr: it was meant to have an effect). */
static bool option_from_env(int i, int64_t *out) {
    char name[48] = "EBB_";
    strncat(name, rows[i].name, sizeof name - 5);
    const char *s = ebbi_getenv(name);
    int64_t v;
    if (!s) return false;
    if (ebbi_parse_size(s, &v, rows[i].percent_ok)) {
        *out = v;
        return true;
    }
    char msg[160];
    int n = ebbi_snprintf(msg, sizeof msg, "ebbmalloc: ignoring %s=%s (not a %s)\n", name, s,
                          rows[i].is_size ? "size" : "number");
    ebbi_write_err(msg, (size_t)n);
    return false;
}

/* glibc's variables mean the same here where they have a meaning. */
static void glibc_options(int64_t *opt) {
    int64_t v;
    if (!ebbi_getenv("EBB_MMAP_THRESHOLD") &&
        ebbi_parse_size(ebbi_getenv("MALLOC_MMAP_THRESHOLD_"), &v, false))
        opt[EBB_OPT_MMAP_THRESHOLD] = v > (int64_t)EBB_SMALL_MAX ? v : (int64_t)EBB_SMALL_MAX;
    if (!ebbi_getenv("EBB_TRIM_THRESHOLD") &&
        ebbi_parse_size(ebbi_getenv("MALLOC_TRIM_THRESHOLD_"), &v, false))
        opt[EBB_OPT_TRIM_THRESHOLD] = v;
}

/* The options were read with no environment to read them from (see os.c): defaults. */
static bool read_blind;

void ebbi_options_init(void) {
    read_blind = !ebbi_env_readable();
    for (int i = 0; i < EBB_OPT_COUNT; i++) {
        int64_t v = rows[i].def;
        option_from_env(i, &v);
        ebbi_options[i] = v;
    }
    glibc_options(ebbi_options);
    ebbi_os_say_refusals(); /* what happened before EBB_VERBOSE was known */
}

/* When the first allocation found no environment at all (no initial stack to read it
 * from, no /proc), the options are read again here, once libc has set environ: from a
 * constructor, which runs after libc's and before the program's main.  The options
 * looked at where they are used take their values now; those read once at start
 * (at_start) cannot, and a variable that set one is named on stderr rather than
 * ignored in silence. */
void ebbi_options_late(void) {
    if (!read_blind || !ebbi_env_readable()) return;
    read_blind = false;
    int64_t v[EBB_OPT_COUNT];
    bool set[EBB_OPT_COUNT];
    for (int i = 0; i < EBB_OPT_COUNT; i++) {
        v[i] = ebbi_opt((enum ebb_option)i);
        set[i] = option_from_env(i, &v[i]);
    }
    int64_t before_mmap = v[EBB_OPT_MMAP_THRESHOLD], before_trim = v[EBB_OPT_TRIM_THRESHOLD];
    glibc_options(v);
    set[EBB_OPT_MMAP_THRESHOLD] |= v[EBB_OPT_MMAP_THRESHOLD] != before_mmap;
    set[EBB_OPT_TRIM_THRESHOLD] |= v[EBB_OPT_TRIM_THRESHOLD] != before_trim;
    for (int i = 0; i < EBB_OPT_COUNT; i++) {
        if (!set[i]) continue;
        if (!rows[i].at_start) {
            ebbi_options_set((enum ebb_option)i, v[i]);
            continue;
        }
        char msg[200];
        int n = ebbi_snprintf(msg, sizeof msg,
                              "ebbmalloc: EBB_%s not applied: the environment was unreadable "
                              "when ebbmalloc started (no initial stack, no /proc)\n",
                              rows[i].name);
        ebbi_write_err(msg, (size_t)n);
    }
    if (ebbi_opt(EBB_OPT_VERBOSE) > 0) {
        static const char msg[] = "ebbmalloc: options read once libc set environ: the "
                                  "environment was unreadable at the first allocation\n";
        ebbi_write_err(msg, sizeof msg - 1);
    }
    ebbi_os_say_refusals();
}

__attribute__((constructor)) static void options_at_start(void) {
    if (atomic_load_explicit(&ebbi_init_state, memory_order_acquire) == 2) ebbi_options_late();
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
    case M_TRIM_THRESHOLD: /* negative: glibc reads it as unsigned, i.e. keep everything */
        ebbi_options_set(EBB_OPT_TRIM_THRESHOLD, value < 0 ? INT64_MAX : value);
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
    case M_ARENA_TEST: return value > 0;
    case M_MXFAST: /* no fast bins; glibc's range is accepted */
        return value >= 0 && (size_t)value <= 80 * sizeof(size_t) / 4;
    case M_TOP_PAD:
    case M_MMAP_MAX:
    case M_CHECK_ACTION:
    case M_PERTURB: return 1;
    default: return 0;
    }
}

#if EBB_OVERRIDE
int mallopt(int, int) __attribute__((alias("ebb_mallopt"), visibility("default")));
#endif
