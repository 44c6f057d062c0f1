/* The background release thread starts only once the application is multi-threaded.
 * A single-threaded program never gets a second thread: its free memory goes back at
 * its next allocator call that reaches a slow path after EBB_RELEASE_MS, and its stats
 * page is written from there.  A threaded process gives memory back with no allocator
 * call at all.  A fork child of a threaded parent starts with one thread, and gets its
 * release thread at its own first pthread_create.  EBB_BACKGROUND=0 really means no thread.  Linked to libebbmalloc.so; the cases
 * run in this order, the single-threaded one first.  The polls read /proc with plain
 * system calls: stdio would allocate. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <pthread.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "ebb_test_fork.h"
#include "ebb_test_mem.h"
#include "ebb_test_ns.h"

static size_t rss_now(void) {
    char buf[128];
    unsigned long size = 0, res = 0;
    if (!procfs_read_buf("/proc/self/statm", buf, sizeof buf) || sscanf(buf, "%lu %lu", &size, &res) != 2)
        return 0;
    return res * (size_t)sysconf(_SC_PAGESIZE);
}

/* Threads the process had before its main ran: 1 natively, more under an emulator that
 * runs threads of its own in the process (qemu-user's RCU thread); the counts below are
 * relative to it. */
static int base_threads;

/* The stats page is a shared mapping of a file in /dev/shm, named after ebbmalloc. */
static int stats_page_mapped(void) {
    static char buf[1 << 16];
    procfs_read_buf("/proc/self/maps", buf, sizeof buf);
    for (char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        char *end = strchr(l, '\n');
        if (end) *end = 0;
        int hit = strstr(l, "/dev/shm/") && strstr(l, "ebbmalloc");
        if (end) *end = '\n';
        if (hit) return 1;
    }
    return 0;
}

/* A call that reaches a slow path: blocks above the size classes always do.  Through a
 * volatile pointer, so that the compiler does not drop the pair. */
static void slow_call(void) {
    void *volatile p = malloc(300 << 10);
    free(p);
}


static void sleep_ms(int ms) {
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

static size_t base_rss;

/* Allocates and frees 6 MiB (every page touched; less than the free pages ebbmalloc may
 * keep regardless of the timer).  Returns 2 if RSS did not even rise. */
static int burst(void) {
    base_rss = rss_now();
    enum { N = 6 };
    static char *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = malloc(1 << 20);
        memset(p[i], 7, 1 << 20);
    }
    for (int i = 0; i < N; i++) free(p[i]);
    return rss_now() < base_rss + (5u << 20) ? 2 : 0;
}

static int released(void) { return rss_now() < base_rss + (2u << 20); }

/* A burst, then no allocator call while RSS is polled.  0 if RSS fell within wait_ms. */
static int burst_then_idle(int wait_ms) {
    if (burst()) return 2;
    for (int t = 0; t < wait_ms; t += 20) {
        if (released()) return 0;
        sleep_ms(20);
    }
    return 1;
}

static void *spin(void *arg) {
    (void)arg;
    for (int i = 0; i < 1000; i++) {
        void *volatile p = malloc((size_t)i * 10);
        free(p);
    }
    return NULL;
}

static void single_threaded_program_stays_single_threaded(void **st) {
    (void)st;
    assert_int_equal(threads_now(), base_threads);
    /* Nothing goes back while the program makes no allocator call... */
    assert_int_equal(burst_then_idle(1500), 1);
    assert_int_equal(threads_now(), base_threads);
    /* ...and it does at a call that reaches a slow path (a block above the size classes
     * always does), once the pages are older than EBB_RELEASE_MS. */
    int ok = 0;
    for (int t = 0; t < 10000 && !ok; t += 20) {
        slow_call();
        ok = released();
        if (!ok) sleep_ms(20);
    }
    assert_true(ok);
    /* The stats page is written from the same slow paths. */
    ok = 0;
    for (int t = 0; t < 10000 && !ok; t += 20) {
        slow_call();
        ok = stats_page_mapped();
        if (!ok) sleep_ms(20);
    }
    assert_true(ok);
    assert_int_equal(threads_now(), base_threads);
}

static void threaded_process_releases_when_idle(void **st) {
    (void)st;
    pthread_t t;
    /* The release thread starts inside this call, before the program's thread. */
    assert_int_equal(pthread_create(&t, NULL, spin, NULL), 0);
    pthread_join(t, NULL);
    assert_int_equal(threads_settle(base_threads + 1), base_threads + 1);
    assert_int_equal(burst_then_idle(8000), 0);
}

static void fork_child_of_threaded_parent_starts_single_threaded(void **st) {
    (void)st;
    pthread_t t[3];
    for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, spin, NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* A fork child has one thread, as libc and the kernel see it (unshare of a user
         * namespace works only then): no release thread is made for it at the fork... */
        if (threads_now() != base_threads) _exit(3);
        /* ...but at its own first pthread_create, as in a program. */
        pthread_t c;
        if (pthread_create(&c, NULL, spin, NULL)) _exit(4);
        pthread_join(c, NULL);
        if (threads_settle(base_threads + 1) != base_threads + 1) _exit(5);
        _exit(burst_then_idle(8000));
    }
    int status = 0;
    waitpid(pid, &status, 0);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* libc ends a process when its last thread ends (with exit(0), atexit handlers and
 * all, on that thread's stack); the release thread must not keep it alive.  A fork child gets one, then its only
 * program thread ends with pthread_exit: the child must end, with its atexit handler run.
 * The child blocks SIGUSR1 from the start and has one pending for the process when it
 * ends: the release thread, which runs libc's exit, must keep the program's mask (an
 * empty one would take the signal, whose default action kills the process). */
static int exit_pipe[2];
/* About 1 MiB of stack, as a destructor walking a long list recursively takes: libc's exit
 * must run on a stack like a program thread's, not a small one of ebbmalloc's. */
static __attribute__((noinline)) unsigned deep(unsigned n) {
    volatile char frame[1024];
    frame[0] = (char)n;
    frame[1023] = (char)(n >> 8);
    return n ? deep(n - 1) + (unsigned char)frame[0] + (unsigned char)frame[1023] : 0;
}
static void say_exit(void) {
    if (deep(1024) == 0) _exit(8);
    if (write(exit_pipe[1], "x", 1) != 1) _exit(7);
}

/* An io_uring with a submission-poll thread: a kernel worker in the process, counted in
 * /proc/self/stat's threads (not in libc's), that ends only with the process.  -1 if the
 * kernel has no io_uring (the child then says so with its exit status). */
static int ring_with_poll_thread(void) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_SQPOLL;
    p.sq_thread_idle = 1; /* ms: it sleeps soon after, still one of the process's tasks */
    return (int)syscall(__NR_io_uring_setup, 4, &p);
}

enum around { PLAIN, RING, NO_PROC };
static void last_thread_ends(enum around with) {
again:
    assert_int_equal(pipe(exit_pipe), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(exit_pipe[0]);
        atexit(say_exit);
        sigset_t usr1;
        sigemptyset(&usr1);
        sigaddset(&usr1, SIGUSR1);
        pthread_sigmask(SIG_BLOCK, &usr1, NULL);
        pthread_t c;
        int workers = 0;
        const char *what = NULL;
        if (with == NO_PROC && ebb_private_mounts(&what)) _exit(12);
        if (with == RING) {
            if (ring_with_poll_thread() < 0) _exit(errno == ENOSYS ? 10 : 11);
            workers = 1;
        }
        if (pthread_create(&c, NULL, spin, NULL)) _exit(4);
        pthread_join(c, NULL);
        /* the release thread (and the ring's poll thread) */
        if (threads_settle(base_threads + 1 + workers) != base_threads + 1 + workers) _exit(5);
        /* An empty /proc from here on: the end must be told without it (a container
         * without /proc, a sandbox that hides it). */
        if (with == NO_PROC && mount("tmpfs", "/proc", "tmpfs", MS_NOSUID | MS_NODEV, "size=4k")) _exit(13);
        if (with == NO_PROC && access("/proc/self/stat", F_OK) == 0) _exit(14);
        kill(getpid(), SIGUSR1); /* pending: every thread blocks it */
        pthread_exit(NULL);
    }
    close(exit_pipe[1]);
    int rc = ebb_wait_child(pid, NULL);
    char c = 0;
    ssize_t got = read(exit_pipe[0], &c, 1);
    close(exit_pipe[0]);
    if (ebb_emulator_retry(rc)) goto again;
    if (rc == EBB_CHILD_HUNG) fail_msg("the child's last program thread ended, the child did not");
    if (rc == 10 || rc == 11)
        fail_msg("io_uring_setup failed in the child (%s)", rc == 10 ? "ENOSYS" : "refused");
    if (rc >= 12 && rc <= 14) fail_msg("the child could not hide /proc (step %d)", rc);
    assert_int_equal(rc, 0);
    assert_int_equal(got, 1);
    assert_int_equal(c, 'x');
}

static void process_ends_when_its_last_thread_does(void **st) {
    (void)st;
    last_thread_ends(PLAIN);
}

/* The same with a kernel worker in the process (io_uring's poll thread): libc ends the
 * process at its last thread whatever the kernel's own threads, and so must the
 * release thread let it. */
static void process_ends_beside_kernel_workers(void **st) {
    (void)st;
    last_thread_ends(RING);
}

/* And with no /proc to read at all: the shared library counts the program's threads
 * itself, and takes the mask of the one that ended last. */
static void process_ends_without_proc(void **st) {
    (void)st;
    last_thread_ends(NO_PROC);
}

static void background_off_means_no_thread(void **st) {
    (void)st;
    /* Not even once the program has threads: an idle process keeps its free pages (up to
     * the timer's next chance, which needs an allocator call). */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, spin, NULL), 0);
    pthread_join(t, NULL);
    assert_int_equal(threads_settle(base_threads), base_threads);
    assert_int_equal(burst_then_idle(1500), 1);
    assert_int_equal(threads_now(), base_threads);
}

/* Run twice by meson: with the default (the release thread comes with the program's
 * threads) and with EBB_BACKGROUND=0 (it never comes); each run has its own cases. */
int main(void) {
    base_threads = threads_now();
    const char *bg = getenv("EBB_BACKGROUND");
    if (bg && strcmp(bg, "0") == 0) {
        const struct CMUnitTest off[] = {
            cmocka_unit_test(single_threaded_program_stays_single_threaded),
            cmocka_unit_test(background_off_means_no_thread),
        };
        return cmocka_run_group_tests(off, NULL, NULL);
    }
    const struct CMUnitTest on[] = {
        cmocka_unit_test(single_threaded_program_stays_single_threaded),
        cmocka_unit_test(threaded_process_releases_when_idle),
        cmocka_unit_test(fork_child_of_threaded_parent_starts_single_threaded),
        cmocka_unit_test(process_ends_when_its_last_thread_does),
        cmocka_unit_test(process_ends_beside_kernel_workers),
        cmocka_unit_test(process_ends_without_proc),
    };
    return cmocka_run_group_tests(on, NULL, NULL);
}
