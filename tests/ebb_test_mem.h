/* Small helpers shared by the tests: the kernel's view of this process's memory and
 * threads, read through the procfs library (lib/procfs) into buffers of their own: no
 * malloc, so the allocator a test measures is not disturbed by the measuring; a child
 * that must die of a misuse report; a pseudo-random sequence; whether a sanitizer is in. */
#ifndef EBB_TEST_MEM_H
#define EBB_TEST_MEM_H
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "procfs.h"

/* Resident bytes of this process, from /proc/self/status (0 if unreadable). */
static inline size_t rss_bytes(void) {
    long long kib = procfs_status_kib(0, "VmRSS");
    return kib < 0 ? 0 : (size_t)kib * 1024;
}

/* Address space of this process, from /proc/self/status (0 if unreadable). */
static inline size_t vm_size(void) {
    long long kib = procfs_status_kib(0, "VmSize");
    return kib < 0 ? 0 : (size_t)kib * 1024;
}

/* Does this process map a file whose name starts with `name` ("libebbmalloc")? */
static inline int maps_mention(const char *name) {
    static char buf[1 << 18];
    const char *const names[] = {name, NULL};
    return procfs_read_buf("/proc/self/maps", buf, sizeof buf) && procfs_maps_find_lib(buf, names, NULL, 0);
}

/* Threads of this process, from /proc/self/status (-1 if unreadable). */
static inline int threads_now(void) {
    return (int)procfs_status_kib(0, "Threads"); /* the field's first number: no unit here */
}

/* The thread count once it settles at `want` (the kernel may still count a joined thread
 * for a moment after pthread_join returns), or what it is after 5 s. */
static inline int threads_settle(int want) {
    struct timespec now, end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += 5;
    while (threads_now() != want) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > end.tv_sec || (now.tv_sec == end.tv_sec && now.tv_nsec >= end.tv_nsec)) break;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return threads_now();
}

/* fn run in a forked child (which ends with _exit(0) if fn returns), its stderr caught in
 * msg (NUL-terminated, at most n - 1 bytes).  Returns the child's wait status, -1 if it
 * could not be started. */
static inline int child_stderr(void (*fn)(void), char *msg, size_t n) {
    int fds[2];
    msg[0] = 0;
    if (pipe(fds)) return -1;
    fflush(NULL); /* nothing buffered is written twice */
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        fn();
        _exit(0);
    }
    close(fds[1]);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < n && (r = read(fds[0], msg + got, n - 1 - got)) > 0) got += (size_t)r;
    msg[got] = 0;
    close(fds[0]);
    int st;
    return waitpid(pid, &st, 0) == pid ? st : -1;
}

/* Did that child die of SIGABRT with `want` in what it said?  If not, tells on stderr. */
static inline bool died_of_abort(int status, const char *msg, const char *want) {
    if (status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT && strstr(msg, want)) return true;
    fprintf(stderr, "expected SIGABRT naming '%s'; status %d, child said: %s\n", want, status, msg);
    return false;
}

/* xorshift64: a fixed sequence from a seed, for sizes and orders a run repeats. */
static inline uint64_t xorshift64(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Is the test built with ThreadSanitizer or AddressSanitizer (GCC or clang)? */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define EBB_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define EBB_TEST_SANITIZED 1
#endif
#endif
#ifndef EBB_TEST_SANITIZED
#define EBB_TEST_SANITIZED 0
#endif

/* Writes one byte in every kernel page of [p, p + n) so that all of it is resident. */
static inline void touch(void *p, size_t n) {
    for (size_t i = 0; i < n; i += 4096) ((volatile char *)p)[i] = 1;
}
#endif
