/* release.c: when free memory goes back to the kernel.
 *
 * Policy: a free span unused for EBB_RELEASE_MS is returned with MADV_DONTNEED; transfer
 * caches not drawn on since the previous pass go back to their spans first, so their
 * spans can empty.  The work is driven from the slow paths of malloc and free (at most
 * once per RELEASE_MS/4), and, for processes that stop calling malloc, from a background
 * thread that sleeps RELEASE_MS/4 (at least 100 ms) between passes; that thread also
 * empties the caches of threads that sleep (thread_cache.c) and writes the stats page
 * (shm.c).  Near the soft limit everything free is released at once.
 *
 * Where the background thread starts.  Never from inside malloc or free: libc calls them
 * with its own locks held (pthread_join frees a thread's TLS under the thread-stack
 * cache lock, dlclose runs destructors under the loader's lock, stdio allocates under
 * its locks), and pthread_create takes those locks.  Nor in a program that has one
 * thread: libc's fork is async-signal-safe only there (it skips its atfork, stdio and
 * malloc locking when single-threaded), and unshare(CLONE_NEWUSER) fails in a
 * multi-threaded process.  So it starts only once the application itself is
 * multi-threaded, at one of two points (a fork child has one thread and
 * is such a program again):
 *   - the shared library interposes pthread_create and starts it inside the
 *     application's first call, before that call creates the application's thread: a
 *     public entry point, which libc never calls with its locks held (libc's own helper
 *     threads use internal names and are not seen);
 *   - the static ebb_ API library (libc never calls ebb_ functions) starts it from a slow
 *     path, once libc says the process is multi-threaded (__libc_single_threaded).
 * A process with one thread has no background thread: its free memory goes back on its
 * own slow paths, at most RELEASE_MS/4 late at its next allocator call that reaches one,
 * and at malloc_trim; those slow paths also write the stats page.
 *
 * Container awareness: the memory limit of the process's cgroup (v2 memory.max, v1
 * memory.limit_in_bytes, by the rules of cgroup.c) is read at start; EBB_SOFT_LIMIT=90% means
 * 90% of it. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/single_threaded.h>

#include "internal.h"

/* Huge pages.  The kernel's transparent huge page is mapped by one page-table entry a
 * level up: 2 MiB with 4 KiB kernel pages, 32 MiB with 16 KiB, 512 MiB with 64 KiB
 * (hpage_pmd_size; computed from the page size where that file cannot be read, and under
 * a test's fake page size).  The page heap maps chunks of two huge pages or more, aligned
 * to one, and with THP "always" releases whole huge pages first (page_heap.c).
 * A huge page above HUGE_PLAN_MAX is not planned for: chunks of 1 GiB and releases in
 * 512 MiB blocks would keep resident far more than they save, and a sparsely used
 * 512 MiB block that the kernel collapsed into a huge page would be resident whole.  There
 * ebbmalloc marks its memory MADV_NOHUGEPAGE and maps 2 MiB-aligned chunks, as with
 * EBB_HUGEPAGES=0.  All three are set once, in ebbi_release_init, and published by
 * ebbi_init_state. */
#define HUGE_PLAN_MAX ((size_t)32 << 20)
size_t ebbi_huge_size = (size_t)2 << 20;
bool ebbi_thp_active, ebbi_thp_refused;

/* Ordering: these four only decide whether a thread tries a pass (or starts the
 * thread); none publishes data.  The work of a pass is done under the central and page
 * heap locks, which order it against every other thread; a pass's results are not
 * read through these flags.  So loads that may be stale are relaxed: a stale next_due_ms
 * or pressure makes a thread try a pass one tick early (then `releasing` refuses it) or
 * one tick late; a stale bg_started sends a thread to the compare-and-swap, which only
 * one wins.  The background thread synchronises with its creator through
 * pthread_create. */
static _Atomic uint64_t next_due_ms;
static _Atomic int releasing;  /* one pass at a time */
static _Atomic int bg_started; /* 0 no, 1 yes (or being started) */
static _Atomic int pressure;   /* the soft limit was crossed: trim all tiers */
/* cgroup_limit: written by ebbi_release_init before ebbi_init_state is published (release
 * store; every reader is past its acquire load, so it sees the value, on arm64 too), and
 * afterwards only by a test through ebbi_cgroup_limit_set.  Readers (the page heap's cap
 * and reuse floor under its lock, ebb_stats) take it as a bound for the decision at hand
 * and publish nothing through it, so relaxed atomics suffice: each read racing with a
 * test's change sees the old value or the new one, a whole 8-byte value (the cap reads
 * it twice, and may use one of each: both are bounds it may apply). */
static uint64_t cgroup_limit, soft_limit;
static double cgroup_cpus;

uint64_t ebbi_cgroup_limit(void) { return __atomic_load_n(&cgroup_limit, __ATOMIC_RELAXED); }
void ebbi_cgroup_limit_set(uint64_t bytes) { __atomic_store_n(&cgroup_limit, bytes, __ATOMIC_RELAXED); }
uint64_t ebbi_soft_limit(void) { return soft_limit; }
double ebbi_cgroup_cpus(void) { return cgroup_cpus; }

static size_t pmd_size(void) {
    size_t kp = ebbi_os_page_size(), pmd = kp * (kp / 8); /* a page of 8-byte entries */
    char buf[32];
    if (!ebbi_os_page_fake &&
        ebbi_read_file("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", buf, sizeof buf)) {
        char *e;
        unsigned long long v = strtoull(buf, &e, 10);
        if (e != buf && v >= kp && !(v & (v - 1))) pmd = (size_t)v;
    }
    return pmd;
}

void ebbi_release_init(void) {
    char buf[64];
    size_t pmd = pmd_size();
    bool plan = pmd <= HUGE_PLAN_MAX;
    ebbi_huge_size = plan ? pmd : (size_t)2 << 20; /* 2 MiB: whole 64 KiB pages */
    ebbi_thp_refused = !ebbi_opt(EBB_OPT_HUGEPAGES) || !plan;
    ebbi_thp_active = !ebbi_thp_refused &&
                      ebbi_read_file("/sys/kernel/mm/transparent_hugepage/enabled", buf, sizeof buf) &&
                      strstr(buf, "[always]");
    static char text[4096];
    if (ebbi_read_file("/proc/self/cgroup", text, sizeof text)) {
        cgroup_limit = ebbi_cgroup_parse_limit(ebbi_read_file, "/sys/fs/cgroup", text);
        cgroup_cpus = ebbi_cgroup_parse_cpus(ebbi_read_file, "/sys/fs/cgroup", text);
    }
    int64_t sl = ebbi_opt(EBB_OPT_SOFT_LIMIT);
    if (sl > 0) soft_limit = (uint64_t)sl;
    else if (sl < 0 && cgroup_limit) soft_limit = cgroup_limit / 100 * (uint64_t)-sl;
    atomic_store(&next_due_ms, ebbi_now_ms() + 100);
}

/* ---------------------------------------------------------------- passes */
static void release_pass(uint64_t now, bool everything) {
    ebbi_central_trim(everything);
    ebbi_central_release_pages(everything);
    ebbi_lock(&ebbi_ph_lock);
    uint64_t cutoff =
        now > (uint64_t)ebbi_opt(EBB_OPT_RELEASE_MS) ? now - (uint64_t)ebbi_opt(EBB_OPT_RELEASE_MS) : 0;
    if (everything) ebbi_page_release_locked(0, SIZE_MAX, EBB_WHY_SOFT);
    else if (ebbi_page_oldest_free_ms() <= cutoff)
        ebbi_page_release_locked(cutoff ? cutoff : 1, SIZE_MAX, EBB_WHY_TIMER);
    ebbi_page_release_map_locked();
    ebbi_unlock(&ebbi_ph_lock);
    ebbi_page_release_finish();
    ebbi_meta_release(); /* the records of spans that are gone */
    if (EBB_DEBUG) {     /* the whole page heap, checked at every pass of a debug build */
        const char *err = ebbi_page_heap_verify();
        if (err) ebbi_fatal("internal check failed: page heap: %s", err);
    }
}

static uint64_t bg_passes; /* passes of the background thread done, for tests (relaxed) */
uint64_t ebbi_release_bg_passes(void) { return __atomic_load_n(&bg_passes, __ATOMIC_RELAXED); }

/* The pass of the background thread: idle threads' caches first (what they held is as
 * old as their idleness, so the spans it frees go back in the same pass). */
static void bg_pass(void) {
    uint64_t t = ebbi_now_ms();
    size_t drained = ebbi_tc_drain_idle(false);
    release_pass(ebbi_now_ms(), atomic_exchange(&pressure, 0));
    if (drained) {
        ebbi_lock(&ebbi_ph_lock);
        ebbi_page_release_since_locked(t);
        ebbi_unlock(&ebbi_ph_lock);
        ebbi_page_release_finish();
    }
    __atomic_fetch_add(&bg_passes, 1, __ATOMIC_RELAXED);
}

/* Whether the program's threads have all ended, leaving the release thread alone (the
 * first thread, if it ended with pthread_exit, stays a zombie until the whole group does).
 * libc ends the process when its last thread ends, with exit(0) from that thread; the
 * release thread must not keep it alive (nor, blocking every signal, keep a SIGTERM from
 * ending it).  /proc/self/stat's thread count, then the first thread's state.  The
 * kernel's count also holds the kernel's own workers in the process, which libc's count
 * does not and which end only with it: io_uring's submission-poll thread and io-wq
 * workers (PF_IO_WORKER), vhost's (PF_USER_WORKER).  With more than two threads the
 * tasks are looked at one by one: alone when every one but this thread and the zombie
 * first thread is such a worker, by its flag and by the name the kernel gives it (the
 * flag bits meant other things on kernels before 5.12: 0x10 PF_VCPU, 0x4000
 * PF_USED_ASYNC). */
#define PF_IO_WORKER 0x10
#define PF_USER_WORKER 0x4000

struct others {
    int self, first;
    bool program;  /* a task that is neither: a program thread */
    long seen;     /* tasks read, these two included */
    bool vanished; /* a task listed whose stat could not be read */
};

/* The kernel's name for its workers in a process (io_uring, vhost). */
static bool worker_name(const char *stat) {
    const char *c = strchr(stat, '(');
    return c &&
           (!strncmp(c + 1, "iou-sqp-", 8) || !strncmp(c + 1, "iou-wrk-", 8) || !strncmp(c + 1, "vhost-", 6));
}

static bool look_at_task(int dirfd, const char *name, void *arg) {
    (void)dirfd;
    struct others *o = arg;
    if (name[0] < '0' || name[0] > '9') return true;
    int tid = (int)strtol(name, NULL, 10);
    if (tid == o->self || tid == o->first) {
        o->seen++;
        return true;
    }
    char path[64], buf[512];
    const char *p;
    ebbi_snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    /* Gone meanwhile.  The listing goes by position, so a task that ends while it is
     * read may make the next one skipped: the answer waits for a walk without one. */
    if (!ebbi_read_file(path, buf, sizeof buf)) {
        o->vanished = true;
        return false;
    }
    o->seen++;
    if (!(p = ebbi_stat_field(buf, 9))) o->program = true; /* unreadable: counted as one */
    else if (!(strtoul(p, NULL, 10) & (PF_IO_WORKER | PF_USER_WORKER)) || !worker_name(buf))
        o->program = true;
    return !o->program;
}

static long thread_count(void) {
    char buf[512];
    const char *p;
    if (!ebbi_read_file("/proc/self/stat", buf, sizeof buf) || !(p = ebbi_stat_field(buf, 20))) return -1;
    return strtol(p, NULL, 10); /* num_threads */
}

static bool alone(void) {
    long n = thread_count();
    if (n == 1) return true;
    if (n < 2) return false;
    char path[64], buf[512];
    const char *p;
    ebbi_snprintf(path, sizeof path, "/proc/self/task/%d/stat", ebbi_os_getpid());
    if (!ebbi_read_file(path, buf, sizeof buf) || !(p = ebbi_stat_field(buf, 3))) return false; /* state */
    if (*p != 'Z' && *p != 'X') return false;
    if (n == 2) {
        /* The count again: the first thread may have started another before it ended,
         * after the first read.  A zombie starts nothing, so two now is two for good. */
        return thread_count() == 2;
    }
    /* Nor do the kernel's workers start program threads: with the first thread a
     * zombie, a program thread not seen would have been started by one that ended
     * during the walk, after it started the other and before it was read.  So the
     * walk must also have read as many tasks as the count said before and says after
     * (a worker that ended meanwhile only puts the answer off to the next look). */
    struct others o = {ebbi_os_gettid(), ebbi_os_getpid(), false, 0, false};
    if (ebbi_os_dir_each("/proc/self/task", look_at_task, &o) != 0) return false;
    return !o.program && !o.vanished && o.seen == n && thread_count() == n;
}

/* The signal mask libc's exit would have run with, on the last program thread: the first
 * thread's as it ended (its SigBlk in /proc, which a zombie keeps), else the mask of the
 * thread that started the release thread.  The program's blocked signals stay blocked
 * (one pending for the process, which its threads all blocked, does not kill it now). */
static void take_program_mask(void) {
    char buf[2048], path[64];
    ebbi_snprintf(path, sizeof path, "/proc/self/task/%d/status", ebbi_os_getpid());
    const char *p = ebbi_read_file(path, buf, sizeof buf) ? strstr(buf, "\nSigBlk:") : NULL;
    char *end;
    unsigned long long bits = p ? strtoull(p + 9, &end, 16) : 0;
    if (!p || end == p + 9) {
        ebbi_os_thread_takes_signals();
        return;
    }
    sigset_t m;
    sigemptyset(&m);
    for (int sig = 1; sig <= 64; sig++)
        if (bits >> (sig - 1) & 1) sigaddset(&m, sig); /* libc refuses its own: no matter */
    pthread_sigmask(SIG_SETMASK, &m, NULL);
}

/* The stats page has one writer at a time: whoever holds `releasing`.  The release
 * thread: a pass every RELEASE_MS/4 (at least 100 ms), and every 100 ms a look at whether
 * it is the last thread, which then ends (libc's exit(0) follows). */
static void *bg_main(void *arg) {
    (void)arg;
    for (bool first = true;; first = false) {
        if (!first) {
            int64_t ms = ebbi_opt(EBB_OPT_RELEASE_MS) / 4; /* memory goes back within 1.25x its age limit */
            for (uint64_t slept = 0, want = (uint64_t)(ms < 100 ? 100 : ms); slept < want; slept += 100) {
                ebbi_os_sleep_ms(want - slept < 100 ? want - slept : 100);
                if (alone()) {
                    /* libc's exit(0) runs on this thread now (atexit handlers, destructors) */
                    take_program_mask();
                    return NULL;
                }
            }
        }
        int z = 0;
        if (atomic_compare_exchange_strong(&releasing, &z, 1)) {
            if (!first) bg_pass();
            ebbi_shm_publish();
            atomic_store(&releasing, 0);
        }
    }
    return NULL;
}

static void start_background(void) {
    int z = 0;
    if (!ebbi_opt(EBB_OPT_BACKGROUND) || !atomic_compare_exchange_strong(&bg_started, &z, 1)) return;
    if (!ebbi_os_start_thread(bg_main, "ebb-release")) atomic_store(&bg_started, 0);
}

#if EBB_OVERRIDE
/* The application's own threads: ebbmalloc's starts first (see the top of this file).
 * The first call also finds libc's pthread_create, which every call then forwards to. */
EBB_EXPORT int pthread_create(pthread_t *restrict thread, const pthread_attr_t *restrict attr,
                              void *(*fn)(void *), void *restrict arg) {
    ebbi_os_find_pthread_create();
    if (!atomic_load_explicit(&bg_started, memory_order_relaxed)) {
        ebbi_ensure_init();
        start_background();
    }
    return ebbi_os_pthread_create(thread, attr, fn, arg);
}
#define maybe_start_background() ((void)0)
#else
/* The ebb_ API: from a slow path, once the process is multi-threaded.  libc never says a
 * fork child is single-threaded again, so in one (forked_single) a second thread that
 * allocates is what shows it. */
static bool forked_single;
static void maybe_start_background(void) {
    if (likely(atomic_load_explicit(&bg_started, memory_order_relaxed)) || __libc_single_threaded) return;
    if (forked_single && ebbi_tc_threads() < 2) return;
    start_background();
}
#endif

void ebbi_release_tick(void) {
    uint64_t now = ebbi_now_ms();
    uint64_t due = atomic_load_explicit(&next_due_ms, memory_order_relaxed);
    if (likely(now < due) && !atomic_load_explicit(&pressure, memory_order_relaxed)) {
        maybe_start_background();
        return;
    }
    int z = 0;
    if (!atomic_compare_exchange_strong(&releasing, &z, 1)) return;
    int64_t every = ebbi_opt(EBB_OPT_RELEASE_MS) / 4;
    atomic_store(&next_due_ms, now + (uint64_t)(every < 10 ? 10 : every));
    /* Between their locks the pass and the page write have shared state in hand: marked,
     * so that a fork from a signal handler in here leaves it alone (init.c). */
    ebbi_work_begin();
    release_pass(now, atomic_exchange(&pressure, 0));
    if (!atomic_load_explicit(&bg_started, memory_order_relaxed)) ebbi_shm_publish();
    ebbi_work_end();
    atomic_store(&releasing, 0);
    maybe_start_background();
}

size_t ebbi_release_all(void) {
    ebbi_tc_flush_self();
    ebbi_tc_drain_idle(false); /* idle threads only, as the release thread's */
    ebbi_central_trim(true);
    size_t pages = ebbi_central_release_pages(true);
    ebbi_lock(&ebbi_ph_lock);
    size_t r = ebbi_page_release_locked(0, SIZE_MAX, EBB_WHY_TRIM);
    ebbi_page_release_map_locked();
    ebbi_unlock(&ebbi_ph_lock);
    ebbi_page_release_finish();
    return r + pages + ebbi_meta_release();
}

/* Called with the page heap lock held, after a free or before growing. */
void ebbi_check_soft_limit_locked(void) {
    if (!soft_limit) return;
    /* Free memory that holds no whole kernel page cannot go back: it does not count. */
    if (ebbi_ph_stats.mapped - ebbi_ph_stats.released > soft_limit &&
        ebbi_ph_stats.free_res > ebbi_ph_stats.unreleasable) {
        ebbi_page_release_locked(0, SIZE_MAX, EBB_WHY_SOFT);
        atomic_store(&pressure, 1); /* and the caches, at the next pass */
    }
}

/* The child of a fork: the thread did not survive it, and none is started here.  The
 * child has one thread, like a program that has not yet called pthread_create: libc and
 * the kernel treat it as single-threaded (unshare(CLONE_NEWUSER) works in it only while
 * it stays so, and its fork is async-signal-safe), so its release thread starts where a
 * program's does, once it is multi-threaded (see the top of this file).  skipped: the
 * fork came from a signal handler that interrupted ebbmalloc, and only what no
 * interrupted frame uses is touched (`releasing` may be this thread's).  A pass another
 * thread had under way then keeps `releasing` set in the child, which never releases
 * again: that other thread may have held locks or spans the child cannot know of, and a
 * pass there could wait for them for ever (the child may only call async-signal-safe
 * functions anyway). */
void ebbi_release_fork_child(bool skipped) {
    atomic_store(&bg_started, 0);
#if !EBB_OVERRIDE
    forked_single = true;
#endif
    if (skipped) return;
    atomic_store(&releasing, 0);
}
