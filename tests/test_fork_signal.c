/* fork() from a signal handler that interrupted ebbmalloc on the same thread: while the
 * thread holds a lock (the page heap grows: ebbi_os.map), while it returns spans to the
 * kernel without one (ebbi_os.release in ebbi_page_release_finish), and while it is
 * inside ebbmalloc's own fork handlers (another fork's prepare).  The OS hooks raise the
 * signal at exactly that point.  First with one thread, where the child goes on as the
 * parent does (it finishes the interrupted call, allocates and checks the heap), then
 * with a second thread and the release thread running, where the child may only exit.
 * Either way the parent must go on and pass the heap check.  Internal library (ebb_
 * names), so that the hooks can be set; the cases run in this order. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ebb_test_mem.h"
#include "internal.h"

enum where { NOWHERE, AT_MAP, AT_RELEASE, IN_FORK_PREPARE };

static void *(*real_map)(size_t);
static int (*real_release)(void *, size_t);
static volatile sig_atomic_t armed;         /* where the next signal is raised */
static volatile sig_atomic_t child_goes_on; /* the handler's child returns from it */
static volatile sig_atomic_t fired, inside_seen, locks_seen;
static volatile pid_t handler_child;
static pid_t parent_pid;
static int trigger_tid;

static void on_usr1(int sig) {
    (void)sig;
    inside_seen = ebbi_inside();
    locks_seen = (int)ebbi_held.n;
    pid_t pid = fork();
    if (pid == 0) {
        if (!child_goes_on) _exit(0);
        alarm(30); /* timers are not inherited: a child that hangs must end too */
        return;    /* the child resumes the interrupted call */
    }
    handler_child = pid;
    fired = 1;
}

static bool on_trigger_thread(void) { return ebbi_os_gettid() == trigger_tid; }

/* Growing the page heap, the page map or the records: a lock is held. */
static void *map_hook(size_t size) {
    if (armed == AT_MAP && on_trigger_thread()) {
        armed = NOWHERE;
        raise(SIGUSR1);
    }
    return real_map(size);
}

/* Returning pages to the kernel without the page heap lock (spans in hand). */
static int release_hook(void *p, size_t size) {
    if (armed == AT_RELEASE && on_trigger_thread() && !ebbi_lock_held_here(&ebbi_ph_lock)) {
        armed = NOWHERE;
        raise(SIGUSR1);
    }
    return real_release(p, size);
}

/* Registered before ebbmalloc's handlers, so it runs after ebbmalloc's prepare: every
 * ebbmalloc lock is held by this thread then. */
static void prepare_hook(void) {
    if (armed == IN_FORK_PREPARE && on_trigger_thread()) {
        armed = NOWHERE;
        raise(SIGUSR1);
    }
}

/* ---------------------------------------------------------------- blocks and checks */
enum { NKEEP = 96 };
static unsigned char *keep[NKEEP];
static size_t keep_size[NKEEP];
static int nkeep;

static unsigned char *new_block(size_t n, int tag) {
    unsigned char *p = ebb_malloc(n);
    if (p) memset(p, tag & 0xff, n);
    return p;
}

static bool blocks_ok(void) {
    for (int i = 0; i < nkeep; i++)
        for (size_t j = 0; j < keep_size[i]; j += 4093)
            if (keep[i][j] != (unsigned char)(i + 1)) return false;
    return true;
}

static void keep_block(size_t n) {
    if (nkeep == NKEEP) return;
    keep[nkeep] = new_block(n, nkeep + 1);
    keep_size[nkeep] = keep[nkeep] ? n : 0;
    nkeep++;
}

/* Allocation of every kind, then the whole page heap and the thread caches checked: false
 * if anything is off. */
static bool heap_works(void) {
    void *p[64];
    for (int i = 0; i < 64; i++) {
        size_t n = (size_t)(i % 8 == 0 ? (1 << 20) + i * 8192 : 16 + i * 200);
        p[i] = new_block(n, 0x5a);
        if (!p[i]) return false;
    }
    for (int i = 0; i < 64; i++) ebb_free(p[i]);
    return blocks_ok() && ebbi_page_heap_verify() == NULL && ebbi_tc_verify() == NULL &&
           ebbi_central_verify() == NULL;
}

static void sleep_ms(int ms) {
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* Whether this process maps the stats page named for pid (plain system calls: the
 * process's malloc is glibc's, and this runs in a child of a fork from a handler). */
static bool maps_page_of(int pid) {
    static char buf[1 << 17], name[64];
    struct stat sb;
    if (stat("/proc/self/ns/pid", &sb)) return false;
    snprintf(name, sizeof name, "/dev/shm/ebbmalloc.%llu.%d\n", (unsigned long long)sb.st_ino, pid);
    int fd = open("/proc/self/maps", O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1, r = n;
    while (r > 0 && n < (ssize_t)sizeof buf - 1 && (r = read(fd, buf + n, sizeof buf - 1 - n)) > 0) n += r;
    if (fd >= 0) close(fd);
    buf[n > 0 ? n : 0] = 0;
    return strstr(buf, name) != NULL;
}

/* A child that went on writes a stats page of its own, never its parent's: within 15 s
 * of slow paths it maps its own and not the parent's. */
static bool own_stats_page(void) {
    for (int t = 0; t < 15000; t += 20) {
        ebb_free(ebb_malloc(1 << 20));
        if (maps_page_of(getpid()) && !maps_page_of(parent_pid)) return true;
        sleep_ms(20);
    }
    return false;
}

/* Exit status of a child, waiting at most 30 s (then it is killed: -1). */
static int wait_child(pid_t pid) {
    for (int t = 0; t < 30000; t += 10) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

/* Runs one case: raises the signal at `w` (child_goes_on: the handler's child returns).
 * In a child, it ends there with the child's verdict. */
static void run_case(enum where w, bool goes_on) {
    alarm(60); /* a parent that waits for its own lock fails here, not at meson's timeout */
    parent_pid = getpid();
    trigger_tid = ebbi_os_gettid();
    fired = inside_seen = 0;
    locks_seen = -1;
    handler_child = 0;
    child_goes_on = goes_on;
    assert_true(heap_works());
    pid_t outer = 0;
    armed = w;
    if (w == AT_MAP) {
        /* Blocks of 1 MiB, kept: the page heap grows within a few. */
        for (int i = 0; i < 32 && armed; i++) keep_block(1 << 20);
    } else if (w == AT_RELEASE) {
        for (int i = 0; i < 8; i++) ebb_free(new_block(1 << 20, 1));
        ebb_malloc_trim(0);
    } else {
        outer = fork();
        if (outer == 0) _exit(heap_works() ? 0 : 1); /* the outer fork's child */
    }
    if (getpid() != parent_pid) /* the handler's child, gone on with the interrupted call */
        _exit(!heap_works() ? 1 : !own_stats_page() ? 2 : 0);
    assert_int_equal(armed, NOWHERE);
    assert_true(fired);
    assert_int_equal(wait_child(handler_child), 0);
    if (outer) assert_int_equal(wait_child(outer), 0);
    assert_true(heap_works());
    /* and the signal came where it was meant to */
    assert_true(inside_seen);
    if (w == AT_MAP) assert_true(locks_seen > 0);
    if (w == AT_RELEASE) assert_int_equal(locks_seen, 0);
    alarm(0);
}

/* libc's stdio list lock, held by the interrupted code (fflush(NULL), fopen and fclose
 * hold it): the child finishes that code, then uses stdio from two threads. */
extern void _IO_list_lock(void);
extern void _IO_list_unlock(void);
static volatile sig_atomic_t stdio_child;
static void on_usr2(int sig) {
    (void)sig;
    if (fork() == 0) stdio_child = 1;
}
static void *open_null(void *arg) {
    FILE *f = fopen("/dev/null", "r");
    if (f) fclose(f);
    return arg;
}
static void stdio_one_thread(void **st) {
    (void)st;
    struct sigaction sa = {.sa_handler = on_usr2}, old;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR2, &sa, &old);
    stdio_child = 0;
    pid_t parent = getpid();
    _IO_list_lock();
    raise(SIGUSR2);
    _IO_list_unlock();
    if (stdio_child) {
        alarm(20);
        pthread_t t;
        if (pthread_create(&t, NULL, open_null, NULL)) _exit(2);
        pthread_join(t, NULL);
        open_null(NULL);
        _exit(0);
    }
    assert_int_equal(getpid(), parent);
    sigaction(SIGUSR2, &old, NULL);
    open_null(NULL);
    int status;
    pid_t c = wait(&status);
    assert_true(c > 0);
    assert_true(WIFEXITED(status)); /* not killed by its alarm: stdio works in the child */
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void map_one_thread(void **st) {
    (void)st;
    run_case(AT_MAP, true);
}
static void release_one_thread(void **st) {
    (void)st;
    run_case(AT_RELEASE, true);
}
static void prepare_one_thread(void **st) {
    (void)st;
    run_case(IN_FORK_PREPARE, false);
}

/* ---------------------------------------------------------------- with threads */
static int pipe_fd[2];
static void *blocked(void *arg) {
    (void)arg;
    char c;
    ssize_t r = read(pipe_fd[0], &c, 1);
    (void)r;
    return NULL;
}

/* A second thread, then the release thread, which the ebb_ API starts from a slow path
 * once the process is multi-threaded. */
static int with_threads(void **st) {
    (void)st;
    if (pipe(pipe_fd)) return -1;
    pthread_t t;
    if (pthread_create(&t, NULL, blocked, NULL)) return -1;
    for (int ms = 0; ms < 10000 && threads_now() < 3; ms += 10) {
        ebb_free(ebb_malloc(300 << 10));
        sleep_ms(10);
    }
    return threads_now() == 3 ? 0 : -1;
}

static void map_threads(void **st) {
    (void)st;
    run_case(AT_MAP, false);
}
static void release_threads(void **st) {
    (void)st;
    run_case(AT_RELEASE, false);
}
static void prepare_threads(void **st) {
    (void)st;
    run_case(IN_FORK_PREPARE, false);
}

/* Before ebbmalloc's constructor registers its own fork handlers (a constructor of
 * higher priority runs first), so that this prepare hook runs after ebbmalloc's. */
__attribute__((constructor(101))) static void register_prepare_hook(void) {
    pthread_atfork(prepare_hook, NULL, NULL);
}

/* argv[1]: run only the cases whose names match it (a cmocka filter, e.g. "release*"). */
int main(int argc, char **argv) {
    if (argc > 1) cmocka_set_test_filter(argv[1]);
    struct sigaction sa = {.sa_handler = on_usr1};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    ebb_free(ebb_malloc(1));
    real_map = ebbi_os.map, ebbi_os.map = map_hook;
    real_release = ebbi_os.release, ebbi_os.release = release_hook;
    const struct CMUnitTest one[] = {
        cmocka_unit_test(map_one_thread),
        cmocka_unit_test(release_one_thread),
        cmocka_unit_test(prepare_one_thread),
        cmocka_unit_test(stdio_one_thread),
    };
    const struct CMUnitTest threads[] = {
        cmocka_unit_test(map_threads),
        cmocka_unit_test(release_threads),
        cmocka_unit_test(prepare_threads),
    };
    int failed = cmocka_run_group_tests_name("one thread", one, NULL, NULL);
    return failed + cmocka_run_group_tests_name("release thread running", threads, with_threads, NULL);
}
