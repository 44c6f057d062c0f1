/* os.c: everything ebbmalloc asks of the kernel, and nothing else.  Policy (when to
 * release, how much, what to name a file) lives in the tiers; these functions only do
 * what they are told.  Convention: 0, a count or a pointer on success; -1, 0 or NULL on
 * failure.  Nothing here allocates, and nothing here changes errno for its caller.
 *
 * The calls a test may need to fail or count go through the hook table `ebbi_os`
 * (internal.h).  Files are opened through it too, so that a test can take /proc or
 * /dev/shm away. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

extern char **environ;

/* ---------------------------------------------------------------- the hooks */
/* Without MAP_NORESERVE: the kernel's overcommit policy refuses what glibc's malloc would
 * be refused (a request beyond RAM and swap under the default heuristic). */
static void *os_map(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* Called directly by the tiers, also where a successful free or realloc goes on: munmap
 * fails (a split at the VMA limit) without changing errno. */
static void os_unmap(void *p, size_t size) {
    int saved = errno;
    munmap(p, size);
    errno = saved;
}

static int os_release(void *p, size_t size) {
    /* MADV_DONTNEED, not MADV_FREE: the resident set and the cgroup's usage drop now,
     * which is what container limits and their alerts look at. */
    return madvise(p, size, MADV_DONTNEED);
}

static void *os_remap(void *p, size_t old_size, size_t new_size, void *to) {
    void *q = to ? mremap(p, old_size, new_size, MREMAP_MAYMOVE | MREMAP_FIXED, to)
                 : mremap(p, old_size, new_size, 0);
    return q == MAP_FAILED ? NULL : q;
}

static int os_hugepage(void *p, size_t size, bool on) {
    return madvise(p, size, on ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
}

/* openat through syscall(): not a cancellation point, unlike open(). */
static int os_open(const char *path, int flags, int mode) {
    return (int)syscall(SYS_openat, AT_FDCWD, path, flags | O_CLOEXEC, mode);
}

static void *os_map_shared(int fd, size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* The envp array the kernel put on the initial stack: ld.so sets __libc_stack_end to the
 * word holding argc, with argv after it, then envp (when ld.so runs a program itself, it
 * moves that array down in place, so the layout holds).  Checked before it is trusted:
 * argv[argc] is NULL, and every string lies above the arrays, as the kernel lays them
 * out.  NULL where the pointer is missing (not glibc) or the layout does not hold (a
 * static program, whose __libc_stack_end is not argc's word: it sets environ before any
 * malloc anyway). */
extern void *__libc_stack_end __attribute__((weak));

static char **os_start_env(void) {
    if (!&__libc_stack_end || !__libc_stack_end) return NULL;
    const long *sp = __libc_stack_end;
    long argc = sp[0];
    if (argc < 0 || argc > (1l << 24)) return NULL;
    char **argv = (char **)(sp + 1), **envp = argv + argc + 1;
    if (argv[argc]) return NULL;
    size_t n = 0;
    while (envp[n] && n < ((size_t)1 << 24)) n++;
    if (envp[n]) return NULL;
    const char *above = (const char *)(envp + n + 1);
    for (long i = 0; i < argc; i++)
        if (argv[i] < above) return NULL;
    for (size_t i = 0; i < n; i++)
        if (envp[i] < above) return NULL;
    return envp;
}

struct ebb_os_hooks ebbi_os = {os_map,      os_unmap, os_release,    os_remap,
                               os_hugepage, os_open,  os_map_shared, os_start_env};

static size_t real_page_size(void);

/* Every entry point below keeps errno as its caller had it.  What the call left in errno
 * stays readable as ebbi_os_error() (meaningful after a failure only), so that a tier can
 * name why something it asked for was refused. */
static EBB_TLS int last_error;
#define KEEP_ERRNO(expr)              \
    ({                                \
        int saved_errno_ = errno;     \
        __typeof__(expr) r_ = (expr); \
        last_error = errno;           \
        errno = saved_errno_;         \
        r_;                           \
    })

int ebbi_os_error(void) { return last_error; }

/* A mapping of `size` bytes (rounded up to whole kernel pages) starting at a multiple of
 * `align` (a power of two) and of the kernel page.  mmap's own alignment is the real
 * page's, which is smaller than the planned one under a test's fake page size. */
/* The last aligned mapping and whether the kernel placed it above the one before
 * (relaxed: hints; callers under different locks may race on them harmlessly). */
static uintptr_t map_last, map_last_end;
static bool map_upwards;

static void *map_aligned(size_t size, size_t align) {
    size_t page = ebbi_os_page_size();
    if (size + page - 1 < size) return NULL;
    size = (size + page - 1) & ~(page - 1);
    if (align < page) align = page;
    if (align <= real_page_size()) return ebbi_os.map(size);
    if (size + align < size) return NULL;
    uintptr_t last = __atomic_load_n(&map_last, __ATOMIC_RELAXED);
    uintptr_t last_end = __atomic_load_n(&map_last_end, __ATOMIC_RELAXED);
    /* Where the kernel places mappings upwards (the legacy layout of an unlimited stack,
     * qemu-user) it skips the gap the last one's trimmed tail left, so the next one would
     * start a gap of up to `align` above it: ask for the place right after it instead (a
     * hint, which the kernel takes if it is free).  Only with the real mmap: a test's
     * hook sees every mapping through ebbi_os.map. */
    if (__atomic_load_n(&map_upwards, __ATOMIC_RELAXED) && last_end && !(last_end & (align - 1)) &&
        ebbi_os.map == os_map) {
        void *q = mmap((void *)last_end, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (q == (void *)last_end) {
            __atomic_store_n(&map_last, last_end, __ATOMIC_RELAXED);
            __atomic_store_n(&map_last_end, last_end + size, __ATOMIC_RELAXED);
            return q;
        }
        if (q != MAP_FAILED) munmap(q, size);
    }
    char *p = ebbi_os.map(size + align);
    if (!p) return NULL;
    /* The highest aligned start: the kernel places mappings downwards, so when the one
     * above ends where this one does (aligned), the new memory adjoins it and the page
     * heap can merge across the two, with no gap of `align` between them. */
    uintptr_t a = ((uintptr_t)p + align) & ~(uintptr_t)(align - 1);
    size_t head = a - (uintptr_t)p, tail = align - head;
    if (head) ebbi_os.unmap(p, head);
    if (tail) ebbi_os.unmap((char *)a + size, tail);
    __atomic_store_n(&map_upwards, last && a > last, __ATOMIC_RELAXED);
    __atomic_store_n(&map_last, a, __ATOMIC_RELAXED);
    __atomic_store_n(&map_last_end, a + size, __ATOMIC_RELAXED);
    return (void *)a;
}

void *ebbi_os_map_aligned(size_t size, size_t align) { return KEEP_ERRNO(map_aligned(size, align)); }

/* EINVAL: a kernel without transparent huge pages, where there is nothing to ask for. */
void ebbi_os_hugepage_hint(void *p, size_t size, bool on) {
    if (ebbi_os_refused_for_good(EBB_REFUSED_HUGEPAGE)) return;
    if (KEEP_ERRNO(ebbi_os.hugepage(p, size, on)) && last_error != EINVAL)
        ebbi_os_refused(EBB_REFUSED_HUGEPAGE,
                        on ? "madvise(MADV_HUGEPAGE) refused" : "madvise(MADV_NOHUGEPAGE) refused",
                        last_error);
}

int ebbi_os_release(void *p, size_t size) {
    if (ebbi_os_refused_for_good(EBB_REFUSED_RELEASE)) return -1;
    int r = KEEP_ERRNO(ebbi_os.release(p, size));
    if (r) ebbi_os_refused(EBB_REFUSED_RELEASE, "madvise(MADV_DONTNEED) refused", last_error);
    return r;
}

/* ---------------------------------------------------------------- the heap's memory
 * What the page heap holds from the kernel, counted here as mappings become heap memory
 * and stop being it, as madvise gives pages back (when it succeeds) and as the tiers
 * take them back, independently of the tiers' own counters (stats.c compares the two).
 *
 * The page heap's chunks, in one word so that a snapshot reads both at one moment:
 * bytes mapped in the high half and bytes of it not resident in the low half, each in
 * units of 4 KiB (every amount is whole kernel pages, at least 4 KiB), so 16 TiB each at
 * most: the page heap grows no further (ebbi_os_heap_room, under the page heap lock,
 * where every growth is counted; its chunks are never unmapped), and a request that
 * would need more fails with ENOMEM.  A change is one relaxed fetch_add of (mapped delta
 * << 32) + not-resident delta, in two's complement: the word is then exactly mapped *
 * 2^32 + not resident, and both halves decode exactly, as long as each stays within
 * [0, 2^32) in every state the word passes through.  It does: each half is a sum of
 * amounts whose every subtraction follows the addition it undoes in happens-before
 * (under the page heap lock or a central lock, or on the same thread), and the
 * modification order of one atomic word extends happens-before, so every value any
 * thread reads (on arm64 too: a single-copy atomic 64-bit word, RMWs in one coherence
 * order) is a state in which every half is a sum of such pairs, so is at least 0.
 *
 * Blocks with a mapping of their own (MAPPED spans) are counted apart, in bytes, in a
 * word of their own: they are resident as counted from the start (never given back in
 * part), and a program may map far more than 16 TiB of them where the kernel
 * overcommits (a sparse calloc).  It changes only under the page heap lock.
 *
 * Relaxed: nothing else is published through either word; a reader ordered after the
 * last change (the same thread, or after a join or a lock) reads them exactly, any other
 * reads some recent state of each (stats.c's snapshot reads them until two readings
 * agree). */
#define HEAP_UNIT_SHIFT 12
#define HEAP_UNITS_MAX (((uint64_t)1 << 32) - 1)
static _Atomic uint64_t heap_word, direct_bytes;

static void heap_count(int64_t mapped, int64_t not_resident) {
    ebb_assert(!((mapped | not_resident) & ((1 << HEAP_UNIT_SHIFT) - 1)));
    uint64_t d = ((uint64_t)(mapped >> HEAP_UNIT_SHIFT) << 32) + (uint64_t)(not_resident >> HEAP_UNIT_SHIFT);
    atomic_fetch_add_explicit(&heap_word, d, memory_order_relaxed);
}

void ebbi_os_heap_counts(size_t *mapped, size_t *not_resident) {
    uint64_t w = atomic_load_explicit(&heap_word, memory_order_relaxed);
    *mapped =
        ((size_t)(w >> 32) << HEAP_UNIT_SHIFT) + atomic_load_explicit(&direct_bytes, memory_order_relaxed);
    *not_resident = (size_t)(uint32_t)w << HEAP_UNIT_SHIFT;
}

/* The most the page heap's chunks may come to: what the tally holds; a test lowers it
 * (before it allocates, or while no other thread does), to see the limit work.  Never
 * raised above this. */
size_t ebbi_os_heap_max = (size_t)HEAP_UNITS_MAX << HEAP_UNIT_SHIFT;

bool ebbi_os_heap_room(size_t size) {
    size_t chunks = (size_t)(atomic_load_explicit(&heap_word, memory_order_relaxed) >> 32) << HEAP_UNIT_SHIFT;
    ebb_assert(ebbi_os_heap_max <= (size_t)HEAP_UNITS_MAX << HEAP_UNIT_SHIFT);
    return chunks <= ebbi_os_heap_max && size <= ebbi_os_heap_max - chunks;
}

size_t ebbi_os_direct_bytes(void) { return atomic_load_explicit(&direct_bytes, memory_order_relaxed); }

void ebbi_os_heap_adopt(size_t size) { heap_count((int64_t)size, (int64_t)size); }

void ebbi_os_direct_count(int64_t delta) {
    atomic_fetch_add_explicit(&direct_bytes, (uint64_t)delta, memory_order_relaxed);
}

int ebbi_os_heap_release(void *p, size_t size) {
    int r = ebbi_os_release(p, size);
    if (r == 0) heap_count(0, (int64_t)size);
    return r;
}

void ebbi_os_heap_reuse(size_t size) { heap_count(0, -(int64_t)size); }
void ebbi_os_heap_gave_back(size_t size) { heap_count(0, (int64_t)size); }

void *ebbi_os_direct_remap(void *p, size_t old_size, size_t new_size, void *to) {
    void *q = ebbi_os_remap(p, old_size, new_size, to);
    if (q) ebbi_os_direct_count((int64_t)new_size - (int64_t)old_size); /* `to` was never counted */
    return q;
}

/* ENOMEM is the kernel's ordinary answer (no room to grow in place, or no memory), not
 * a refusal. */
void *ebbi_os_remap(void *p, size_t old_size, size_t new_size, void *to) {
    if (ebbi_os_refused_for_good(EBB_REFUSED_REMAP)) return NULL;
    void *q = KEEP_ERRNO(ebbi_os.remap(p, old_size, new_size, to));
    if (!q && last_error != ENOMEM) ebbi_os_refused(EBB_REFUSED_REMAP, "mremap refused", last_error);
    return q;
}

/* ---------------------------------------------------------------- processor and time */
void ebbi_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield" ::: "memory");
#else
    __asm__ volatile("" ::: "memory");
#endif
}

/* The kernel's page: 4 KiB on x86-64; 4, 16 or 64 KiB on arm64, whichever the kernel was
 * built with.  Read once; every thread computes the same value, so a relaxed load that
 * finds 0 and stores it again is harmless. */
static size_t real_page_size(void) {
    static size_t ps;
    size_t v = __atomic_load_n(&ps, __ATOMIC_RELAXED);
    if (!v) {
        long r = KEEP_ERRNO(sysconf(_SC_PAGESIZE));
        v = r > 0 ? (size_t)r : 4096;
        __atomic_store_n(&ps, v, __ATOMIC_RELAXED);
    }
    return v;
}

/* Set by a test before the first allocation (a power of two, a multiple of the real
 * page), never changed after: ebbmalloc then plans every release, mapping size and
 * alignment for a kernel page of this size, as it would on a 16 or 64 KiB arm64 kernel.
 * Read without synchronisation: it is written before any other thread exists. */
size_t ebbi_os_page_fake;

size_t ebbi_os_page_size(void) { return ebbi_os_page_fake ? ebbi_os_page_fake : real_page_size(); }

uint64_t ebbi_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t ebbi_realtime_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Sleeps ms milliseconds, resuming after signals.  Through syscall(): not a cancellation
 * point (glibc's nanosleep is one, and the heap profile's walk sleeps here inside malloc,
 * where a thread cancelled would leave its table counted and its cache busy). */
void ebbi_os_sleep_ms(uint64_t ms) {
    int saved = errno;
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
    while (syscall(SYS_clock_nanosleep, CLOCK_MONOTONIC, 0, &ts, &ts) && errno == EINTR) {}
    errno = saved;
}

uint64_t ebbi_random64(void) {
    int saved = errno;
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != sizeof r) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        r = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)&r ^
            ((uint64_t)getpid() << 32);
    }
    errno = saved;
    return r;
}

/* ---------------------------------------------------------------- threads and processes */
int ebbi_os_gettid(void) { return (int)syscall(SYS_gettid); }
int ebbi_os_getpid(void) { return (int)syscall(SYS_getpid); }

/* False only when the kernel says no such process (in the caller's PID namespace). */
bool ebbi_os_pid_alive(int pid) {
    int saved = errno;
    bool dead = syscall(SYS_kill, pid, 0) < 0 && errno == ESRCH;
    errno = saved;
    return !dead;
}

/* libc's pthread_create.  The shared library defines pthread_create itself (release.c),
 * and a call from here would land there: it uses the next definition, libc's, found once.
 * Written once, before the first thread of ebbmalloc or the application exists; read by
 * threads created after it, and in fork children, which inherit it. */
typedef int (*thread_create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
#if EBB_OVERRIDE
static thread_create_fn libc_create;
#else
static thread_create_fn libc_create = pthread_create;
#endif

#if EBB_OVERRIDE
/* The next definition of a function this library also defines, after it (another
 * preloaded wrapper, or libc's); where this library came after libc (dlopen), libc's
 * own.  NULL if there is none.  Keeps errno. */
void *ebbi_os_next_definition(const char *name) {
    int saved = errno;
    void *f = dlsym(RTLD_NEXT, name);
    void *libc = f ? NULL : dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    if (libc) {
        f = dlsym(libc, name);
        dlclose(libc);
    }
    errno = saved;
    return f;
}
#endif

void ebbi_os_find_pthread_create(void) {
#if EBB_OVERRIDE
    if (__atomic_load_n(&libc_create, __ATOMIC_ACQUIRE)) return;
    thread_create_fn f = (thread_create_fn)ebbi_os_next_definition("pthread_create");
    if (f) __atomic_store_n(&libc_create, f, __ATOMIC_RELEASE);
#endif
}

#if EBB_OVERRIDE
/* libc's pthread_key_delete, found at load (ebbi_os_find_key_delete, from a constructor:
 * single-threaded under LD_PRELOAD, and the loader's lock, which dlsym takes, is already
 * this thread's), not at the program's first call: a thread that deletes a key while
 * holding a lock that a constructor run by another thread's dlopen waits for would
 * deadlock with it there, and a successful dlsym clears the program's pending
 * dlerror().  Found at the call only if the constructor did not run. */
typedef int (*key_delete_fn)(pthread_key_t);
static key_delete_fn libc_key_delete;
static key_delete_fn find_key_delete(void) {
    key_delete_fn f = (key_delete_fn)ebbi_os_next_definition("pthread_key_delete");
    if (f) __atomic_store_n(&libc_key_delete, f, __ATOMIC_RELEASE);
    return f;
}
void ebbi_os_find_key_delete(void) { find_key_delete(); }
int ebbi_os_pthread_key_delete(unsigned key) {
    key_delete_fn f = __atomic_load_n(&libc_key_delete, __ATOMIC_ACQUIRE);
    if (!f && !(f = find_key_delete())) return EINVAL;
    return f(key);
}
#endif

int ebbi_os_pthread_create(void *thread, const void *attr, void *(*fn)(void *), void *arg) {
    ebbi_os_find_pthread_create();
    thread_create_fn f = __atomic_load_n(&libc_create, __ATOMIC_ACQUIRE);
    return f ? f(thread, attr, fn, arg) : EAGAIN;
}

/* The signal mask of the thread that started the last ebbmalloc thread, as it was before
 * ebbi_os_start_thread blocked everything.  Written before pthread_create, read by the
 * new thread after it (which orders the two). */
static sigset_t start_mask;

/* A detached thread that takes no signals meant for the program's threads.  False if it
 * could not be created. */
bool ebbi_os_start_thread(void *(*fn)(void *), const char *name) {
    thread_create_fn create = __atomic_load_n(&libc_create, __ATOMIC_ACQUIRE);
    if (!create) return false;
    int saved = errno;
    pthread_attr_t at;
    pthread_t t;
    sigset_t all, old;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    /* libc's default stack, as the program's threads get (address space: only the pages
     * touched are resident): the release thread may end up running libc's exit(0), the
     * program's atexit handlers and static destructors included (release.c), which under
     * libc's own malloc run on the last program thread's stack.  256 KiB, as it was,
     * overflowed on a destructor that recursed through a long list. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    start_mask = old;
    int err = create(&t, &at, fn, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&at);
    if (!err) pthread_setname_np(t, name);
    errno = saved;
    return err == 0;
}

/* The calling ebbmalloc thread takes the signals its starter took (the release thread,
 * before it runs libc's exit as the last thread). */
void ebbi_os_thread_takes_signals(void) { pthread_sigmask(SIG_SETMASK, &start_mask, NULL); }

/* CPUs in the affinity mask (at least 1). */
unsigned ebbi_os_cpus_allowed(void) {
    cpu_set_t set;
    int saved = errno;
    int ok = sched_getaffinity(0, sizeof set, &set) == 0;
    errno = saved;
    return ok && CPU_COUNT(&set) > 0 ? (unsigned)CPU_COUNT(&set) : 1;
}

/* ---------------------------------------------------------------- futex lock
 * The spin is short: a holder runs for well under a microsecond, and on a machine with
 * more runnable threads than CPUs a preempted holder is better waited for in the kernel. */
EBB_TLS struct ebb_held_locks ebbi_held;

void ebbi_lock_slow(ebb_lock_t *l) {
    /* Held by this very thread: it would wait for ever.  Only a signal handler that
     * called the allocator while it was inside it gets here (nothing in ebbmalloc takes
     * a lock twice), which is not async-signal-safe: named, not hung. */
    if (ebbi_lock_held_here(l))
        ebbi_fatal("an allocator call from a signal handler that interrupted one on the same thread "
                   "(malloc and free are not async-signal-safe): it would wait for ever for a lock "
                   "its own thread holds");
    for (int i = 0; i < 100; i++) {
        ebbi_cpu_relax();
        int z = 0;
        if (atomic_load_explicit(&l->v, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(&l->v, &z, 1, memory_order_acquire, memory_order_relaxed))
            return;
    }
    int saved = errno;
    while (atomic_exchange_explicit(&l->v, 2, memory_order_acquire) != 0)
        syscall(SYS_futex, &l->v, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
    errno = saved;
}

void ebbi_unlock_slow(ebb_lock_t *l) {
    int saved = errno;
    syscall(SYS_futex, &l->v, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    errno = saved;
}

bool ebbi_lock_held_here(const ebb_lock_t *l) {
    unsigned n = ebbi_held.n < EBB_HELD_MAX ? ebbi_held.n : EBB_HELD_MAX;
    for (unsigned i = 0; i < n; i++)
        if (ebbi_held.lock[i] == l) return true;
    return false;
}

/* A fork child's locks: free again, except those the forking thread itself holds (it
 * forked from a signal handler that interrupted ebbmalloc; its interrupted frames will
 * release them). */
void ebbi_lock_reset(ebb_lock_t *l) {
    if (!ebbi_lock_held_here(l)) atomic_store_explicit(&l->v, 0, memory_order_relaxed);
}

/* Before a fatal report: everything this thread holds is released, so that a crash
 * handler that allocates (the JVM's error-report writer) does not wait for ever. */
void ebbi_unlock_all_held(void) {
    unsigned top = ebbi_held.n < EBB_HELD_MAX ? ebbi_held.n : EBB_HELD_MAX;
    while (ebbi_held.n) {
        unsigned i = ebbi_held.n - 1;
        ebb_lock_t *l = i < EBB_HELD_MAX ? ebbi_held.lock[i] : NULL;
        /* NULL: being taken, not held (a handler's report interrupted the wait).  A lock
         * named twice (an unlock out of order was interrupted) is released once. */
        for (unsigned k = i + 1; l && k < top; k++)
            if (ebbi_held.lock[k] == l) l = NULL;
        if (l) ebbi_unlock_raw(l); /* and wake a waiter */
        ebbi_held.n = i;
    }
}

/* ---------------------------------------------------------------- refusals
 * What ebbmalloc could not do is said once per kind, on stderr, when EBB_VERBOSE=1, and
 * never otherwise.  A refusal that comes before the options are read (a file of /proc
 * read during initialisation) waits for ebbi_os_say_refusals(), which options.c calls
 * once EBB_VERBOSE is known.
 *
 * Per kind, bits in `state`: NOTED (this thread won the right to fill detail[]), READY
 * (detail[] and error[] are filled: set with release ordering after them, read with
 * acquire ordering before them), SAID (this thread won the right to write the message),
 * so that the message is whole and written once whichever threads race; and FOR_GOOD
 * (see ebbi_os_refused), which carries nothing but itself (relaxed). */
#define R_NOTED 1u
#define R_READY 2u
#define R_SAID 4u
#define R_FOR_GOOD 8u
static _Atomic unsigned refusal_state[EBB_REFUSED_COUNT];
static char refusal_detail[EBB_REFUSED_COUNT][96];
static int refusal_error[EBB_REFUSED_COUNT];

static const char *const refusal_effect[EBB_REFUSED_COUNT] = {
    [EBB_REFUSED_RELEASE] = "free memory stays resident",
    [EBB_REFUSED_REMAP] = "realloc copies blocks that have a mapping of their own",
    [EBB_REFUSED_HUGEPAGE] = "the kernel may still back ebbmalloc's memory with huge pages",
    [EBB_REFUSED_PROC] = "without /proc the container's memory and CPU limits are unknown, "
                         "caches of idle threads are not emptied, and the stats page carries "
                         "neither its PID namespace nor its start time",
    [EBB_REFUSED_SHM] = "no live stats page for ebb-inspect",
    [EBB_REFUSED_READMEM] = "the heap profile reads unwind tables checked against /proc/self/maps "
                            "only, not against an unload since",
};

static const char *errno_name(int e) {
    switch (e) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case ENOSYS: return "ENOSYS";
    case EINVAL: return "EINVAL";
    case ENOMEM: return "ENOMEM";
    case EAGAIN: return "EAGAIN";
    case EEXIST: return "EEXIST";
    case ENODEV: return "ENODEV";
    case ENOTDIR: return "ENOTDIR";
    case EROFS: return "EROFS";
    case ENOSPC: return "ENOSPC";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    default: return NULL;
    }
}

static void say_refusal(enum ebb_refusal r) {
    unsigned st = atomic_load_explicit(&refusal_state[r], memory_order_acquire);
    if (!(st & R_READY) || (st & R_SAID)) return;
    if (atomic_fetch_or_explicit(&refusal_state[r], R_SAID, memory_order_relaxed) & R_SAID) return;
    char msg[512], num[24];
    const char *en = errno_name(refusal_error[r]);
    if (!en) {
        ebbi_snprintf(num, sizeof num, "errno %d", refusal_error[r]);
        en = num;
    }
    int n = ebbi_snprintf(msg, sizeof msg - 1, "ebbmalloc: %s (%s): %s", refusal_detail[r], en,
                          refusal_effect[r]);
    msg[n++] = '\n';
    ebbi_write_err(msg, (size_t)n);
}

void ebbi_os_refused(enum ebb_refusal r, const char *what, int err) {
    /* A seccomp filter answers with EPERM (or ENOSYS) for as long as the process lives:
     * the call is not tried again. */
    if (err == EPERM || err == ENOSYS)
        atomic_fetch_or_explicit(&refusal_state[r], R_FOR_GOOD, memory_order_relaxed);
    if (!(atomic_fetch_or_explicit(&refusal_state[r], R_NOTED, memory_order_relaxed) & R_NOTED)) {
        size_t i = 0;
        for (; what[i] && i + 1 < sizeof refusal_detail[r]; i++) refusal_detail[r][i] = what[i];
        refusal_detail[r][i] = 0;
        refusal_error[r] = err;
        atomic_fetch_or_explicit(&refusal_state[r], R_READY, memory_order_release);
    }
    if (ebbi_opt(EBB_OPT_VERBOSE) > 0) say_refusal(r);
}

bool ebbi_os_refused_for_good(enum ebb_refusal r) {
    return atomic_load_explicit(&refusal_state[r], memory_order_relaxed) & R_FOR_GOOD;
}

void ebbi_os_say_refusals(void) {
    if (ebbi_opt(EBB_OPT_VERBOSE) <= 0) return;
    for (int r = 0; r < EBB_REFUSED_COUNT; r++) say_refusal((enum ebb_refusal)r);
}

/* A file of the process's own /proc that cannot be opened means /proc is missing or
 * unreadable.  Not the files of other threads (/proc/self/task/TID): a thread that has
 * exited has none. */
static void note_proc(const char *path, int err) {
    if (strncmp(path, "/proc/self/", 11) || !strncmp(path, "/proc/self/task/", 16)) return;
    char what[96];
    ebbi_snprintf(what, sizeof what, "cannot open %s", path);
    ebbi_os_refused(EBB_REFUSED_PROC, what, err);
}

/* ---------------------------------------------------------------- files */
int ebbi_os_open(const char *path, int flags, int mode) {
    return KEEP_ERRNO(ebbi_os.open(path, flags, mode));
}
void ebbi_os_close(int fd) { KEEP_ERRNO(syscall(SYS_close, fd)); }
int ebbi_os_ftruncate(int fd, size_t size) { return KEEP_ERRNO((int)syscall(SYS_ftruncate, fd, size)); }
void *ebbi_os_map_shared(int fd, size_t size) { return KEEP_ERRNO(ebbi_os.map_shared(fd, size)); }
/* flock(2) through syscall(): never a cancellation point. */
int ebbi_os_flock(int fd, int op) { return KEEP_ERRNO((int)syscall(SYS_flock, fd, op)); }
long ebbi_os_pread(int fd, void *buf, size_t n, size_t off) {
    return KEEP_ERRNO(syscall(SYS_pread64, fd, buf, n, (off_t)off));
}

bool ebbi_os_fstat(int fd, struct ebb_file_id *id) {
    struct stat sb;
    if (KEEP_ERRNO(fstat(fd, &sb))) return false;
    id->dev = sb.st_dev;
    id->ino = sb.st_ino;
    id->size = (uint64_t)sb.st_size;
    id->uid = sb.st_uid;
    id->regular = S_ISREG(sb.st_mode);
    return true;
}

/* The identity of the file at path (for /proc/self/ns/pid: the namespace's inode). */
bool ebbi_os_file_id(const char *path, struct ebb_file_id *id) {
    int fd = ebbi_os_open(path, O_RDONLY, 0);
    if (fd < 0) {
        note_proc(path, last_error);
        return false;
    }
    bool ok = ebbi_os_fstat(fd, id);
    ebbi_os_close(fd);
    return ok;
}
/* rename(2); noreplace: fail rather than replace an existing file. */
int ebbi_os_rename(const char *from, const char *to, bool noreplace) {
    return KEEP_ERRNO(
        (int)syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, noreplace ? RENAME_NOREPLACE : 0));
}
int ebbi_os_unlink(const char *path) { return KEEP_ERRNO((int)syscall(SYS_unlinkat, AT_FDCWD, path, 0)); }
int ebbi_os_unlinkat(int dirfd, const char *name) {
    return KEEP_ERRNO((int)syscall(SYS_unlinkat, dirfd, name, 0));
}

/* A duplicate of fd numbered min or higher, close-on-exec; -1 on failure. */
int ebbi_os_dup_fd(int fd, int min) { return KEEP_ERRNO(fcntl(fd, F_DUPFD_CLOEXEC, min)); }

/* The entries of one getdents64 call's worth of listing, given to fn until it returns
 * false; the number of bytes the call returned (0 at the end), -1 if it failed. */
typedef bool (*dir_fn)(int dirfd, const char *name, void *arg);
static long dir_step(int dfd, char *buf, size_t size, dir_fn fn, void *arg, bool *go) {
    long n = syscall(SYS_getdents64, dfd, buf, size);
    for (long off = 0; *go && off < n;) {
        struct {
            uint64_t ino;
            int64_t off;
            unsigned short reclen;
            unsigned char type;
            char name[];
        } *d = (void *)(buf + off);
        off += d->reclen;
        *go = fn(dfd, d->name, arg);
    }
    return n;
}

/* Calls fn for every entry of the directory (getdents64: no allocation, unlike
 * readdir); stops when fn returns false.  fn gets the directory's fd, for *at calls.
 * Returns -1 if the directory cannot be opened or a read of it failed (fn may have seen
 * part of it). */
int ebbi_os_dir_each(const char *dir, dir_fn fn, void *arg) {
    int dfd = ebbi_os_open(dir, O_RDONLY | O_DIRECTORY, 0);
    if (dfd < 0) return -1;
    char buf[4096] __attribute__((aligned(8)));
    long n;
    bool go = true;
    int saved = errno;
    while (go && (n = dir_step(dfd, buf, sizeof buf, fn, arg, &go)) > 0) {}
    errno = saved;
    ebbi_os_close(dfd);
    return go && n < 0 ? -1 : 0;
}

/* The same, for a listing that must come from one getdents64 call into buf (8-byte
 * aligned): -1 also if it did not fit, fn having seen its start. */
int ebbi_os_dir_each_whole(const char *dir, char *buf, size_t size, dir_fn fn, void *arg) {
    int dfd = ebbi_os_open(dir, O_RDONLY | O_DIRECTORY, 0);
    if (dfd < 0) return -1;
    bool go = true;
    int saved = errno;
    long n = dir_step(dfd, buf, size, fn, arg, &go);
    if (go && n > 0) { /* more to come: the rest may skip a task (release.c) */
        char rest[64] __attribute__((aligned(8)));
        if (syscall(SYS_getdents64, dfd, rest, sizeof rest) != 0) n = -1;
    }
    errno = saved;
    ebbi_os_close(dfd);
    return go && n < 0 ? -1 : 0;
}

size_t ebbi_read_file(const char *path, char *buf, size_t n) {
    if (!n) return 0;
    buf[0] = 0;
    int fd = ebbi_os_open(path, O_RDONLY, 0);
    if (fd < 0) {
        note_proc(path, last_error);
        return 0;
    }
    int saved = errno;
    size_t got = 0;
    while (got + 1 < n) {
        ssize_t r = syscall(SYS_read, fd, buf + got, n - 1 - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    errno = saved;
    ebbi_os_close(fd);
    buf[got] = 0;
    return got;
}

/* Field `field` (numbered as proc(5) does, 3 or more) of a /proc/.../stat text: after the
 * ") " that ends the command name, each space starts the next field.  NULL if short. */
const char *ebbi_stat_field(const char *text, int field) {
    const char *p = strrchr(text, ')');
    for (int f = 2; p && f < field; f++) p = strchr(p + 1, ' ');
    return p ? p + 1 : NULL;
}

/* write(2) through syscall(): not a cancellation point, so a report is never cut short
 * by a pending cancellation. */
void ebbi_write_fd(int fd, const char *s, size_t n) {
    int saved = errno;
    while (n) {
        ssize_t w = syscall(SYS_write, fd, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        s += w, n -= (size_t)w;
    }
    errno = saved;
}

void ebbi_write_err(const char *s, size_t n) { ebbi_write_fd(2, s, n); }

/* ---------------------------------------------------------------- environment
 * Options are read at the first allocation, which may come before libc has set
 * `environ` (a malloc from the dynamic loader or from a preinit function).  Then the
 * environment is the one the kernel gave the process, found, in this order:
 *   1. on the initial stack (the start_env hook): nothing to read, any size;
 *   2. in /proc/self/environ, read whole into memory mapped for it, four times larger
 *      until the file fits (the kernel caps an environment at a quarter of the stack
 *      limit; 1 GiB here);
 *   3. nowhere: then options.c reads the options again once environ is set.
 * Decided once, during initialisation (under init.c's lock); the mapping is kept, for
 * the strings ebbi_getenv returned point into it. */
enum { ENV_UNKNOWN, ENV_STACK, ENV_PROC, ENV_NONE };
static int early_source;
static char **early_stack;
static char *early_proc;
static size_t early_proc_len;

static void find_early_env(void) {
    early_stack = ebbi_os.start_env ? ebbi_os.start_env() : NULL;
    if (early_stack) {
        early_source = ENV_STACK;
        return;
    }
    early_source = ENV_NONE;
    int saved = errno;
    for (size_t cap = (size_t)64 << 10; cap <= ((size_t)1 << 30); cap *= 4) {
        char *buf = ebbi_os.map(cap);
        if (!buf) break;
        size_t got = ebbi_read_file("/proc/self/environ", buf, cap);
        if (got && got + 1 < cap) {
            early_proc = buf;
            early_proc_len = got;
            early_source = ENV_PROC;
            break;
        }
        ebbi_os.unmap(buf, cap);
        if (!got) break; /* unreadable (or empty: nothing lost) */
        /* else it may not all have fitted: again, larger */
    }
    errno = saved;
}

bool ebbi_env_readable(void) {
    if (environ) return true;
    if (early_source == ENV_UNKNOWN) find_early_env();
    return early_source != ENV_NONE;
}

static const char *env_lookup(char **env, const char *name, size_t nl) {
    for (char **e = env; *e; e++)
        if (!strncmp(*e, name, nl) && (*e)[nl] == '=') return *e + nl + 1;
    return NULL;
}

const char *ebbi_getenv(const char *name) {
    size_t nl = strlen(name);
    char **env = environ;
    if (env) return env_lookup(env, name, nl);
    if (!ebbi_env_readable()) return NULL;
    if (early_source == ENV_STACK) return env_lookup(early_stack, name, nl);
    for (size_t i = 0; i < early_proc_len; i += strlen(early_proc + i) + 1)
        if (!strncmp(early_proc + i, name, nl) && early_proc[i + nl] == '=') return early_proc + i + nl + 1;
    return NULL;
}

/* ---------------------------------------------------------------- for the heap profile */
long ebbi_os_read(int fd, void *buf, size_t n) {
    int saved = errno;
    long r;
    while ((r = syscall(SYS_read, fd, buf, n)) < 0 && errno == EINTR) {}
    errno = saved;
    return r;
}

/* process_vm_readv on ourselves: a byte that is not readable gives EFAULT, not SIGSEGV,
 * which is how the unwinder reads memory that a dlclose may have unmapped. */
long ebbi_os_read_mem(int pid, void *dst, const void *src, size_t n) {
    int saved = errno;
    struct iovec l = {dst, n}, r = {(void *)src, n};
    long got = syscall(SYS_process_vm_readv, pid, &l, 1ul, &r, 1ul, 0ul);
    if (got < 0 && (errno == ENOSYS || errno == EPERM)) {
        ebbi_os_refused(EBB_REFUSED_READMEM, "process_vm_readv refused", errno);
        got = EBB_READ_UNSUPPORTED;
    } else if (got < 0) {
        got = -1;
    }
    errno = saved;
    return got;
}

int ebbi_os_fallocate(int fd, size_t off, size_t len) {
    int saved = errno;
    long r;
    while ((r = syscall(SYS_fallocate, fd, 0, (off_t)off, (off_t)len)) < 0 && errno == EINTR) {}
    if (r) last_error = errno;
    errno = saved;
    return r ? -1 : 0;
}

void ebbi_os_map_fixed(void *p, size_t size, int fd) {
    int flags = MAP_PRIVATE | MAP_FIXED | (fd < 0 ? MAP_ANONYMOUS : 0);
    KEEP_ERRNO(mmap(p, size, PROT_READ | PROT_WRITE, flags, fd, 0));
}
