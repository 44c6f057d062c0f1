/* The heap profile seen from the program, with libebbmalloc.so as its malloc: requests
 * of known totals estimated from the published table, a leak in a dlopen'ed library
 * built without frame pointers found on the top stack, sampled blocks that behave like
 * any other, and no deadlock or crash with every request sampled while threads
 * allocate, dlopen/dlclose, iterate the loaded objects and fork.
 *
 *   test_profile main    EBB_PROF_SAMPLE=256K: estimates, the leak
 *   test_profile every   EBB_PROF_SAMPLE=1: behaviour, misuse, stress
 *   test_profile off     EBB_PROF=0: nothing recorded
 *
 * Only requests above 256 KiB are counted here (ebbi_large_alloc); small requests are
 * counted by ebb_malloc's fast path (test_profile_unit drives that interface). */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ebb_test_fork.h"
#include "ebb_test_mem.h"
#include "prof_reader.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next_rand(void) { return xorshift64(&rng); }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static struct prof_view table(void) {
    struct prof_view v;
    if (!prof_find(&v)) fail_msg("no heap profile mapped");
    return v;
}

static int64_t live_sum(const struct prof_view *v) {
    int64_t s = 0;
    for (unsigned k = 0; k < v->h->slot_count; k++)
        if (v->slots[k].depth) s += v->slots[k].live_bytes;
    return s;
}

static const char *leak_lib(void) {
    const char *p = getenv("PROF_LEAK_LIB");
    if (!p) fail_msg("PROF_LEAK_LIB not set");
    return p;
}

/* The [start, end) of a function of a loaded library, from dlsym and its symbol size. */
static void sym_range(void *h, const char *name, uintptr_t *lo, uintptr_t *hi) {
    void *a = dlsym(h, name);
    assert_non_null(a);
    Dl_info di;
    const ElfW(Sym) *sym = NULL;
    assert_true(dladdr1(a, &di, (void **)&sym, RTLD_DL_SYMENT) && sym);
    *lo = (uintptr_t)a;
    *hi = *lo + sym->st_size;
    assert_true(sym->st_size > 0);
}

/* ---------------------------------------------------------------- main */
__attribute__((noinline)) void *churn_here(size_t n);
__attribute__((noinline)) void *churn_here(size_t n) {
    void *p = malloc(n);
    __asm__ volatile("" ::: "memory");
    return p;
}

static void large_requests_estimated_within_10_percent(void **state) {
    (void)state;
    /* allocated and freed at once: the estimate of all bytes ever asked for */
    size_t total = 0, count = 0;
    while (total < ((size_t)2 << 30)) {
        size_t n = (257 << 10) + next_rand() % (768 << 10);
        void *p = churn_here(n);
        assert_non_null(p);
        free(p);
        total += n, count++;
    }
    struct prof_view v = table();
    int k = prof_slot_with(&v, "churn_here");
    assert_true(k >= 0);
    assert_int_equal(prof_frame_in(&v, k, "churn_here"), 0);
    const struct ebb_prof_slot *s = &v.slots[k];
    fprintf(stderr, "allocated %zu bytes in %zu requests: estimated %llu bytes %llu objects, live %lld\n",
            total, count, (unsigned long long)s->total_bytes, (unsigned long long)s->total_objects,
            (long long)s->live_bytes);
    assert_true((double)s->total_bytes > 0.9 * (double)total && (double)s->total_bytes < 1.1 * (double)total);
    assert_true((double)s->total_objects > 0.9 * (double)count &&
                (double)s->total_objects < 1.1 * (double)count);
    assert_int_equal(s->live_bytes, 0);
    assert_int_equal(s->live_objects, 0);
}

#define NOISE 128
static void *noise_kept[NOISE];
__attribute__((noinline)) void noise_keep(void);
__attribute__((noinline)) void noise_keep(void) {
    for (int i = 0; i < NOISE; i++) noise_kept[i] = malloc((260 << 10) + next_rand() % (200 << 10));
}
__attribute__((noinline)) void noise_churn(size_t bytes);
__attribute__((noinline)) void noise_churn(size_t bytes) {
    for (size_t done = 0; done < bytes;) {
        size_t n = (300 << 10) + next_rand() % (1 << 20);
        void *volatile p = malloc(n);
        free(p);
        done += n;
    }
}

/* With a frame pointer, as a JVM's frames have: a walker that trusts frame pointers
 * would follow it from inside the library and miss the library's caller. */
__attribute__((noinline, optimize("no-omit-frame-pointer"))) size_t leak_through_library(
    void *(*outer)(size_t, int), size_t bytes);
__attribute__((noinline, optimize("no-omit-frame-pointer"))) size_t leak_through_library(
    void *(*outer)(size_t, int), size_t bytes) {
    size_t done = 0;
    for (int i = 0; done < bytes; i++) {
        assert_non_null(outer(288 << 10, i));
        done += 288 << 10;
    }
    return done;
}

static void leak_in_dlopened_library_is_the_top_stack(void **state) {
    (void)state;
    noise_keep(); /* about 45 MiB live from another stack */
    void *h = dlopen(leak_lib(), RTLD_NOW | RTLD_LOCAL);
    assert_non_null(h);
    void *(*outer)(size_t, int) = (void *(*)(size_t, int))dlsym(h, "prof_leak_outer");
    void (*release)(void) = (void (*)(void))dlsym(h, "prof_leak_release");
    assert_non_null(outer);
    assert_non_null(release);
    noise_churn((size_t)256 << 20);
    size_t leaked = leak_through_library(outer, (size_t)96 << 20);
    noise_churn((size_t)256 << 20);

    struct prof_view v = table();
    int top = prof_top(&v);
    assert_true(top >= 0);
    const struct ebb_prof_slot *s = &v.slots[top];
    uintptr_t in_lo, in_hi, out_lo, out_hi;
    sym_range(h, "prof_leak_inner", &in_lo, &in_hi);
    sym_range(h, "prof_leak_outer", &out_lo, &out_hi);
    const uint64_t *f = v.frames + s->first;
    bool ok = s->depth >= 3 && f[0] > in_lo && f[0] <= in_hi && f[1] > out_lo && f[1] <= out_hi &&
              prof_frame_in(&v, top, "leak_through_library") == 2;
    if (!ok) prof_dump(&v, stderr);
    /* the leaking function first, then its caller, then the program's function above
     * them: the walk went through two frames without frame pointers */
    assert_true(ok);
    fprintf(stderr, "leaked %zu bytes, top stack estimates %lld (%lld objects)\n", leaked,
            (long long)s->live_bytes, (long long)s->live_objects);
    assert_true((double)s->live_bytes > 0.75 * (double)leaked &&
                (double)s->live_bytes < 1.25 * (double)leaked);
    /* freeing the leaked blocks takes the stack back to nothing */
    release();
    assert_int_equal(s->live_bytes, 0);
    assert_int_equal(s->live_objects, 0);
    int noise = prof_slot_with(&v, "noise_keep");
    assert_true(noise >= 0 && v.slots[noise].live_bytes > 0);
    for (int i = 0; i < NOISE; i++) free(noise_kept[i]);
    assert_int_equal(v.slots[noise].live_bytes, 0);
    dlclose(h);
}

/* A thread's start function that allocates itself: the stack starts at it, under the
 * frame ebbmalloc starts every thread with (which is ebbmalloc's but not an allocator
 * frame: a walk that dropped everything up to it would leave only libc's start). */
#define SHALLOW 64
static void *shallow_kept[SHALLOW];
__attribute__((noinline)) void *shallow_thread(void *arg);
__attribute__((noinline)) void *shallow_thread(void *arg) {
    for (int i = 0; i < SHALLOW; i++) shallow_kept[i] = malloc((272 << 10) + (size_t)i * 64);
    __asm__ volatile("" ::: "memory"); /* the calls stay in this frame */
    return arg;
}

/* Under qemu-user (tests/arm64.sh sets EBB_TEST_QEMU) the thread runs on a stack in the
 * program's own data: qemu 7.2 leaves out of the guest's /proc/self/maps a guest mapping
 * that the kernel merged with one of qemu's own, and a default thread stack mapped high
 * up after a big heap sometimes is one (its guard page listed, the stack not), so that
 * neither the walk nor anything else in the guest can find that stack's bounds. */
static _Alignas(65536) unsigned char shallow_stack[1 << 20];

static void a_thread_s_own_function_heads_its_stack(void **state) {
    (void)state;
    pthread_t t;
    pthread_attr_t a;
    assert_int_equal(pthread_attr_init(&a), 0);
    if (getenv("EBB_TEST_QEMU"))
        assert_int_equal(pthread_attr_setstack(&a, shallow_stack, sizeof shallow_stack), 0);
    assert_int_equal(pthread_create(&t, &a, shallow_thread, NULL), 0);
    pthread_attr_destroy(&a);
    assert_int_equal(pthread_join(t, NULL), 0);
    struct prof_view v = table();
    int k = prof_slot_with(&v, "shallow_thread");
    if (k < 0) prof_dump(&v, stderr);
    assert_true(k >= 0);
    assert_int_equal(prof_frame_in(&v, k, "shallow_thread"), 0);
    assert_true(v.slots[k].live_bytes > 0);
    for (int i = 0; i < SHALLOW; i++) free(shallow_kept[i]);
    assert_int_equal(v.slots[k].live_bytes, 0);
}

/* ---------------------------------------------------------------- every request sampled */
/* One byte per kernel page, each page its own value. */
static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i += 4096) p[i] = (unsigned char)(seed + i / 4096);
}
static bool intact(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i += 4096)
        if (p[i] != (unsigned char)(seed + i / 4096)) return false;
    return true;
}

static void sampled_large_blocks_behave(void **state) {
    (void)state;
    unsigned char *p = malloc(1 << 20);
    assert_non_null(p);
    struct prof_view v = table();
    int64_t base = live_sum(&v) - (1 << 20);
    memset(p, 0xff, 1 << 20);
    free(p);
    /* calloc's zeroes, on memory that was dirty */
    unsigned char *z = calloc(1, 1 << 20);
    assert_non_null(z);
    for (size_t i = 0; i < (1 << 20); i++)
        if (z[i]) fail_msg("calloc byte %zu not zero", i);
    assert_int_equal(live_sum(&v), base + (1 << 20));
    free(z);
    /* realloc: shrink in place, grow by moving, the mremap of an own mapping */
    p = malloc(600 << 10);
    fill(p, 600 << 10, 7);
    p = realloc(p, 300 << 10);
    assert_true(intact(p, 300 << 10, 7));
    assert_true(malloc_usable_size(p) >= (300 << 10));
    assert_int_equal(live_sum(&v), base + (300 << 10));
    fill(p, 300 << 10, 9);
    p = realloc(p, 700 << 10);
    assert_true(intact(p, 300 << 10, 9));
    assert_int_equal(live_sum(&v), base + (700 << 10));
    free(p);
    size_t big = (size_t)40 << 20;
    p = malloc(big);
    fill(p, big, 3);
    p = realloc(p, big + (8 << 20));
    assert_true(intact(p, big, 3));
    assert_int_equal(live_sum(&v), base + (int64_t)big + (8 << 20));
    p = realloc(p, big - (4 << 20));
    assert_true(intact(p, big - (4 << 20), 3));
    assert_int_equal(live_sum(&v), base + (int64_t)big - (4 << 20));
    free(p);
    /* aligned */
    void *a = NULL;
    assert_int_equal(posix_memalign(&a, 1 << 16, 300 << 10), 0);
    assert_true(((uintptr_t)a & 0xffff) == 0);
    assert_int_equal(live_sum(&v), base + (300 << 10));
    free(a);
    assert_int_equal(live_sum(&v), base);
}

static void *volatile victim;
static void double_free_child(void) {
    victim = malloc(400 << 10);
    free(victim);
    free(victim);
}
static void interior_free_child(void) {
    victim = malloc(400 << 10);
    free((char *)victim + 8192);
}

static void misuse_of_sampled_blocks_is_caught(void **state) {
    (void)state;
    char out[1024];
    assert_true(died_of_abort(child_stderr(double_free_child, out, sizeof out), out, "double free"));
    assert_true(died_of_abort(child_stderr(interior_free_child, out, sizeof out), out, "invalid pointer"));
}

/* ---------------------------------------------------------------- stress */
static _Atomic int stop;
static _Atomic long progress[8];

static void *alloc_worker(void *arg) {
    long id = (long)arg;
    void *keep[32] = {0};
    uint64_t r = 0x1234567ull * (uint64_t)(id + 1);
    while (!stop) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        int i = (int)(r % 32);
        free(keep[i]);
        size_t n = r & 1 ? (257 << 10) + (r >> 8) % (512 << 10) : 16 + (r >> 8) % 4000;
        keep[i] = malloc(n);
        if (keep[i]) memset(keep[i], (int)id, n < 256 ? n : 256);
        if ((r & 7) == 0 && keep[i]) keep[i] = realloc(keep[i], n / 2 + 1);
        progress[id]++;
    }
    for (int i = 0; i < 32; i++) free(keep[i]);
    return NULL;
}

static void *dlopen_worker(void *arg) {
    long id = (long)arg;
    while (!stop) {
        void *h = dlopen(leak_lib(), RTLD_NOW | RTLD_LOCAL);
        if (!h) continue;
        void *(*outer)(size_t, int) = (void *(*)(size_t, int))dlsym(h, "prof_leak_outer");
        void (*release)(void) = (void (*)(void))dlsym(h, "prof_leak_release");
        for (int i = 0; i < 4; i++) outer(300 << 10, i);
        release();
        dlclose(h);
        progress[id]++;
    }
    return NULL;
}

static int phdr_cb(struct dl_phdr_info *info, size_t size, void *data) {
    (void)info, (void)size;
    /* a sampled malloc while the loader's lock is held */
    void *volatile p = malloc(300 << 10);
    free(p);
    ++*(long *)data;
    return 0;
}

static void *phdr_worker(void *arg) {
    long id = (long)arg, n = 0;
    while (!stop) {
        dl_iterate_phdr(phdr_cb, &n);
        progress[id]++;
    }
    return NULL;
}

static void fork_child_work(void) {
    for (int i = 0; i < 20; i++) {
        void *volatile p = malloc(300 << 10);
        free(p);
    }
    struct prof_view v;
    _exit(prof_find(&v) && v.h->pid == getpid() ? 0 : 7);
}

static void on_watchdog(int sig) {
    (void)sig;
    static const char msg[] = "stress: no progress in time (deadlock)\n";
    if (write(2, msg, sizeof msg - 1)) {}
    _exit(99);
}

static void stress_every_request_sampled(void **state) {
    (void)state;
    signal(SIGALRM, on_watchdog); /* a deadlock in a fork handler would stop us too */
    alarm((unsigned)(60 + 3 * ebb_child_limit_ms() / 1000)); /* room for the children's deadlines */
    pthread_t t[6];
    /* one thread dlopens the library: its leak list is the library's own, not shared */
    void *(*fn[6])(void *) = {alloc_worker, alloc_worker,  alloc_worker,
                              alloc_worker, dlopen_worker, phdr_worker};
    for (long i = 0; i < 6; i++) assert_int_equal(pthread_create(&t[i], NULL, fn[i], (void *)i), 0);
    double end = now_s() + 6;
    int forks = 0;
    while (now_s() < end) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) fork_child_work();
        int rc = ebb_wait_child(pid, NULL);
        if (ebb_emulator_retry(rc)) continue;
        if (rc < 0) fail_msg("fork child stuck (deadlock)");
        assert_int_equal(rc, 0);
        forks++;
    }
    /* every worker keeps making progress: nobody is stuck */
    long before[6];
    for (int i = 0; i < 6; i++) before[i] = progress[i];
    for (int i = 0; i < 6; i++) {
        double deadline = now_s() + 30;
        while (progress[i] == before[i] && now_s() < deadline) usleep(1000);
        if (progress[i] == before[i]) fail_msg("worker %d stuck (deadlock)", i);
    }
    stop = 1;
    for (int i = 0; i < 6; i++) pthread_join(t[i], NULL);
    struct prof_view v = table();
    for (unsigned k = 0; k < v.h->slot_count; k++)
        if (v.slots[k].depth) assert_true(v.slots[k].live_objects >= 0 && v.slots[k].live_bytes >= 0);
    fprintf(stderr,
            "%d forks; %ld, %ld, %ld, %ld rounds of allocation; %ld dlopen/dlclose; %ld dl_iterate_phdr; "
            "%llu samples\n",
            forks, progress[0], progress[1], progress[2], progress[3], progress[4], progress[5],
            (unsigned long long)v.h->samples);
    assert_true(v.h->samples > 1000);
    alarm(0);
}

/* ---------------------------------------------------------------- fork from a handler
 * A timer's handler forks while the program samples every large request: the fork may
 * interrupt a sample.  The child goes on once the handler returns (the process has one
 * thread) and allocates from its own function; none of that may reach the parent's
 * table, which the child shares the file of until it lets go of it. */
static volatile sig_atomic_t in_child, forks_done;
static pid_t children[64];

static void on_timer(int sig) {
    (void)sig;
    if (in_child || forks_done >= 64) return;
    int saved = errno;
    pid_t pid = fork();
    if (pid == 0) in_child = 1;
    else if (pid > 0) children[forks_done++] = pid;
    errno = saved;
}

__attribute__((noinline)) void child_allocates(void);
__attribute__((noinline)) void child_allocates(void) {
    for (int i = 0; i < 8; i++) {
        void *volatile p = malloc(300 << 10);
        free(p);
    }
}

/* The timer's signal goes to this thread, the one whose loop the handler interrupts
 * (a process-directed SIGALRM may go to any thread, and a thread another test left or an
 * emulator's scheduling could take it). */
static timer_t fork_timer;
static void fork_timer_set(long ns) {
    struct itimerspec it = {{0, ns}, {0, ns}};
    timer_settime(fork_timer, 0, &it, NULL);
}

static void fork_from_a_handler_inside_samples(void **state) {
    (void)state;
    struct sigaction sa = {0};
    sa.sa_handler = on_timer;
    sigaction(SIGALRM, &sa, NULL);
    struct sigevent ev = {0};
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = SIGALRM;
    ev._sigev_un._tid = gettid();
    assert_int_equal(timer_create(CLOCK_MONOTONIC, &ev, &fork_timer), 0);
    fork_timer_set(200000);
    double end = now_s() + 20;
    while (forks_done < 64 && now_s() < end) {
        void *volatile p = malloc(300 << 10);
        free(p);
        if (in_child) {
            fork_timer_set(0);
            child_allocates();
            _exit(0);
        }
    }
    fork_timer_set(0);
    timer_delete(fork_timer);
    int stuck = -1, bad = -1;
    for (int i = 0; i < forks_done; i++) {
        int st = 0;
        double deadline = now_s() + 30;
        pid_t w;
        while ((w = waitpid(children[i], &st, WNOHANG)) == 0 && now_s() < deadline) usleep(1000);
        if (w == 0) { /* every child is waited for or killed before the verdict */
            kill(children[i], SIGKILL);
            waitpid(children[i], NULL, 0);
            if (stuck < 0) stuck = i;
        } else if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0) && bad < 0) {
            bad = i;
        }
    }
    if (stuck >= 0) fail_msg("child %d of %d forks from a signal handler stuck", stuck, (int)forks_done);
    assert_true(bad < 0);
    fprintf(stderr, "%d forks from a signal handler\n", (int)forks_done);
    assert_true(forks_done > 0);
    struct prof_view v = table();
    int k = prof_slot_with(&v, "child_allocates");
    if (k >= 0) prof_dump(&v, stderr);
    assert_true(k < 0); /* no child wrote into this process's table */
}

/* ---------------------------------------------------------------- off */
static void nothing_recorded_when_off(void **state) {
    (void)state;
    void *p[64];
    for (int i = 0; i < 64; i++) p[i] = malloc(1 << 20);
    struct prof_view v;
    assert_false(prof_find(&v));
    /* nor a file of this process's in /dev/shm (ebbmalloc.<namespace>.<pid>.heap) */
    char tail[32];
    snprintf(tail, sizeof tail, ".%d.heap", getpid());
    DIR *d = opendir("/dev/shm");
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));) {
        size_t n = strlen(e->d_name), t = strlen(tail);
        if (!strncmp(e->d_name, "ebbmalloc.", 10) && n > t && !strcmp(e->d_name + n - t, tail))
            fail_msg("/dev/shm/%s exists", e->d_name);
    }
    closedir(d);
    for (int i = 0; i < 64; i++) free(p[i]);
}

/* And on: the same requests make the table. */
static void recorded_when_on(void **state) {
    (void)state;
    void *p[64];
    for (int i = 0; i < 64; i++) p[i] = malloc(1 << 20);
    struct prof_view v;
    assert_true(prof_find(&v));
    assert_true(v.h->samples > 0);
    for (int i = 0; i < 64; i++) free(p[i]);
}

int main(int argc, char **argv) {
    const char *group = argc > 1 ? argv[1] : "main";
    const struct CMUnitTest main_tests[] = {
        cmocka_unit_test(recorded_when_on),
        cmocka_unit_test(large_requests_estimated_within_10_percent),
        cmocka_unit_test(leak_in_dlopened_library_is_the_top_stack),
        cmocka_unit_test(a_thread_s_own_function_heads_its_stack),
    };
    const struct CMUnitTest every_tests[] = {
        cmocka_unit_test(sampled_large_blocks_behave),
        cmocka_unit_test(misuse_of_sampled_blocks_is_caught),
        cmocka_unit_test(stress_every_request_sampled),
        cmocka_unit_test(fork_from_a_handler_inside_samples),
    };
    const struct CMUnitTest off_tests[] = {
        cmocka_unit_test(nothing_recorded_when_off),
    };
    if (!strcmp(group, "every")) return cmocka_run_group_tests(every_tests, NULL, NULL);
    if (!strcmp(group, "off")) return cmocka_run_group_tests(off_tests, NULL, NULL);
    return cmocka_run_group_tests(main_tests, NULL, NULL);
}
