/* The background release thread: an idle process (no malloc calls at all) still gives
 * memory back, also in a child forked from a threaded parent (the thread is made anew
 * there), and EBB_BACKGROUND=0 really means no thread.  Linked to libebbmalloc.so. */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "ebb_test_mem.h"


static int threads_now(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1) break;
    fclose(f);
    return n;
}

/* Allocates and frees 6 MiB (every page touched; less than the free pages ebbmalloc may
 * keep regardless of the timer) then makes no allocator call while it polls its resident
 * set, with plain system calls only.  Returns 0 if RSS fell. */
static int burst_then_idle(int wait_ms) {
    size_t base = rss_bytes();
    enum { N = 6 };
    static char *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = malloc(1 << 20);
        memset(p[i], 7, 1 << 20);
    }
    for (int i = 0; i < N; i++) free(p[i]);
    size_t high = rss_bytes();
    if (high < base + (5u << 20)) return 2;
    struct timespec ts = {0, 20 * 1000000};
    for (int t = 0; t < wait_ms; t += 20) {
        if (rss_bytes() < base + (2u << 20)) return 0;
        nanosleep(&ts, NULL);
    }
    return 1;
}

static void *spin(void *arg) {
    (void)arg;
    for (int i = 0; i < 1000; i++) free(malloc((size_t)i * 10));
    return NULL;
}

static void idle_process_releases(void **st) {
    (void)st;
    if (getenv("EBB_BACKGROUND")) skip(); /* this case is for the default only */
    assert_int_equal(burst_then_idle(8000), 0);
}

static void idle_child_of_threaded_parent_releases(void **st) {
    (void)st;
    if (getenv("EBB_BACKGROUND")) skip();
    pthread_t t[3];
    for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, spin, NULL);
    pid_t pid = fork();
    if (pid == 0) _exit(burst_then_idle(8000));
    int status = 0;
    waitpid(pid, &status, 0);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void background_off_means_no_thread(void **st) {
    (void)st;
    const char *bg = getenv("EBB_BACKGROUND");
    if (!bg || strcmp(bg, "0")) skip();
    /* Without the thread, an idle process keeps its free pages (up to the timer's next
     * chance, which needs an allocator call) and no extra thread ever appears. */
    assert_int_equal(burst_then_idle(1500), 1);
    assert_int_equal(threads_now(), 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(idle_process_releases),
        cmocka_unit_test(idle_child_of_threaded_parent_releases),
        cmocka_unit_test(background_off_means_no_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
