/* A misuse report, then a crash reporter that allocates.
 *
 * The JVM writes its error report (hs_err) from its SIGABRT handler, with malloc; so do
 * core-dump helpers.  ebbmalloc stops the process with abort() when it finds a double
 * free or a corrupted free list, sometimes while it holds one of its locks (a corrupted
 * link found by the central tier, under that size class's lock).  It must release what
 * it holds first: the handler below allocates blocks of every kind, checks and frees
 * them, calls mallinfo2() (which takes every central lock) and prints; the process must
 * then end by SIGABRT, not hang.  (It keeps off the 48-byte class that the corruption
 * case damaged: a block of it would be reported again, from inside the handler.)  Each case runs in a fresh process (this program, with
 * ebbmalloc linked in as its malloc, started again with `--case NAME`) under a
 * deadline. */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "hostile_run.h"

static void say(const char *s) {
    if (write(1, s, strlen(s)) < 0) _exit(98);
}

static void *launder(void *p) {
    __asm__ volatile("" : "+r"(p)::"memory");
    return p;
}

static void on_abort(int sig) {
    (void)sig;
    say("handler: entered\n");
    static const size_t sizes[] = {24, 200, 5000, 70000, 1 << 20, 40 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *p = launder(malloc(sizes[i]));
        if (!p) {
            say("handler: malloc failed\n");
            _exit(3);
        }
        memset(p, (int)i + 1, sizes[i]);
        for (size_t k = 0; k < sizes[i]; k += 511)
            if (p[k] != (unsigned char)(i + 1)) {
                say("handler: block corrupt\n");
                _exit(3);
            }
        p = launder(realloc(p, sizes[i] * 3));
        if (!p) _exit(3);
        free(p);
    }
    struct mallinfo2 mi = mallinfo2(); /* every central lock, in turn */
    char buf[128];
    snprintf(buf, sizeof buf, "handler: ok, %zu bytes in use\n", mi.uordblks);
    say(buf);
}

static void *free_it(void *p) {
    free(p);
    return NULL;
}

/* 48-byte blocks, all but one in 64 freed by a thread that then ends: its cache goes to
 * the central tier, the first batches into the class's transfer cache as chains linked
 * through the blocks, the rest onto their spans (the live ones keep the spans). */
enum { N_CENTRAL = 4096 };
static void *central_blocks[N_CENTRAL];
static void *free_most(void *arg) {
    (void)arg;
    for (int i = 0; i < N_CENTRAL; i++)
        if (i % 64) free(central_blocks[i]);
    return NULL;
}
static void blocks_to_central(void) {
    for (int i = 0; i < N_CENTRAL; i++) central_blocks[i] = launder(malloc(40));
    pthread_t t;
    pthread_create(&t, NULL, free_most, NULL);
    pthread_join(t, NULL);
}

static int run_case(const char *name) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_abort;
    sigaction(SIGABRT, &sa, NULL);
    void *keep = launder(malloc(64)); /* the heap is in use */
    if (!strcmp(name, "double_free")) {
        void *p = launder(malloc(40));
        free(p);
        free(p); /* the free fast path sees the key: no lock held */
    } else if (!strcmp(name, "double_free_other_thread")) {
        void *p = launder(malloc(40));
        pthread_t t;
        pthread_create(&t, NULL, free_it, p);
        pthread_join(t, NULL);
        free(p);
    } else if (!strcmp(name, "double_free_large")) {
        void *before = launder(malloc(1 << 20)), *p = launder(malloc(1 << 20));
        void *after = launder(malloc(1 << 20));
        free(p);
        free(p); /* the slow path, through the page map */
        free(before), free(after);
    } else if (!strcmp(name, "realloc_freed")) {
        void *p = launder(malloc(48));
        free(p);
        p = launder(realloc(p, 100));
    } else if (!strcmp(name, "corrupt_link_central")) {
        /* A use after free overwrites the freed blocks' links; malloc_trim(0) moves the
         * transfer cache's chains to their spans, under the central lock, and finds a
         * link unaligned. */
        blocks_to_central();
        for (int i = 0; i < N_CENTRAL; i++)
            if (i % 64) ((volatile uintptr_t *)central_blocks[i])[0] ^= 5;
        malloc_trim(0);
    } else if (!strcmp(name, "double_free_central")) {
        /* malloc_trim(0) puts every freed block on its span.  A use after free overwrites
         * one's key, so its second free passes the fast path; the next malloc_trim(0)
         * takes it to its span, under the central lock, and finds it free there. */
        blocks_to_central();
        malloc_trim(0);
        ((volatile uint64_t *)central_blocks[1])[1] ^= 1;
        free(central_blocks[1]);
        malloc_trim(0);
    } else {
        printf("unknown case %s\n", name);
        return 2;
    }
    say("survived the misuse\n");
    free(keep);
    return 1;
}

static char self[4096];

static void expect_abort(const char *name, const char *report) {
    char *argv[] = {self, "--case", (char *)name, NULL};
    static struct run_result r;
    run_program(self, argv, NULL, 60, &r);
    if (r.timed_out)
        fail_msg("%s: the process hung after the report (killed after 60 s); stdout:\n%s\nstderr:\n%s", name,
                 r.out, r.err);
    if (!strstr(r.err, report)) fail_msg("%s: no \"%s\" on stderr:\n%s", name, report, r.err);
    if (!strstr(r.out, "handler: ok"))
        fail_msg("%s: the SIGABRT handler did not finish; stdout:\n%s\nstderr:\n%s", name, r.out, r.err);
    if (!WIFSIGNALED(r.status) || WTERMSIG(r.status) != SIGABRT)
        fail_msg("%s: ended with status 0x%x, not by SIGABRT", name, r.status);
}

static void double_free(void **st) {
    (void)st;
    expect_abort("double_free", "ebbmalloc: free(): double free of");
}
static void double_free_other_thread(void **st) {
    (void)st;
    expect_abort("double_free_other_thread", "ebbmalloc: free(): double free of");
}
static void double_free_large(void **st) {
    (void)st;
    expect_abort("double_free_large", "ebbmalloc: free(): double free of");
}
static void realloc_freed(void **st) {
    (void)st;
    expect_abort("realloc_freed", "ebbmalloc: realloc(): double free of");
}
static void corrupt_link_central(void **st) {
    (void)st;
    expect_abort("corrupt_link_central", "ebbmalloc: malloc(): corrupted free list");
}
static void double_free_central(void **st) {
    (void)st;
    expect_abort("double_free_central", "ebbmalloc: free(): double free of");
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--case")) return run_case(argv[2]);
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return 1;
    self[n] = 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(double_free),          cmocka_unit_test(double_free_other_thread),
        cmocka_unit_test(double_free_large),    cmocka_unit_test(realloc_freed),
        cmocka_unit_test(corrupt_link_central), cmocka_unit_test(double_free_central),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
