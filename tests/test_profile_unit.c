/* The heap profile's sampler and table, driven the way ebb_malloc's fast path drives
 * it: each request counts n bytes down its thread cache's prof_left, and a request that
 * takes it below zero asks ebbi_prof_sample_alloc for a sampled block.  Requests that
 * are not sampled need no memory for what is checked here (the estimate is made from
 * the samples alone), so the known totals can be large.  Linked to the internal static
 * library; run with EBB_PROF_SAMPLE=256K. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "internal.h"
#include "ebb_test_mem.h"
#include "prof_reader.h"

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint64_t next_rand(void) { return xorshift64(&rng); }

/* The calling thread's cache, made by a first malloc if it has none yet. */
static struct ebb_tcache *my_cache(void) {
    if (!ebbi_tc_mine()->real) {
        void *volatile p = ebb_malloc(16); /* volatile: the pair is not optimised away */
        ebb_free(p);
    }
    struct ebb_tcache *tc = ebbi_tc_mine();
    assert_non_null(tc);
    return tc;
}

/* One request of n bytes as the fast path counts it: the sampled block, or NULL. */
static void *count_request(size_t n) {
    struct ebb_tcache *tc = my_cache();
    if ((tc->prof_left -= (int64_t)n) >= 0) return NULL;
    return ebbi_prof_sample_alloc(tc, n);
}

/* A sampled block of n bytes (requests until one is sampled). */
static void *sampled(size_t n) {
    for (int i = 0; i < 1000000; i++) {
        struct ebb_tcache *tc = my_cache();
        tc->prof_left = -1;
        void *p = ebbi_prof_sample_alloc(tc, n);
        if (p) return p;
    }
    return NULL;
}

static struct prof_view table(void) {
    struct prof_view v;
    if (!prof_find(&v)) fail_msg("no heap profile mapped");
    return v;
}

#define MAX_KEPT 20000
static void *kept[MAX_KEPT];

/* Many small requests of known total through one call site: the sampled blocks are
 * kept (live) or freed at once (allocated, then freed). */
__attribute__((noinline)) size_t requests_from_here(size_t total_goal, size_t *objects, size_t *nkept,
                                                    bool keep);
__attribute__((noinline)) size_t requests_from_here(size_t total_goal, size_t *objects, size_t *nkept,
                                                    bool keep) {
    size_t total = 0;
    while (total < total_goal) {
        size_t n = 64 + next_rand() % 1985;
        void *p = count_request(n);
        if (p) {
            memset(p, 0xab, n);
            if (keep && *nkept < MAX_KEPT) kept[(*nkept)++] = p;
            else ebb_free(p);
        }
        total += n;
        ++*objects;
    }
    return total;
}

void small_requests_estimated_within_10_percent(void **state);
void small_requests_estimated_within_10_percent(void **state) {
    (void)state;
    ebb_free(ebb_malloc(1)); /* initialised */
    size_t objects = 0, nkept = 0;
    /* 1 GiB kept at one sample per 256 KiB on average: about 4096 samples; the relative
     * standard deviation of the live bytes' estimate is about 1.5%, and 10% is six and
     * a half of them.  Another GiB allocated and freed: the objects' estimate (whose
     * deviation is larger, small requests weigh much) is checked over both. */
    size_t live = 0, live_objects = 0, total = 0;
    for (int round = 0; round < 2; round++) {
        total += requests_from_here((size_t)1 << 30, &objects, &nkept, round == 0);
        if (round == 0) live = total, live_objects = objects;
    }
    assert_true(nkept < MAX_KEPT);
    struct prof_view v = table();
    if (getenv("PROF_DUMP")) prof_dump(&v, stderr);
    /* every stack whose innermost frame is requests_from_here (the compiler may have
     * made two call sites of the loop above) */
    double bytes = 0, all = 0, objs = 0;
    int stacks = 0;
    for (unsigned k = 0; k < v.h->slot_count; k++) {
        if (!v.slots[k].depth || prof_frame_in(&v, (int)k, "requests_from_here") != 0) continue;
        assert_true(prof_frame_in(&v, (int)k, "small_requests_estimated_within_10_percent") > 0);
        bytes += (double)v.slots[k].live_bytes;
        all += (double)v.slots[k].total_bytes;
        objs += (double)v.slots[k].total_objects;
        stacks++;
    }
    if (!stacks) prof_dump(&v, stderr);
    assert_true(stacks > 0);
    fprintf(stderr,
            "live: estimate %.0f bytes for %zu (%zu objects, %zu samples); "
            "allocated: %.0f bytes for %zu, %.0f objects for %zu\n",
            bytes, live, live_objects, nkept, all, total, objs, objects);
    assert_true(bytes > 0.9 * (double)live && bytes < 1.1 * (double)live);
    assert_true(all > 0.9 * (double)total && all < 1.1 * (double)total);
    assert_true(objs > 0.9 * (double)objects && objs < 1.1 * (double)objects);
    /* Freeing takes out exactly what the samples put in. */
    for (size_t i = 0; i < nkept; i++) ebb_free(kept[i]);
    for (unsigned k = 0; k < v.h->slot_count; k++) {
        if (!v.slots[k].depth || prof_frame_in(&v, (int)k, "requests_from_here") != 0) continue;
        assert_int_equal(v.slots[k].live_bytes, 0);
        assert_int_equal(v.slots[k].live_objects, 0);
    }
}

static void header_is_filled(void **state) {
    (void)state;
    void *p = sampled(64);
    assert_non_null(p);
    struct prof_view v = table();
    assert_int_equal(v.h->version, EBB_PROF_VERSION);
    assert_int_equal(v.h->pid, getpid());
    assert_true(v.h->header_size >= sizeof(struct ebb_prof_header));
    assert_true(v.h->slot_count && !(v.h->slot_count & (v.h->slot_count - 1)));
    assert_true(v.h->frames_offset >= v.h->header_size + v.h->slot_count * sizeof(struct ebb_prof_slot));
    assert_int_equal(v.h->sample_interval, 256 << 10);
    assert_true(v.h->frames_used <= v.h->frames_cap && v.h->samples > 0);
    /* start_time is field 22 of /proc/self/stat */
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    assert_non_null(f);
    assert_non_null(fgets(buf, sizeof buf, f));
    fclose(f);
    char *q = strrchr(buf, ')');
    for (int field = 2; field < 22; field++) q = strchr(q + 1, ' ');
    assert_int_equal(v.h->start_time, strtoull(q + 1, NULL, 10));
    struct stat st;
    assert_int_equal(stat(v.path, &st), 0);
    assert_int_equal(st.st_ino, v.inode);
    ebb_free(p);
}

static int64_t live_of(void *p) {
    struct prof_view v = table();
    int64_t sum = 0;
    (void)p;
    for (unsigned k = 0; k < v.h->slot_count; k++)
        if (v.slots[k].depth) sum += v.slots[k].live_bytes;
    return sum;
}

/* A sampled small block behaves as the block malloc would have given. */
static void sampled_small_block_behaves(void **state) {
    (void)state;
    void *plain = ebb_malloc(100);
    unsigned char *p = sampled(100);
    assert_non_null(p);
    assert_true(((uintptr_t)p & 15) == 0);
    assert_int_equal(ebb_malloc_usable_size(p), ebb_malloc_usable_size(plain));
    memset(p, 0x5a, 100);
    int64_t before = live_of(p);
    /* shrinking a little stays in place, and the stack's live bytes follow */
    unsigned char *q = ebb_realloc(p, 90);
    assert_ptr_equal(q, p);
    assert_true(live_of(p) < before);
    /* growing moves it; the content comes along and the sample leaves the profile */
    q = ebb_realloc(p, 5000);
    assert_non_null(q);
    for (int i = 0; i < 90; i++) assert_int_equal(q[i], 0x5a);
    ebb_free(q);
    ebb_free(plain);
}

static void double_free_child(void) {
    void *p = sampled(200);
    ebb_free(p);
    ebb_free(p);
}
static void interior_free_child(void) {
    char *p = sampled(200);
    ebb_free(p + 16);
}

static void misuse_of_sampled_blocks_is_caught(void **state) {
    (void)state;
    char out[1024];
    assert_true(died_of_abort(child_stderr(double_free_child, out, sizeof out), out, "double free"));
    assert_true(died_of_abort(child_stderr(interior_free_child, out, sizeof out), out, "invalid pointer"));
}

/* Fork: the child makes its own table and file; the parent's sampled blocks freed in
 * the child change nothing there; the parent's table does not see the child. */
static void fork_child_has_its_own_table(void **state) {
    (void)state;
    void *mine = sampled(300);
    struct prof_view pv = table();
    uint64_t parent_samples = pv.h->samples;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        struct prof_view v;
        int bad = 0;
        if (prof_find(&v)) bad |= 1; /* the parent's table is not mapped here any more */
        void *p = sampled(300);
        if (!prof_find(&v) || v.h->pid != getpid() || v.inode == pv.inode) bad |= 2;
        else if (v.h->samples != 1) bad |= 4;
        int64_t live = live_of(p);
        ebb_free(mine); /* the parent's sample */
        if (live_of(p) != live) bad |= 8;
        ebb_free(p);
        if (live_of(p) != 0) bad |= 16;
        if (write(fds[1], &bad, sizeof bad) != sizeof bad) _exit(3);
        _exit(0);
    }
    close(fds[1]);
    int bad = -1;
    assert_int_equal(read(fds[0], &bad, sizeof bad), sizeof bad);
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    assert_int_equal(bad, 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    struct prof_view again = table();
    assert_ptr_equal(again.h, pv.h);
    assert_int_equal(again.h->samples, parent_samples);
    ebb_free(mine);
}

/* ---------------------------------------------------------------- a full table */
#define LEVELS 5 /* 32 distinct stacks */
__attribute__((noinline)) void *leaf_call(size_t n);
__attribute__((noinline)) void *leaf_call(size_t n) {
    void *p = sampled(n);
    __asm__ volatile("" ::: "memory");
    return p;
}
static void *branch(int level, unsigned bits, size_t n);
static volatile int branch_sink;
/* Two functions, two return addresses (they differ, or the compiler would fold them). */
__attribute__((noinline)) static void *branch_a(int level, unsigned bits, size_t n) {
    void *p = branch(level, bits, n);
    branch_sink += 1;
    return p;
}
__attribute__((noinline)) static void *branch_b(int level, unsigned bits, size_t n) {
    void *p = branch(level, bits, n);
    branch_sink += 2;
    return p;
}
__attribute__((noinline)) static void *branch(int level, unsigned bits, size_t n) {
    if (level == 0) return leaf_call(n);
    void *p = bits & 1 ? branch_a(level - 1, bits >> 1, n) : branch_b(level - 1, bits >> 1, n);
    __asm__ volatile("" ::: "memory");
    return p;
}

static void full_table_child(void) {
    /* 8 slots (one the overflow slot) and frames for a few stacks */
    ebbi_prof_set_capacity(8, 128);
    void *p[1 << LEVELS];
    for (unsigned b = 0; b < 1u << LEVELS; b++) p[b] = branch(LEVELS, b, 64);
    struct prof_view v;
    int bad = 0;
    if (!prof_find(&v) || v.h->slot_count != 8 || v.h->frames_cap != 128) _exit(10);
    const struct ebb_prof_slot *ov = &v.slots[0];
    /* the stacks that found no room are counted in slot 0, one frame of value 0 */
    if (ov->depth != 1 || v.frames[ov->first] != 0 || ov->live_objects <= 0) bad |= 1;
    if (v.h->dropped == 0 || v.h->dropped + 7 < (1u << LEVELS)) bad |= 2;
    if (v.h->frames_used > v.h->frames_cap) bad |= 4;
    uint64_t dropped = v.h->dropped;
    /* when their blocks are freed, the stacks' slots can be taken by new stacks */
    for (unsigned b = 0; b < 1u << LEVELS; b++) ebb_free(p[b]);
    for (unsigned k = 0; k < 8; k++)
        if (v.slots[k].depth && (v.slots[k].live_bytes || v.slots[k].live_objects)) bad |= 8;
    void *q = branch(LEVELS - 1, 0, 64); /* a stack not seen yet (one level less) */
    struct prof_view w;
    prof_find(&w);
    int k = prof_slot_with(&w, "leaf_call");
    int found = -1;
    for (unsigned s = 1; s < 8; s++)
        if (w.slots[s].depth && w.slots[s].live_objects > 0) found = (int)s;
    if (found < 0 || w.h->dropped != dropped) bad |= 16;
    (void)k;
    ebb_free(q);
    if (bad) {
        prof_dump(&w, stderr);
        fprintf(stderr, "full table: bad %d\n", bad);
        _exit(20 + bad);
    }
    _exit(0);
}

static void full_table_overflows_and_reuses(void **state) {
    (void)state;
    pid_t pid = fork();
    if (pid == 0) full_table_child();
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* Without /dev/shm the table is kept in anonymous memory: sampling and freeing work,
 * nothing is published. */
static struct ebb_os_hooks real_hooks;
static int no_shm_open(const char *path, int flags, int mode) {
    if (!strncmp(path, "/dev/shm/", 9)) {
        errno = EACCES;
        return -1;
    }
    return real_hooks.open(path, flags, mode);
}

static void no_shm_child(void) {
    real_hooks = ebbi_os;
    ebbi_os.open = no_shm_open;
    void *p = sampled(100);
    struct prof_view v;
    const struct ebb_prof_header *h = ebbi_prof_header();
    int bad = (!p) | prof_find(&v) << 1 | (!h || h->magic != EBB_PROF_MAGIC || h->samples != 1) << 2;
    int64_t live = h ? h->samples : 0;
    ebb_free(p);
    if (h && live) {
        const struct ebb_prof_slot *sl = (const void *)((const char *)h + h->header_size);
        for (unsigned k = 0; k < h->slot_count; k++)
            if (sl[k].depth && sl[k].live_bytes) bad |= 8;
    }
    _exit(bad);
}

static void table_without_dev_shm_is_anonymous(void **state) {
    (void)state;
    pid_t pid = fork();
    if (pid == 0) no_shm_child();
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}


/* ---------------------------------------------------------------- the thread's stack
 * A walk reads stack slots only inside its thread's stack.  New threads find their
 * stacks in the table of mappings all threads share, not by reading /proc/self/maps
 * each; an entry of that table that went stale is probed, not trusted.  More threads
 * start at once than the table may be rescanned in a second (32): the threads that
 * wait for another's rescan do not count against that limit.  Their stacks are larger
 * than any thread's before (glibc would hand out a cached stack the table knows).  And
 * the process has thousands of mappings, as a JVM has, so that a rescan takes
 * milliseconds (tens under a sanitizer) and the threads that miss wait for it. */
#define STACK_THREADS 48

struct stack_seen {
    pthread_barrier_t *all_there;
    uintptr_t lo, hi, sp;
    bool found, listed;
    int depth;
};

/* Whether /proc/self/maps lists a readable mapping that holds a, as the test reads it.
 * (Under qemu-user, the emulator's maps may leave out a guest thread's stack: then no
 * reader can find it there, ebbmalloc's fallback included.) */
static bool maps_list(uintptr_t a) {
    FILE *f = fopen("/proc/self/maps", "r");
    char ln[512], perms[8];
    bool listed = false;
    unsigned long lo, hi;
    while (f && !listed && fgets(ln, sizeof ln, f))
        listed = sscanf(ln, "%lx-%lx %7s", &lo, &hi, perms) == 3 && lo <= a && a < hi && perms[0] == 'r';
    if (f) fclose(f);
    return listed;
}

/* Whether this process may read itself through process_vm_readv (qemu-user has no such
 * call, a seccomp filter may refuse it): without it no table entry can be probed, and
 * every thread reads the maps for its own stack, as before the table. */
static bool can_probe(void) {
    long v = 42, d = 0;
    struct iovec l = {&d, sizeof d}, r = {&v, sizeof v};
    return process_vm_readv(getpid(), &l, 1, &r, 1, 0) == (ssize_t)sizeof d && d == 42;
}

static void *find_own_stack(void *arg) {
    struct stack_seen *s = arg;
    if (s->all_there) pthread_barrier_wait(s->all_there); /* every stack mapped before the first walk */
    uint64_t frames[8];
    s->sp = (uintptr_t)__builtin_frame_address(0);
    s->found = ebbi_unwind_stack_bounds(&s->lo, &s->hi);
    s->depth = ebbi_unwind(frames, 8);
    s->listed = maps_list(s->sp);
    return NULL;
}

#define MANY_MAPPINGS 20000

static void new_threads_find_their_stacks_in_the_shared_table(void **state) {
    (void)state;
    /* shared anonymous pages are never merged: one line of the maps each */
    static void *pages[MANY_MAPPINGS];
    for (int i = 0; i < MANY_MAPPINGS; i++) {
        pages[i] = mmap(NULL, 4096, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        assert_true(pages[i] != MAP_FAILED);
    }
    uintptr_t lo, hi;
    assert_true(ebbi_unwind_stack_bounds(&lo, &hi)); /* the table exists */
    /* a scanner the scheduler keeps waiting longer than the default stall (a loaded
     * machine, a sanitizer's slower scan) is still waited for: what is tested is that
     * the threads wait for the scan, not how fast this machine scans */
    ebbi_unwind_patience_ms = 60000;
    uint64_t reads0, hits0, reads1, hits1;
    ebbi_unwind_counts(&reads0, &hits0);
    pthread_t th[STACK_THREADS];
    struct stack_seen seen[STACK_THREADS];
    pthread_barrier_t b;
    pthread_barrier_init(&b, NULL, STACK_THREADS);
    pthread_attr_t a;
    assert_int_equal(pthread_attr_init(&a), 0);
    for (int i = 0; i < STACK_THREADS; i++) {
        seen[i] = (struct stack_seen){.all_there = &b};
        assert_int_equal(pthread_attr_setstacksize(&a, (9 << 20) + ((size_t)i << 16)), 0);
        assert_int_equal(pthread_create(&th[i], &a, find_own_stack, &seen[i]), 0);
    }
    pthread_attr_destroy(&a);
    for (int i = 0; i < STACK_THREADS; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&b);
    ebbi_unwind_counts(&reads1, &hits1);
    ebbi_unwind_patience_ms = 0;
    for (int i = 0; i < MANY_MAPPINGS; i++) munmap(pages[i], 4096);
    bool probe = can_probe();
    uint64_t unlisted = 0;
    for (int i = 0; i < STACK_THREADS; i++) {
        /* natively every thread finds its stack; where the walk cannot probe (qemu-user)
         * it reads the maps as before, and finds its stack exactly where the maps list it */
        if (probe) assert_true(seen[i].found);
        else if (seen[i].found != seen[i].listed)
            fail_msg("thread %d: stack at %#lx found %d, listed in the maps %d", i, (unsigned long)seen[i].sp,
                     seen[i].found, seen[i].listed);
        if (!seen[i].found && ++unlisted) continue;
        assert_true(seen[i].lo <= seen[i].sp && seen[i].sp < seen[i].hi);
        assert_true(seen[i].depth > 0);
    }
    /* one rescan finds them all (a thread that finds its rescan refused by the rate limit
     * reads the maps itself: allowed once); without process_vm_readv every thread reads
     * them */
    print_message("stacks: %llu maps reads, %llu table lookups for %d threads\n",
                  (unsigned long long)(reads1 - reads0), (unsigned long long)(hits1 - hits0), STACK_THREADS);
    if (probe) {
        assert_true(reads1 - reads0 <= 1);
        assert_true(hits1 - hits0 >= STACK_THREADS - 1);
    } else {
        /* once for its bounds, and once more in its walk where the maps did not list it */
        assert_true(reads1 - reads0 == STACK_THREADS + unlisted && hits1 == hits0);
    }
}

/* A thread on a stack of its own (pthread_attr_setstack), and its bounds as the walk sees them. */
static void run_on_stack(void *stack, size_t size, struct stack_seen *s) {
    pthread_attr_t a;
    pthread_t t;
    *s = (struct stack_seen){0};
    assert_int_equal(pthread_attr_init(&a), 0);
    assert_int_equal(pthread_attr_setstack(&a, stack, size), 0);
    assert_int_equal(pthread_create(&t, &a, find_own_stack, s), 0);
    pthread_join(t, NULL);
    pthread_attr_destroy(&a);
    assert_true(s->found);
    assert_true(s->depth > 0);
}

static void a_stale_table_entry_is_probed_not_trusted(void **state) {
    (void)state;
    /* small enough that the stale part is probed (UW_PROBE_MAX pages), not refused; an
     * unreadable page either side, so that the kernel merges it with no neighbour */
    const size_t size = (size_t)512 << 10, q = size / 4, ps = (size_t)getpagesize();
    char *r = mmap(NULL, size + 2 * ps, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(r != MAP_FAILED);
    char *a = r + ps;
    assert_int_equal(mprotect(a, size, PROT_READ | PROT_WRITE), 0);
    struct stack_seen s;
    uint64_t reads0, hits0, reads1, hits1;
    ebbi_unwind_counts(&reads0, &hits0);
    run_on_stack(a, size, &s); /* the table now lists [a, a + size) */
    ebbi_unwind_counts(&reads1, &hits1);
    /* the bounds, then the walk from a deeper frame: a second lookup when that frame lies
     * below the first one's kernel page (sanitizers' bigger frames), never a maps read */
    if (can_probe()) assert_true(hits1 - hits0 >= 1 && hits1 - hits0 <= 2 && reads1 == reads0);
    else assert_true(reads1 - reads0 >= 1 && reads1 - reads0 <= 2 && hits1 == hits0);
    assert_true(s.hi == (uintptr_t)a + size);
    /* the mapping goes; a smaller stack takes the middle of its place, unreadable memory
     * the rest, where the table still lists one readable mapping */
    assert_true(mmap(a, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == a);
    assert_int_equal(mprotect(a + q, 2 * q, PROT_READ | PROT_WRITE), 0);
    run_on_stack(a + q, 2 * q, &s);
    assert_true(s.lo >= (uintptr_t)a + q && s.lo <= s.sp);
    assert_true(s.hi == (uintptr_t)a + 3 * q);
    munmap(r, size + 2 * ps);
}

/* A stale entry that runs on past a new stack into another readable mapping: every page
 * the walk would read probes readable, but the stack ends below them (the thread's
 * descriptor is at its top), and the walk must not take the rest for stack.  Natively;
 * under qemu-user (no process_vm_readv) every thread reads the maps instead, and the
 * case checks that path. */
static void stale_past_the_end(size_t tail) {
    const size_t size = (size_t)256 << 10, ps = (size_t)getpagesize();
    char *r = mmap(NULL, size + 2 * ps, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(r != MAP_FAILED);
    char *a = r + ps;
    assert_int_equal(mprotect(a, size, PROT_READ | PROT_WRITE), 0);
    struct stack_seen s;
    run_on_stack(a, size, &s); /* the table lists [a, a + size) */
    assert_true(s.hi == (uintptr_t)a + size);
    /* the bottom becomes the next stack, the top a mapping of its own, still readable
     * (another protection, so that the kernel keeps the two apart) */
    assert_int_equal(mprotect(a + size - tail, tail, PROT_READ), 0);
    run_on_stack(a, size - tail, &s);
    assert_true(s.lo <= s.sp && s.sp < s.hi);
    if (s.hi != (uintptr_t)a + size - tail)
        fail_msg("a stack ending at %p taken up to %p", (void *)(a + size - tail), (void *)s.hi);
    munmap(r, size + 2 * ps);
}

/* A thread on a stack whose top lies two pages below its mapping's end: a view of the
 * maps that does not end where glibc put the stack's end, which must not teach the end
 * test a distance that would trust the stale entries below (on arm64, where the
 * distance is learned; on x86-64 the test is exact). */
static void stack_below_its_mapping_end(void) {
    const size_t size = (size_t)256 << 10, ps = (size_t)getpagesize();
    char *r = mmap(NULL, size + 2 * ps, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(r != MAP_FAILED);
    char *a = r + ps; /* an unreadable page either side: merged with no neighbour */
    assert_int_equal(mprotect(a, size, PROT_READ | PROT_WRITE), 0);
    struct stack_seen s;
    run_on_stack(a, size - 2 * ps, &s);
    assert_true(s.lo <= s.sp && s.sp < s.hi && s.hi == (uintptr_t)a + size);
    munmap(r, size + 2 * ps);
}

static void a_stale_entry_past_the_stack_end_is_not_trusted(void **state) {
    (void)state;
    stack_below_its_mapping_end();
    stale_past_the_end((size_t)128 << 10);
    stale_past_the_end((size_t)32 << 10); /* a small mapping above: most of them are */
    stale_past_the_end((size_t)getpagesize());
}

/* The unwinder's cache of compact rows keeps two frames whose return addresses hash
 * alike (a direct map evicted one for the other at every walk). */
static void unwind_rows_keep_two_of_one_set(void **state) {
    (void)state;
    uint64_t frames[8];
    assert_true(ebbi_unwind(frames, 8) > 0); /* maps the tables and the row cache */
    assert_true(ebbi_unwind_rows_share_a_set());
}

/* A row another thread was writing when the process forked is taken again in the child
 * (its seqlock was left odd: no writer would have touched it again). */
static void a_row_cut_by_fork_is_reused_in_the_child(void **state) {
    (void)state;
    uint64_t frames[8];
    assert_true(ebbi_unwind(frames, 8) > 0); /* maps the row cache */
    ebbi_unwind_row_cut(true);
    assert_false(ebbi_unwind_rows_share_a_set()); /* a cut row is left alone */
    pid_t pid = fork();
    if (pid == 0) _exit(ebbi_unwind_rows_share_a_set() ? 0 : 1);
    ebbi_unwind_row_cut(false);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_true(ebbi_unwind_rows_share_a_set());
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(header_is_filled),
        cmocka_unit_test(small_requests_estimated_within_10_percent),
        cmocka_unit_test(sampled_small_block_behaves),
        cmocka_unit_test(misuse_of_sampled_blocks_is_caught),
        cmocka_unit_test(fork_child_has_its_own_table),
        cmocka_unit_test(full_table_overflows_and_reuses),
        cmocka_unit_test(table_without_dev_shm_is_anonymous),
        cmocka_unit_test(new_threads_find_their_stacks_in_the_shared_table),
        cmocka_unit_test(a_stale_table_entry_is_probed_not_trusted),
        cmocka_unit_test(a_stale_entry_past_the_stack_end_is_not_trusted),
        cmocka_unit_test(unwind_rows_keep_two_of_one_set),
        cmocka_unit_test(a_row_cut_by_fork_is_reused_in_the_child),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
