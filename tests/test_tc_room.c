/* How much room a thread's list takes (thread_cache.c): a list whose thread allocates a
 * burst of blocks and then frees them itself grows until the burst fits, so that later
 * bursts take no slow path; a producer's list (its blocks are freed by another thread)
 * stays at a batch, since room beyond what an underflow fetches would never fill.
 *
 * Uses the ebb_ API (static library) and internals; EBB_RELEASE_MS is an hour
 * (meson.build), so no scavenge or idle drain comes between the rounds. */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "ebbmalloc.h"
#include "internal.h"

enum { SIZE = 48, BURST = 400, ROUNDS = 40 };

static void fill(unsigned char *p, unsigned serial) { memset(p, (int)(serial & 0xff), SIZE); }
static void check(const unsigned char *p, unsigned serial) {
    for (int i = 0; i < SIZE; i++) assert_int_equal(p[i], serial & 0xff);
}

/* A round as in glibc's bench-malloc-simple: BURST blocks allocated in a row, the first
 * half freed first-in first-out, the second last-in first-out. */
static void burst_round(unsigned round) {
    static unsigned char *b[BURST];
    for (unsigned i = 0; i < BURST; i++) {
        assert_non_null(b[i] = ebb_malloc(SIZE));
        fill(b[i], round * BURST + i);
    }
    for (unsigned i = 0; i < BURST; i++) check(b[i], round * BURST + i);
    for (unsigned i = 0; i < BURST / 2; i++) ebb_free(b[i]);
    for (unsigned i = BURST; i-- > BURST / 2;) ebb_free(b[i]);
}

static void burst_list_grows_until_the_burst_fits(void **st) {
    (void)st;
    const unsigned cls = ebbi_size_to_class(SIZE);
    const uint32_t batch = ebbi_classes[cls].batch;
    assert_true(batch < BURST); /* else the burst fits a producer's list too */
    unsigned round = 0, fits_at = 0;
    for (; round < ROUNDS; round++) {
        burst_round(round);
        if (!fits_at && ebbi_tc_list_len(cls) >= BURST) fits_at = round + 1;
    }
    printf("# a burst of %d fits the list after %u rounds (batch %u), room %u\n", BURST, fits_at, batch,
           ebbi_tc_list_max(cls));
    assert_true(fits_at != 0);
    assert_true(ebbi_tc_list_max(cls) >= BURST);
    /* From then on a round is served from the list and given back to it whole. */
    size_t len = ebbi_tc_list_len(cls);
    burst_round(round);
    assert_int_equal(ebbi_tc_list_len(cls), len);
    assert_null(ebbi_tc_verify());
}

/* The producer allocates bursts, the main thread frees them. */
static unsigned char *handed[BURST];
static pthread_barrier_t turn;
static uint32_t producer_max;
static void *producer(void *arg) {
    (void)arg;
    const unsigned cls = ebbi_size_to_class(SIZE);
    for (unsigned r = 0; r < ROUNDS; r++) {
        for (unsigned i = 0; i < BURST; i++) {
            assert_non_null(handed[i] = ebb_malloc(SIZE));
            fill(handed[i], r * BURST + i);
        }
        pthread_barrier_wait(&turn); /* the consumer frees them */
        pthread_barrier_wait(&turn);
    }
    producer_max = ebbi_tc_list_max(cls);
    return NULL;
}

static void producer_list_stays_at_a_batch(void **st) {
    (void)st;
    const unsigned cls = ebbi_size_to_class(SIZE);
    const uint32_t batch = ebbi_classes[cls].batch;
    pthread_t t;
    assert_int_equal(pthread_barrier_init(&turn, NULL, 2), 0);
    assert_int_equal(pthread_create(&t, NULL, producer, NULL), 0);
    for (unsigned r = 0; r < ROUNDS; r++) {
        pthread_barrier_wait(&turn);
        for (unsigned i = 0; i < BURST; i++) {
            check(handed[i], r * BURST + i);
            ebb_free(handed[i]);
        }
        pthread_barrier_wait(&turn);
    }
    assert_int_equal(pthread_join(t, NULL), 0);
    pthread_barrier_destroy(&turn);
    printf("# the producer's list: room %u (batch %u)\n", producer_max, batch);
    assert_true(producer_max >= 1 && producer_max <= batch);
    assert_null(ebbi_tc_verify());
}

int main(void) {
    ebb_free(ebb_malloc(1)); /* initialised: the class table is filled */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(burst_list_grows_until_the_burst_fits),
        cmocka_unit_test(producer_list_stays_at_a_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
