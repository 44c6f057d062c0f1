/* thread_cache.c: per-thread caches and the slow paths of malloc and free.
 *
 * Each list starts with room for nothing (max == 0) and grows on demand: by one object
 * per underflow up to a batch, then by a batch at a time (slow start), so a thread that
 * allocates a class once does not hoard a batch of it.  Growth is paid for from a budget:
 * a thread's lists may hold sum(max * size) <= EBB_THREAD_CACHE_ONE bytes, all threads
 * together <= EBB_THREAD_CACHE_MAX.  Lists the thread stopped using give back half their
 * objects and their room at each scavenge (about once a second of activity).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MAX_LEN 4096      /* objects in one list at most */
#define MAX_OVERFLOWS 3   /* overflows at full size before a list shrinks by a batch */
#define SCAVENGE_MS 1000

struct ebb_tcache ebbi_tc_empty;
EBB_TLS struct ebb_tcache *ebbi_tc = &ebbi_tc_empty;
/* Set while the thread runs its exit destructors: it gets no new cache after that. */
static EBB_TLS bool tl_exiting;

static ebb_lock_t tc_list_lock; /* the list of caches, the free records, the budget */
static struct ebb_tcache *tc_all, *tc_free;
/* Records emptied while their threads slept (idle_detach): not on tc_all, linked through
 * prev/next, until their owners take them back or exit. */
static struct ebb_tcache *tc_parked;
static size_t tc_threads;
static _Atomic int64_t budget_left; /* bytes not claimed by any thread */
/* A thread's fair part of the budget: EBB_THREAD_CACHE_MAX over the threads with a
 * cache, at most EBB_THREAD_CACHE_ONE.  Written under tc_list_lock, read anywhere. */
static _Atomic size_t tc_share;
static pthread_key_t tc_key;
/* The biggest class thread caches hold (EBB_THREAD_CACHE_BLOCK): bigger blocks go to and
 * from the central tier, where a freed block's span can go straight back to the page heap. */
static unsigned tc_top_cls;

static inline size_t csize(unsigned cls) { return ebbi_classes[cls].size; }

/* CPUs this process may run on at once: the cgroup quota if there is one, else the
 * affinity mask. */
static double usable_cpus(void) {
    double q = ebbi_cgroup_cpus();
    cpu_set_t set;
    double n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    return q > 0 && q < n ? q : n;
}

void ebbi_tc_init(void) {
    int64_t total = ebbi_opt(EBB_OPT_THREAD_CACHE_MAX);
    if (total <= 0) {
        total = (int64_t)(usable_cpus() * (2 << 20));
        if (total < (4 << 20)) total = 4 << 20;
        ebbi_options_set(EBB_OPT_THREAD_CACHE_MAX, total);
    }
    if (ebbi_opt(EBB_OPT_THREAD_CACHE_ONE) > total) ebbi_options_set(EBB_OPT_THREAD_CACHE_ONE, total);
    atomic_store(&budget_left, total);
    int64_t top = ebbi_opt(EBB_OPT_THREAD_CACHE_BLOCK);
    for (unsigned c = 1; c < EBB_NCLASS && (int64_t)ebbi_classes[c].size <= top; c++) tc_top_cls = c;
    pthread_key_create(&tc_key, ebbi_tc_thread_exit);
}

/* The owner is inside a slow path that works on its lists (see idle_detach). */
static inline void set_busy(struct ebb_tcache *tc, bool on) {
    __atomic_store_n(&tc->busy, on, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------- budget */
/* Called with tc_list_lock held, after tc_threads changed. */
static void update_share(void) {
    size_t total = (size_t)ebbi_opt(EBB_OPT_THREAD_CACHE_MAX), one = (size_t)ebbi_opt(EBB_OPT_THREAD_CACHE_ONE);
    size_t share = total / (tc_threads ? tc_threads : 1);
    atomic_store_explicit(&tc_share, share < one ? share : one, memory_order_relaxed);
}

static size_t share(void) { return atomic_load_explicit(&tc_share, memory_order_relaxed); }

/* Room for `bytes` more in a list that has room for `room` bytes now.  A list may take
 * an eighth of the thread's share at most (but always one object), so that a few lists
 * of big blocks, whose hits save little, do not take the room of many small ones. */
static bool claim(struct ebb_tcache *tc, size_t bytes, size_t room) {
    size_t sh = share();
    if (room && room + bytes > sh / 8) return false;
    if (tc->claimed + bytes > sh) {
        tc->starved = true; /* see rebalance() */
        return false;
    }
    int64_t left = atomic_load_explicit(&budget_left, memory_order_relaxed);
    do {
        if (left < (int64_t)bytes) return false;
    } while (!atomic_compare_exchange_weak(&budget_left, &left, left - (int64_t)bytes));
    tc->claimed += bytes;
    return true;
}

static void unclaim(struct ebb_tcache *tc, size_t bytes) {
    tc->claimed -= bytes;
    atomic_fetch_add(&budget_left, (int64_t)bytes);
}

/* ---------------------------------------------------------------- moving objects */
/* Give the first n objects of a list to the central tier.  Every object on a list was
 * checked when it was freed (class from the page map, the start of a block, not free
 * already); the links between them are checked on the way. */
static void release_objects(struct ebb_tc_list *l, unsigned cls, uint32_t n) {
    const uint32_t batch = ebbi_classes[cls].batch;
    while (n) {
        uint32_t k = n < batch ? n : batch;
        void *head = l->head, *last = head;
        for (uint32_t i = 1; i < k; i++) last = ebbi_next_checked(last);
        l->head = ebbi_next_checked(last);
        ebbi_set_next(last, NULL);
        l->len -= k;
        n -= k;
        ebbi_central_push(cls, head, k);
    }
}

/* Lower a list's room to new_max, giving back objects above it and the budget. */
static void shrink_list(struct ebb_tcache *tc, unsigned cls, uint32_t new_max) {
    struct ebb_tc_list *l = &tc->lists[cls];
    if (l->len > new_max) release_objects(l, cls, l->len - new_max);
    if (l->max > new_max) {
        unclaim(tc, (size_t)(l->max - new_max) * csize(cls));
        l->max = new_max;
    }
}

/* A thread over its share (threads were added since it grew) gives back room, the
 * biggest blocks first: they buy the fewest hits per byte.  Each list keeps half. */
static void fit_share(struct ebb_tcache *tc) {
    size_t target = share() - share() / 8;
    for (unsigned cls = EBB_NCLASS - 1; cls > 0 && tc->claimed > target; cls--) {
        struct ebb_tc_list *l = &tc->lists[cls];
        if (l->max) shrink_list(tc, cls, l->max / 2);
    }
}

/* A list could not grow because the thread's share is full: the list with the most
 * room in bytes gives half of it back.  Repeated, this moves room from lists of big
 * blocks to lists of small ones, which get many more hits for the same bytes. */
static void rebalance(struct ebb_tcache *tc) {
    tc->starved = false;
    unsigned best = 0;
    size_t best_room = share() / 32;
    for (unsigned cls = 1; cls < EBB_NCLASS; cls++) {
        size_t room = (size_t)tc->lists[cls].max * csize(cls);
        if (room > best_room) best = cls, best_room = room;
    }
    if (best) shrink_list(tc, best, tc->lists[best].max / 2);
}

static void scavenge(struct ebb_tcache *tc, uint64_t now) {
    tc->last_scavenge_ms = now;
    for (unsigned cls = 1; cls < EBB_NCLASS; cls++) {
        struct ebb_tc_list *l = &tc->lists[cls];
        struct ebb_tc_slow *sl = &tc->slow[cls];
        if (!sl->active && l->max) shrink_list(tc, cls, l->len / 2); /* unused lately */
        sl->active = 0;
    }
}

/* ---------------------------------------------------------------- cache life */
/* Under tc_list_lock: the list of caches the budget is shared by. */
static void link_cache(struct ebb_tcache *tc) {
    tc->prev = NULL;
    tc->next = tc_all;
    if (tc_all) tc_all->prev = tc;
    tc_all = tc;
    tc_threads++;
    update_share();
}

static void unlink_cache(struct ebb_tcache *tc) {
    if (tc->prev) tc->prev->next = tc->next; else tc_all = tc->next;
    if (tc->next) tc->next->prev = tc->prev;
    tc_threads--;
    update_share();
}

static void park_cache(struct ebb_tcache *tc) {
    tc->prev = NULL;
    tc->next = tc_parked;
    if (tc_parked) tc_parked->prev = tc;
    tc_parked = tc;
}

static void unpark_cache(struct ebb_tcache *tc) {
    if (tc->prev) tc->prev->next = tc->next; else tc_parked = tc->next;
    if (tc->next) tc->next->prev = tc->prev;
}

/* The owner's lists counted again from their chains, after a drain or a fork that may
 * have cut a fast path short (each of its stores leaves the chain whole, but `len` may be
 * off); objects above `max` go back.  Only the owner (or the only thread) calls this. */
static void recount(struct ebb_tcache *tc) {
    for (unsigned cls = 1; cls < EBB_NCLASS; cls++) {
        struct ebb_tc_list *l = &tc->lists[cls];
        uint32_t n = 0;
        for (void *o = l->head; o && n <= MAX_LEN; o = ebbi_next_checked(o)) n++;
        l->len = n;
        if (n > l->max) shrink_list(tc, cls, l->max);
    }
}

static struct ebb_tcache *tc_create(void) {
    ebbi_lock(&tc_list_lock);
    struct ebb_tcache *tc = tc_free;
    if (tc) tc_free = tc->free_next;
    ebbi_unlock(&tc_list_lock);
    if (!tc) tc = ebbi_meta_alloc(sizeof *tc);
    if (!tc) return NULL;
    memset(tc, 0, sizeof *tc);
    for (unsigned cls = 1; cls < EBB_NCLASS; cls++) tc->lists[cls].div = ebbi_class_div[cls];
    tc->real = true;
    tc->last_scavenge_ms = ebbi_now_ms();
    tc->tid = (int)syscall(SYS_gettid);
    tc->last_tick_ms = tc->last_scavenge_ms;
    tc->tls_slot = &ebbi_tc;
    ebbi_lock(&tc_list_lock);
    link_cache(tc);
    ebbi_unlock(&tc_list_lock);
    ebbi_tc = tc;
    /* May allocate (for keys past the first 32): ebbi_tc is already set. */
    pthread_setspecific(tc_key, tc);
    return tc;
}

static void tc_flush(struct ebb_tcache *tc) {
    for (unsigned cls = 1; cls < EBB_NCLASS; cls++) shrink_list(tc, cls, 0);
}

static void tc_destroy(struct ebb_tcache *tc) {
    tc_flush(tc);
    ebbi_lock(&tc_list_lock);
    unlink_cache(tc);
    tc->real = false;
    tc->free_next = tc_free;
    tc_free = tc;
    ebbi_unlock(&tc_list_lock);
}

void ebbi_tc_thread_exit(void *arg) {
    struct ebb_tcache *tc = arg;
    tl_exiting = true;
    if (!tc) {
        ebbi_tc = &ebbi_tc_empty;
        return;
    }
    /* Under the lock: a drain that failed puts the pointer back under it too. */
    ebbi_lock(&tc_list_lock);
    ebbi_tc = &ebbi_tc_empty;
    bool detached = tc->detached; /* drained while this thread slept: a few objects left */
    if (detached) {
        tc->detached = false;
        unpark_cache(tc);
    }
    set_busy(tc, true);
    ebbi_unlock(&tc_list_lock);
    if (detached) {
        recount(tc);
        tc_flush(tc);
        ebbi_lock(&tc_list_lock);
        tc->free_next = tc_free;
        tc_free = tc;
        ebbi_unlock(&tc_list_lock);
    } else if (tc->real) {
        tc_destroy(tc);
    }
}

void ebbi_tc_flush_self(void) {
    struct ebb_tcache *tc = ebbi_tc;
    if (!tc->real) return;
    set_busy(tc, true);
    tc_flush(tc);
    set_busy(tc, false);
}

/* Racy by design: lengths are read while their owners run. */
__attribute__((no_sanitize("thread"))) size_t ebbi_tc_cached_bytes(size_t *threads) {
    size_t bytes = 0;
    ebbi_lock(&tc_list_lock);
    for (int pass = 0; pass < 2; pass++)
        for (struct ebb_tcache *tc = pass ? tc_parked : tc_all; tc; tc = tc->next)
            for (unsigned cls = 1; cls < EBB_NCLASS; cls++)
                bytes += (size_t)*(volatile uint32_t *)&tc->lists[cls].len * csize(cls);
    if (threads) *threads = tc_threads;
    ebbi_unlock(&tc_list_lock);
    return bytes;
}

/* ---------------------------------------------------------------- idle threads
 * A thread that stopped calling malloc (parked in a pool, blocked on a queue) would keep
 * its cache for ever, and its fast paths take no lock, so no other thread may take its
 * objects while it could run.  The release thread empties such a cache when it can show
 * that the owner is not running: it is blocked in a system call, outside every slow path
 * (`busy` clear), and the kernel's count of its time slices (and its CPU time) did not
 * move while its ebbi_tc was pointed at the empty cache.  When the owner wakes, its next
 * call finds the empty cache and its slow path takes the record back (tc_get).
 *
 * A fast path makes no system call, but a signal handler that interrupted one may block
 * in one, with the owner's list half-read: a pop may hold the first object and its link
 * in registers, a push the first object.  Below those two the owner reads nothing until
 * its next call, so the drain keeps the first two objects of every list and takes the
 * rest; the pending fast path then finishes on a whole chain, and the owner counts its
 * lists again when it takes the record back.  So the fast paths mark nothing.
 * Off under ThreadSanitizer, which cannot see that proof and would report the owner's
 * earlier stores. */
#if defined(__SANITIZE_THREAD__)
#define IDLE_DRAIN 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define IDLE_DRAIN 0
#endif
#endif
#ifndef IDLE_DRAIN
#define IDLE_DRAIN 1
#endif

static size_t task_file(int tid, const char *name, char *buf, size_t n) {
    char path[64];
    ebbi_snprintf(path, sizeof path, "/proc/self/task/%d/%s", tid, name);
    return ebbi_read_file(path, buf, n);
}

/* The owner's CPU time and the number of times it was put on a CPU. */
static bool sched_info(int tid, uint64_t *run_ns, uint64_t *slices) {
    char buf[96];
    if (!task_file(tid, "schedstat", buf, sizeof buf)) return false;
    char *e;
    *run_ns = strtoull(buf, &e, 10);
    strtoull(e, &e, 10); /* time spent waiting for a CPU */
    *slices = strtoull(e, &e, 10);
    return true;
}

/* The owner is blocked in a system call: the file starts with its number (it reads
 * "running" or starts with -1 otherwise). */
static bool in_syscall(int tid) {
    char buf[32];
    return task_file(tid, "syscall", buf, sizeof buf) && buf[0] >= '0' && buf[0] <= '9';
}

static uint64_t idle_emptied; /* under tc_list_lock */

static bool owner_busy(struct ebb_tcache *tc) {
    return __atomic_load_n(&tc->busy, __ATOMIC_ACQUIRE);
}

/* Give the chain from head, NULL-terminated, to the central tier in batches. */
static void release_chain(unsigned cls, void *head) {
    const uint32_t batch = ebbi_classes[cls].batch;
    while (head) {
        void *last = head, *next;
        uint32_t k = 1;
        while (k < batch && (next = ebbi_next_checked(last))) last = next, k++;
        next = ebbi_next_checked(last);
        ebbi_set_next(last, NULL);
        ebbi_central_push(cls, head, k);
        head = next;
    }
}

/* The drain itself: every list keeps its first two objects (see above), with room for
 * just those; the rest of the objects and the budget go back. */
static void keep_two(struct ebb_tcache *tc) {
    for (unsigned cls = 1; cls < EBB_NCLASS; cls++) {
        struct ebb_tc_list *l = &tc->lists[cls];
        uint32_t keep = 0;
        void *second = l->head ? ebbi_next_checked(l->head) : NULL;
        if (l->head) keep = second ? 2 : 1;
        if (second) {
            void *rest = ebbi_next_checked(second);
            ebbi_set_next(second, NULL);
            release_chain(cls, rest);
        }
        l->len = keep;
        if (l->max > keep) {
            unclaim(tc, (size_t)(l->max - keep) * csize(cls));
            l->max = keep;
        }
    }
}

/* Under tc_list_lock: empty tc if its owner provably cannot run meanwhile. */
static bool idle_detach(struct ebb_tcache *tc) {
    uint64_t run1, slices1, run2, slices2;
    if (owner_busy(tc) || !in_syscall(tc->tid) || !sched_info(tc->tid, &run1, &slices1) || owner_busy(tc))
        return false;
    __atomic_store_n(tc->tls_slot, &ebbi_tc_empty, __ATOMIC_SEQ_CST);
    if (!in_syscall(tc->tid) || !sched_info(tc->tid, &run2, &slices2) || slices2 != slices1 ||
        run2 != run1 || owner_busy(tc)) {
        /* It ran: it may hold the old pointer, or wait for this lock in tc_get. */
        __atomic_store_n(tc->tls_slot, tc, __ATOMIC_SEQ_CST);
        return false;
    }
    keep_two(tc);
    unlink_cache(tc);
    park_cache(tc);
    tc->real = false;
    tc->detached = true;
    return true;
}

/* Empty the caches of threads that are blocked now and have not used a slow path for
 * EBB_RELEASE_MS (all: whatever their last use).  Returns how many were emptied. */
size_t ebbi_tc_drain_idle(bool all) {
    if (!IDLE_DRAIN) return 0;
    uint64_t now = ebbi_now_ms(), idle_ms = (uint64_t)ebbi_opt(EBB_OPT_RELEASE_MS);
    size_t n = 0;
    ebbi_lock(&tc_list_lock);
    for (struct ebb_tcache *tc = tc_all, *next; tc; tc = next) {
        next = tc->next;
        if (tc == ebbi_tc || !tc->claimed) continue;
        /* Idle: no slow path for EBB_RELEASE_MS.  A thread that lives on its cache's fast
         * paths looks idle too; emptying it costs it one refill. */
        if (!all && now - __atomic_load_n(&tc->last_tick_ms, __ATOMIC_RELAXED) < idle_ms) continue;
        n += idle_detach(tc);
    }
    idle_emptied += n;
    ebbi_unlock(&tc_list_lock);
    return n;
}

uint64_t ebbi_tc_idle_emptied(void) { return __atomic_load_n(&idle_emptied, __ATOMIC_RELAXED); }

/* ---------------------------------------------------------------- slow paths */
/* The caller's cache, marked busy (see idle_detach), or NULL for an exiting thread.
 * A thread whose cache was emptied while it slept gets the same record back. */
static struct ebb_tcache *tc_get(void) {
    struct ebb_tcache *tc = ebbi_tc;
    if (likely(tc->real)) {
        set_busy(tc, true);
        return tc;
    }
    if (tl_exiting) return NULL;
    tc = pthread_getspecific(tc_key);
    if (tc) {
        ebbi_lock(&tc_list_lock);
        bool detached = tc->detached;
        if (detached) {
            tc->detached = false;
            tc->real = true;
            tc->last_scavenge_ms = tc->last_tick_ms = ebbi_now_ms();
            unpark_cache(tc);
            link_cache(tc);
        }
        ebbi_tc = tc;
        set_busy(tc, true);
        ebbi_unlock(&tc_list_lock);
        if (detached) recount(tc);
        return tc;
    }
    tc = tc_create();
    if (tc) set_busy(tc, true);
    return tc;
}

/* Every 8th slow-path call looks at the clock: scavenging and release are not due more
 * often than every few hundred milliseconds. */
static void tick(struct ebb_tcache *tc) {
    if (++tc->ops_since_tick & 7) return;
    if (tc->claimed > share()) fit_share(tc);
    else if (tc->starved) rebalance(tc);
    uint64_t now = ebbi_now_ms();
    __atomic_store_n(&tc->last_tick_ms, now, __ATOMIC_RELAXED);
    if (now - tc->last_scavenge_ms >= SCAVENGE_MS) scavenge(tc, now);
    ebbi_release_tick();
}

static inline void *pop_object(struct ebb_tc_list *l) {
    void *p = l->head;
    if (unlikely(((uint64_t *)p)[1] != ebbi_free_key)) ebbi_corrupt_link(p);
    l->head = ebbi_next_checked(p);
    l->len--;
    ((uint64_t *)p)[1] = 0;
    return p;
}

static void *refill(struct ebb_tcache *tc, unsigned cls);

void *ebbi_malloc_slow(size_t n) {
    if (n > EBB_SMALL_MAX) return ebbi_large_alloc(n, 0, false);
    ebbi_ensure_init();
    unsigned cls = ebbi_size_to_class(n);
    struct ebb_tcache *tc = cls <= tc_top_cls ? tc_get() : NULL;
    if (unlikely(!tc)) { /* a big block, or an exiting thread: straight from the central tier */
        void *p;
        size_t got = ebbi_central_pop(cls, 1, &p);
        if (!got) goto oom;
        if (got > 1) ebbi_central_push(cls, ebbi_next(p), got - 1);
        ((uint64_t *)p)[1] = 0;
        ebbi_release_tick();
        return p;
    }
    void *p = refill(tc, cls);
    set_busy(tc, false);
    if (!p) errno = ENOMEM;
    return p;
oom:
    errno = ENOMEM;
    return NULL;
}

/* An object of class cls for the thread, its list refilled from the central tier. */
static void *refill(struct ebb_tcache *tc, unsigned cls) {
    struct ebb_tc_list *l = &tc->lists[cls];
    if (l->head) return pop_object(l); /* first call before init found class 0 */
    tc->slow[cls].active = 1;
    const uint32_t batch = ebbi_classes[cls].batch;
    uint32_t grow = l->max < batch ? 1 : batch;
    if (l->max + grow <= MAX_LEN && claim(tc, grow * csize(cls), l->max * csize(cls))) l->max += grow;
    uint32_t want = l->max < batch ? l->max : batch;
    if (!want) want = 1; /* no budget: serve the one object without caching more */
    void *head;
    uint32_t got = (uint32_t)ebbi_central_pop(cls, want, &head);
    if (!got) return NULL;
    l->head = head;
    l->len = got;
    void *p = pop_object(l);
    if (l->len > l->max) shrink_list(tc, cls, l->max);
    tick(tc);
    return p;
}

/* A small object whose list is full (or whose thread has no cache yet). */
void ebbi_tc_free_small(void *p, unsigned cls) {
    struct ebb_tcache *tc = cls <= tc_top_cls ? tc_get() : NULL;
    if (unlikely(!tc)) { /* p was checked by free's slow path */
        ((uint64_t *)p)[1] = ebbi_free_key;
        ebbi_set_next(p, NULL);
        ebbi_central_push(cls, p, 1);
        ebbi_release_tick();
        return;
    }
    struct ebb_tc_list *l = &tc->lists[cls];
    struct ebb_tc_slow *sl = &tc->slow[cls];
    sl->active = 1;
    const uint32_t batch = ebbi_classes[cls].batch;
    if (l->max < batch) {
        if (claim(tc, csize(cls), l->max * csize(cls))) l->max++;
    } else if (++sl->overflows > MAX_OVERFLOWS) {
        sl->overflows = 0;
        shrink_list(tc, cls, l->max - batch);
    }
    ((uint64_t *)p)[1] = ebbi_free_key;
    ebbi_set_next(p, l->head);
    l->head = p;
    l->len++;
    if (l->len > l->max) { /* full: send a batch (or all there is) to the central tier */
        uint32_t k = l->len < batch ? l->len : batch;
        if (l->len - k > l->max) k = l->len - l->max;
        release_objects(l, cls, k);
    }
    tick(tc);
    set_busy(tc, false);
}

/* ---------------------------------------------------------------- fork */
void ebbi_tc_fork_prepare(void) { ebbi_lock(&tc_list_lock); }
void ebbi_tc_fork_parent(void) { ebbi_unlock(&tc_list_lock); }

/* In the child only the forking thread exists: the other threads' caches go back to the
 * central tier instead of being lost.  Those threads may have been in the middle of a
 * fast-path push or pop when the parent forked: every store keeps the chain from `head`
 * whole and NULL-terminated, but `len` may be one off, so it is recounted from the chain
 * (an object caught between the two stores of a push is not on the chain: it stays lost).
 * The forking thread's own record, parked or not, is known by its TLS slot. */
void ebbi_tc_fork_child(void) {
    ebbi_lock_reset(&tc_list_lock);
    struct ebb_tcache *tc, *next;
    for (tc = tc_parked; tc; tc = next) {
        next = tc->next;
        if (tc->tls_slot == &ebbi_tc) {
            tc->tid = (int)syscall(SYS_gettid);
            continue;
        }
        unpark_cache(tc);
        tc->detached = false;
        recount(tc);
        tc_flush(tc);
        tc->free_next = tc_free;
        tc_free = tc;
    }
    for (tc = tc_all; tc; tc = next) {
        next = tc->next;
        if (tc->tls_slot == &ebbi_tc) {
            tc->tid = (int)syscall(SYS_gettid); /* the child's own thread id */
            continue;
        }
        recount(tc);
        tc_destroy(tc);
    }
}
