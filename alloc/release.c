/* release.c: when free memory goes back to the kernel.
 *
 * Policy: a free span unused for EBB_RELEASE_MS is returned with MADV_DONTNEED; transfer
 * caches not drawn on since the previous pass go back to their spans first, so their
 * spans can empty.  The work is driven from the slow paths of malloc and free (at most
 * once per RELEASE_MS/4), and, for processes that stop calling malloc, from a background
 * thread that sleeps RELEASE_MS/4 (at least 100 ms) between passes; that thread also
 * empties the caches of threads that sleep (thread_cache.c).  Near the soft limit
 * everything free is released at once.
 *
 * Container awareness: the memory limit of the process's cgroup (v2 memory.max, v1
 * memory.limit_in_bytes) is read at start; EBB_SOFT_LIMIT=90% means 90% of it. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

bool ebbi_thp_active;
static _Atomic uint64_t next_due_ms;
static _Atomic int releasing;      /* one pass at a time */
static _Atomic int bg_started;     /* 0 no, 1 yes (or being started) */
static _Atomic int pressure;       /* the soft limit was crossed: trim all tiers */
static uint64_t cgroup_limit, soft_limit;
static double cgroup_cpus;

uint64_t ebbi_cgroup_limit(void) { return cgroup_limit; }
uint64_t ebbi_soft_limit(void) { return soft_limit; }
double ebbi_cgroup_cpus(void) { return cgroup_cpus; }

/* ---------------------------------------------------------------- cgroups */
/* The cgroup path of the process for a v1 controller (or v2 when controller is NULL),
 * from the text of /proc/self/cgroup. */
static bool cgroup_path(const char *text, const char *controller, char *out, size_t n) {
    for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        const char *c1 = strchr(line, ':');
        if (!c1) break;
        const char *c2 = strchr(c1 + 1, ':');
        if (!c2) break;
        const char *end = strchr(c2 + 1, '\n');
        if (!end) end = c2 + 1 + strlen(c2 + 1);
        bool match;
        if (!controller) {
            match = c2 == c1 + 1; /* "0::/path" */
        } else {
            match = false;
            size_t cl = strlen(controller);
            for (const char *p = c1 + 1; p < c2;) {
                const char *comma = memchr(p, ',', (size_t)(c2 - p));
                const char *e = comma ? comma : c2;
                if ((size_t)(e - p) == cl && !memcmp(p, controller, cl)) match = true;
                p = e + 1;
            }
        }
        if (match) {
            size_t len = (size_t)(end - (c2 + 1));
            if (len >= n) return false;
            memcpy(out, c2 + 1, len);
            out[len] = 0;
            return true;
        }
    }
    return false;
}

/* Reads an unsigned number (or "max" -> UINT64_MAX) from dir/file. */
static bool read_u64(const char *dir, const char *file, uint64_t *v) {
    char path[512], buf[64];
    ebbi_snprintf(path, sizeof path, "%s/%s", dir, file);
    if (!ebbi_read_file(path, buf, sizeof buf)) return false;
    if (!strncmp(buf, "max", 3)) {
        *v = UINT64_MAX;
        return true;
    }
    char *e;
    errno = 0;
    unsigned long long x = strtoull(buf, &e, 10);
    if (e == buf || errno) return false;
    *v = x;
    return true;
}

/* The smallest limit from dir up to root (limits nest).  Stops at root. */
static uint64_t min_limit_up(const char *root, const char *rel, const char *file) {
    char dir[512];
    uint64_t best = UINT64_MAX, v;
    ebbi_snprintf(dir, sizeof dir, "%s%s", root, rel);
    size_t rootlen = strlen(root);
    for (;;) {
        size_t l = strlen(dir);
        while (l > rootlen && dir[l - 1] == '/') dir[--l] = 0;
        if (read_u64(dir, file, &v) && v < best) best = v;
        if (l <= rootlen) break;
        char *slash = strrchr(dir + rootlen, '/');
        if (!slash) break;
        *slash = 0;
    }
    return best;
}

uint64_t ebbi_cgroup_parse_limit(const char *root, const char *proc_cgroup) {
    char rel[256], dir[512];
    uint64_t lim = UINT64_MAX;
    if (cgroup_path(proc_cgroup, NULL, rel, sizeof rel)) { /* v2 */
        lim = min_limit_up(root, rel, "memory.max");
        if (lim == UINT64_MAX) lim = min_limit_up(root, "", "memory.max");
    } else if (cgroup_path(proc_cgroup, "memory", rel, sizeof rel)) { /* v1 */
        ebbi_snprintf(dir, sizeof dir, "%s/memory", root);
        lim = min_limit_up(dir, rel, "memory.limit_in_bytes");
        if (lim == UINT64_MAX) lim = min_limit_up(dir, "", "memory.limit_in_bytes");
    }
    /* v1 says "no limit" with a huge page-rounded number. */
    if (lim >= ((uint64_t)1 << 60)) return 0;
    return lim;
}

double ebbi_cgroup_parse_cpus(const char *root, const char *proc_cgroup) {
    char rel[256], dir[512], path[600], buf[128];
    if (cgroup_path(proc_cgroup, NULL, rel, sizeof rel)) {
        ebbi_snprintf(path, sizeof path, "%s%s/cpu.max", root, rel);
        if (!ebbi_read_file(path, buf, sizeof buf)) {
            ebbi_snprintf(path, sizeof path, "%s/cpu.max", root);
            if (!ebbi_read_file(path, buf, sizeof buf)) return 0;
        }
        if (!strncmp(buf, "max", 3)) return 0;
        char *e;
        double q = strtod(buf, &e), p = strtod(e, NULL);
        return q > 0 && p > 0 ? q / p : 0;
    }
    if (cgroup_path(proc_cgroup, "cpu", rel, sizeof rel)) {
        uint64_t q, p;
        ebbi_snprintf(dir, sizeof dir, "%s/cpu%s", root, rel);
        if (!read_u64(dir, "cpu.cfs_quota_us", &q) || !read_u64(dir, "cpu.cfs_period_us", &p)) {
            ebbi_snprintf(dir, sizeof dir, "%s/cpu", root);
            if (!read_u64(dir, "cpu.cfs_quota_us", &q) || !read_u64(dir, "cpu.cfs_period_us", &p))
                return 0;
        }
        if ((int64_t)q <= 0 || !p) return 0;
        return (double)q / (double)p;
    }
    return 0;
}

void ebbi_release_init(void) {
    char buf[64];
    ebbi_thp_active = ebbi_opt(EBB_OPT_HUGEPAGES) &&
                      ebbi_read_file("/sys/kernel/mm/transparent_hugepage/enabled", buf, sizeof buf) &&
                      strstr(buf, "[always]");
    static char text[4096];
    if (ebbi_read_file("/proc/self/cgroup", text, sizeof text)) {
        cgroup_limit = ebbi_cgroup_parse_limit("/sys/fs/cgroup", text);
        cgroup_cpus = ebbi_cgroup_parse_cpus("/sys/fs/cgroup", text);
    }
    int64_t sl = ebbi_opt(EBB_OPT_SOFT_LIMIT);
    if (sl > 0)
        soft_limit = (uint64_t)sl;
    else if (sl < 0 && cgroup_limit)
        soft_limit = cgroup_limit / 100 * (uint64_t)-sl;
    atomic_store(&next_due_ms, ebbi_now_ms() + 100);
}

/* ---------------------------------------------------------------- passes */
static void release_pass(uint64_t now, bool everything) {
    ebbi_central_trim(everything);
    ebbi_central_release_tails(everything);
    ebbi_lock(&ebbi_ph_lock);
    uint64_t cutoff = now > (uint64_t)ebbi_opt(EBB_OPT_RELEASE_MS) ? now - (uint64_t)ebbi_opt(EBB_OPT_RELEASE_MS) : 0;
    if (everything)
        ebbi_page_release_locked(0, SIZE_MAX);
    else if (ebbi_page_oldest_free_ms() <= cutoff)
        ebbi_page_release_locked(cutoff ? cutoff : 1, SIZE_MAX);
    ebbi_unlock(&ebbi_ph_lock);
    ebbi_page_release_finish();
    if (EBB_DEBUG) { /* the whole page heap, checked at every pass of a debug build */
        const char *err = ebbi_page_heap_verify();
        if (err) ebbi_fatal("internal check failed: page heap: %s", err);
    }
}

static void *bg_main(void *arg) {
    (void)arg;
    for (;;) {
        ebbi_shm_publish();
        int64_t ms = ebbi_opt(EBB_OPT_RELEASE_MS) / 4; /* memory goes back within 1.25x its age limit */
        if (ms < 100) ms = 100;
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
        while (nanosleep(&ts, &ts) && errno == EINTR) {}
        int z = 0;
        if (atomic_compare_exchange_strong(&releasing, &z, 1)) {
            /* Caches of idle threads first; what they held is as old as their idleness,
             * so the spans it frees go back in the same pass. */
            uint64_t t = ebbi_now_ms();
            size_t drained = ebbi_tc_drain_idle(false);
            release_pass(ebbi_now_ms(), atomic_exchange(&pressure, 0));
            if (drained) {
                ebbi_lock(&ebbi_ph_lock);
                ebbi_page_release_since_locked(t);
                ebbi_unlock(&ebbi_ph_lock);
                ebbi_page_release_finish();
            }
            atomic_store(&releasing, 0);
        }
    }
    return NULL;
}

static void start_background(void) {
    int z = 0;
    if (!ebbi_opt(EBB_OPT_BACKGROUND) || !atomic_compare_exchange_strong(&bg_started, &z, 1)) return;
    pthread_attr_t at;
    pthread_t t;
    sigset_t all, old;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 64 << 10);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the thread takes no signals meant for others */
    int err = pthread_create(&t, &at, bg_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&at);
    if (err) atomic_store(&bg_started, 0);
    else pthread_setname_np(t, "ebb-release");
}

/* The background thread starts at the first slow path that finds memory waiting to be
 * released (so a process that frees a burst and goes idle still gives it back), never
 * during initialisation, and not at all in a process that never frees pages (a thread
 * would, for instance, make unshare(CLONE_NEWUSER) fail in a single-threaded program). */
static void maybe_start_background(void) {
    if (likely(atomic_load_explicit(&bg_started, memory_order_relaxed))) return;
    if (!__atomic_load_n(&ebbi_ph_stats.free_res, __ATOMIC_RELAXED) && !ebbi_opt(EBB_OPT_STATS_SHM))
        return;
    int saved = errno;
    start_background();
    errno = saved;
}

void ebbi_release_tick(void) {
    uint64_t now = ebbi_now_ms();
    uint64_t due = atomic_load_explicit(&next_due_ms, memory_order_relaxed);
    if (likely(now < due) && !atomic_load_explicit(&pressure, memory_order_relaxed)) {
        if (unlikely(!atomic_load_explicit(&bg_started, memory_order_relaxed)) &&
            __atomic_load_n(&ebbi_ph_stats.free_res, __ATOMIC_RELAXED))
            maybe_start_background();
        return;
    }
    int z = 0;
    if (!atomic_compare_exchange_strong(&releasing, &z, 1)) return;
    int64_t every = ebbi_opt(EBB_OPT_RELEASE_MS) / 4;
    atomic_store(&next_due_ms, now + (uint64_t)(every < 10 ? 10 : every));
    release_pass(now, atomic_exchange(&pressure, 0));
    atomic_store(&releasing, 0);
    maybe_start_background();
}

size_t ebbi_release_all(void) {
    ebbi_tc_flush_self();
    ebbi_tc_drain_idle(true);
    ebbi_central_trim(true);
    size_t tails = ebbi_central_release_tails(true);
    ebbi_lock(&ebbi_ph_lock);
    size_t r = ebbi_page_release_locked(0, SIZE_MAX);
    ebbi_unlock(&ebbi_ph_lock);
    ebbi_page_release_finish();
    return r + tails;
}

/* Called with the page heap lock held, after a free or before growing. */
void ebbi_check_soft_limit_locked(void) {
    if (!soft_limit) return;
    if (ebbi_ph_stats.mapped - ebbi_ph_stats.released > soft_limit && ebbi_ph_stats.free_res) {
        ebbi_page_release_locked(0, SIZE_MAX);
        atomic_store(&pressure, 1); /* and the caches, at the next pass */
    }
}

void ebbi_release_fork_child(void) {
    atomic_store(&bg_started, 0); /* the thread did not survive the fork: start anew */
    atomic_store(&releasing, 0);
}
