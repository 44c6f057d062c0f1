/* A program that deletes thread-specific keys it never made (a static pthread_key_t
 * left at 0 and deleted by a cleanup whether or not its pthread_key_create ran) must not
 * delete ebbmalloc's: those calls answer EINVAL, as glibc does for a key not in use, and
 * afterwards ended threads' caches still go back and the process still ends when its
 * last thread does.  The program's own keys are deleted as before, and the first delete
 * leaves a pending dlerror() alone. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "ebbmalloc.h"
#include "ebb_test_fork.h"

#define STRAY 8 /* keys 0..7: none of them made by this program */

static uint64_t caches_alive(void) {
    struct ebb_stats s;
    ebb_stats(&s);
    return s.threads;
}

static void *worker(void *arg) {
    (void)arg;
    void *b[300];
    for (int i = 0; i < 300; i++) b[i] = malloc(16 + (size_t)(i % 30) * 16);
    for (int i = 0; i < 300; i++) free(b[i]);
    return NULL;
}

static void run_threads(int n) {
    pthread_t t[32];
    for (int i = 0; i < n; i++) assert_int_equal(pthread_create(&t[i], NULL, worker, NULL), 0);
    for (int i = 0; i < n; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
}

static void stray_deletes_leave_ebbmalloc_s_keys(void **st) {
    (void)st;
    free(malloc(1)); /* initialised: its keys are made */
    for (unsigned k = 0; k < STRAY; k++) assert_int_equal(pthread_key_delete(k), EINVAL);
    uint64_t before = caches_alive();
    for (int round = 0; round < 4; round++) run_threads(32);
    /* every ended thread's cache went back (with its key deleted, none would) */
    assert_int_equal(caches_alive(), before);
}

static void the_program_s_own_keys_are_deleted(void **st) {
    (void)st;
    pthread_key_t k;
    assert_int_equal(pthread_key_create(&k, NULL), 0);
    assert_int_equal(pthread_setspecific(k, &k), 0);
    assert_ptr_equal(pthread_getspecific(k), &k);
    assert_int_equal(pthread_key_delete(k), 0);
    assert_int_equal(pthread_key_delete(k), EINVAL); /* glibc: no longer in use */
    pthread_key_t k2;
    assert_int_equal(pthread_key_create(&k2, NULL), 0); /* the slot is free again */
    assert_int_equal(k2, k);
    assert_null(pthread_getspecific(k2));
    assert_int_equal(pthread_key_delete(k2), 0);
}

/* The first delete of the process does not clear a pending dlerror(): libc's
 * pthread_key_delete was found at load, not by a dlsym at this call. */
static void a_pending_dlerror_stays(void **st) {
    (void)st;
    pthread_key_t k;
    assert_int_equal(pthread_key_create(&k, NULL), 0);
    assert_null(dlopen("libebb-test-no-such-library.so", RTLD_NOW));
    assert_int_equal(pthread_key_delete(k), 0);
    const char *err = dlerror();
    assert_non_null(err);
    assert_non_null(strstr(err, "libebb-test-no-such-library.so"));
}

static void delete_stray_keys(void) {
    for (unsigned k = 0; k < STRAY; k++) pthread_key_delete(k);
}

/* Stray deletes while a second thread runs, then the first thread ends with pthread_exit
 * and the second later: the process must end then (with the key that counts threads
 * deleted, the second thread's end would never be counted). */
static void process_still_ends_when_its_last_thread_does(void **st) {
    (void)st;
    int rc = ebb_ends_after_pthread_exit(delete_stray_keys);
    if (rc == EBB_CHILD_HUNG) fail_msg("the child's last program thread ended, the child did not");
    assert_int_equal(rc, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        /* first: the process's first pthread_key_delete */
        cmocka_unit_test(a_pending_dlerror_stays),
        /* then: its child must start with ebbmalloc's keys as they were made */
        cmocka_unit_test(process_still_ends_when_its_last_thread_does),
        cmocka_unit_test(stray_deletes_leave_ebbmalloc_s_keys),
        cmocka_unit_test(the_program_s_own_keys_are_deleted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
