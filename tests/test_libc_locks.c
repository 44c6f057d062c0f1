/* free() called by libc with its own locks held, before ebbmalloc's release thread
 * exists: dlclose runs a module's destructors under the dynamic loader's lock, and
 * pthread_join frees a thread's dynamic TLS under the thread-stack lock.  Release ticks
 * fall due in there (EBB_RELEASE_MS=40); ebbmalloc must neither start a thread from them
 * (pthread_create takes those locks: the join would hang) nor turn the single-threaded
 * program into a multi-threaded one.  The module is libc_locks_module.c ($EBB_TEST_MODULE);
 * the joined threads are created with libc's own pthread_create, as libc's helper threads
 * are, which ebbmalloc's interposer does not see.  Linked to libebbmalloc.so; meson runs
 * each case in a process of its own. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "ebb_test_mem.h"
#include "ebbmalloc.h"

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void *open_module(void) {
    const char *path = getenv("EBB_TEST_MODULE");
    assert_non_null(path);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) fail_msg("dlopen: %s", dlerror());
    return h;
}

static void dlclose_destructor_frees(void **st) {
    (void)st;
    alarm(60); /* a hang fails here (or at meson's timeout, where signals are blocked) */
    assert_int_equal(threads_now(), 1);
    void *h = open_module();
    int frees = 0;
    int **where = dlsym(h, "ebb_module_frees");
    assert_non_null(where);
    *where = &frees;
    struct ebb_stats before, after;
    ebb_stats(&before);
    assert_int_equal(dlclose(h), 0);
    ebb_stats(&after);
    assert_true(frees > 8);                                 /* the destructor ran, and freed */
    assert_true(after.in_use + (7u << 20) < before.in_use); /* its 8 MiB went back to ebbmalloc */
    assert_int_equal(threads_now(), 1);
    alarm(0);
}

static void (*touch_tls)(void);

static void *use_module_tls(void *arg) {
    (void)arg;
    touch_tls(); /* libc mallocs the module's TLS block for this thread */
    return NULL;
}

static void join_frees_tls(void **st) {
    (void)st;
    alarm(60);
    void *h = open_module();
    touch_tls = (void (*)(void))dlsym(h, "ebb_module_touch");
    assert_non_null(touch_tls);
    /* libc's pthread_create, not the one ebbmalloc's library defines. */
    void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    assert_non_null(libc);
    int (*libc_create)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *) =
        (int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))dlsym(libc,
                                                                                       "pthread_create");
    assert_non_null(libc_create);
    assert_ptr_not_equal((void *)libc_create, dlsym(RTLD_DEFAULT, "pthread_create"));
    /* A stack of its own: pthread_join then frees the thread's TLS itself, under the
     * thread-stack lock (a stack from libc's cache would keep it until the cache is full). */
    size_t stack_size = 1 << 20;
    void *stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(stack != MAP_FAILED);
    struct ebb_stats before, after;
    ebb_stats(&before);
    int joins = 0;
    for (uint64_t end = now_ms() + 400; now_ms() < end || joins < 20; joins++) {
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setstack(&at, stack, stack_size);
        pthread_t t;
        assert_int_equal(libc_create(&t, &at, use_module_tls, NULL), 0);
        assert_int_equal(pthread_join(t, NULL), 0);
        pthread_attr_destroy(&at);
    }
    ebb_stats(&after);
    /* Every join gave the 300 KiB block back. */
    assert_true(after.in_use < before.in_use + (300u << 10) * 4);
    assert_int_equal(threads_settle(1), 1);
    dlclose(libc);
    dlclose(h);
    munmap(stack, stack_size);
    alarm(0);
}

/* argv[1]: run only that case (each in a process of its own, before any thread). */
int main(int argc, char **argv) {
    if (argc > 1) cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dlclose_destructor_frees),
        cmocka_unit_test(join_frees_tls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
