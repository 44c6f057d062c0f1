/* thread_cache.c: per-thread caches and the slow paths of malloc and free.
 *
 * Each list starts with room for nothing (max == 0) and grows at each slow path (an
 * underflow, or a free into a full list): by half its room plus one up to a batch, then
 * by a batch at a time (slow start: 1, 2, 4, 7, 11, ...), so a thread that allocates a
 * class once does not hoard a batch of it, and one that uses it a lot reaches a batch in
 * a handful of slow paths.  Growth is paid for from a budget: a thread's lists may hold
 * sum(max * size) <= EBB_THREAD_CACHE_ONE bytes, all threads together <=
 * EBB_THREAD_CACHE_MAX.  Lists the thread stopped using give back half their objects and
 * their room at each scavenge (about once a second of activity).
 *
 * A slow path leaves its list half full: an underflow fetches half the room (at most a
 * batch), an overflow gives back down to max minus that.  A list that a thread both
 * allocates from and frees into (a server's request mix) walks up and down at random;
 * started from the middle it reaches an end after about (max / 2)^2 of its operations,
 * against about max (or 1) when refills filled it to the top and overflows emptied it,
 * which is where a list whose room the budget holds at a batch or less used to be.
 * A list that only goes one way (a producer's, that only allocates, or a consumer's,
 * that only frees objects other threads allocated) is told by ONE_WAY slow paths of
 * the same kind in a row (a random walk does that one time in 2^(ONE_WAY-1)): it moves
 * a whole batch (or its room) at a time instead, filling the list at an underflow and
 * emptying it (down to max less a batch) at an overflow, so that it holds no more
 * than it passes on.  A list that frees also fill up (`returned`: an overflow since the
 * last scavenge) is no producer even when its underflows come in a row: a thread that
 * allocates a burst and then frees it itself (a request's blocks, a structure built and
 * dropped, glibc's bench-malloc-simple) grows its list until the burst fits, where a
 * producer's room stopped at a batch and every burst took a slow path per batch both
 * ways (bench-malloc-simple: 63 thousand slow paths of each kind in 2 million pairs of
 * 400-block bursts, against 30 with the rule; 25.1 G instructions in all against 23.4 G,
 * mimalloc 23.6 G).  Frees grow a list up to a batch only; beyond, room comes from
 * underflows, and a list that keeps overflowing at full size gives a batch of it back.
 *
 * The record's layout, its states and who may touch what in each: internal.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MAX_LEN 4096    /* objects in one list at most */
#define MAX_OVERFLOWS 3 /* overflows at full size before a list above a batch shrinks by one */
#define ONE_WAY 3       /* slow paths of one kind in a row that make a list one-way */
#define SCAVENGE_MS 1000

_Static_assert(offsetof(struct ebb_tcache, room) == EBB_TC_ROOM_OFF, "fast-path offset");
_Static_assert(offsetof(struct ebb_tcache, div) == EBB_TC_DIV_OFF, "fast-path offset");
_Static_assert(offsetof(struct ebb_tcache, prof_left) == EBB_TC_PROF_OFF, "fast-path offset");
_Static_assert(offsetof(struct ebb_tcache, cls_of) == EBB_TC_CLS_OF_OFF, "fast-path offset");
_Static_assert(EBB_TC_ROOM_UNIT == 1 << EBB_TC_ROOM_SHIFT, "room unit");
/* room's scale must exceed every block-start product (below the span's bytes) and stay
 * far below every reciprocal (see room in internal.h) */
_Static_assert(((int64_t)(MAX_LEN + 2) << EBB_TC_ROOM_SHIFT) < ((int64_t)1 << 48), "room scale");
_Static_assert(MAX_LEN < 1 << 16 && MAX_OVERFLOWS < 255, "ebb_tc_slow's field widths");
_Static_assert(EBB_TC_DIRECT <= 1024, "cls_of covers classes thread caches may keep");

/* The end of every list: its decode (word0 ^ word1 ^ mix = mix ^ 1) is odd, whatever
 * the keys (see free lists in internal.h), so malloc's fast path never takes it. */
EBB_ALIGN(16) const uint64_t ebbi_tc_end[2] = {1, 0};

struct ebb_link_keys ebbi_link_keys;
uint64_t ebbi_link_mix;
const uint64_t ebbi_link_tagmask = ~((((uint64_t)1 << EBB_ADDR_BITS) - 1) & ~(uint64_t)(EBB_MIN_ALIGN - 1));

void ebbi_link_keys_init(void) {
    uint64_t key = ebbi_random64() | 1;
    uint64_t secret = (ebbi_random64() & ~(uint64_t)15) | (key & 15);
    if (!((secret ^ key) >> EBB_ADDR_BITS)) secret ^= (uint64_t)1 << 63;
    ebbi_link_keys.key = key;
    ebbi_link_keys.secret = secret;
    /* Relaxed: malloc's fast path reads it before initialisation too (on the end marker,
     * whose check fails whatever mix is). */
    __atomic_store_n(&ebbi_link_mix, secret ^ key, __ATOMIC_RELAXED);
}

const struct ebb_tcache ebbi_tc_empty = {.head = {[0 ... EBB_NCLASS - 1] = (void *)ebbi_tc_end}};
EBB_TLS struct ebb_tcache *ebbi_tc = (struct ebb_tcache *)&ebbi_tc_empty;
EBB_TLS unsigned ebbi_tc_busy;
/* Set while the thread runs its exit destructors: it gets no new cache after that. */
static EBB_TLS bool tl_exiting;

static ebb_lock_t tc_list_lock; /* the list of caches, the free records, the budget */
static struct ebb_tcache *tc_all, *tc_free;
/* Records emptied while their threads slept (idle_detach): not on tc_all, linked through
 * prev/next, until their owners take them back or exit. */
static struct ebb_tcache *tc_parked;
static size_t tc_threads;
/* Bytes not claimed by any thread.
 *
 * The bound on what the caches hold.  A record's claimed is sum(max * size) over its
 * lists (verify_claims), claim() takes from budget_left by CAS before it adds to claimed
 * and unclaim() gives back after, so the claims of all records (owned and parked; free
 * ones claim nothing) plus budget_left are at most EBB_THREAD_CACHE_MAX, the total as it
 * grew (update_share: max(the CPU-based total, threads * TC_PER_THREAD up to
 * TC_GROWN_MAX), so above TC_GROWN_MAX on more than 32 CPUs).  A list holds at most its
 * max objects whenever its owner is outside a slow path: free's fast path pushes only
 * while room is at least one, and every slow path that lets room go below 0 (free's push
 * before its release, refill's chain before shrink_list, recount) brings it back before
 * it returns.  So with every owner outside a slow path the bytes cached (parked records
 * count their max, at most the two a drain kept) are at most the claims, and these at
 * most the total; test_tc_verify counts it per list for 400 threads, busy and emptied.
 * The per-thread transient: an owner inside a slow path may hold one object above its
 * list's max (a free's push before the release, or a refill's one object with max 0),
 * and ebbi_tc_cached_bytes, which reads max and then room of running owners without
 * order, may count one list off by the grow or shrink under way (at most share/8 bytes,
 * or one object for a list's first claim).  Claims are never above the total, even for
 * a moment: the one object a list with no room may take is claimed like any other. */
static _Atomic int64_t budget_left;
/* A thread's fair part of the budget: EBB_THREAD_CACHE_MAX over the threads with a
 * cache, at most EBB_THREAD_CACHE_ONE.  Written under tc_list_lock, read anywhere. */
static _Atomic size_t tc_share;
static pthread_key_t tc_key;
static bool tc_key_made; /* written once, at initialisation */
/* The biggest class thread caches hold (EBB_THREAD_CACHE_BLOCK): bigger blocks go to and
 * from the central tier, where a freed block's span can go straight back to the page heap. */
static unsigned tc_top_cls;

static inline size_t csize(unsigned cls) { return ebbi_classes[cls].size; }

/* CPUs this process may run on at once: the cgroup quota if there is one, else the
 * affinity mask. */
static double usable_cpus(void) {
    double q = ebbi_cgroup_cpus(), n = ebbi_os_cpus_allowed();
    return q > 0 && q < n ? q : n;
}

/* Without EBB_THREAD_CACHE_MAX a thread's share is never below TC_PER_THREAD while the
 * total allows it: the total grows to the most threads that had a cache at once times
 * TC_PER_THREAD, up to TC_GROWN_MAX, so that hundreds of threads on a few CPUs (a JVM's
 * pools) do not get a few KiB each and refill and flush their lists at every turn.  The
 * share itself is the CPU-based total over the threads (at least TC_PER_THREAD), not the
 * grown total over them: after a burst of threads, a few steady ones keep the share they
 * had before it, so what all caches may hold follows the threads that have one now, at
 * most max(CPU-based total, threads * TC_PER_THREAD).  Beyond TC_GROWN_MAX /
 * TC_PER_THREAD threads the share is the total over the threads, so that every thread
 * gets its part (a floor above that let the first threads claim it all and left the
 * others none).  The total only grows, under tc_list_lock, with budget_left raised by
 * as much, so for a reader holding that lock (the verifier) budget_left plus the claims
 * never exceeds it; claim() reads neither the total nor this option, only the share and
 * budget_left's CAS, which is the bound.
 *
 * Why 256 KiB: a list that is taken from and given to at random (a server's request
 * mix) takes a slow path about once in (room/2 + 1)^2 of its operations, and a thread of
 * such a mix over blocks of 16 B-2 KiB at 128 KiB had its lists of 1-2 KiB blocks at
 * room 2 (a slow path every few of their operations) and none for its blocks of 4-16
 * KiB; ebb-bench's threads-64 took a slow path at 7% of its mallocs and frees there, and
 * 3.7% at 256 KiB (callgrind), its peak RSS 32 -> 34-35 MiB (glibc 51-53).  Moving room
 * between a thread's lists by their misses instead (four policies tried) did not lower
 * the count: a share of 128 KiB is too small for this mix however it is split.  Only
 * threads that take slow paths claim room, and the caches of threads that sleep are
 * emptied (idle_detach), so what this costs is held only while that many threads are
 * busy at once. */
#define TC_PER_THREAD ((int64_t)256 << 10)
#define TC_GROWN_MAX ((int64_t)64 << 20)
static int64_t base_total; /* the CPU-based total, when budget_grows */
static bool budget_grows;

void ebbi_tc_init(void) {
    int64_t total = ebbi_opt(EBB_OPT_THREAD_CACHE_MAX);
    budget_grows = total <= 0;
    if (total <= 0) {
        total = (int64_t)(usable_cpus() * (2 << 20));
        if (total < (4 << 20)) total = 4 << 20;
        ebbi_options_set(EBB_OPT_THREAD_CACHE_MAX, total);
        base_total = total;
    }
    if (ebbi_opt(EBB_OPT_THREAD_CACHE_ONE) > total) ebbi_options_set(EBB_OPT_THREAD_CACHE_ONE, total);
    atomic_store(&budget_left, total);
    int64_t top = ebbi_opt(EBB_OPT_THREAD_CACHE_BLOCK);
    for (unsigned c = 1; c < EBB_NCLASS && (int64_t)ebbi_classes[c].size <= top; c++) tc_top_cls = c;
    if (pthread_key_create(&tc_key, ebbi_tc_thread_exit) == 0)
        __atomic_store_n(&tc_key_made, true, __ATOMIC_RELEASE);
}

bool ebbi_tc_is_key(unsigned key) { return __atomic_load_n(&tc_key_made, __ATOMIC_ACQUIRE) && key == tc_key; }

/* ---------------------------------------------------------------- the owner's handshake
 * `busy` counts the slow paths under way on this thread (nested ones come from signal
 * handlers that call malloc from outside it, or from pthread_setspecific in tc_create).
 * It is raised before the slow path reads its record pointer, and lowered after the
 * slow path's last write to the record; the signal fences keep the compiler from moving
 * record accesses across either (the drainer only looks at an owner that is stopped, so
 * the order in which this thread's own instructions ran is what matters, see
 * idle_detach).  The drainer reads it through tc->busy_slot. */
static inline void busy_enter(void) {
    __atomic_store_n(&ebbi_tc_busy, ebbi_tc_busy + 1, __ATOMIC_RELAXED);
    atomic_signal_fence(memory_order_seq_cst);
}

static inline void busy_exit(struct ebb_tcache *tc) {
    if (EBB_TSAN && tc) ebbi_tsan_release(tc);
    atomic_signal_fence(memory_order_seq_cst);
    __atomic_store_n(&ebbi_tc_busy, ebbi_tc_busy - 1, __ATOMIC_RELEASE);
}

static inline void set_tls(struct ebb_tcache **slot, const struct ebb_tcache *tc) {
    __atomic_store_n(slot, (struct ebb_tcache *)tc, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------- budget */
/* Called with tc_list_lock held, after tc_threads changed. */
static void update_share(void) {
    if (budget_grows) {
        int64_t want = (int64_t)tc_threads * TC_PER_THREAD, cur = ebbi_opt(EBB_OPT_THREAD_CACHE_MAX);
        if (want > TC_GROWN_MAX) want = TC_GROWN_MAX;
        if (want > cur) {
            atomic_fetch_add(&budget_left, want - cur);
            ebbi_options_set(EBB_OPT_THREAD_CACHE_MAX, want);
        }
    }
    size_t total = (size_t)ebbi_opt(EBB_OPT_THREAD_CACHE_MAX),
           one = (size_t)ebbi_opt(EBB_OPT_THREAD_CACHE_ONE);
    size_t n = tc_threads ? tc_threads : 1, share = total / n;
    if (budget_grows) { /* the floor, unless the total (at TC_GROWN_MAX) cannot give it to all */
        size_t fair = (size_t)base_total / n;
        if (fair < (size_t)TC_PER_THREAD) fair = (size_t)TC_PER_THREAD;
        if (fair < share) share = fair;
    }
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
    __atomic_store_n(&tc->claimed, tc->claimed + bytes, __ATOMIC_RELAXED);
    return true;
}

/* claimed is read by the drainer before it knows the owner is stopped (see
 * ebbi_tc_drain_idle), hence the relaxed stores. */
static void unclaim(struct ebb_tcache *tc, size_t bytes) {
    __atomic_store_n(&tc->claimed, tc->claimed - bytes, __ATOMIC_RELAXED);
    atomic_fetch_add(&budget_left, (int64_t)bytes);
}

/* ---------------------------------------------------------------- lists */
/* room[] counts in units of EBB_TC_ROOM_ONE (see internal.h); the slow paths let it go
 * below 0 for a moment and never leave it so. */
static inline int64_t room_of(const struct ebb_tcache *tc, unsigned cls) {
    return tc->room[cls] >> EBB_TC_ROOM_SHIFT;
}
static inline void room_add(struct ebb_tcache *tc, unsigned cls, int64_t n) {
    tc->room[cls] += n * EBB_TC_ROOM_ONE;
}
static inline uint32_t list_len(const struct ebb_tcache *tc, unsigned cls) {
    return (uint32_t)((int64_t)tc->slow[cls].max - room_of(tc, cls));
}

/* Objects a slow path moves for a list with room for max: half of it, at most a batch,
 * at least one. */
static inline uint32_t move_size(uint32_t max, uint32_t batch) {
    uint32_t t = max / 2;
    return t < 1 ? 1 : t > batch ? batch : t;
}

/* The list's last slow path was an underflow (dir -1) or an overflow (+1): true when it
 * made ONE_WAY of the same kind in a row. */
static inline bool one_way(struct ebb_tc_slow *sl, int dir) {
    int r = sl->run;
    r = (r > 0) == (dir > 0) && r ? r + dir : dir;
    if (r > 100 || r < -100) r -= dir;
    sl->run = (int8_t)r;
    return r >= ONE_WAY || r <= -ONE_WAY;
}

/* Room a list of room max asks for at a slow path (slow start below a batch). */
static inline uint32_t grow_step(uint32_t max, uint32_t batch) {
    uint32_t g = max < batch ? max / 2 + 1 : batch;
    return max + g > MAX_LEN ? MAX_LEN - max : g;
}

/* The list grows by `more` objects of room. */
static void grow_max(struct ebb_tcache *tc, unsigned cls, uint32_t more) {
    tc->slow[cls].max += more;
    room_add(tc, cls, more);
}

/* Give the first n objects of a list to the central tier.  Every object on a list was
 * checked when it was freed (class from the page map, the start of a block, not free
 * already); the links between them are checked on the way. */
static void release_objects(struct ebb_tcache *tc, unsigned cls, uint32_t n) {
    const uint32_t batch = ebbi_classes[cls].batch;
    while (n) {
        uint32_t k = n < batch ? n : batch;
        void *head = tc->head[cls], *last = head;
        for (uint32_t i = 1; i < k; i++) last = ebbi_next_checked(last);
        tc->head[cls] = ebbi_next_checked(last);
        ebbi_set_next(last, NULL);
        room_add(tc, cls, k);
        n -= k;
        ebbi_central_push(cls, head, last, k);
    }
}

/* Lower a list's room to new_max, giving back objects above it and the budget. */
static void shrink_list(struct ebb_tcache *tc, unsigned cls, uint32_t new_max) {
    uint32_t len = list_len(tc, cls);
    if (len > new_max) release_objects(tc, cls, len - new_max);
    uint32_t max = tc->slow[cls].max;
    if (max > new_max) {
        unclaim(tc, (size_t)(max - new_max) * csize(cls));
        tc->slow[cls].max = new_max;
        room_add(tc, cls, -(int64_t)(max - new_max));
    }
}

/* A thread over its share (threads were added since it grew) gives back room, the
 * biggest blocks first: they buy the fewest hits per byte.  Each list keeps half. */
static void fit_share(struct ebb_tcache *tc) {
    size_t target = share() - share() / 8;
    for (unsigned cls = EBB_NCLASS - 1; cls > 0 && tc->claimed > target; cls--) {
        uint32_t max = tc->slow[cls].max;
        if (max) shrink_list(tc, cls, max / 2);
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
        size_t room = (size_t)tc->slow[cls].max * csize(cls);
        if (room > best_room) best = cls, best_room = room;
    }
    if (best) shrink_list(tc, best, tc->slow[best].max / 2);
}

static void scavenge(struct ebb_tcache *tc, uint64_t now) {
    tc->last_scavenge_ms = now;
    for (unsigned cls = 1; cls < EBB_NCLASS; cls++) {
        struct ebb_tc_slow *sl = &tc->slow[cls];
        if (!sl->active && sl->max) shrink_list(tc, cls, list_len(tc, cls) / 2); /* unused lately */
        sl->active = 0;
        sl->returned = 0;
    }
}

/* ---------------------------------------------------------------- cache life */
/* Under tc_list_lock: the list of caches the budget is shared by. */
static void link_cache(struct ebb_tcache *tc) {
    tc->prev = NULL;
    tc->next = tc_all;
    if (tc_all) tc_all->prev = tc;
    tc_all = tc;
    __atomic_store_n(&tc_threads, tc_threads + 1, __ATOMIC_RELAXED);
    update_share();
}

static void unlink_cache(struct ebb_tcache *tc) {
    if (tc->prev) tc->prev->next = tc->next;
    else tc_all = tc->next;
    if (tc->next) tc->next->prev = tc->prev;
    __atomic_store_n(&tc_threads, tc_threads - 1, __ATOMIC_RELAXED);
    update_share();
}

static void park_cache(struct ebb_tcache *tc) {
    tc->prev = NULL;
    tc->next = tc_parked;
    if (tc_parked) tc_parked->prev = tc;
    tc_parked = tc;
}

static void unpark_cache(struct ebb_tcache *tc) {
    if (tc->prev) tc->prev->next = tc->next;
    else tc_parked = tc->next;
    if (tc->next) tc->next->prev = tc->prev;
}

/* The lists' lengths counted again from their chains, after a drain or a fork that may
 * have cut a fast path short (each of its stores leaves the chain whole, but room may be
 * off by one); objects above max go back.  Only the owner (or the only thread) calls this. */
static void recount(struct ebb_tcache *tc) {
    for (unsigned cls = 1; cls < EBB_NCLASS; cls++) {
        uint32_t n = 0;
        for (void *o = tc->head[cls]; o != EBB_TC_END; o = ebbi_next_checked(o))
            if (++n > MAX_LEN + 2) ebbi_corrupt_link(o); /* a cycle: no list is that long */
        tc->room[cls] = ((int64_t)tc->slow[cls].max - n) * EBB_TC_ROOM_ONE;
        if (n > tc->slow[cls].max) shrink_list(tc, cls, tc->slow[cls].max);
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
    for (unsigned cls = 0; cls < EBB_NCLASS; cls++) {
        tc->head[cls] = EBB_TC_END;
        tc->div[cls] = cls && cls <= tc_top_cls ? ebbi_class_div[cls] : 0;
    }
    for (size_t n = 0; n <= EBB_TC_DIRECT; n++) tc->cls_of[n] = (uint8_t)ebbi_size_to_class(n);
    tc->real = true;
    tc->last_scavenge_ms = ebbi_now_ms();
    tc->tid = ebbi_os_gettid();
    tc->last_tick_ms = tc->last_scavenge_ms;
    tc->tls_slot = &ebbi_tc;
    tc->busy_slot = &ebbi_tc_busy;
    ebbi_lock(&tc_list_lock);
    link_cache(tc);
    set_tls(&ebbi_tc, tc); /* under the lock: a drainer that picks tc up sees it in place */
    ebbi_unlock(&tc_list_lock);
    /* May allocate (for keys past the first 32): ebbi_tc is already set. */
    pthread_setspecific(tc_key, tc);
    return tc;
}

static void tc_flush(struct ebb_tcache *tc) {
    for (unsigned cls = 1; cls < EBB_NCLASS; cls++) shrink_list(tc, cls, 0);
}

/* A cache whose thread is gone (or going): its objects, counted again first (a parked
 * record's lists, or those of a thread a fork cut short, may be off), go back, and the
 * record goes on the free list. */
static void tc_destroy(struct ebb_tcache *tc) {
    recount(tc);
    tc_flush(tc);
    ebbi_lock(&tc_list_lock);
    if (tc->detached) unpark_cache(tc);
    else unlink_cache(tc);
    tc->detached = tc->real = false;
    tc->free_next = tc_free;
    tc_free = tc;
    ebbi_unlock(&tc_list_lock);
}

void ebbi_tc_thread_exit(void *arg) {
    struct ebb_tcache *tc = arg;
    tl_exiting = true;
    busy_enter(); /* until the record is off every list the drainer walks */
    if (!tc) {
        set_tls(&ebbi_tc, &ebbi_tc_empty);
        busy_exit(NULL);
        return;
    }
    ebbi_lock(&tc_list_lock);
    set_tls(&ebbi_tc, &ebbi_tc_empty);
    ebbi_unlock(&tc_list_lock);
    if (tc->real || tc->detached) tc_destroy(tc); /* detached: drained while it slept */
    busy_exit(NULL);
}

void ebbi_tc_flush_self(void) {
    busy_enter();
    struct ebb_tcache *tc = ebbi_tc_mine();
    if (tc->real) tc_flush(tc);
    busy_exit(tc);
}

size_t ebbi_tc_list_len(unsigned cls) {
    struct ebb_tcache *tc = ebbi_tc_mine();
    return tc->real ? list_len(tc, cls) : 0;
}

uint32_t ebbi_tc_list_max(unsigned cls) {
    struct ebb_tcache *tc = ebbi_tc_mine();
    return tc->real ? tc->slow[cls].max : 0;
}

/* What the caches hold, with the claims and the lists over their max beside it.  Racy by
 * design: lengths are read while their owners run (the transient at budget_left above;
 * exact when every owner is outside a slow path).  A parked record keeps at most max
 * objects (see keep_two), give or take the one call its owner was stopped in. */
__attribute__((no_sanitize("thread"))) void ebbi_tc_census(struct ebb_tc_census *c) {
    memset(c, 0, sizeof *c);
    ebbi_lock(&tc_list_lock);
    for (int pass = 0; pass < 2; pass++)
        for (struct ebb_tcache *tc = pass ? tc_parked : tc_all; tc; tc = tc->next) {
            size_t room_bytes = 0;
            pass ? c->parked++ : c->records++;
            for (unsigned cls = 1; cls < EBB_NCLASS; cls++) {
                int64_t max = *(volatile uint16_t *)&tc->slow[cls].max;
                int64_t room = *(volatile int64_t *)&tc->room[cls] >> EBB_TC_ROOM_SHIFT;
                int64_t n = pass ? max : max - room;
                room_bytes += (size_t)max * csize(cls);
                if (n > 0) c->held_bytes += (size_t)n * csize(cls);
                if (n > max) c->over_lists++, c->over_bytes += (size_t)(n - max) * csize(cls);
            }
            size_t claimed = __atomic_load_n(&tc->claimed, __ATOMIC_RELAXED);
            c->room_bytes += room_bytes;
            c->claimed += claimed;
            c->bad_claims += claimed != room_bytes;
        }
    c->left = atomic_load_explicit(&budget_left, memory_order_relaxed);
    c->total = ebbi_opt(EBB_OPT_THREAD_CACHE_MAX);
    c->threads = tc_threads;
    ebbi_unlock(&tc_list_lock);
}

size_t ebbi_tc_cached_bytes(size_t *threads) {
    struct ebb_tc_census c;
    ebbi_tc_census(&c);
    if (threads) *threads = c.threads;
    return c.held_bytes;
}

/* ---------------------------------------------------------------- idle threads
 * A thread that stopped calling malloc (parked in a pool, blocked on a queue) would keep
 * its cache for ever, and its fast paths take no lock and mark nothing, so no other
 * thread may take its objects while it could run.  The release thread (and malloc_trim)
 * empties such a cache when it can prove the owner is stopped, by this handshake, under
 * tc_list_lock (idle_detach):
 *
 *   1. the owner's busy count is 0;
 *   2. the owner's TLS pointer is pointed at the empty cache;
 *   3. proof 1: the owner's schedstat (CPU time, times put on a CPU) is read, then
 *      /proc/self/task/TID/syscall says it is blocked in a system call; busy is still 0;
 *   4. the first two objects of every list and the link after them are read;
 *   5. proof 2: still blocked, schedstat unchanged, busy still 0: the owner did not run
 *      at all from the first schedstat read to the second, so what 4 read is what it
 *      left where it is stopped now;
 *   6. the rest of each chain (from the third object) goes to the central tier, the
 *      second object's link now ends the list, each list's max becomes what it kept,
 *      and the record is parked.
 * If 3 or 5 fails, the pointer is put back and nothing was written.
 *
 * Why this holds on a weakly ordered CPU.  Reading /proc/.../syscall of another task
 * makes the kernel wait for it to be off its CPU and take that task's runqueue lock
 * (wait_task_inactive); the owner's scheduler released that lock after switching it
 * out, with a full barrier before (the scheduler's smp_mb__after_spinlock).  So
 * everything the owner executed before it blocked happens-before whatever the drainer
 * does after its locked read, and anything the owner executes after waking
 * happens-after the lock that step 5 took, so after step 4: step 4 reads exactly the
 * state the owner is stopped in.  The order within step 3 matters: schedstat is read
 * first, so that an owner which wakes, runs and blocks again between the two reads of
 * step 3 (its last stores are then ordered by the locked read) or after them (step 4
 * might see those stores only in part: schedstat takes no lock) has changed schedstat by
 * step 5 either way.  Which state the owner can be stopped in is a question of its own
 * program order only, since a stopped thread's memory is seen as it left it: that order
 * is pinned against the compiler (atomic_signal_fence; the x86-64 fast paths are
 * assembly), and what the CPU reorders is invisible to the thread itself and settled by
 * the kernel entry.
 *
 * Where the owner can be stopped (by a signal handler that blocks, HotSpot's suspend
 * protocol, or in a system call of its own):
 *   - outside ebbmalloc, or in a slow path before it raised busy: it has not read its
 *     pointer for this call, and will read the empty cache's after waking (the pointer
 *     was swapped before step 3's lock, so the owner sees it);
 *   - in a slow path after raising busy: step 1, 3 or 5 sees busy, the drainer backs
 *     off (this closes the window where a handler stopped the owner between reading its
 *     pointer and marking itself busy);
 *   - in a fast path, which does not look at busy (nor does ebbi_malloc_miss or
 *     ebbi_malloc_medium, which read the same fields as one): it may hold the record's
 *     address and at most the first object of one list and that object's successor (a
 *     pop), or the first object (a push).  Step 6 writes neither of those objects nor any
 *     field a fast path writes (head, room, prof_left), and the drain decodes links with
 *     the secret alone, not with the second word a pop clears; so after waking the owner
 *     finishes that one call on a whole chain.  Its next call finds the empty cache and
 *     goes to the slow path, which waits for tc_list_lock, takes the record back and
 *     counts its lists again (room may be one off).  A fast path stores an object's words
 *     before the head that publishes it, so a chain read at step 4 is whole at every
 *     point.
 *
 * malloc_trim(0) keeps to the same idleness as the release thread: no slow path and no
 * CPU time for EBB_RELEASE_MS (seen_run_ns), so that the JDK's periodic trim does not
 * empty the caches of busy threads that happen to be in a system call. */

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

static uint64_t idle_emptied; /* read by the stats without the lock */

static bool owner_busy(struct ebb_tcache *tc) {
    return __atomic_load_n(tc->busy_slot, __ATOMIC_ACQUIRE) != 0;
}

/* Give the chain from head, ended by EBB_TC_END, to the central tier in batches. */
static void release_chain(unsigned cls, void *head) {
    const uint32_t batch = ebbi_classes[cls].batch;
    while (head != EBB_TC_END) {
        void *last = head, *next;
        uint32_t k = 1;
        while (k < batch && (next = ebbi_next_checked(last)) != EBB_TC_END) last = next, k++;
        next = ebbi_next_checked(last);
        ebbi_set_next(last, NULL);
        ebbi_central_push(cls, head, last, k);
        head = next;
    }
}

/* What step 4 read of one list: its first two objects and the link after them. */
struct kept {
    void *second; /* NULL: the list had fewer than two */
    void *rest;   /* the third object, or EBB_TC_END */
    uint8_t n;    /* objects kept: 0, 1 or 2 */
};

/* The links step 4 follows may be being written by an owner that is about to fail
 * step 5 (it was resumed after step 3, popped the head and handed it to the program,
 * which wrote over its link): so a link is followed only to an object inside a
 * small-object span of the list's class, whose memory is always mapped (the page heap
 * never unmaps its chunks; blocks with mappings of their own, which are unmapped when
 * freed, are never small), and anything else aborts the drain, as a failed proof does.
 * Corruption is reported once the proofs hold.  The test is made under the page heap
 * lock (snapshot holds it; the lock order allows it under tc_list_lock), under which
 * nothing becomes or stops being a small span and the page map's span entries do not
 * change (new_span, the page heap's frees and own mappings all change them under it):
 * so the record the page map names is whole, its fields from one life, and an address
 * that passes is page-heap memory for good.  (Read without the lock, a record freed and
 * reused twice meanwhile could give fields of two lives that passed together, for an
 * address of an own mapping about to be unmapped.) */
static void *peek_next(void *o) { return (void *)(*(volatile uintptr_t *)o ^ ebbi_link_secret); }
static bool aligned(const void *o) { return !((uintptr_t)o & (EBB_MIN_ALIGN - 1)); }
static bool plausible(unsigned cls, const void *o) {
    uintptr_t a = (uintptr_t)o;
    if (a & ebbi_link_tagmask) return false; /* misaligned, or beyond the address bits */
    struct ebb_span *s = ebbi_pm_span_acquire(a);
    if (!s || s->state != SPAN_SMALL || s->cls != cls || s->npages != ebbi_classes[cls].pages) return false;
    /* the block size is the list's class's */
    uintptr_t end = s->start + (s->npages << EBB_PAGE_SHIFT);
    return a >= end - ebbi_class_objects(cls) * ebbi_classes[cls].size && a < end;
}

#if EBB_TSAN
void AnnotateIgnoreReadsBegin(const char *file, int line);
void AnnotateIgnoreReadsEnd(const char *file, int line);
#define SNAPSHOT_BEGIN() AnnotateIgnoreReadsBegin(__FILE__, __LINE__)
#define SNAPSHOT_END() AnnotateIgnoreReadsEnd(__FILE__, __LINE__)
#else
#define SNAPSHOT_BEGIN() ((void)0)
#define SNAPSHOT_END() ((void)0)
#endif

/* Step 4.  ThreadSanitizer is told to ignore these reads: they may race with an owner
 * that is about to fail step 5, and are used only if it does not (under TSan, step 6
 * reads them again once the owner is proven stopped and released, see below). */
static bool snapshot(struct ebb_tcache *tc, struct kept *k) {
    bool ok = true;
    ebbi_lock(&ebbi_ph_lock); /* for plausible() */
    SNAPSHOT_BEGIN();
    for (unsigned cls = 1; cls <= tc_top_cls && ok; cls++) {
        void *h = *(void *volatile *)&tc->head[cls];
        k[cls].n = 0;
        k[cls].second = NULL;
        if (h == EBB_TC_END) continue;
        if (!(ok = plausible(cls, h))) break;
        void *second = peek_next(h);
        k[cls].n = 1;
        if (second == EBB_TC_END) continue;
        if (!(ok = plausible(cls, second))) break;
        k[cls].n = 2;
        k[cls].second = second;
        k[cls].rest = peek_next(second);
        ok = aligned(k[cls].rest);
    }
    SNAPSHOT_END();
    ebbi_unlock(&ebbi_ph_lock);
    return ok;
}

/* Step 6, with the owner proven stopped at step 5. */
static void keep_two(struct ebb_tcache *tc, const struct kept *k) {
    for (unsigned cls = 1; cls < EBB_NCLASS; cls++) {
        uint32_t keep = cls <= tc_top_cls ? k[cls].n : 0;
        if (keep == 2) {
            /* Under TSan only: the owner may still finish the one fast path a signal
             * handler (or TSan's own runtime, blocked in a system call inside the
             * instrumented path) cut short, pushing onto the two kept objects after this
             * read: by design (see above), so the read is not reported as a race. */
            SNAPSHOT_BEGIN();
            bool changed = EBB_TSAN && ebbi_next(ebbi_next(tc->head[cls])) != k[cls].rest;
            SNAPSHOT_END();
            if (changed) ebbi_fatal("internal check failed: drained list changed after its owner stopped");
            ebbi_set_next(k[cls].second, EBB_TC_END);
            if (k[cls].rest != EBB_TC_END) {
                ebbi_next_checked(k[cls].rest); /* reports a corrupted link */
                release_chain(cls, k[cls].rest);
            }
        }
        uint32_t max = tc->slow[cls].max;
        if (max > keep) {
            unclaim(tc, (size_t)(max - keep) * csize(cls));
            tc->slow[cls].max = keep;
        }
    }
}

/* Under tc_list_lock: empty tc if its owner provably is stopped (the steps above). */
static bool idle_detach(struct ebb_tcache *tc) {
    static struct kept k[EBB_NCLASS]; /* under tc_list_lock */
    uint64_t run1, slices1, run2, slices2;
    if (owner_busy(tc)) return false;
    set_tls(tc->tls_slot, &ebbi_tc_empty);
    /* schedstat before the first locked read: see step 3 above */
    if (!sched_info(tc->tid, &run1, &slices1) || !in_syscall(tc->tid) || owner_busy(tc) || !snapshot(tc, k) ||
        !in_syscall(tc->tid) || !sched_info(tc->tid, &run2, &slices2) || run2 != run1 || slices2 != slices1 ||
        owner_busy(tc)) {
        /* It ran, or could not be shown not to: it may hold the old pointer, or wait for
         * this lock in tc_get, which takes its own record back either way. */
        set_tls(tc->tls_slot, tc);
        return false;
    }
    ebbi_tsan_acquire(tc); /* the owner's operations so far: see ebbi_tsan_release */
    keep_two(tc, k);
    unlink_cache(tc);
    park_cache(tc);
    tc->real = false;
    tc->detached = true;
    return true;
}

/* Whether tc's owner counts as idle now: no slow path and no CPU time for idle_ms.  Its
 * CPU time is watched from half that time after its last slow path on.
 *
 * A thread that wakes again and again without allocating (a timer thread, a JVM's
 * periodic task, a pool thread that polls) is never idle by that rule, and reading its
 * schedstat at every pass cost the release thread 1.7% of a CPU with 300 threads that
 * woke every 20 ms (17 ms a second, against 5 with the same threads waking every second).
 * So on the release thread's passes (on_backoff), each time its CPU time is seen to have
 * moved while it took no slow path, the next look waits twice as long as the last wait
 * (from idle_ms / 4 up to LOOK_GAP_MAX times idle_ms); any clock update of its own slow
 * paths (last_tick_ms moved) starts the gap again.  A thread that goes to sleep just after
 * a look is then seen to have moved at the next look (G later, G the gap) and unchanged at
 * the one after: emptied up to 2 * LOOK_GAP_MAX * idle_ms after its last run, plus a
 * pass, instead of idle_ms.  malloc_trim(0) looks at every quiet thread whatever its gap
 * (one look empties a thread whose CPU time has not moved since a look idle_ms ago).
 * look_after_ms, look_gap_ms and look_tick_ms are the drainer's alone (under
 * tc_list_lock), as seen_run_ns is. */
#define LOOK_GAP_MAX 8
static uint64_t sched_looks; /* schedstat reads here, for tests (under tc_list_lock) */
static bool idle_long_enough(struct ebb_tcache *tc, uint64_t now, uint64_t idle_ms, bool on_backoff) {
    uint64_t tick = __atomic_load_n(&tc->last_tick_ms, __ATOMIC_RELAXED);
    if (tick != tc->look_tick_ms) { /* it took slow paths since: looked at as soon as it stops */
        tc->look_tick_ms = tick;
        tc->look_gap_ms = 0;
        tc->look_after_ms = 0;
    }
    uint64_t quiet = now - tick;
    if (quiet < idle_ms / 2) return false;
    if (on_backoff && now < tc->look_after_ms) return false;
    uint64_t run, slices;
    sched_looks++;
    if (!sched_info(tc->tid, &run, &slices)) return false;
    if (run != tc->seen_run_ns || !tc->seen_since_ms) {
        if (tc->seen_since_ms) { /* it ran since the last look, without a slow path */
            uint64_t gap = tc->look_gap_ms ? (uint64_t)tc->look_gap_ms * 2 : idle_ms / 4;
            if (gap > LOOK_GAP_MAX * idle_ms) gap = LOOK_GAP_MAX * idle_ms;
            tc->look_gap_ms = (uint32_t)(gap < UINT32_MAX ? gap : UINT32_MAX);
            tc->look_after_ms = now + tc->look_gap_ms;
        }
        tc->seen_run_ns = run;
        tc->seen_since_ms = now;
        return false;
    }
    return quiet >= idle_ms && now - tc->seen_since_ms >= idle_ms;
}

uint64_t ebbi_tc_sched_looks(void) {
    ebbi_lock(&tc_list_lock);
    uint64_t n = sched_looks;
    ebbi_unlock(&tc_list_lock);
    return n;
}

static size_t drain_idle(bool now_any, bool on_backoff) {
    uint64_t now = ebbi_now_ms(), idle_ms = (uint64_t)ebbi_opt(EBB_OPT_RELEASE_MS);
    size_t n = 0;
    ebbi_lock(&tc_list_lock);
    struct ebb_tcache *self = ebbi_tc_mine();
    for (struct ebb_tcache *tc = tc_all, *next; tc; tc = next) {
        next = tc->next;
        if (tc == self || !__atomic_load_n(&tc->claimed, __ATOMIC_RELAXED)) continue;
        if (!now_any && !idle_long_enough(tc, now, idle_ms, on_backoff)) continue;
        n += idle_detach(tc);
    }
    __atomic_fetch_add(&idle_emptied, n, __ATOMIC_RELAXED);
    ebbi_unlock(&tc_list_lock);
    return n;
}

size_t ebbi_tc_drain_idle(bool now_any) { return drain_idle(now_any, false); }
size_t ebbi_tc_drain_idle_pass(void) { return drain_idle(false, true); }

/* Threads with a cache (written under tc_list_lock; a hint for release.c, relaxed). */
size_t ebbi_tc_threads(void) { return __atomic_load_n(&tc_threads, __ATOMIC_RELAXED); }

uint64_t ebbi_tc_idle_emptied(void) { return __atomic_load_n(&idle_emptied, __ATOMIC_RELAXED); }

/* ---------------------------------------------------------------- checks
 * The records against their invariants, for tests and debugging; under tc_list_lock.
 * The fast paths of a running owner write head, room and its lists' objects with no lock
 * and no order another thread could rely on (an object it pops is the program's the
 * next moment), so no other thread's lists are walked.  What is read, and why it holds
 * still on a weakly ordered CPU (arm64) too:
 *   - the caller's own record, whole: only its owner writes head, room and the lists
 *     (program order, no other CPU involved), and busy is raised first, so a drainer
 *     backs off (steps 1, 3 and 5 of idle_detach) and nothing else writes it;
 *   - of a parked record (the caller's own, or another thread's) max and claimed, when
 *     its owner's busy, read after taking tc_list_lock, is 0: the owner writes those only
 *     in a slow path (tc_get's recount, tc_destroy from its exit), and either path raises
 *     busy and then takes tc_list_lock before it writes them.  Had it taken the lock
 *     before this walk did, its unlock (a release, after its store to busy in program
 *     order) and this walk's lock (an acquire) would show its raised busy here; so it
 *     has not, and its writes wait for this walk's unlock.  A fast path its owner was
 *     stopped in may still finish on a parked record (head, room, one object: not read
 *     here), and room is left as the drain found it (recount sets it again), so only
 *     max and claimed are checked;
 *   - records on tc_free: no owner; tc_create takes one off under the lock first;
 *   - the links and flags of the records (prev, next, real, detached): under the lock.
 * A budget claim takes from budget_left before it adds to claimed, a release takes
 * from claimed before it gives to budget_left, so budget_left plus the claims of the
 * records that hold still is at most the total, whatever the others are doing. */
static const char *verify_list(const struct ebb_tcache *tc, unsigned cls) {
    const uint32_t max = tc->slow[cls].max;
    uint32_t n = 0;
    void *slow = tc->head[cls]; /* a cycle is caught by a second walker at half speed */
    for (void *o = tc->head[cls]; o != EBB_TC_END; n++) {
        if (n >= max) return "a list holds more objects than its room says";
        const uint64_t *w = o;
        struct ebb_span *s = ebbi_pm_span_acquire((uintptr_t)o);
        if (!s || s->state != SPAN_SMALL) return "an object on a list is in no small span";
        if (s->cls != cls) return "an object on a list is of another class";
        uintptr_t base = ebbi_span_blocks(s);
        if ((uintptr_t)o < base || (char *)o >= ebbi_span_end(s) ||
            !ebbi_block_start(cls, (uintptr_t)o - base))
            return "an object on a list is no block start";
        if (w[1] != ebbi_free_key) return "an object on a list without the free key";
        uint64_t next = w[0] ^ w[1] ^ ebbi_link_mix;
        if (next & ebbi_link_tagmask) return "a link on a list does not decode";
        o = (void *)next;
        if (n & 1) slow = ebbi_next(slow);
        if (o == slow) return "an object is twice on a list";
    }
    if (n != (uint32_t)((int64_t)max - room_of(tc, cls))) return "a list's length differs from its room";
    if (tc->room[cls] & (EBB_TC_ROOM_ONE - 1)) return "a room counter is no whole count";
    return NULL;
}

/* claimed == sum(max * size), and no room for classes thread caches do not keep. */
static const char *verify_claims(const struct ebb_tcache *tc) {
    size_t sum = 0;
    for (unsigned cls = 1; cls < EBB_NCLASS; cls++) {
        if (cls > tc_top_cls && tc->slow[cls].max) return "room in a class thread caches do not keep";
        if (tc->slow[cls].max > MAX_LEN) return "a list's room above its limit";
        sum += (size_t)tc->slow[cls].max * csize(cls);
    }
    return sum == tc->claimed ? NULL : "claimed budget differs from the lists' room";
}

static const char *verify_own(const struct ebb_tcache *tc) {
    const char *err = NULL;
    for (unsigned cls = 1; cls < EBB_NCLASS && !err; cls++) {
        if (tc->div[cls] != (cls <= tc_top_cls ? ebbi_class_div[cls] : 0))
            err = "a list's reciprocal is wrong";
        else if (tc->room[cls] < 0) err = "a list's room is below 0";
        else err = verify_list(tc, cls);
    }
    return err ? err : verify_claims(tc);
}

const char *ebbi_tc_verify(void) {
    const char *err = NULL;
    ebbi_ensure_init();
    busy_enter();
    struct ebb_tcache *mine = pthread_getspecific(tc_key); /* the caller's, parked or not */
    ebbi_lock(&tc_list_lock);
    struct ebb_tcache *self = ebbi_tc_mine(); /* drainers swap it under the lock only */
    size_t listed = 0, held = 0;
    bool found_self = !self->real;
    /* Budget changes without the lock only on records on tc_all (their owners' claims)
     * and on parked records whose owners are busy (skipped below); a record joins tc_all
     * under the lock before its first claim.  So when tc_all holds no record but the
     * caller's and no parked one was skipped, the sum is exact (a fork child, a process
     * whose other threads have no cache). */
    bool all_held = true;
    for (struct ebb_tcache *tc = tc_all; tc && !err; tc = tc->next) {
        listed++;
        if (!tc->real || tc->detached) err = "a record on the cache list is not owned";
        else if (tc->next && tc->next->prev != tc) err = "the cache list's links disagree";
        if (tc == self) found_self = true;
    }
    if (!err && listed != tc_threads) err = "thread count differs from the cache list";
    if (!err && !found_self) err = "the caller's cache is not on the cache list";
    if (!err && self->real) {
        err = verify_own(self);
        held += self->claimed;
    }
    for (struct ebb_tcache *tc = tc_parked; tc && !err; tc = tc->next) {
        if (tc->real || !tc->detached) err = "a parked record is owned";
        else if (tc->next && tc->next->prev != tc) err = "the parked list's links disagree";
        else if (tc != mine && owner_busy(tc)) { /* in a slow path that waits for us */ all_held = false;
            continue;
        } else if (!(err = verify_claims(tc))) held += tc->claimed;
        for (unsigned cls = 1; cls < EBB_NCLASS && !err; cls++)
            if (tc->slow[cls].max > 2) err = "a parked list has room for more than the two a drain keeps";
    }
    for (struct ebb_tcache *tc = tc_free; tc && !err; tc = tc->free_next) {
        if (tc->real || tc->detached || tc->claimed) err = "a free record is owned or holds budget";
        for (unsigned cls = 1; cls < EBB_NCLASS && !err; cls++)
            if (tc->head[cls] != EBB_TC_END || tc->slow[cls].max) err = "a free record holds objects or room";
    }
    int64_t left = atomic_load_explicit(&budget_left, memory_order_relaxed);
    if (!err && (left < 0 || (uint64_t)left + held > (uint64_t)ebbi_opt(EBB_OPT_THREAD_CACHE_MAX)))
        err = "budget left and the claims add up to more than the total";
    if (!err && all_held && listed == (self->real ? 1u : 0u) &&
        (uint64_t)left + held != (uint64_t)ebbi_opt(EBB_OPT_THREAD_CACHE_MAX))
        err = "budget left and the claims differ from the total with no other cache";
    ebbi_unlock(&tc_list_lock);
    busy_exit(self->real ? self : NULL);
    return err;
}

/* ---------------------------------------------------------------- slow paths */
/* The caller's cache with busy raised, or NULL (busy raised all the same) for an exiting
 * thread.  A thread whose cache was emptied while it slept gets the same record back,
 * counted again. */
static struct ebb_tcache *tc_get(void) {
    busy_enter();
    struct ebb_tcache *tc = ebbi_tc_mine();
    if (likely(tc->real)) return tc;
    if (tl_exiting) return NULL;
    tc = pthread_getspecific(tc_key);
    if (tc) {
        ebbi_lock(&tc_list_lock);
        bool detached = tc->detached;
        if (detached) {
            tc->detached = false;
            tc->real = true;
            tc->last_scavenge_ms = tc->last_tick_ms = ebbi_now_ms();
            tc->seen_since_ms = tc->look_after_ms = 0;
            tc->look_gap_ms = 0;
            unpark_cache(tc);
            link_cache(tc);
        }
        set_tls(&ebbi_tc, tc);
        ebbi_unlock(&tc_list_lock);
        if (detached) recount(tc);
        return tc;
    }
    return tc_create();
}

/* Every 8th slow-path call looks at the clock: scavenging and release are not due more
 * often than every few hundred milliseconds. */
static void tick(struct ebb_tcache *tc) {
    if (++tc->ops_since_tick & 7) return;
    if (tc->claimed > share()) fit_share(tc);
    else if (tc->starved && !(tc->ops_since_tick & 31)) rebalance(tc);
    uint64_t now = ebbi_now_ms();
    __atomic_store_n(&tc->last_tick_ms, now, __ATOMIC_RELAXED);
    if (now - tc->last_scavenge_ms >= SCAVENGE_MS) scavenge(tc, now);
    ebbi_release_tick();
}

/* The head of a list, checked as malloc's fast path checks it. */
static inline void *pop_object(struct ebb_tcache *tc, unsigned cls) {
    uint64_t *p = tc->head[cls];
    uint64_t next = p[0] ^ p[1] ^ ebbi_link_mix;
    if (unlikely(next & ebbi_link_tagmask)) ebbi_corrupt_link(p);
    tc->head[cls] = (void *)next;
    room_add(tc, cls, 1);
    p[1] = 0;
    return p;
}

/* An object of class cls for the thread, its list refilled from the central tier. */
static void *refill(struct ebb_tcache *tc, unsigned cls) {
    if (tc->head[cls] != EBB_TC_END) return pop_object(tc, cls); /* kept by a drain */
    struct ebb_tc_slow *sl = &tc->slow[cls];
    sl->active = 1;
    const uint32_t batch = ebbi_classes[cls].batch;
    /* A producer's list fetches a batch at most, and needs no more room than that.  One
     * that frees fill up too (a burst allocated, then freed by the same thread) is no
     * producer: it grows until the burst fits. */
    bool producer = one_way(sl, -1) && !sl->returned;
    uint32_t grow = grow_step(sl->max, batch);
    if (producer && sl->max + grow > batch) grow = sl->max < batch ? batch - sl->max : 0;
    if (grow && claim(tc, grow * csize(cls), sl->max * csize(cls))) grow_max(tc, cls, grow);
    /* half the room, or as much as a producer's list takes (one with no room: served
     * without caching more) */
    uint32_t want = move_size(sl->max, batch);
    if (producer && sl->max > want) want = sl->max < batch ? sl->max : batch;
    void *head, *last;
    uint32_t got = (uint32_t)ebbi_central_pop(cls, want, &head, &last);
    if (!got) return NULL;
    /* The chain ends in NULL: end it at the list's end marker instead.  Its links are
     * not walked here: malloc checks each as it pops the object before it, as it checks
     * every link of a list (a bad one stops the process, see ebbi_malloc_miss). */
    ebbi_set_next(last, EBB_TC_END);
    tc->head[cls] = head;
    room_add(tc, cls, -(int64_t)got);
    void *p = pop_object(tc, cls);
    if (tc->room[cls] < 0) shrink_list(tc, cls, sl->max);
    tick(tc);
    return p;
}

/* From the central tier directly: a big block, or a thread without a cache. */
static void *central_one(unsigned cls) {
    void *p, *last;
    size_t got = ebbi_central_pop(cls, 1, &p, &last);
    if (!got) return NULL;
    if (got > 1) ebbi_central_push(cls, ebbi_next_checked(p), last, got - 1);
    ((uint64_t *)p)[1] = 0;
    ebbi_release_tick();
    return p;
}

/* A small request (n <= EBB_SMALL_MAX) the fast path could not serve; `counted`: the
 * fast path already took n from prof_left. */
static void *small_slow(size_t n, bool counted) {
    ebbi_ensure_init();
    unsigned cls = ebbi_size_to_class(n);
    struct ebb_tcache *tc = NULL;
    if (cls <= tc_top_cls && !(tc = tc_get())) busy_exit(NULL);
    void *p;
    if (unlikely(!tc)) { /* a big block, or an exiting thread */
        p = central_one(cls);
    } else {
        if (!counted) tc->prof_left -= (int64_t)n;
        p = tc->prof_left < 0 ? ebbi_prof_sample_alloc(tc, n) : NULL;
        if (!p) p = refill(tc, cls);
        busy_exit(tc);
    }
    if (!p) errno = ENOMEM;
    return p;
}

void *ebbi_malloc_slow(size_t n) {
    if (n > EBB_SMALL_MAX) return ebbi_large_alloc(n, 0, false);
    return small_slow(n, false);
}

void *ebbi_malloc_sample(size_t n) { return small_slow(n, true); }

/* The fast path's decode check failed on the head of n's list: the end of the list (or
 * the empty cache), or a corrupted object. */
void *ebbi_malloc_miss(size_t n) {
    struct ebb_tcache *tc = ebbi_tc_mine();
    uint64_t *p = tc->head[ebbi_size_to_class(n)];
    if (p != EBB_TC_END && ((p[0] ^ p[1] ^ ebbi_link_mix) & ebbi_link_tagmask)) ebbi_corrupt_link(p);
    return ebbi_malloc_slow(n);
}

/* A checked small object p of class cls (from free's slow path: the list was full, the
 * thread has no cache yet or had it emptied, or the class is not cached). */
void ebbi_tc_free_small(void *p, unsigned cls) {
    struct ebb_tcache *tc = NULL;
    if (cls <= tc_top_cls && !(tc = tc_get())) busy_exit(NULL);
    if (unlikely(!tc)) {
        ((uint64_t *)p)[1] = ebbi_free_key;
        ebbi_set_next(p, NULL);
        ebbi_central_push(cls, p, p, 1);
        ebbi_release_tick();
        return;
    }
    room_add(tc, cls, -1);
    ((uint64_t *)p)[1] = ebbi_free_key;
    ebbi_set_next(p, tc->head[cls]);
    atomic_signal_fence(memory_order_seq_cst); /* p's words before the head (fork child) */
    tc->head[cls] = p;
    struct ebb_tc_slow *sl = &tc->slow[cls];
    sl->active = 1;
    const uint32_t batch = ebbi_classes[cls].batch;
    if (sl->max < batch) {
        uint32_t grow = grow_step(sl->max, batch);
        if (sl->max + grow > batch) grow = batch - sl->max;
        if (claim(tc, grow * csize(cls), sl->max * csize(cls))) grow_max(tc, cls, grow);
    } else if (sl->max > batch && tc->room[cls] < 0 && ++sl->overflows > MAX_OVERFLOWS) {
        sl->overflows = 0;
        shrink_list(tc, cls, sl->max - batch > batch ? sl->max - batch : batch);
    }
    if (tc->room[cls] < 0) { /* full: down to max less what an underflow would fetch */
        sl->returned = 1;
        uint32_t len = list_len(tc, cls), move = move_size(sl->max, batch);
        if (one_way(sl, 1)) move = sl->max < batch ? sl->max : batch; /* a consumer's */
        /* the object just freed too, unless that makes the chain longer than a batch */
        if (move < batch) move++;
        release_objects(tc, cls, move < len ? move : len);
    }
    tick(tc);
    busy_exit(tc);
}

/* ---------------------------------------------------------------- fork */
void ebbi_tc_fork_prepare(void) { ebbi_lock_raw(&tc_list_lock); }
void ebbi_tc_fork_parent(void) { ebbi_unlock_raw(&tc_list_lock); }

/* A fork child: another thread of the parent may have been cut inside a fast-path pop
 * with its object's key cleared but the list's head not yet moved past it.  The child
 * sees each other thread's stores as a prefix of those it executed, in its program
 * order, on arm64 too (a store to a page fork write-protected faults at the instruction,
 * and stores already done are complete before fork's TLB flush ends; pages fork copies
 * at once because a device is writing them are the exception), so only the order of the
 * stores as compiled matters: the x86-64 assembly pops store the head first, but
 * the compiler may put the C pops' clearing of the key (pop_fast, pop_object) before
 * their head store, the two not aliasing.  That object was being handed out: it leaves
 * the list (its link, which the pop does not touch, still names the rest), and stays
 * lost, as one caught inside a push.  Pushes, the fast paths' and the slow path's
 * (ebbi_tc_free_small), store the object's key and link before the head, a signal fence
 * keeping the compiler to that order: a head the child sees names an object whose link it
 * can follow.  Every other object a list holds has the key, which the central tier checks
 * when the list goes back. */
static void drop_half_popped(struct ebb_tcache *tc) {
    for (unsigned cls = 1; cls < EBB_NCLASS; cls++) {
        uint64_t *p = tc->head[cls];
        if ((void *)p != EBB_TC_END && p[1] != ebbi_free_key) tc->head[cls] = ebbi_next_checked(p);
    }
}

/* In the child only the forking thread exists: the other threads' caches go back to the
 * central tier instead of being lost.  Those threads may have been in the middle of a
 * fast-path push or pop when the parent forked: every store keeps the chain from head
 * whole and ended (but for a key not yet stored, or cleared, while the head names its
 * object: drop_half_popped takes that object off), and room may be one off, so it is
 * recounted from the chain (an object caught before a push's head store is not on the
 * chain: it stays lost).  The forking
 * thread's own record, parked or not, is known by its TLS slot.
 *
 * A slow path of another thread may also have been cut between the two stores of a
 * claim or an unclaim (budget_left and claimed), or between an unclaim and the store of
 * the list's new max: giving its record back would then give back too little or twice,
 * and the child's budget would drift from what its caches hold.  So once the others are
 * gone the budget is counted again from what is left (the records given back claim
 * nothing, whatever their cut stores left in claimed): the forking thread's own record,
 * whose lists it was not changing (it is in fork, outside any slow path: a fork from a
 * handler that interrupted one takes the skipped path in init.c), claims the sum of its
 * lists' room, and budget_left is the total less that. */
void ebbi_tc_fork_child(void) {
    ebbi_lock_reset(&tc_list_lock);
    struct ebb_tcache *own = NULL;
    for (int pass = 0; pass < 2; pass++)
        for (struct ebb_tcache *tc = pass ? tc_all : tc_parked, *next; tc; tc = next) {
            next = tc->next;
            if (tc->tls_slot == &ebbi_tc) {
                tc->tid = ebbi_os_gettid(); /* the child's own thread id, new CPU time */
                tc->seen_since_ms = tc->look_after_ms = 0;
                tc->look_gap_ms = 0;
                own = tc;
            } else {
                drop_half_popped(tc);
                tc_destroy(tc);
            }
        }
    for (struct ebb_tcache *tc = tc_free; tc; tc = tc->free_next) tc->claimed = 0; /* see above */
    size_t claimed = 0;
    if (own)
        for (unsigned cls = 1; cls < EBB_NCLASS; cls++) claimed += (size_t)own->slow[cls].max * csize(cls);
    if (own) own->claimed = claimed;
    atomic_store(&budget_left, ebbi_opt(EBB_OPT_THREAD_CACHE_MAX) - (int64_t)claimed);
}
