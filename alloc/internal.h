/* ebbmalloc internal header: types, invariants and the functions each file offers.
 *
 * The allocator has three tiers, one file each, bottom-up:
 *
 *   os.c          mmap/madvise/futex/clock, the only file that talks to the kernel
 *   meta.c        ebbmalloc's own bookkeeping memory (span records, thread caches)
 *   pagemap.c     address -> span radix tree, and the per-page size-class byte
 *   page_heap.c   spans of 8 KiB pages: free lists, coalescing, growth, release
 *   central.c     per-class central free lists of spans plus a transfer cache
 *   thread_cache.c per-thread caches, their budget and the slow paths
 *   release.c     when free pages go back to the kernel; the background thread
 *   options.c     every EBB_* option in one table, mallopt
 *   stats.c       ebb_stats, mallinfo, malloc_stats, malloc_info, the stats page
 *   init.c        first-use initialisation, fork handlers, thread exit
 *   api.c         the malloc family (ebb_ names); override.c adds glibc's names
 */
#ifndef EBB_INTERNAL_H
#define EBB_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ebbmalloc.h"

/* Everything declared below is internal to the library: hidden, so that the compiler
 * addresses it directly instead of through the GOT. */
#pragma GCC visibility push(hidden)

#define EBB_EXPORT __attribute__((visibility("default")))
#define EBB_HIDDEN __attribute__((visibility("hidden")))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define EBB_NOINLINE __attribute__((noinline))
#define EBB_COLD __attribute__((cold, noinline))
#define EBB_TLS __thread __attribute__((tls_model("initial-exec")))
#define EBB_ALIGN(n) __attribute__((aligned(n)))

/* ---------------------------------------------------------------- debug checks
 * EBB_DEBUG is set by the build option -Ddebug_checks=true.  ebb_assert() is for
 * internal invariants that cost something; it writes without allocating. */
#ifndef EBB_DEBUG
#define EBB_DEBUG 0
#endif
#define ebb_assert(c)                                                                              \
    do {                                                                                           \
        if (EBB_DEBUG && !(c)) ebbi_fatal("internal check failed: %s at %s:%d", #c, __FILE__,      \
                                          __LINE__);                                               \
    } while (0)

/* ---------------------------------------------------------------- geometry */
#define EBB_PAGE_SHIFT 13 /* an ebbmalloc page is 8 KiB: two kernel pages */
#define EBB_PAGE ((size_t)1 << EBB_PAGE_SHIFT)
#define EBB_MIN_ALIGN 16
#define EBB_SMALL_MAX ((size_t)256 * 1024) /* largest size class */
#define EBB_NCLASS 97                      /* class 0 is "not a small object" */
#define EBB_ADDR_BITS 48                   /* user-space addresses below 2^48 */

/* ---------------------------------------------------------------- os.c
 * The contract: every function returns 0 / a pointer on success, -1 / NULL on failure,
 * and none allocates.  A test replaces the hooks with a counting fake. */
struct ebb_os_hooks {
    void *(*map)(size_t size);                 /* fresh zeroed read-write memory */
    void (*unmap)(void *p, size_t size);
    int (*release)(void *p, size_t size);      /* MADV_DONTNEED: drop the pages */
    /* Resize a mapping in place (to == NULL) or move it onto the mapping at `to`, which
     * it replaces.  NULL: failed, p untouched. */
    void *(*remap)(void *p, size_t old_size, size_t new_size, void *to);
};
extern struct ebb_os_hooks ebbi_os;
void *ebbi_os_map_aligned(size_t size, size_t align);
void ebbi_os_hugepage_hint(void *p, size_t size, bool on);
uint64_t ebbi_now_ms(void);
void ebbi_write_err(const char *s, size_t n);
void ebbi_write_fd(int fd, const char *s, size_t n);
void ebbi_fatal(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
int ebbi_snprintf(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
const char *ebbi_getenv(const char *name);
uint64_t ebbi_random64(void);
size_t ebbi_read_file(const char *path, char *buf, size_t n); /* reads up to n-1, NUL-ends */

/* A lock that never allocates: 0 free, 1 held, 2 held with waiters (futex). */
typedef struct {
    _Atomic int v;
} ebb_lock_t;
void ebbi_lock_slow(ebb_lock_t *l);
void ebbi_unlock_slow(ebb_lock_t *l);
static inline void ebbi_lock(ebb_lock_t *l) {
    int z = 0;
    if (!atomic_compare_exchange_strong_explicit(&l->v, &z, 1, memory_order_acquire,
                                                 memory_order_relaxed))
        ebbi_lock_slow(l);
}
static inline void ebbi_unlock(ebb_lock_t *l) {
    if (atomic_exchange_explicit(&l->v, 0, memory_order_release) == 2) ebbi_unlock_slow(l);
}
static inline void ebbi_lock_reset(ebb_lock_t *l) { atomic_store(&l->v, 0); }

/* ---------------------------------------------------------------- options.c */
enum ebb_option {
    EBB_OPT_RELEASE_MS,       /* free pages older than this go back to the kernel */
    EBB_OPT_BACKGROUND,       /* background release thread on/off */
    EBB_OPT_THREAD_CACHE_MAX, /* bytes: all thread caches together */
    EBB_OPT_THREAD_CACHE_ONE, /* bytes: one thread's cache at most */
    EBB_OPT_THREAD_CACHE_BLOCK, /* bytes: bigger blocks are not kept in thread caches */
    EBB_OPT_SOFT_LIMIT,       /* bytes, or percent of the cgroup limit when negative */
    EBB_OPT_MMAP_THRESHOLD,   /* bytes: larger requests get their own mapping */
    EBB_OPT_TRIM_THRESHOLD,   /* bytes of free resident pages kept regardless of age */
    EBB_OPT_HUGEPAGES,        /* 0 never ask for huge pages, 1 let the kernel decide */
    EBB_OPT_STATS,            /* print the summary at exit */
    EBB_OPT_STATS_SHM,        /* publish the live stats page */
    EBB_OPT_ARENA_MAX,        /* accepted for glibc compatibility; no effect */
    EBB_OPT_COUNT
};
extern int64_t ebbi_options[EBB_OPT_COUNT];
/* relaxed: mallopt may change an option while other threads read it */
static inline int64_t ebbi_opt(enum ebb_option o) {
    return __atomic_load_n(&ebbi_options[o], __ATOMIC_RELAXED);
}
void ebbi_options_init(void);
void ebbi_options_set(enum ebb_option o, int64_t v);
bool ebbi_parse_size(const char *s, int64_t *out, bool allow_percent);

/* ---------------------------------------------------------------- size_class.c
 * Classes are 16-byte multiples; within every power-of-two range above 128 bytes
 * there are eight classes, so rounding a request up wastes at most 12.5%.
 * A span of a class holds `pages` pages cut into objects; `batch` objects move
 * between a thread cache and the central tier at a time. */
struct ebb_class_info {
    uint32_t size;
    uint32_t pages;
    uint32_t batch;
};
extern const struct ebb_class_info ebbi_classes[EBB_NCLASS];
/* Indexed by (size + 15) / 16: one load, no branch (16 KiB, of which a program touches
 * the lines of the sizes it uses).  0 until ebbi_size_class_init() has run, which sends
 * the first malloc down the slow path where initialisation happens. */
extern uint8_t ebbi_class_lut[(EBB_SMALL_MAX >> 4) + 1];
/* ebbi_class_div[c] = 2^64 / size, rounded up: for an offset x < 2^32, x is a multiple of
 * the class size exactly when x * ebbi_class_div[c] (mod 2^64) < ebbi_class_div[c].  0
 * for class 0, so that nothing passes. */
extern uint64_t ebbi_class_div[EBB_NCLASS];
static inline bool ebbi_div_ok(uint64_t div, uint64_t off) { return off * div < div; }
/* The same with div read from memory twice: two instructions fewer on x86-64 than
 * what compilers make of the C (a load and a register copy). */
static inline bool ebbi_div_ok_at(const uint64_t *div, uint64_t off) {
#if defined(__x86_64__) && defined(__GCC_ASM_FLAG_OUTPUTS__)
    bool below;
    __asm__("imulq %2, %1\n\tcmpq %2, %1" : "=@ccb"(below), "+r"(off) : "m"(*div));
    return below;
#else
    return ebbi_div_ok(*div, off);
#endif
}
static inline bool ebbi_block_start(unsigned cls, uint64_t off) {
    return ebbi_div_ok(ebbi_class_div[cls], off);
}
void ebbi_size_class_init(void);
static inline size_t ebbi_class_index(size_t n) { return (n + 15) >> 4; }
static inline unsigned ebbi_size_to_class(size_t n) { /* n <= EBB_SMALL_MAX */
    /* relaxed: a plain byte load, and no race with the first malloc filling the table */
    return __atomic_load_n(&ebbi_class_lut[ebbi_class_index(n)], __ATOMIC_RELAXED);
}
static inline size_t ebbi_class_objects(unsigned cls) {
    return (ebbi_classes[cls].pages << EBB_PAGE_SHIFT) / ebbi_classes[cls].size;
}

/* ---------------------------------------------------------------- free lists
 * A free object's first word links to the next free object, XORed with a per-process
 * random secret, so that a heap overflow that overwrites it cannot name an address for
 * malloc to hand out (and the refill path checks what it decodes).  Its second word holds ebbi_free_key while it
 * is free: free() of an object whose second word already holds the key is a double free.
 * malloc clears it. */
extern uintptr_t ebbi_link_secret;
extern uint64_t ebbi_free_key;
static inline void *ebbi_link_encode(void *slot, void *next) {
    (void)slot;
    return (void *)((uintptr_t)next ^ ebbi_link_secret);
}
static inline void *ebbi_link_decode(void *slot, void *stored) {
    (void)slot;
    return (void *)((uintptr_t)stored ^ ebbi_link_secret);
}
static inline void *ebbi_next(void *obj) { return ebbi_link_decode(obj, *(void **)obj); }
static inline void ebbi_set_next(void *obj, void *next) {
    *(void **)obj = ebbi_link_encode(obj, next);
}
/* For the slow paths: the next link, which must be aligned (checked). */
EBB_COLD void ebbi_corrupt_link(void *obj) __attribute__((noreturn));
static inline void *ebbi_next_checked(void *obj) {
    void *n = ebbi_next(obj);
    if (unlikely((uintptr_t)n & (EBB_MIN_ALIGN - 1))) ebbi_corrupt_link(obj);
    return n;
}

/* ---------------------------------------------------------------- spans
 * A span is a run of whole pages starting at `start`.  Its state says who owns it:
 *
 *   SPAN_FREE      in the page heap; `released` says whether its pages were returned to
 *                  the kernel (then they read as zero) or may still be resident.
 *                  `free_since_ms` is when it was last freed or merged.
 *   SPAN_SMALL     cut into objects of class `cls`, all on the free list from the start
 *                  (each with the double-free key, so freeing a slot never handed out is
 *                  caught as a double free).  Invariant: objects == used + |freelist|,
 *                  where `used` counts objects outside this span's free list (in thread
 *                  caches, transfer caches, or with the program).  used == 0 sends the span
 *                  back to the page heap.
 *   SPAN_LARGE     one allocation of npages pages (a request above 256 KiB or an aligned one).
 *   SPAN_MAPPED    one allocation with its own mapping, returned with munmap.
 *   SPAN_RELEASING free pages cut out for release, on no list until their madvise (run
 *                  without the page heap lock) is done; counted as released already.
 *
 * The page map knows every page of a SMALL span and the first and last page of the
 * others, so that free() finds any object's span and the page heap finds neighbours. */
enum ebb_span_state { SPAN_FREE = 1, SPAN_SMALL, SPAN_LARGE, SPAN_MAPPED, SPAN_RELEASING };

struct ebb_span {
    uintptr_t start;
    size_t npages;
    struct ebb_span *prev, *next; /* on one list: page heap free list or central bucket */
    struct ebb_span *lru_prev, *lru_next; /* FREE and resident: the page heap's age list */
    uint8_t state;
    uint8_t cls;
    uint8_t released;  /* FREE: pages not resident */
    uint8_t zeroed;    /* LARGE: pages known zero when handed out (calloc skips memset) */
    uint8_t bucket;    /* SMALL: which fullness list of the central tier it is on */
    uint8_t on_list;
    uint8_t tails_released; /* SMALL, big class: every free object's tail pages released */
    uint8_t in_flight;      /* RELEASING: a thread is in madvise for it now */
    uint32_t used;
    uint32_t objects;
    void *freelist;
    char *end;             /* SMALL: end of the last object */
    uint64_t free_since_ms;
    size_t map_size;       /* MAPPED: length of the mapping */
};

struct ebb_span_list {
    struct ebb_span *head;
    size_t count;
};
void ebbi_span_list_push(struct ebb_span_list *l, struct ebb_span *s);
void ebbi_span_list_remove(struct ebb_span_list *l, struct ebb_span *s);

/* ---------------------------------------------------------------- meta.c */
void *ebbi_meta_alloc(size_t size); /* zeroed, 64-byte aligned, never freed to the OS */
struct ebb_span *ebbi_span_new(void);
void ebbi_span_delete(struct ebb_span *s);
size_t ebbi_meta_bytes(void);
void ebbi_meta_fork_prepare(void);
void ebbi_meta_fork_parent(void);
void ebbi_meta_fork_child(void);

/* ---------------------------------------------------------------- pagemap.c
 * Two levels: the root indexes 2 GiB regions, a leaf holds, for each 8 KiB page of its
 * region, the span pointer and the size class (0 = not a small object).  Leaves are
 * mapped on first use and never freed; a root slot is NULL where ebbmalloc never had
 * memory, so an address ebbmalloc never handed out is recognised. */
#define EBB_PM_LEAF_BITS 18
#define EBB_PM_ROOT_BITS (EBB_ADDR_BITS - EBB_PAGE_SHIFT - EBB_PM_LEAF_BITS)
#define EBB_PM_LEAF_SHIFT (EBB_PAGE_SHIFT + EBB_PM_LEAF_BITS)
struct ebb_pm_leaf {
    uint8_t cls[1 << EBB_PM_LEAF_BITS];
    struct ebb_span *span[1 << EBB_PM_LEAF_BITS];
    /* span[i]->start, kept here so that free can find where the blocks of a page's span
     * begin without touching the span record (valid where cls[i] != 0) */
    uintptr_t start[1 << EBB_PM_LEAF_BITS];
};
extern struct ebb_pm_leaf *ebbi_pm_root[1 << EBB_PM_ROOT_BITS];
static inline struct ebb_pm_leaf *ebbi_pm_leaf(uintptr_t a) {
    return ebbi_pm_root[a >> EBB_PM_LEAF_SHIFT];
}
static inline size_t ebbi_pm_slot(uintptr_t a) {
    return (a >> EBB_PAGE_SHIFT) & ((1u << EBB_PM_LEAF_BITS) - 1);
}
/* Span of the page holding address a, or NULL if ebbmalloc has no span there. */
static inline struct ebb_span *ebbi_pm_span(uintptr_t a) {
    if (a >> EBB_ADDR_BITS) return NULL;
    struct ebb_pm_leaf *l = ebbi_pm_leaf(a);
    return l ? l->span[ebbi_pm_slot(a)] : NULL;
}
bool ebbi_pm_ensure(uintptr_t start, size_t len); /* leaves exist; false if out of memory */
void ebbi_pm_set(uintptr_t page_addr, struct ebb_span *s, unsigned cls);
void ebbi_pm_set_span(struct ebb_span *s); /* map the span's pages per its state */
void ebbi_pm_clear_span(struct ebb_span *s);
size_t ebbi_pm_bytes(size_t mapped);
void ebbi_pm_fork_prepare(void);
void ebbi_pm_fork_parent(void);
void ebbi_pm_fork_child(void);

/* ---------------------------------------------------------------- page_heap.c
 * All fields under the page heap lock. */
struct ebb_page_heap_stats {
    size_t mapped;      /* bytes of spans (any state) ebbmalloc holds from the kernel */
    size_t free_res;    /* FREE spans not released */
    size_t released;    /* FREE spans released */
    size_t mapped_count;/* MAPPED spans alive */
    size_t mapped_direct; /* their bytes */
    size_t peak_used;   /* high-water mark of mapped - free_res - released */
    size_t release_calls;
    size_t released_total;
};
extern ebb_lock_t ebbi_ph_lock;
struct ebb_span *ebbi_page_alloc(size_t npages, size_t align_pages); /* locks itself */
void ebbi_page_free(struct ebb_span *s);
struct ebb_span *ebbi_page_alloc_locked(size_t npages, size_t align_pages); /* then ebbi_page_release_finish */
void ebbi_page_free_locked(struct ebb_span *s);
#define EBB_FREE_RATIO 8                  /* see check_free_ratio in page_heap.c */
#define EBB_FREE_FLOOR ((size_t)64 << 20) /* ... at most 1/16 of a cgroup limit */
void ebbi_page_release_finish(void); /* the madvise of releases, after the lock is dropped */
void ebbi_page_fork_child(void);
bool ebbi_page_shrink(struct ebb_span *s, size_t npages); /* LARGE: give back the tail */
struct ebb_span *ebbi_mapped_alloc(size_t size, size_t align);
void ebbi_mapped_free(struct ebb_span *s);
bool ebbi_mapped_resize(struct ebb_span *s, size_t size); /* false: unchanged */
/* Release FREE spans not used since `older_than_ms` until `goal` bytes are returned
 * (SIZE_MAX = no goal), oldest first.  older_than_ms 0 or UINT64_MAX: any age (0 also
 * ignores EBB_TRIM_THRESHOLD).  Caller holds the lock.  Returns bytes released. */
size_t ebbi_page_release_locked(uint64_t older_than_ms, size_t goal);
size_t ebbi_page_release_since_locked(uint64_t since_ms);
void ebbi_page_heap_stats(struct ebb_page_heap_stats *st); /* locks itself */
uint64_t ebbi_page_oldest_free_ms(void);                   /* caller holds the lock */
const char *ebbi_page_heap_verify(void); /* NULL when consistent */
extern struct ebb_page_heap_stats ebbi_ph_stats;

/* ---------------------------------------------------------------- central.c
 * One per class, under its own lock.  A transfer cache keeps chains of up to `batch`
 * objects (linked through their first words, last link NULL) as threads gave them back,
 * so that objects freed on one thread go to the next thread that needs some without
 * touching spans.  Behind it, spans with free objects sit on fullness buckets, and allocation
 * takes from the fullest so that the emptiest spans can drain and go back. */
#define EBB_TC_SLOTS 16
#define EBB_BUCKETS 4
struct ebb_central {
    ebb_lock_t lock;
    uint32_t tc_used;     /* chains in tc_slots */
    uint32_t tc_limit;    /* at most this many */
    uint32_t tc_low;      /* low-water mark since the last trim */
    uint32_t tc_objects;  /* objects in all chains */
    struct { void *head; uint32_t n; } tc_slots[EBB_TC_SLOTS];
    struct ebb_span_list buckets[EBB_BUCKETS];
    size_t spans;         /* SMALL spans of this class */
    size_t free_objects;  /* on span free lists and uncarved (not in transfer cache) */
    size_t pops;          /* objects taken from spans, ever: shows whether the class is idle */
    size_t pops_seen;     /* `pops` at the last release pass */
    size_t tail_released; /* bytes of free objects' pages returned to the kernel */
} EBB_ALIGN(64);
extern struct ebb_central ebbi_central[EBB_NCLASS];
void ebbi_central_init(void);
/* Takes objects for a cache that wants n: returns how many (at most a batch, possibly more
 * than n when a whole transfer-cache chain is taken), as a chain from *head. */
size_t ebbi_central_pop(unsigned cls, size_t n, void **head);
/* Gives back a chain of n objects (last link NULL). */
void ebbi_central_push(unsigned cls, void *head, size_t n);
size_t ebbi_central_trim(bool all); /* empties idle transfer caches; returns objects moved */
size_t ebbi_central_release_tails(bool all); /* see central.c; returns bytes released */
void ebbi_central_fork_prepare(void);
void ebbi_central_fork_parent(void);
void ebbi_central_fork_child(void);

/* ---------------------------------------------------------------- thread_cache.c
 * The fast path reads only `head`, `len`, `max` and `div` of one list.  A list holds `len`
 * objects linked from `head`; len <= max always, and the thread's claimed budget is
 * sum(max * size) over its lists, so that the total of all thread caches never exceeds
 * EBB_THREAD_CACHE_MAX.  The static empty cache has max == 0 everywhere: its lists send
 * every call to the slow path, which gives the thread a real cache. */
struct ebb_tc_list {
    void *head;
    uint32_t len;
    uint32_t max;
    uint64_t div;  /* ebbi_class_div of the list's class, where free finds it at no cost */
    uint64_t pad[1]; /* 32 bytes: a shift indexes the lists */
};
struct ebb_tc_slow {      /* fields only the slow paths read */
    uint32_t active;      /* the slow path saw this list since the last scavenge */
    uint32_t overflows;   /* times len hit max since max last grew */
};
struct ebb_tcache {
    struct ebb_tc_list lists[EBB_NCLASS];
    struct ebb_tc_slow slow[EBB_NCLASS];
    size_t claimed;           /* sum(max * size) */
    uint64_t last_scavenge_ms;
    uint32_t ops_since_tick;
    bool real;                /* false only for the static empty cache */
    bool starved;             /* a list could not grow for want of share since the last tick */
    bool busy;                /* the owner is in a slow path working on its lists */
    bool detached;            /* emptied by idle_detach while its thread slept; not on tc_all */
    int tid;                  /* the owner thread */
    struct ebb_tcache **tls_slot;   /* the owner's ebbi_tc */
    uint64_t last_tick_ms;    /* the owner's slow path last looked at the clock */
    struct ebb_tcache *prev, *next; /* all real caches, under ebbi_tc_list_lock */
    struct ebb_tcache *free_next;
};
extern EBB_TLS struct ebb_tcache *ebbi_tc;
extern struct ebb_tcache ebbi_tc_empty;
void *ebbi_malloc_slow(size_t n);
void ebbi_free_slow(void *p);
void ebbi_tc_free_small(void *p, unsigned cls);
void ebbi_tc_flush_self(void);          /* return the caller's whole cache */
void ebbi_tc_thread_exit(void *arg);    /* pthread key destructor */
size_t ebbi_tc_cached_bytes(size_t *threads);
size_t ebbi_tc_drain_idle(bool all);    /* empty the caches of threads that sleep */
uint64_t ebbi_tc_idle_emptied(void);
void ebbi_tc_fork_prepare(void);
void ebbi_tc_fork_parent(void);
void ebbi_tc_fork_child(void);
void ebbi_tc_init(void);

/* ---------------------------------------------------------------- release.c */
extern bool ebbi_thp_active; /* huge pages allowed here and the kernel's THP is "always" */
void ebbi_release_tick(void);       /* from slow paths: time-based release, if due */
size_t ebbi_release_all(void);      /* malloc_trim: everything free goes back */
void ebbi_release_start_background(void);
void ebbi_release_fork_child(void);
void ebbi_check_soft_limit_locked(void);
void ebbi_release_init(void);
uint64_t ebbi_cgroup_limit(void);
uint64_t ebbi_soft_limit(void);
double ebbi_cgroup_cpus(void);
/* Parses the cgroup files under `root` for the process described by the text of
 * /proc/self/cgroup; returns the memory limit in bytes or 0 for none. */
uint64_t ebbi_cgroup_parse_limit(const char *root, const char *proc_cgroup);
double ebbi_cgroup_parse_cpus(const char *root, const char *proc_cgroup);

/* ---------------------------------------------------------------- stats.c */
void ebbi_stats_init(void);
void ebbi_stats_at_exit(void);
void ebbi_shm_publish(void);
void ebbi_shm_fork_child(void);
void ebbi_shm_unlink(void);

/* ---------------------------------------------------------------- init.c */
extern _Atomic int ebbi_init_state; /* 0 none, 1 running, 2 done */
void ebbi_init_slow(void);
static inline void ebbi_ensure_init(void) {
    if (unlikely(atomic_load_explicit(&ebbi_init_state, memory_order_acquire) != 2))
        ebbi_init_slow();
}
void ebbi_thread_register(struct ebb_tcache *tc);

/* ---------------------------------------------------------------- api.c */
void *ebbi_large_alloc(size_t n, size_t align, bool zero);
void ebbi_large_free(struct ebb_span *s);
size_t ebbi_usable_size(void *p);

#pragma GCC visibility pop
#endif
