/* ebbmalloc internal header: types, invariants and the functions each file offers.
 *
 * The allocator has three tiers, one file each, bottom-up:
 *
 *   os.c          the only file that talks to the kernel: memory, files, time, futex
 *   fault.c       messages without stdio, and the reports that stop the process
 *   meta.c        ebbmalloc's own bookkeeping memory (span records, thread caches)
 *   pagemap.c     address -> span radix tree, and the class map (class and span start per page)
 *   page_heap.c   spans of 8 KiB pages: free lists, coalescing, growth, release
 *   central.c     per-class central tier: spans with free bits, and a transfer cache
 *   thread_cache.c per-thread caches, their budget and the slow paths
 *   release.c     when free pages go back to the kernel; the background thread
 *   cgroup.c      the cgroup's memory limit and CPU quota, as rules on text (cgroup.h)
 *   options.c     every EBB_* option in one table, mallopt
 *   stats.c       ebb_stats, mallinfo, malloc_stats, malloc_info
 *   shm.c         the live stats page in /dev/shm, read by ebb-inspect
 *   profile.c     the sampled heap profile: which stacks hold live memory (.heap file)
 *   unwind.c      the call stack of a sample, from the objects' unwind tables
 *   init.c        first-use initialisation, fork handlers, the end of the process
 *   api.c         the malloc family (ebb_ names, and glibc's and C++'s names in the shared library)
 *   size_class.c  the size-class table (below the tiers: every file reads it)
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
#define ebb_assert(c)                                                                                    \
    do {                                                                                                 \
        if (EBB_DEBUG && !(c)) ebbi_fatal("internal check failed: %s at %s:%d", #c, __FILE__, __LINE__); \
    } while (0)

/* ---------------------------------------------------------------- geometry */
#define EBB_PAGE_SHIFT 13 /* an ebbmalloc page is 8 KiB: two kernel pages */
#define EBB_PAGE ((size_t)1 << EBB_PAGE_SHIFT)
#define EBB_MIN_ALIGN 16
#define EBB_SMALL_MAX ((size_t)256 * 1024) /* largest size class */
#define EBB_NCLASS 97                      /* class 0 is "not a small object" */
#define EBB_ADDR_BITS 48                   /* user-space addresses below 2^48 */

/* ---------------------------------------------------------------- os.c
 * The contract: every function returns 0, a count or a pointer on success, -1, 0 or NULL
 * on failure; none allocates, none changes errno.  The hooks are what a test replaces
 * with a counting or refusing fake. */
struct ebb_os_hooks {
    void *(*map)(size_t size); /* fresh zeroed read-write memory */
    void (*unmap)(void *p, size_t size);
    int (*release)(void *p, size_t size); /* MADV_DONTNEED: drop the pages */
    /* Resize a mapping in place (to == NULL) or move it onto the mapping at `to`, which
     * it replaces.  NULL: failed, p untouched. */
    void *(*remap)(void *p, size_t old_size, size_t new_size, void *to);
    int (*hugepage)(void *p, size_t size, bool on);     /* MADV_HUGEPAGE / MADV_NOHUGEPAGE */
    int (*open)(const char *path, int flags, int mode); /* every file: /proc, /sys, /dev/shm */
    void *(*map_shared)(int fd, size_t size);           /* a shared mapping of a file (stats page) */
    char **(*start_env)(void); /* envp from the initial stack; NULL if it cannot be found */
};
extern struct ebb_os_hooks ebbi_os;
void *ebbi_os_map_aligned(size_t size, size_t align);
void ebbi_os_hugepage_hint(void *p, size_t size, bool on);
int ebbi_os_release(void *p, size_t size); /* the release hook, refusals noted */
void *ebbi_os_remap(void *p, size_t old_size, size_t new_size, void *to); /* likewise */
/* The page heap's memory (spans of every state), the kernel's side of it (os.c says
 * how), counted where the page heap's own counters change, under its lock: a chunk
 * adopted as heap memory (not resident until taken; chunks are never unmapped), which
 * ebbi_os_heap_room must allow first (16 TiB of chunks at most); pages given back with
 * MADV_DONTNEED (counted when the call succeeds); taken back (a tier hands out or keeps
 * resident what it had given back: the kernel faults it in).  Blocks with a mapping of
 * their own: ebbi_os_direct_count (bytes mapped, + or -) and ebbi_os_direct_remap (the
 * new size counted, `to` never counted).  ebbi_os_heap_counts reads mapped (both kinds)
 * and not resident. */
bool ebbi_os_heap_room(size_t size);
extern size_t ebbi_os_heap_max; /* 16 TiB; lowered by tests */
size_t ebbi_os_direct_bytes(void);
void ebbi_os_heap_adopt(size_t size);
int ebbi_os_heap_release(void *p, size_t size);
void ebbi_os_heap_reuse(size_t size);
/* Pages given back with ebbi_os_release, counted where the caller's counters change. */
void ebbi_os_heap_gave_back(size_t size);
void ebbi_os_direct_count(int64_t delta);
void *ebbi_os_direct_remap(void *p, size_t old_size, size_t new_size, void *to);
void ebbi_os_heap_counts(size_t *mapped, size_t *not_resident);
int ebbi_os_error(void); /* errno left by this thread's last os.c call (after a failure) */
/* What ebbmalloc could not do: noted where it happens, said once per kind on stderr with
 * EBB_VERBOSE=1 ("ebbmalloc: <what> (<errno>): <what it costs>"), never without. */
enum ebb_refusal {
    EBB_REFUSED_RELEASE,  /* madvise(MADV_DONTNEED) */
    EBB_REFUSED_REMAP,    /* mremap, other than ENOMEM */
    EBB_REFUSED_HUGEPAGE, /* madvise(MADV_[NO]HUGEPAGE) */
    EBB_REFUSED_PROC,     /* a file of /proc/self */
    EBB_REFUSED_SHM,      /* the stats page in /dev/shm */
    EBB_REFUSED_READMEM,  /* process_vm_readv on ourselves (the heap profile's unwinder) */
    EBB_REFUSED_COUNT
};
void ebbi_os_refused(enum ebb_refusal r, const char *what, int err);
/* Refused with EPERM or ENOSYS (a seccomp filter, for the process's life): not tried
 * again, and the tiers skip the work around the call. */
bool ebbi_os_refused_for_good(enum ebb_refusal r);
void ebbi_os_say_refusals(void); /* what was noted before EBB_VERBOSE was known */
void ebbi_cpu_relax(void);
/* The kernel's page size: 4 KiB on x86-64; 4, 16 or 64 KiB on arm64.  It may be bigger
 * than an ebbmalloc page (EBB_PAGE): every madvise, munmap and mremap covers whole kernel
 * pages, and every mapping of ebbmalloc's own is a whole number of them. */
size_t ebbi_os_page_size(void);
extern size_t ebbi_os_page_fake; /* tests: the page size to plan for (see os.c) */
uint64_t ebbi_now_ms(void);      /* monotonic, coarse */
uint64_t ebbi_realtime_ms(void);
void ebbi_os_sleep_ms(uint64_t ms);
uint64_t ebbi_random64(void);
int ebbi_os_gettid(void);
int ebbi_os_getpid(void);
bool ebbi_os_pid_alive(int pid);
unsigned ebbi_os_cpus_allowed(void); /* CPUs in the affinity mask */
/* A thread of ebbmalloc's own, created with libc's pthread_create as found so far (in the
 * shared library, which interposes pthread_create: by ebbi_os_find_pthread_create).
 * False if it could not be created. */
bool ebbi_os_start_thread(void *(*fn)(void *), const char *name);
void ebbi_os_thread_takes_signals(void); /* the mask of the thread that started it */
/* The shared library finds libc's pthread_create with dlsym, which may take the dynamic
 * loader's lock and allocate: only at a point where that is safe (the application's own
 * pthread_create call).  ebbi_os_pthread_create calls it (EAGAIN if it was not found). */
void ebbi_os_find_pthread_create(void);
int ebbi_os_pthread_create(void *thread, const void *attr, void *(*fn)(void *), void *arg);
/* The shared library's pthread_key_delete forwards every key but ebbmalloc's to the next
 * definition, found the same way, at load (EINVAL if not found). */
void ebbi_os_find_key_delete(void); /* from a constructor */
/* The next definition after this library's of a function it also defines (another
 * preloaded library's, or libc's, or libstdc++'s); NULL if none.  Keeps errno. */
void *ebbi_os_next_definition(const char *name);
int ebbi_os_pthread_key_delete(unsigned key);
int ebbi_os_open(const char *path, int flags, int mode); /* close-on-exec always */
void ebbi_os_close(int fd);
int ebbi_os_ftruncate(int fd, size_t size);
void *ebbi_os_map_shared(int fd, size_t size);
int ebbi_os_flock(int fd, int op);
long ebbi_os_pread(int fd, void *buf, size_t n, size_t off);
struct ebb_file_id {
    uint64_t dev, ino, size;
    uint32_t uid;
    bool regular;
};
bool ebbi_os_fstat(int fd, struct ebb_file_id *id);
bool ebbi_os_file_id(const char *path, struct ebb_file_id *id);
int ebbi_os_rename(const char *from, const char *to, bool noreplace);
int ebbi_os_unlink(const char *path);
int ebbi_os_unlinkat(int dirfd, const char *name);
int ebbi_os_dup_fd(int fd, int min);
int ebbi_os_dir_each(const char *dir, bool (*fn)(int dirfd, const char *name, void *arg), void *arg);
int ebbi_os_dir_each_whole(const char *dir, char *buf, size_t size,
                           bool (*fn)(int dirfd, const char *name, void *arg), void *arg);
long ebbi_os_read(int fd, void *buf, size_t n); /* read(2), EINTR retried */
/* Copies n bytes at src of process pid (ourselves) through the kernel: n, or -1 if a
 * byte was not readable, or EBB_READ_UNSUPPORTED (no process_vm_readv here). */
#define EBB_READ_UNSUPPORTED (-2L)
long ebbi_os_read_mem(int pid, void *dst, const void *src, size_t n);
int ebbi_os_fallocate(int fd, size_t off, size_t len); /* back a file range (tmpfs) */
void ebbi_os_map_fixed(void *p, size_t size, int fd);  /* private memory over p: file fd, or anonymous (-1) */
size_t ebbi_read_file(const char *path, char *buf, size_t n); /* reads up to n-1, NUL-ends */
const char *ebbi_stat_field(const char *text, int field);     /* of a /proc stat text */
void ebbi_write_err(const char *s, size_t n);
void ebbi_write_fd(int fd, const char *s, size_t n);
/* The process's environment: libc's environ, or before libc has set it, the one the
 * kernel gave the process (os.c says where it is found).  ebbi_env_readable() is false
 * when neither can be read. */
const char *ebbi_getenv(const char *name);
bool ebbi_env_readable(void);

/* A lock that never allocates: 0 free, 1 held, 2 held with waiters (futex).
 *
 * Every thread keeps a short record of the locks it holds or is about to take
 * (ebbi_held), so that code running on the same thread later, in a signal handler or in
 * a fatal report, knows: a fork from a signal handler that interrupted ebbmalloc must not
 * wait for a lock its own thread holds, and a fatal report releases what its thread
 * holds before abort(), and no other.  An entry is counted before the lock is tried and
 * names the lock only while it is held (ebbi_lock), with signal fences (compiler
 * barriers: the record is read only by the same thread), so that a handler never sees a
 * held lock missing from it, nor a lock named that it does not hold.  Locks are
 * taken at most EBB_HELD_MAX deep (tc_list -> central -> page heap -> page map or
 * records); the fork handlers, which take every lock, use the _raw forms and the
 * `forking` mark instead.  `working` counts the sections in which the thread has shared
 * state in hand without holding a lock (spans it is returning to the kernel, a stats-page
 * write): a fork child must not finish or undo them behind its interrupted frames.
 * ebbi_inside() is true when any of the three is, or when a thread-cache slow path is
 * under way (ebbi_tc_busy, thread_cache.c: its budget claims and list changes take no
 * lock, and a fork child must not count the budget again between their stores): the
 * thread is somewhere inside ebbmalloc, and a fork from a signal handler must take
 * nothing and change nothing. */
typedef struct {
    _Atomic int v;
} ebb_lock_t;
#define EBB_HELD_MAX 8
struct ebb_held_locks {
    unsigned n; /* entries; at most EBB_HELD_MAX are recorded */
    /* lock[i], i < n: the lock held at depth i, or NULL while it is being taken */
    unsigned working; /* lock-free sections with shared state in hand */
    bool forking;     /* inside ebbmalloc's fork handlers */
    ebb_lock_t *lock[EBB_HELD_MAX];
};
extern EBB_TLS struct ebb_held_locks ebbi_held;
static inline void ebbi_work_begin(void) {
    ebbi_held.working++;
    atomic_signal_fence(memory_order_seq_cst);
}
static inline void ebbi_work_end(void) {
    atomic_signal_fence(memory_order_seq_cst);
    ebbi_held.working--;
}
extern EBB_TLS unsigned ebbi_tc_busy; /* slow paths under way on this thread (thread_cache.c) */
static inline bool ebbi_inside(void) {
    return ebbi_held.n || ebbi_held.working || ebbi_held.forking || ebbi_tc_busy;
}
void ebbi_lock_slow(ebb_lock_t *l);
void ebbi_unlock_slow(ebb_lock_t *l);
static inline void ebbi_lock_raw(ebb_lock_t *l) {
    int z = 0;
    if (!atomic_compare_exchange_strong_explicit(&l->v, &z, 1, memory_order_acquire, memory_order_relaxed))
        ebbi_lock_slow(l);
}
static inline void ebbi_unlock_raw(ebb_lock_t *l) {
    if (atomic_exchange_explicit(&l->v, 0, memory_order_release) == 2) ebbi_unlock_slow(l);
}
/* An entry is counted (n) before the lock is tried and named (lock[i]) only once it is
 * held; it is unnamed before the lock is released and uncounted after.  So at every
 * instruction a handler on this thread sees n > 0 whenever it holds or is taking a lock
 * (fork skips), and the locks named are exactly those it holds (a fatal report releases
 * them and no other).  Each step is a separate store with a signal fence between. */
static inline void ebbi_lock(ebb_lock_t *l) {
    unsigned n = ebbi_held.n;
    if (n < EBB_HELD_MAX) ebbi_held.lock[n] = NULL;
    atomic_signal_fence(memory_order_seq_cst);
    ebbi_held.n = n + 1;
    atomic_signal_fence(memory_order_seq_cst);
    ebbi_lock_raw(l);
    atomic_signal_fence(memory_order_seq_cst);
    if (n < EBB_HELD_MAX) ebbi_held.lock[n] = l;
}
static inline void ebbi_unlock(ebb_lock_t *l) {
    unsigned n = ebbi_held.n - 1;
    if (n < EBB_HELD_MAX) {
        if (ebbi_held.lock[n] != l) { /* not the innermost: the innermost takes its slot */
            for (unsigned i = 0; i < n; i++)
                if (ebbi_held.lock[i] == l) ebbi_held.lock[i] = ebbi_held.lock[n];
            atomic_signal_fence(memory_order_seq_cst); /* named twice for a moment */
        }
        ebbi_held.lock[n] = NULL;
    }
    atomic_signal_fence(memory_order_seq_cst);
    ebbi_unlock_raw(l);
    atomic_signal_fence(memory_order_seq_cst);
    ebbi_held.n = n;
}
bool ebbi_lock_held_here(const ebb_lock_t *l);
void ebbi_lock_reset(ebb_lock_t *l); /* fork child: free, unless this thread holds it */
void ebbi_unlock_all_held(void);

/* ---------------------------------------------------------------- fault.c
 * Messages without stdio, and the reports that stop the process.  Below every tier:
 * any file may call these. */
int ebbi_snprintf(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void ebbi_fatal(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
EBB_COLD void ebbi_corrupt_link(void *obj) __attribute__((noreturn));
/* free() or realloc() (`what`) was given p, which it cannot accept: names why, stops. */
EBB_COLD void ebbi_reject(const char *what, void *p) __attribute__((noreturn));

/* ---------------------------------------------------------------- options.c */
enum ebb_option {
    EBB_OPT_RELEASE_MS,         /* free pages older than this go back to the kernel */
    EBB_OPT_BACKGROUND,         /* background release thread on/off */
    EBB_OPT_THREAD_CACHE_MAX,   /* bytes: all thread caches together */
    EBB_OPT_THREAD_CACHE_ONE,   /* bytes: one thread's cache at most */
    EBB_OPT_THREAD_CACHE_BLOCK, /* bytes: bigger blocks are not kept in thread caches */
    EBB_OPT_SOFT_LIMIT,         /* bytes, or percent of the cgroup limit when negative */
    EBB_OPT_MMAP_THRESHOLD,     /* bytes: larger requests get their own mapping */
    EBB_OPT_TRIM_THRESHOLD,     /* bytes of free resident pages kept regardless of age */
    EBB_OPT_HUGEPAGES,          /* 0 never ask for huge pages, 1 let the kernel decide */
    EBB_OPT_STATS,              /* print the summary at exit */
    EBB_OPT_STATS_SHM,          /* publish the live stats page */
    EBB_OPT_ARENA_MAX,          /* accepted for glibc compatibility; no effect */
    EBB_OPT_VERBOSE,            /* 1: say on stderr what the environment refused (os.c) */
    EBB_OPT_PROF,               /* the sampled heap profile on/off */
    EBB_OPT_PROF_SAMPLE,        /* bytes: mean interval between samples */
    EBB_OPT_COUNT
};
extern int64_t ebbi_options[EBB_OPT_COUNT];
/* Relaxed: each option is one independent integer, and nothing else is published
 * through it.  The values set at start are published with everything initialisation
 * writes by ebbi_init_state (every reader passed ebbi_ensure_init, or holds a pointer
 * from a thread that did); a later mallopt() reaches the other threads at their next
 * load, with no order against anything else, which is all glibc promises too. */
static inline int64_t ebbi_opt(enum ebb_option o) {
    return __atomic_load_n(&ebbi_options[o], __ATOMIC_RELAXED);
}
void ebbi_options_init(void);
void ebbi_options_late(void); /* options read again if the environment was unreadable */
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
    /* Relaxed: another thread's first malloc may be filling the table.  Whatever a thread
     * reads, it only indexes its own cache with it, and a thread that has not passed
     * ebbi_ensure_init has the empty cache, whose every list sends it to the slow path;
     * there the acquire of ebbi_init_state makes the whole table (and all else init
     * wrote) visible, and the class is looked up again. */
    return __atomic_load_n(&ebbi_class_lut[ebbi_class_index(n)], __ATOMIC_RELAXED);
}
static inline size_t ebbi_class_objects(unsigned cls) {
    return (ebbi_classes[cls].pages << EBB_PAGE_SHIFT) / ebbi_classes[cls].size;
}

/* ---------------------------------------------------------------- free lists
 * A free object's first word links to the next free object, XORed with a per-process
 * random secret, so that a heap overflow that overwrites it cannot name an address for
 * malloc to hand out (and the paths that walk chains check what they decode).  Its second
 * word holds the free key while it is free: free() of an object whose second word already
 * holds the key is a double free.  malloc clears it.
 *
 * The malloc fast path decodes both words at once: word0 ^ word1 ^ mix (mix = secret ^
 * key) is the next object exactly when the second word still holds the key.  A valid
 * next object (or the end of a thread-cache list, ebbi_tc_end) is 16-aligned and below
 * 2^48, so the decoded value has its "tag" bits (0-3 and 48-63) clear; any write into
 * either word of a free object made without the secret leaves 20 random tag bits set but
 * for one time in a million, and malloc reports the corruption.  The keys are chosen so
 * that the mark cannot be faked by the usual values: the key is odd, secret and key
 * agree in their low four bits (so mix's are clear and the end marker's decoded value is
 * odd before and after initialisation), and mix has a high bit set (two equal words, the
 * trace of a memset-like overflow, decode to mix itself and fail).  Set once by
 * ebbi_link_keys_init() at initialisation, read-only after. */
struct ebb_link_keys {
    uintptr_t secret; /* XORed into every link */
    uint64_t key;     /* the second word of every free object */
} EBB_ALIGN(16);      /* the free fast path stores both words with one 16-byte XOR */
extern struct ebb_link_keys ebbi_link_keys;
extern uint64_t ebbi_link_mix;           /* secret ^ key */
extern const uint64_t ebbi_link_tagmask; /* bits no decoded link may have */
#define ebbi_link_secret (ebbi_link_keys.secret)
#define ebbi_free_key (ebbi_link_keys.key)
void ebbi_link_keys_init(void);
static inline void *ebbi_link_encode(void *slot, void *next) {
    (void)slot;
    return (void *)((uintptr_t)next ^ ebbi_link_secret);
}
static inline void *ebbi_link_decode(void *slot, void *stored) {
    (void)slot;
    return (void *)((uintptr_t)stored ^ ebbi_link_secret);
}
static inline void *ebbi_next(void *obj) { return ebbi_link_decode(obj, *(void **)obj); }
static inline void ebbi_set_next(void *obj, void *next) { *(void **)obj = ebbi_link_encode(obj, next); }
/* For the slow paths: the next link, which must be aligned (checked). */
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
 *                  `free_since_ms` is when it was last freed or merged.  A resident one
 *                  is on the age list, or `stuck` when it holds no whole kernel page.
 *   SPAN_SMALL     cut into objects of class `cls`, all free on it from the start
 *                  (each with the double-free key, so freeing a slot never handed out is
 *                  caught as a double free).  Invariant: objects == used + |free bits|,
 *                  where `used` counts objects not free on the span (in thread
 *                  caches, transfer caches, or with the program).  used == 0 sends the span
 *                  back to the page heap.  While kernel pages of it are given back, the
 *                  objects in them are `absent`: objects == used + |free bits| + absent.
 *   SPAN_LARGE     one allocation of npages pages (a request above 256 KiB or an aligned one).
 *   SPAN_MAPPED    one allocation with its own mapping, returned with munmap.
 *                  A LARGE or MAPPED span has cls 0 unless its block was sampled by the
 *                  heap profile (profile.c): then cls is the size class of the small
 *                  request it holds, or EBB_CLS_SAMPLED_LARGE, and `prof` describes it.
 *   SPAN_RELEASING free pages cut out for release, on no free list until their madvise
 *                  (run without the page heap lock) is done; counted as released
 *                  already.  page_heap.c keeps them on its own span list `cut_out`
 *                  (through prev/next).
 *
 * The page map knows every page of a SMALL span and the first and last page of the
 * others, so that free() finds any object's span and the page heap finds neighbours. */
enum ebb_span_state { SPAN_FREE = 1, SPAN_SMALL, SPAN_LARGE, SPAN_MAPPED, SPAN_RELEASING };
#define EBB_CLS_SAMPLED_LARGE 0xff

struct ebb_span {
    uintptr_t start;
    size_t npages;
    struct ebb_span *prev, *next; /* on one list: page heap free list or central bucket */
    /* What only some states use, overlaid: a record is 80 bytes, one slot of meta.c's
     * record pages (SMALL needs 36 bytes of its own, which the 24 of a 64-byte record do
     * not hold).  A new field goes into the part of the state that uses it. */
    union {
        /* FREE and resident: the page heap's age list, or (stuck) its stuck list through
         * lru_next. */
        struct {
            struct ebb_span *lru_prev, *lru_next;
            uint64_t free_since_ms;
        };
        struct {         /* RELEASING */
            uint8_t why; /* the rule that releases it (enum ebb_release_why) */
            /* the private chain of the spans one thread took for its madvise
             * (ebbi_page_release_finish), valid from when it took them under the page
             * heap lock to release_done under it again; only that thread follows it */
            struct ebb_span *taken_next;
        };
        struct { /* SMALL; its objects end where it ends (ebbi_span_end) */
            /* central.c: bit j set while object j is free on the span (in no cache, not
             * absent), lowest address at bit 0: in the word itself for spans of at most
             * 64 objects, else in EBB_SPAN_FREE_WORDS words of a record of their own
             * (ebbi_span_free_bits) */
            union {
                uint64_t free_word;
                uint64_t *free_ext;
            };
            /* central.c, "released pages": bit k set while the span's k-th kernel page is
             * given back; the objects overlapping such pages (`absent`) are not free on it */
            uint64_t gone;
            uint64_t pop_ms; /* when objects were last taken from it */
            uint32_t used;
            uint32_t objects;
            uint32_t absent;
            /* frees that took the slow path since pages went (central.c, set_gone), atomic */
            uint32_t routed_frees;
        };
        struct {                 /* LARGE and MAPPED */
            size_t map_size;     /* MAPPED: length of the mapping */
            struct {             /* LARGE or MAPPED with cls != 0: a sampled block (profile.c) */
                uint64_t hash;   /* of the stack it is counted in */
                uint64_t size;   /* bytes requested */
                uint64_t weight; /* objects it stands for (low 40 bits); the table's epoch */
            } prof;
        };
    };
    uint8_t state;
    uint8_t cls;
    uint8_t released; /* FREE: pages not resident.  SMALL: set by central.c when it
                        * returns an empty span whose pages it gave back, all of them */
    uint8_t zeroed;   /* LARGE: pages known zero when handed out (calloc skips memset) */
    union {
        uint8_t bucket; /* SMALL: which fullness list of the central tier it is on */
        /* RELEASING, taken: 1 released, 2 refused; written and read back by the taking
         * thread only (ebbi_page_release_finish) */
        uint8_t release_result;
    };
    uint8_t on_list;
    uint8_t pages_seen; /* SMALL: looked at by the release pass, nothing freed since */
    union {             /* of two states, one byte */
        /* RELEASING, atomic: 0 waiting, 1 taken by a thread for its madvise */
        uint8_t in_flight;
        uint8_t stuck; /* FREE, resident, no whole kernel page: off the age list
                               (cleared by insert_free for a record of any former state) */
    };
};
_Static_assert(sizeof(struct ebb_span) == 80, "a span record is 80 bytes (meta.c's slot)");

/* SMALL: its free bits (see free_word). */
#define EBB_SPAN_FREE_WORDS (EBB_PAGE / EBB_MIN_ALIGN / 64)
_Static_assert(EBB_SPAN_FREE_WORDS * 8 <= sizeof(struct ebb_span), "a span's free bits fit in a record");
static inline uint64_t *ebbi_span_free_bits(struct ebb_span *s) {
    return s->objects <= 64 ? &s->free_word : s->free_ext;
}

/* SMALL: the end of its last object, which is the span's end. */
static inline char *ebbi_span_end(const struct ebb_span *s) {
    return (char *)(s->start + (s->npages << EBB_PAGE_SHIFT));
}

/* SMALL: where its first block begins.  The span's unused bytes (less than one block, a
 * multiple of 16) come before its blocks, and its last block ends with it: so every
 * kernel page of it holds blocks only or nothing (central.c gives back the pages of
 * free blocks), and a pointer into the unused part is no block start for free's check
 * (an offset below a block start, taken as unsigned, fails ebbi_block_start).  An
 * alignment that divides the class size (at most EBB_PAGE) divides the unused part too,
 * so blocks stay aligned as if they started the span. */
static inline uintptr_t ebbi_span_blocks(const struct ebb_span *s) {
    return (uintptr_t)ebbi_span_end(s) - (uintptr_t)s->objects * ebbi_classes[s->cls].size;
}

struct ebb_span_list {
    struct ebb_span *head;
    size_t count;
};
void ebbi_span_list_push(struct ebb_span_list *l, struct ebb_span *s);
void ebbi_span_list_remove(struct ebb_span_list *l, struct ebb_span *s);

/* ---------------------------------------------------------------- meta.c */
void *ebbi_meta_alloc(size_t size);   /* zeroed, 64-byte aligned, never freed to the OS */
struct ebb_span *ebbi_span_new(void); /* zeroed */
void ebbi_span_delete(struct ebb_span *s);
size_t ebbi_meta_release(void);     /* record pages with no record go back; returns bytes */
const char *ebbi_meta_verify(void); /* NULL when the record chunks are consistent */
void ebbi_meta_records(size_t *live, size_t *resident_bytes); /* span records, their pages */
bool ebbi_meta_owns(const void *p, size_t n);                 /* in record pages (tests) */
size_t ebbi_meta_bytes(void);
void ebbi_meta_fork_prepare(void);
void ebbi_meta_fork_parent(void);
void ebbi_meta_fork_child(void);

/* ---------------------------------------------------------------- pagemap.c
 * From an address to what ebbmalloc has there, in two maps, both written under the page
 * heap lock (or before the memory they describe is handed out) and read without a lock.
 *
 * The span map: two levels, the root indexing 2 GiB regions, a leaf holding the span of
 * each 8 KiB page.  A root slot is NULL where ebbmalloc never had memory, so an address
 * it never handed out is recognised.  Every page of a SMALL span is known, the first and
 * last page of any other.  The slow paths find a page's class and span start in its
 * span record.
 *
 * The class map: what free's fast path reads, one 8-byte entry per page: the size class
 * (0: not a small object) and the low 32 bits of the span's start (spans are far smaller
 * than 4 GiB, so (uint32_t)(a - start) is a's offset in its span).  Two levels again, but
 * built for the fast path to test nothing it can avoid:
 *   - leaves of 2^22 pages (32 GiB of address space, 32 MiB of entries mapped on first
 *     use, touched only where ebbmalloc has pages; in both maps, the kernel pages of
 *     entries that describe only the inside of released free spans go back, which
 *     lock-free readers cannot tell: pagemap.c);
 *   - every root slot points at a leaf, a shared read-only one of zeros (class 0) where
 *     ebbmalloc never had memory, so there is no NULL to test;
 *   - slot r holds the leaf's address minus r << 25, so that the entry of page number n
 *     (= a >> 13) is at ebbi_cm_root[n >> 22] + 8 * n, without masking n;
 *   - ebbi_cm_last is the last root index in use: -1 until the map is set up at
 *     initialisation (every free goes to the slow path until then), and an address at or
 *     above 2^48 goes to the slow path by the same signed compare.
 *
 * Ordering.  Written under locks (root slots under pm_lock, entries under the page heap
 * lock), read by free, realloc and malloc_usable_size without any.  A root slot is
 * published with a release store after its leaf is mapped (the kernel zeroed it), a span
 * pointer with a release store after its span record was set up, and a class entry (one
 * 8-byte store, class and start together) with a release store.  For every pointer a
 * caller may legitimately pass, the leaves and entries of its page were written before
 * the block was handed out (under the page heap lock, then through the central lock to
 * the allocating thread) and stay unchanged while the block is allocated; the block
 * reached the freeing thread through happens-before edges (the program's own hand over,
 * without which the program races on the block itself), so loads without any ordering
 * see them: relaxed atomic loads suffice.  The acquire loads below (root slot, span
 * pointer) are for pointers that come with no such edge: one ebbmalloc never handed out,
 * or one freed twice while its span changes; then they make the leaf's zeroed memory and
 * the span record's fields visible.  The free fast path (api.c) reads the class map with
 * plain loads on the argument above; its load of the entry depends on the loaded root
 * slot (an address dependency, which every CPU ebbmalloc runs on orders like a consume
 * load), and it reads class and start in one entry, never a mix of two. */
#define EBB_PM_LEAF_BITS 18
#define EBB_PM_ROOT_BITS (EBB_ADDR_BITS - EBB_PAGE_SHIFT - EBB_PM_LEAF_BITS)
#define EBB_PM_LEAF_SHIFT (EBB_PAGE_SHIFT + EBB_PM_LEAF_BITS)
struct ebb_pm_leaf {
    struct ebb_span *span[1 << EBB_PM_LEAF_BITS];
};
extern struct ebb_pm_leaf *ebbi_pm_root[1 << EBB_PM_ROOT_BITS];
static inline struct ebb_pm_leaf *ebbi_pm_leaf(uintptr_t a) {
    return __atomic_load_n(&ebbi_pm_root[a >> EBB_PM_LEAF_SHIFT], __ATOMIC_ACQUIRE);
}
static inline size_t ebbi_pm_slot(uintptr_t a) {
    return (a >> EBB_PAGE_SHIFT) & ((1u << EBB_PM_LEAF_BITS) - 1);
}
/* Span of the page holding address a, or NULL if ebbmalloc has no span there. */
static inline struct ebb_span *ebbi_pm_span(uintptr_t a) {
    if (a >> EBB_ADDR_BITS) return NULL;
    struct ebb_pm_leaf *l = ebbi_pm_leaf(a);
    return l ? __atomic_load_n(&l->span[ebbi_pm_slot(a)], __ATOMIC_RELAXED) : NULL;
}
/* The same, for code that reads the span record next without an edge to its writer. */
static inline struct ebb_span *ebbi_pm_span_acquire(uintptr_t a) {
    if (a >> EBB_ADDR_BITS) return NULL;
    struct ebb_pm_leaf *l = ebbi_pm_leaf(a);
    return l ? __atomic_load_n(&l->span[ebbi_pm_slot(a)], __ATOMIC_ACQUIRE) : NULL;
}

#define EBB_CM_LEAF_BITS 22
#define EBB_CM_ROOT_BITS (EBB_ADDR_BITS - EBB_PAGE_SHIFT - EBB_CM_LEAF_BITS)
#define EBB_CM_ROOT_SHIFT (EBB_PAGE_SHIFT + EBB_CM_LEAF_BITS)
/* start: the low 32 bits of where the span's first block begins, less one block.  free
 * takes p's low 32 bits minus start, so a block k of the span is at offset (k + 1) *
 * size, and an address in the span's unused head (up to one block less 16 bytes before
 * its first block) is at an offset between 0 and one block, strictly: never a multiple
 * of the size.  Without that block of bias such an address would wrap to nearly 2^32,
 * where 2^32 minus its distance may be a multiple of the size (for 48-byte blocks, the
 * address 16 bytes before the first block is), and only the cap on a list's room (its
 * product is beyond 4096 objects of room) would refuse it.  Offsets stay below 2^32 (spans are far
 * smaller), where the reciprocal test is exact, and the products of block offsets stay
 * below 2^16 (k + 1 <= objects: see room in the thread cache's comment). */
struct ebb_cm_entry {
    uint32_t start;
    uint32_t cls;
};
extern uintptr_t ebbi_cm_root[1 << EBB_CM_ROOT_BITS];
extern intptr_t ebbi_cm_last;
/* Size class of the page holding a, 0 if it is not in a small-object span.  The slow
 * paths read the span record, so that they do not depend on the class map (which is the
 * fast path's alone, and absent if its empty leaf could not be mapped). */
static inline unsigned ebbi_pm_class(uintptr_t a) {
    struct ebb_span *s = ebbi_pm_span_acquire(a);
    return s && s->state == SPAN_SMALL ? s->cls : 0;
}
/* a, in a page of a class-cls span (ebbi_pm_class said so), is where one of its blocks
 * begins. */
static inline bool ebbi_pm_block_start(uintptr_t a, unsigned cls) {
    struct ebb_span *s = ebbi_pm_span_acquire(a);
    return s && a >= ebbi_span_blocks(s) && ebbi_block_start(cls, a - ebbi_span_blocks(s));
}
void ebbi_pm_init(void);                          /* the class map's root and empty leaf */
bool ebbi_pm_ensure(uintptr_t start, size_t len); /* leaves exist; false if out of memory */
void ebbi_pm_set(uintptr_t page_addr, struct ebb_span *s, unsigned cls);
void ebbi_pm_set_span(struct ebb_span *s);         /* map the span's pages per its state */
void ebbi_pm_route(struct ebb_span *s, bool fast); /* SMALL s's frees: fast path, or all slow */
void ebbi_pm_clear_span(struct ebb_span *s);
size_t ebbi_pm_bytes(void);                                  /* resident bytes of the page map */
void ebbi_pm_release_inside(uintptr_t start, uintptr_t end); /* see pagemap.c */
void ebbi_pm_release_inside_locked(uintptr_t start, uintptr_t end);
bool ebbi_pm_zero_inside(uintptr_t start, uintptr_t end);
bool ebbi_pm_owns(const void *p, size_t n); /* inside a leaf of either map (tests) */
void ebbi_pm_fork_prepare(void);
void ebbi_pm_fork_parent(void);
void ebbi_pm_fork_child(void);

/* ---------------------------------------------------------------- page_heap.c
 * All fields under the page heap lock. */
/* Which rule returned memory: the timer (pages idle for EBB_RELEASE_MS, and what idle
 * caches held), the free-page cap, the trade for a request no resident span fits,
 * malloc_trim, the soft limit. */
enum ebb_release_why { EBB_WHY_TIMER, EBB_WHY_CAP, EBB_WHY_TRADE, EBB_WHY_TRIM, EBB_WHY_SOFT, EBB_WHY_COUNT };
struct ebb_page_heap_stats {
    size_t mapped;        /* bytes of spans (any state) ebbmalloc holds from the kernel */
    size_t free_res;      /* FREE spans not released */
    size_t released;      /* FREE spans released */
    size_t mapped_count;  /* MAPPED spans alive */
    size_t mapped_direct; /* their bytes */
    size_t peak_used;     /* high-water mark of mapped - free_res - released */
    size_t unreleasable;  /* of free_res: spans that hold no whole kernel page (stuck) */
    size_t release_calls;
    size_t released_total;
    size_t released_by[EBB_WHY_COUNT]; /* released_total by the rule that released it */
    size_t faulted_bytes;              /* handed out from the released set: the kernel faults them in */
    size_t refault_bytes;              /* of those, released less than EBB_RELEASE_MS before */
    size_t refault_pressed;            /* of those, released by the trade or the cap (and not trimmed) */
    size_t reuse_floor;                /* kept resident for refaults (page_heap.c), read now */
    size_t burst_floor;                /* kept resident by the timer for bursts (page_heap.c), read now */
    uint64_t reuse_fed_ms;             /* when the reuse floor was last fed */
    uint64_t burst_fed_ms;             /* the burst state's last refault or use of kept memory (0: none) */
    uint64_t burst_gap_ms;             /* the longest pause between two of those in this state */
    size_t grown_total;                /* mapped by grow(), ever */
    size_t direct_total;               /* mapped for blocks of their own, ever */
    size_t small;                      /* SMALL spans handed to the central tier (ebbi_page_alloc_locked) */
    size_t large;                      /* LARGE spans handed out as blocks (ebbi_page_alloc) */
    /* of released: RELEASING spans, whose madvise may not be done (still resident for
     * the OS layer's count until release_done) */
    size_t releasing;
};
extern ebb_lock_t ebbi_ph_lock;
struct ebb_span *ebbi_page_alloc(size_t npages, size_t align_pages); /* locks itself */
void ebbi_page_free(struct ebb_span *s);
struct ebb_span *ebbi_page_alloc_locked(size_t npages,
                                        size_t align_pages); /* then ebbi_page_release_finish */
void ebbi_page_free_locked(struct ebb_span *s);
#define EBB_FREE_RATIO 8                  /* see check_free_ratio in page_heap.c */
#define EBB_FREE_FLOOR ((size_t)64 << 20) /* ... at most 1/16 of a cgroup limit */
void ebbi_page_release_finish(void);      /* the madvise of releases, after the lock is dropped */
void ebbi_page_fork_child(void);
bool ebbi_page_shrink(struct ebb_span *s, size_t npages); /* LARGE: give back the tail */
bool ebbi_page_grow(struct ebb_span *s, size_t npages);   /* LARGE: take the free pages after it */
struct ebb_span *ebbi_mapped_alloc(size_t size, size_t align);
void ebbi_mapped_free(struct ebb_span *s);
bool ebbi_mapped_resize(struct ebb_span *s, size_t size); /* false: unchanged */
/* Release FREE spans not used since `older_than_ms` until `goal` bytes are returned
 * (SIZE_MAX = no goal), oldest first.  older_than_ms 0 or UINT64_MAX: any age (0 also
 * ignores EBB_TRIM_THRESHOLD).  Caller holds the lock.  Returns bytes released. */
size_t ebbi_page_release_locked(uint64_t older_than_ms, size_t goal, enum ebb_release_why why);
size_t ebbi_page_release_since_locked(uint64_t since_ms);
void ebbi_page_heap_stats(struct ebb_page_heap_stats *st); /* locks itself */
/* The reuse floor as it would be at `now` (ebbi_now_ms's clock), for tests; locks itself. */
size_t ebbi_page_reuse_floor_at(uint64_t now);
bool ebbi_page_bursting(void);            /* the timer keeps memory for the next burst (page_heap.c; tests) */
bool ebbi_page_bursting_at(uint64_t now); /* ... as it would at `now`, with today's EBB_RELEASE_MS (tests) */
size_t ebbi_page_burst_room(void);        /* ... and what the central tier may keep for it */
uint64_t ebbi_page_oldest_free_ms(void);  /* caller holds the lock */
void ebbi_page_release_map_locked(void);  /* page-map pages inside released spans go back */
const char *ebbi_page_heap_verify(void);  /* NULL when consistent */
extern struct ebb_page_heap_stats ebbi_ph_stats;

/* ---------------------------------------------------------------- central.c
 * One per class, under its own lock.  A transfer cache keeps chains of up to `batch`
 * objects (linked through their first words, last link NULL) as threads gave them back
 * (the giving thread writes the links and keys before it releases the lock, the taking
 * one reads them after it acquires it: the lock orders them, there is no lock-free path),
 * so that objects freed on one thread go to the next thread that needs some without
 * touching spans.  Behind it, spans with free objects sit on fullness buckets, and allocation
 * takes from the fullest so that the emptiest spans can drain and go back. */
#define EBB_XFER_SLOTS 64
#define EBB_BUCKETS 4
struct ebb_central {
    ebb_lock_t lock;
    uint32_t xfer_used;    /* the transfer cache: chains in xfer_slots */
    uint32_t xfer_limit;   /* objects in them at most (0: no transfer cache) */
    uint32_t xfer_low;     /* low-water mark since the last trim */
    uint32_t xfer_objects; /* objects in all its chains (the transfer cache's too) */
    struct {
        void *head, *tail;
        uint32_t n;
    } xfer_slots[EBB_XFER_SLOTS];
    struct ebb_span_list buckets[EBB_BUCKETS];
    size_t spans;        /* SMALL spans of this class */
    size_t free_objects; /* free on their spans or absent (not in transfer cache) */
    size_t released;     /* bytes of kernel pages gone in this class's live spans */
    size_t pages_out;    /* bytes ever given back from live spans (for EBB_STATS=2) */
    size_t pages_back;   /* bytes ever brought back for allocation */
    /* Objects given to thread caches or straight to the program and not given back: in
     * the caches or in use.  Counted at ebbi_central_pop and ebbi_central_push, under the
     * lock, and independent of the spans: spans * objects per span == handed_out +
     * free_objects + xfer_objects (ebbi_central_verify). */
    size_t handed_out;
    /* Spans being made for this class without the lock (ebbi_central_pop): the page heap
     * counts them as SMALL already, the class does not yet. */
    uint32_t growing;
    /* No span of the class can qualify for the release of its free pages before this
     * time (ms; a lower bound, see ebbi_central_release_pages): the pass skips the class
     * until then instead of walking its spans. */
    uint64_t release_due_ms;
} EBB_ALIGN(64);
extern struct ebb_central ebbi_central[EBB_NCLASS];
void ebbi_central_init(void);
/* Takes objects for a cache that wants n: returns how many (at most a batch, possibly more
 * than n when a whole transfer-cache chain is taken), as a chain from *head to *tail
 * (last link NULL), so that the taker need not walk it. */
size_t ebbi_central_pop(unsigned cls, size_t n, void **head, void **tail);
/* Gives back a chain of n objects from head to tail (last link NULL). */
void ebbi_central_push(unsigned cls, void *head, void *tail, size_t n);
/* A free the class map sent to the slow path: true if o is freed already, its page given
 * back; counts the span's routed frees and brings its pages back when it is busy again. */
bool ebbi_central_routed_free(const void *o, unsigned cls);
size_t ebbi_central_trim(bool all); /* empties idle transfer caches; returns objects moved */
/* Gives back the kernel pages of live spans that hold only free objects: of spans idle
 * for EBB_RELEASE_MS and at most half used, or (all) of every span.  Returns bytes. */
size_t ebbi_central_release_pages(bool all);
const char *ebbi_central_verify(void); /* NULL when every span and counter agree */
void ebbi_central_fork_prepare(void);
void ebbi_central_fork_parent(void);
void ebbi_central_fork_child(void);

/* ---------------------------------------------------------------- thread_cache.c
 * A thread's cache: per size class, a list of free objects linked through their first
 * words (see free lists) and ending at ebbi_tc_end, never NULL, so that malloc's fast
 * path needs no emptiness test: the end marker fails its decode check, like a corrupted
 * object, and the slow path tells the two apart.
 *
 * The fast paths read only the class-indexed arrays at the record's start, each element
 * 8 bytes so that one scaled index reaches all of them (offsets checked in thread_cache.c,
 * used by api.c's x86-64 fast paths):
 *   head[c]  first object of list c;
 *   div[c]   ebbi_class_div of class c, the block-start check's reciprocal (0 for class
 *            0, for classes thread caches do not keep, and in the empty cache);
 *   room[c]  how many more objects list c may take (slow[c].max - its length), times
 *            EBB_TC_ROOM_ONE = 2^16; never negative when a fast path can run.  free
 *            compares the block-start product against it instead of against div: for an
 *            offset x in the span, x * div mod 2^64 is below 2^16 when x is a multiple
 *            of the size (it is x / size times size * div - 2^64, which is below the size,
 *            and spans of cached classes are at most 64 KiB), and at least div (> 2^48)
 *            otherwise (exact for x < 2^32).  So one compare says "a block starts here
 *            and the list has room"; free then takes EBB_TC_ROOM_ONE, malloc gives it
 *            back.  A full list (room 0) or div 0 sends free to its slow path;
 *   prof_left  bytes of allocation left before the heap profile's next sample; malloc's
 *            fast path subtracts the request and goes to the slow path when negative;
 *   cls_of[n]  the class of an n-byte request, n <= EBB_TC_DIRECT, in the record itself
 *            so that malloc addresses it from the register holding the record.
 * Budget: the thread's claimed bytes are sum(slow[c].max * size), and the total of all
 * thread caches never exceeds EBB_THREAD_CACHE_MAX.  Threads without a cache point at the
 * static empty cache (every head the end marker, every div 0), which sends every call to
 * the slow path, where the thread gets a real one; nothing ever writes the empty cache.
 *
 * States of a record, who may touch what in each, and who moves it to which state
 * (tc_list_lock guards tc_all, tc_parked, tc_free and the count of threads):
 *
 *   state          owner may touch         drainer may touch          leaves for (moved by)
 *   -------------  ----------------------  -------------------------  ------------------------
 *   owned          head, room, prof_left,  busy (reads); the owner's  busy (owner); being
 *                  its lists' objects      TLS pointer, to swap (a)   drained (drainer)
 *   busy           every field             busy (reads, backs off)    owned, exited (owner)
 *   being drained  the one fast-path call  head, first two links     parked (drainer, proofs
 *                  it was stopped in (b)   (c); then max, claimed,    held); owned (drainer,
 *                                          the record lists, the      pointer put back)
 *                                          second object's link (d)
 *   parked         that one call (b)       nothing                    busy (owner's next slow
 *                                                                     path); exited (owner)
 *   exited         nothing                 nothing                    busy (a new thread)
 *
 *   owned: real, on tc_all, the owner's TLS pointer at it, busy 0.  busy: the owner's
 *   TLS busy count above 0, raised before it reads its pointer, lowered after its last
 *   write.  being drained: the drainer holds tc_list_lock and has pointed the owner's TLS
 *   pointer at the empty cache.  parked: detached, on tc_parked, the pointer still at the
 *   empty cache.  exited: on tc_free, no owner.
 *   (a) only under tc_list_lock, as every change the owner makes to it.
 *   (b) head, room and prof_left, and one object of one list: a pop holds at most the
 *       first object and its successor, a push the first object.
 *   (c) only while the owner is proven off CPU (idle_detach, steps 3 to 5).
 *   (d) after the proofs; none of these is touched by a fast path.
 *   The stats read room and max of owned records and max of parked ones (racy by design).
 *
 * The drain's argument (idle_detach, in thread_cache.c) in short: it acts only on an
 * owner that is blocked in the kernel (a system call, perhaps from a signal handler that
 * stopped it anywhere), which the kernel's scheduler locks make a synchronisation point:
 * everything the owner did before is visible, nothing after can be seen early.  A
 * stopped slow path has raised busy first (compiler order pinned), so the drainer backs
 * off; a stopped fast path holds at most the first two objects of one list, which the
 * drain leaves in place; any later call finds the empty cache.  malloc/free are not
 * async-signal-safe: a handler that stops a thread inside them may block (or fork), but
 * must not call them. */
#define EBB_TC_DIRECT 1024
#define EBB_TC_ROOM_SHIFT 16
#define EBB_TC_ROOM_UNIT 65536 /* 1 << EBB_TC_ROOM_SHIFT, as the assembler reads it */
#define EBB_TC_ROOM_ONE ((int64_t)EBB_TC_ROOM_UNIT)
extern const uint64_t ebbi_tc_end[2];
#define EBB_TC_END ((void *)ebbi_tc_end)
struct ebb_tc_slow {   /* fields only the slow paths (and the drainer) touch */
    uint16_t max;      /* room claimed from the budget, in objects (<= MAX_LEN) */
    uint8_t active;    /* the slow path saw this list since the last scavenge */
    uint8_t overflows; /* times the list was full since max last grew (<= 4) */
    int8_t run;        /* its last slow paths: n > 0 overflows in a row, -n underflows */
    uint8_t returned;  /* it overflowed since the last scavenge: frees come back to it */
};
struct ebb_tcache {
    void *head[EBB_NCLASS];
    int64_t room[EBB_NCLASS];
    uint64_t div[EBB_NCLASS];
    int64_t prof_left;
    uint8_t cls_of[EBB_TC_DIRECT + 1];
    struct ebb_tc_slow slow[EBB_NCLASS];
    size_t claimed; /* sum(max * size) */
    uint64_t last_scavenge_ms;
    uint32_t ops_since_tick;
    bool real;                      /* owned or busy: not the empty cache, not parked */
    bool starved;                   /* a list could not grow for want of share since the last tick */
    bool detached;                  /* parked */
    int tid;                        /* the owner thread */
    struct ebb_tcache **tls_slot;   /* the owner's ebbi_tc */
    unsigned *busy_slot;            /* the owner's ebbi_tc_busy */
    uint64_t last_tick_ms;          /* the owner's slow path last looked at the clock */
    uint64_t seen_run_ns;           /* drainer only: the owner's CPU time when last looked at */
    uint64_t seen_since_ms;         /* ... and since when it has not changed */
    uint64_t look_after_ms;         /* drainer only: no look at its CPU time before then */
    uint32_t look_gap_ms;           /* ... and the wait before that look (idle_long_enough) */
    uint64_t look_tick_ms;          /* ... and last_tick_ms as the gap last saw it */
    struct ebb_tcache *prev, *next; /* on tc_all or tc_parked, under ebbi_tc_list_lock */
    struct ebb_tcache *free_next;
};
/* Byte offsets the x86-64 fast paths use (checked against the struct). */
#define EBB_TC_ROOM_OFF 776
#define EBB_TC_DIV_OFF 1552
#define EBB_TC_PROF_OFF 2328
#define EBB_TC_CLS_OF_OFF 2336
extern EBB_TLS struct ebb_tcache *ebbi_tc;
extern const struct ebb_tcache ebbi_tc_empty;
/* The caller's record, as its fast paths read it: relaxed, since the drainer may point
 * it elsewhere (a plain load on every CPU). */
static inline struct ebb_tcache *ebbi_tc_mine(void) { return __atomic_load_n(&ebbi_tc, __ATOMIC_RELAXED); }
void *ebbi_malloc_slow(size_t n);               /* n <= EBB_SMALL_MAX not counted toward the profile yet */
void *ebbi_malloc_miss(size_t n);               /* the fast path's decode check failed */
void *ebbi_malloc_sample(size_t n);             /* the fast path counted n and the countdown went negative */
void ebbi_tc_free_small(void *p, unsigned cls); /* a checked small object, from free's slow path */
/* The heap profile's sampler: called from malloc's slow path, with the caller's cache
 * busy, when prof_left went negative (n already counted); returns a sampled allocation
 * of n bytes, or NULL for "not sampled, allocate as usual".  It must set prof_left
 * again.  A new cache starts at prof_left 0, so each thread's first small malloc calls
 * it (profile.c). */
void *ebbi_prof_sample_alloc(struct ebb_tcache *tc, size_t n);
size_t ebbi_tc_list_len(unsigned cls); /* objects in the caller's own list (tests) */
uint32_t ebbi_tc_list_max(unsigned cls);
void ebbi_tc_flush_self(void);       /* return the caller's whole cache */
void ebbi_tc_thread_exit(void *arg); /* pthread key destructor */
/* What the thread caches hold (ebbi_tc_census's held_bytes) and, in *threads, how many
 * threads have one. */
size_t ebbi_tc_cached_bytes(size_t *threads);
/* The budget against what the caches hold, over every owned and parked record. */
struct ebb_tc_census {
    size_t records, parked; /* on tc_all, on tc_parked */
    size_t claimed;         /* sum of the records' claimed */
    size_t room_bytes;      /* sum of max * size */
    size_t held_bytes;      /* sum of length * size (what ebbi_tc_cached_bytes counts) */
    size_t over_lists;      /* lists longer than their max */
    size_t over_bytes;      /* bytes of objects beyond max on those */
    size_t bad_claims;      /* records whose claimed differs from their room */
    int64_t left, total;    /* budget_left, EBB_THREAD_CACHE_MAX */
    size_t threads;         /* threads with a cache (tc_threads) */
};
void ebbi_tc_census(struct ebb_tc_census *c);
/* NULL when the caller's cache, the parked and the free records agree with their counters
 * and the budget (what it can read safely: thread_cache.c, checks). */
const char *ebbi_tc_verify(void);
/* Empty the caches of threads that sleep: those idle for EBB_RELEASE_MS (no slow path
 * and no CPU time), or, with now (tests), any that is provably not running. */
size_t ebbi_tc_drain_idle(bool now);
size_t ebbi_tc_drain_idle_pass(void); /* the release thread's: quiet threads due a look only */
uint64_t ebbi_tc_idle_emptied(void);
bool ebbi_tc_is_key(unsigned key);  /* the thread-specific key of the caches (release.c) */
uint64_t ebbi_tc_sched_looks(void); /* reads of a quiet thread's CPU time by the drain, for tests */
size_t ebbi_tc_threads(void);       /* threads with a cache (a hint) */
void ebbi_tc_fork_prepare(void);
void ebbi_tc_fork_parent(void);
void ebbi_tc_fork_child(void);
void ebbi_tc_init(void);

/* ThreadSanitizer cannot see the kernel's ordering that the drain relies on (see above);
 * in TSan builds the paths that end an operation on a cache release it, and the drainer
 * acquires it once the owner is proven stopped.  Nothing in other builds. */
#if defined(__SANITIZE_THREAD__)
#define EBB_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define EBB_TSAN 1
#endif
#endif
#ifndef EBB_TSAN
#define EBB_TSAN 0
#endif
#if EBB_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define ebbi_tsan_release(p) __tsan_release((void *)(p))
#define ebbi_tsan_acquire(p) __tsan_acquire((void *)(p))
#else
#define ebbi_tsan_release(p) ((void)0)
#define ebbi_tsan_acquire(p) ((void)0)
#endif

/* ---------------------------------------------------------------- release.c */
extern bool ebbi_thp_active;                /* huge pages planned for and the kernel's THP is "always" */
extern bool ebbi_thp_refused;               /* ebbmalloc's memory is marked MADV_NOHUGEPAGE */
extern size_t ebbi_huge_size;               /* the huge page the page heap maps and releases around */
void ebbi_release_tick(void);               /* from slow paths: time-based release, if due */
uint64_t ebbi_release_bg_passes(void);      /* passes the background thread has made */
size_t ebbi_release_all(void);              /* malloc_trim: everything free goes back */
void ebbi_release_fork_child(bool skipped); /* skipped: see init.c */
/* Whether pc, a return address, is in the frame the shared library starts every program
 * thread with (the bottom of its stack, not an allocator frame); false in the static one. */
bool ebbi_thread_start_frame(uintptr_t pc);
void ebbi_check_soft_limit_locked(void);
void ebbi_release_init(void);
uint64_t ebbi_cgroup_limit(void);
/* Tests: the bound the page heap's cap and reuse floor take from the cgroup.  What init
 * derived from the limit (a percentage EBB_SOFT_LIMIT) stays as it was. */
void ebbi_cgroup_limit_set(uint64_t bytes);
uint64_t ebbi_soft_limit(void);
double ebbi_cgroup_cpus(void);

/* ---------------------------------------------------------------- cgroup.c
 * Shared with the tools' procfs library, hence a header of its own. */
#include "cgroup.h"

/* ---------------------------------------------------------------- stats.c */
void ebbi_stats_init(void);
void ebbi_stats_at_exit(void);
/* NULL when the page heap's counters agree with the OS layer's and the central lists'
 * (stats.c); exact only while no other thread changes them. */
const char *ebbi_stats_verify(void);
/* The kernel pages of the library's central lists and class table, which initialisation
 * writes across: part of metadata. */
size_t ebbi_static_bytes(void);
void ebbi_shm_publish(void);
/* The stats page's file name for the calling process (shm.c says what it is made of);
 * the heap profile's is the same plus ".heap".  Returns its length. */
size_t ebbi_shm_name(char *buf, size_t n);
void ebbi_shm_fork_child(void);
void ebbi_shm_unlink(void);
uint64_t ebbi_shm_start_time(void); /* field 22 of /proc/self/stat, as in the page */

/* ---------------------------------------------------------------- profile.c
 * Who counts which bytes: ebb_malloc's fast path counts every request of up to
 * EBB_SMALL_MAX bytes (also those from calloc, the aligned functions and realloc) in
 * the thread cache's countdown tc->prof_left, n bytes per request, and its slow path
 * calls ebbi_prof_sample_alloc (declared with the thread caches) when the countdown
 * goes negative, with no ebbmalloc lock held; ebbi_large_alloc counts every larger
 * request (and every aligned one that needs a large block) in ebbi_prof_left, n + 1
 * bytes per request. */
extern EBB_TLS int64_t ebbi_prof_left;
void ebbi_prof_large(struct ebb_span *s, size_t n);
static inline void ebbi_prof_count_large(struct ebb_span *s, size_t n) {
    ebbi_prof_left = (int64_t)((uint64_t)ebbi_prof_left - n - 1);
    if (unlikely(ebbi_prof_left < 0)) ebbi_prof_large(s, n);
}
void ebbi_prof_free(struct ebb_span *s);             /* s->cls != 0: before it is freed */
void ebbi_prof_resize(struct ebb_span *s, size_t n); /* sampled, shrunk in place */
void ebbi_prof_regrow(struct ebb_span *s, size_t n); /* grown in place: a new request */
void ebbi_prof_fork_child(bool interrupted);         /* interrupted: a fork init.c skipped */
void ebbi_prof_at_exit(void);
void ebbi_prof_set_capacity(uint32_t slots, uint32_t frames); /* of tables made later */
const struct ebb_prof_header *ebbi_prof_header(void);         /* NULL until the first sample */

/* ---------------------------------------------------------------- unwind.c */
/* Return addresses of the calling thread, innermost first, from the caller of the
 * allocation function outward: at most max; returns how many. */
int ebbi_unwind(uint64_t *out, int max);
void ebbi_unwind_fork_child(void);
/* How walks found their thread's stack (tests): reads of /proc/self/maps by a thread for
 * its own stack, and lookups in the table shared by all threads that held. */
void ebbi_unwind_counts(uint64_t *maps_reads, uint64_t *table_hits);
/* The stack range a walk from the caller's frame may read (tests). */
bool ebbi_unwind_stack_bounds(uintptr_t *lo, uintptr_t *hi);
bool ebbi_unwind_rows_share_a_set(void); /* tests: the row cache keeps two keys of one set */
void ebbi_unwind_row_cut(bool cut);      /* tests: that set's first row as a fork leaves it */
extern uint64_t ebbi_unwind_patience_ms; /* tests: how long a scan is waited for (0: default) */

/* ---------------------------------------------------------------- init.c */
/* 0 none, 1 running, 2 done.  Everything initialisation writes (options, the link
 * secret and free key, the class tables, limits, huge page size, ...) is written before
 * the release store of 2, with plain or relaxed stores, and never again (but by tests,
 * through ebbi_options_set and ebbi_cgroup_limit_set, with relaxed atomics); every path
 * that uses any of it first passes ebbi_ensure_init's acquire load, or runs on a thread
 * that did (the fast paths run only on a thread with a real cache, made by a slow path
 * after ebbi_ensure_init), or holds a block from such a thread. */
extern _Atomic int ebbi_init_state;
void ebbi_init_slow(void);
/* Tests: called by the thread that initialises, with the init lock held, before it
 * reads anything (a test holds initialisation open there while another thread forks). */
extern void (*ebbi_init_hook)(void);
static inline void ebbi_ensure_init(void) {
    if (unlikely(atomic_load_explicit(&ebbi_init_state, memory_order_acquire) != 2)) ebbi_init_slow();
}

/* ---------------------------------------------------------------- api.c */
void *ebbi_malloc_medium(size_t n); /* malloc above EBB_TC_DIRECT */
void ebbi_free_slow(void *p);       /* everything free's fast path does not take */
void *ebbi_large_alloc(size_t n, size_t align, bool zero);
struct ebb_span *ebbi_large_span(size_t n, size_t align, bool zero); /* not counted, no errno */
void ebbi_large_free(struct ebb_span *s);
size_t ebbi_usable_size(void *p);

#pragma GCC visibility pop
#endif
