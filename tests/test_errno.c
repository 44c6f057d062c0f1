/* errno through the malloc family, with glibc's names (linked to libebbmalloc.so): every
 * call that fails leaves ENOMEM (posix_memalign too, besides returning it), whether the
 * size is impossible or the kernel refuses the memory (RLIMIT_AS), and no call that
 * succeeds changes errno, also while release passes run and the stats page is created and
 * written from the slow paths (EBB_RELEASE_MS=40: a pass falls due every 10 ms). */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

/* Not ENOMEM, not 0, and not what a failed file open or read would leave. */
#define MARK 4321

static int failures; /* of the checks below, in a child */

static void say(const char *s) {
    ssize_t r = write(2, s, strlen(s));
    (void)r;
}

#define FAILS_WITH_ENOMEM(expr)                       \
    do {                                              \
        errno = ENOENT;                               \
        void *volatile p_ = (expr);                   \
        if (p_ || errno != ENOMEM) {                  \
            say("not NULL with ENOMEM: " #expr "\n"); \
            failures++;                               \
        }                                             \
    } while (0)

static void memalign_fails(size_t align, size_t n) {
    void *q = &failures;
    errno = ENOENT;
    int rc = posix_memalign(&q, align, n);
    if (rc != ENOMEM || errno != ENOMEM || q != &failures) {
        say("posix_memalign: not ENOMEM (result and errno), or *memptr changed\n");
        failures++;
    }
}

/* Every function asked for n bytes, which it cannot have. */
static void all_fail(size_t n) {
    void *keep = malloc(64);
    FAILS_WITH_ENOMEM(malloc(n));
    FAILS_WITH_ENOMEM(calloc(1, n));
    FAILS_WITH_ENOMEM(realloc(keep, n));
    FAILS_WITH_ENOMEM(reallocarray(keep, n / 8, 8));
    FAILS_WITH_ENOMEM(aligned_alloc(4096, n));
    FAILS_WITH_ENOMEM(memalign(64, n));
    FAILS_WITH_ENOMEM(valloc(n));
    FAILS_WITH_ENOMEM(pvalloc(n));
    memalign_fails(64, n);
    memalign_fails(1 << 16, n);
    free(keep);
}

static void impossible_sizes_fail_with_enomem(void **st) {
    (void)st;
    failures = 0;
    all_fail(SIZE_MAX);
    all_fail((size_t)PTRDIFF_MAX + 1);
    all_fail((size_t)1 << 62);
    volatile size_t half = SIZE_MAX / 2; /* volatile: the compiler would warn */
    FAILS_WITH_ENOMEM(calloc(half, 3));
    assert_int_equal(failures, 0);
}

static size_t vm_size(void) {
    static char buf[4096];
    FILE *f = fopen("/proc/self/status", "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    const char *p = strstr(buf, "VmSize:");
    return p ? (size_t)strtoull(p + 7, NULL, 10) * 1024 : 0;
}

/* The kernel refuses: the address space may grow by 16 MiB only. */
static void refused_memory_fails_with_enomem(void **st) {
    (void)st;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit r;
        getrlimit(RLIMIT_AS, &r);
        r.rlim_cur = vm_size() + (16 << 20);
        if (setrlimit(RLIMIT_AS, &r)) _exit(2);
        failures = 0;
        all_fail(64 << 20);  /* from the page heap */
        all_fail(512 << 20); /* a mapping of its own */
        _exit(failures ? 1 : 0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

#define KEEPS_ERRNO(expr)                         \
    do {                                          \
        errno = MARK;                             \
        expr;                                     \
        if (errno != MARK) {                      \
            say("errno changed by: " #expr "\n"); \
            failures++;                           \
        }                                         \
    } while (0)

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* One round of every function on every path: thread cache, central tier, pages, own
 * mappings, aligned blocks, realloc in place and moving. */
static void round_of_calls(void) {
    static const size_t sizes[] = {1, 24, 100, 1000, 20000, 40000, 300 << 10, 3 << 20, 40 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        void *volatile p, *volatile q;
        KEEPS_ERRNO(p = malloc(n));
        KEEPS_ERRNO(p = realloc(p, n * 2));
        KEEPS_ERRNO(p = realloc(p, n / 2 + 1));
        KEEPS_ERRNO(free(p));
        KEEPS_ERRNO(p = calloc(n, 1));
        KEEPS_ERRNO(free(p));
        KEEPS_ERRNO(p = reallocarray(NULL, n, 1));
        KEEPS_ERRNO(free(p));
        KEEPS_ERRNO(p = aligned_alloc(256, n));
        KEEPS_ERRNO(free(p));
        KEEPS_ERRNO(p = memalign(1 << 16, n));
        KEEPS_ERRNO(free(p));
        KEEPS_ERRNO(p = valloc(n));
        KEEPS_ERRNO(free(p));
        KEEPS_ERRNO(p = pvalloc(n));
        KEEPS_ERRNO(free(p));
        void *r = NULL;
        KEEPS_ERRNO(if (posix_memalign(&r, 4096, n)) failures++);
        q = r;
        KEEPS_ERRNO((void)malloc_usable_size(q));
        KEEPS_ERRNO(free(q));
    }
    KEEPS_ERRNO((void)mallinfo2());
    KEEPS_ERRNO(malloc_trim(0));
}

static void successful_calls_keep_errno(void **st) {
    (void)st;
    failures = 0;
    /* 300 ms of rounds: release passes (and the stats page's creation, in this
     * single-threaded process) happen inside these calls. */
    int rounds = 0;
    for (uint64_t end = now_ms() + 300; now_ms() < end || rounds < 5; rounds++) round_of_calls();
    assert_int_equal(failures, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(successful_calls_keep_errno),
        cmocka_unit_test(impossible_sizes_fail_with_enomem),
        cmocka_unit_test(refused_memory_fails_with_enomem),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
