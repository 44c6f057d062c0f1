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

static void count_first_thread(void); /* the program's threads, counted (alone) */
static void count_fork_child(void);

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
    count_first_thread();
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
    size_t drained = ebbi_tc_drain_idle_pass();
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
 * ending it).  It looks every 100 ms (bg_main).
 *
 * Two ways to know, one per library:
 *   - the shared library counts the program's threads itself, where they start (its
 *     pthread_create) and where they end (a thread-specific key's destructor, which libc
 *     runs on every way out of a thread: return, pthread_exit, cancellation).  That is
 *     libc's own rule, which counts what pthread_create made: the kernel's workers in the
 *     process (io_uring, vhost, KVM's helpers) count for neither, and /proc is not needed;
 *   - the static ebb_ API library sees no pthread_create and reads /proc (proc_alone).
 * An error either way must end the release thread early rather than never: if it ends
 * while a program thread still runs, that thread's libc ends the process as without
 * ebbmalloc, and only background release is lost; if it never ends, the process lingers
 * after its last thread. */
static int first_state(void) {
    char path[64], buf[512];
    const char *p;
    ebbi_snprintf(path, sizeof path, "/proc/self/task/%d/stat", ebbi_os_getpid());
    if (!ebbi_read_file(path, buf, sizeof buf) || !(p = ebbi_stat_field(buf, 3))) return 0; /* state */
    return *p;
}
static bool first_ended(void) {
    int st = first_state();
    return st == 'Z' || st == 'X';
}

/* /proc/self/stat's thread count, then the first thread's state.  The kernel's count
 * also holds the kernel's own workers in the process, which libc's count does not and
 * which end only with it: io_uring's submission-poll thread and io-wq workers
 * (PF_IO_WORKER), vhost's (PF_USER_WORKER).  With more than two threads the tasks are
 * looked at one by one: alone when every one but this thread and the zombie first thread
 * is such a worker, by its flag and by the name the kernel gives it (the flag bits meant
 * other things on kernels before 5.12: 0x10 PF_VCPU, 0x4000 PF_USED_ASYNC).  A worker of
 * another name (KVM's helpers) counts as a program thread: such a process never ends
 * here, and without /proc none does (the shared library has neither limit). */
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
    if (!ebbi_read_file(path, buf, sizeof buf)) { /* gone meanwhile */
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

static bool proc_alone(void) {
    long n = thread_count();
    if (n == 1) return true;
    if (n < 2 || !first_ended()) return false;
    if (n == 2) {
        /* The count again: the first thread may have started another before it ended,
         * after the first read.  A zombie starts nothing, so two now is two for good. */
        return thread_count() == 2;
    }
    /* Nor do the kernel's workers start program threads: with the first thread a
     * zombie, a program thread not seen would have been started by one that ended
     * during the walk, after it started the other and before it was read.  So the
     * walk must also have read as many tasks as the count said before and says after
     * (a worker that ended meanwhile only puts the answer off to the next look).  And
     * the listing must come whole from one getdents call: within one the kernel follows
     * the thread list from task to task (a task that ends stops it short, which the
     * count shows), where a second call starts again by position, and a task that ended
     * between the two would make it skip one. */
    static char listing[32 << 10] __attribute__((aligned(8))); /* ~1000 tasks */
    struct others o = {ebbi_os_gettid(), ebbi_os_getpid(), false, 0, false};
    if (ebbi_os_dir_each_whole("/proc/self/task", listing, sizeof listing, look_at_task, &o) != 0)
        return false;
    return !o.program && !o.vanished && o.seen == n && thread_count() == n;
}

/* The signal mask libc's exit would have run with, on the last program thread: the first
 * thread's as it ended (its SigBlk in /proc, which a zombie keeps), else the mask of the
 * thread that started the release thread.  The program's blocked signals stay blocked
 * (one pending for the process, which its threads all blocked, does not kill it now). */
static void proc_program_mask(void) {
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
#if EBB_OVERRIDE
/* The count.  threads_alive: the program's threads started through pthread_create whose
 * end has not run yet, and the first thread while it lives if first_counted (its key set
 * at initialisation, on it).  pthread_create raises it before libc's call (so it is never
 * short while the new thread runs) and lowers it again if the call fails; end_of_thread
 * lowers it, and the thread that takes it to 0 leaves its signal mask in last_mask, for
 * the release thread to run libc's exit with, as libc would have run it on that thread.
 * All three under end_lock (taken by an ending thread and by the release thread's look;
 * no allocator lock is taken under it).  A thread whose key could not be set is not
 * counted (end_of_thread would never run for it).  A count of 0 is final unless a key
 * destructor that runs after this one starts a thread: the release thread may then have
 * ended already, and that thread goes without background release.
 *
 * Fork child: its one thread is counted if its key is set, as the first thread now (it
 * is, by the kernel's numbering); if not, the child falls back to /proc for the first
 * thread.  A fork from a signal handler that interrupted end_of_thread on the same
 * thread (end_lock held here) leaves the count as the parent had it, less this thread
 * once the interrupted frame goes on: the child's release thread then never ends.  One
 * that interrupted this thread after libc cleared its key value and before
 * end_of_thread took the lock (or after thread_start took a record and before it set
 * the value) recounts the child's thread as 0 and the frame then takes one more: the
 * count goes below 0, which alone() reads as none. */
static ebb_lock_t end_lock;
static long threads_alive;
static bool first_counted;
static sigset_t last_mask;
static bool have_last_mask;
static pthread_key_t end_key;
static bool end_key_created, end_key_made; /* made; and in use (below KEYS_INLINE) */

static void end_of_thread(void *v) {
    (void)v;
    sigset_t m;
    pthread_sigmask(SIG_BLOCK, NULL, &m);
    ebbi_lock(&end_lock);
    if (--threads_alive == 0) {
        last_mask = m;
        have_last_mask = true;
    }
    ebbi_unlock(&end_lock);
}

/* glibc keeps a thread's values of keys below 32 in its descriptor; for a higher key,
 * the first pthread_setspecific of a thread callocs a block for it.  That calloc would
 * come here under the initialisation's lock, or in a new thread without a cache, where
 * the cache's own pthread_setspecific (the same block, not reentrant) would be lost.  So
 * a key above is never given a value, and the release thread's end is found in /proc as
 * in the ebb_ API library (proc_alone): only a program that made 32 keys before its
 * first malloc. */
#define KEYS_INLINE 32
static void count_first_thread(void) {
    __atomic_store_n(&end_key_created, pthread_key_create(&end_key, end_of_thread) == 0, __ATOMIC_RELEASE);
    /* One above stays made but unused (no value, so its destructor never runs): deleting
     * it would take a call that finds libc's pthread_key_delete with dlsym, which is not
     * safe here (see ebbi_os_find_pthread_create). */
    end_key_made = end_key_created && end_key < KEYS_INLINE;
    first_counted =
        end_key_made && ebbi_os_gettid() == ebbi_os_getpid() && pthread_setspecific(end_key, (void *)1) == 0;
    threads_alive = first_counted;
}

/* What a new thread starts with.  Records are kept for the next thread (start_pool,
 * under end_lock), not freed: a free would give every new thread a cache before its
 * first allocation of its own.  In a section of its own, so that the heap profile's walk
 * knows this frame for the bottom of a thread's stack, not for an allocator frame
 * (ebbi_thread_start_frame). */
struct thread_start {
    void *(*fn)(void *);
    void *arg;
    struct thread_start *next;
};
static struct thread_start *start_pool;

__attribute__((section("ebb_thread_start"), noinline)) static void *thread_start(void *p) {
    struct thread_start *rec = p, st = *rec;
    ebbi_lock(&end_lock);
    rec->next = start_pool;
    start_pool = rec;
    ebbi_unlock(&end_lock);
    if (pthread_setspecific(end_key, (void *)1) != 0) end_of_thread(NULL); /* not counted */
    void *r = st.fn(st.arg);
    __asm__ volatile("" ::: "memory"); /* a frame of its own under fn's, not a tail call */
    return r;
}
extern const char __start_ebb_thread_start[] EBB_HIDDEN, __stop_ebb_thread_start[] EBB_HIDDEN;
bool ebbi_thread_start_frame(uintptr_t pc) {
    return pc > (uintptr_t)__start_ebb_thread_start && pc <= (uintptr_t)__stop_ebb_thread_start;
}

static bool alone(void) {
    if (!end_key_made) return proc_alone();
    ebbi_lock(&end_lock);
    bool none = threads_alive <= 0, counted = first_counted; /* below 0: see above */
    ebbi_unlock(&end_lock);
    return none && (counted || first_ended());
}

static void take_program_mask(void) {
    if (!end_key_made) {
        proc_program_mask();
        return;
    }
    ebbi_lock(&end_lock);
    sigset_t m = last_mask;
    bool have = have_last_mask;
    ebbi_unlock(&end_lock);
    if (have) pthread_sigmask(SIG_SETMASK, &m, NULL); /* libc refuses its own: no matter */
    else ebbi_os_thread_takes_signals();
}

static void count_fork_child(void) {
    if (ebbi_lock_held_here(&end_lock)) return;
    ebbi_lock_reset(&end_lock);
    first_counted = end_key_made && pthread_getspecific(end_key) != NULL;
    threads_alive = first_counted;
    have_last_mask = false;
}
#else
static void count_first_thread(void) {}
static void count_fork_child(void) {}
bool ebbi_thread_start_frame(uintptr_t pc) {
    (void)pc;
    return false;
}
static bool alone(void) { return proc_alone(); }
static void take_program_mask(void) { proc_program_mask(); }

#endif

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
                    /* libc's exit(0) runs on this thread now (atexit handlers, destructors).
                     * Unless a thread the count never saw still runs (C11's thrd_create,
                     * libc's own helper threads: they bypass pthread_create's symbol):
                     * then the next pthread_create starts a release thread again, and
                     * until then the ticks publish the stats page. */
                    atomic_store(&bg_started, 0);
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
    ebbi_ensure_init(); /* end_key_made is published with it */
    struct thread_start *st = NULL;
    if (end_key_made) {
        ebbi_lock(&end_lock);
        if ((st = start_pool)) start_pool = st->next;
        threads_alive++; /* before the thread exists: never short while it runs */
        ebbi_unlock(&end_lock);
        if (!st && !(st = ebbi_meta_alloc(sizeof *st))) end_of_thread(NULL); /* goes uncounted */
    }
    if (st) st->fn = fn, st->arg = arg;
    if (!atomic_load_explicit(&bg_started, memory_order_relaxed)) start_background();
    int r = st ? ebbi_os_pthread_create(thread, attr, thread_start, st)
               : ebbi_os_pthread_create(thread, attr, fn, arg);
    if (r && st) {
        ebbi_lock(&end_lock);
        st->next = start_pool;
        start_pool = st;
        ebbi_unlock(&end_lock);
        end_of_thread(NULL);
    }
    return r;
}

/* A program may delete only the keys it made.  One that deletes a key it never made (a
 * static pthread_key_t left at 0 and deleted by a cleanup that runs whether or not its
 * pthread_key_create did) could delete one of ebbmalloc's: ended threads' caches would
 * then stay lost, and the release thread would never see the last thread end.  For
 * ebbmalloc's keys the answer is glibc's for a key not in use, EINVAL, and they stay.
 * (A stray delete in one thread while another's first allocator call is making the key
 * of the same number is forwarded, and deletes it: only with threads started before
 * the first malloc, whose keys the program cannot know of.) */
EBB_EXPORT int pthread_key_delete(pthread_key_t key) {
    if ((__atomic_load_n(&end_key_created, __ATOMIC_ACQUIRE) && key == end_key) || ebbi_tc_is_key(key))
        return EINVAL;
    return ebbi_os_pthread_key_delete(key);
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
    count_fork_child();
    if (skipped) return;
    atomic_store(&releasing, 0);
}
