/* EBB_SOFT_LIMIT: near the limit, free memory goes back at once, not on the timer (which
 * the test sets to an hour).  The environment comes from tests/meson.build. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "ebb_test_mem.h"

#include "ebbmalloc.h"
#include "internal.h"


static void over_the_soft_limit_releases_at_once(void **st) {
    (void)st;
    struct ebb_stats s;
    ebb_stats(&s);
    size_t base = rss_bytes();
    void *p[200];
    for (int i = 0; i < 200; i++) {
        p[i] = ebb_malloc(1 << 20);
        memset(p[i], 1, 1 << 20);
    }
    ebb_stats(&s);
    assert_int_equal(s.soft_limit, 64u << 20);
    for (int i = 0; i < 200; i += 2) ebb_free(p[i]); /* 100 MiB free, 100 MiB live */
    size_t now = rss_bytes();
    if (now > base + (116u << 20)) fail_msg("RSS grew by %zu MiB; live is 100", (now - base) >> 20);
    for (int i = 1; i < 200; i += 2) ebb_free(p[i]);
}

static void under_the_soft_limit_the_timer_rules(void **st) {
    (void)st;
    size_t base = rss_bytes();
    void *p[4];
    for (int i = 0; i < 4; i++) {
        p[i] = ebb_malloc(4 << 20);
        memset(p[i], 1, 4 << 20);
    }
    for (int i = 0; i < 4; i++) ebb_free(p[i]);
    assert_true(rss_bytes() >= base + (15u << 20)); /* kept: under the limit, young */
}

/* Blocks of 10-30 MiB, 3 live, one freed and another allocated at each step: the page
 * heap keeps free pages resident for sizes that come back, but never above the soft limit
 * (64 MiB here): whenever a free leaves more than that resident, nothing free stays.
 * The sizes that come back raise the reuse floor (what the trade released and the next
 * requests faulted in again); a free that crosses the limit gives everything back and
 * ends the floor then, however recently it was fed. */
static void sizes_that_come_back_stay_under_the_soft_limit(void **st) {
    (void)st;
    char *live[3] = {0};
    unsigned r = 777;
    enum { STEPS = 60 };
    int over = 0, ended = 0;
    for (int k = 0; k < STEPS; k++) {
        r = r * 1103515245 + 12345;
        unsigned j = (r >> 16) % 3;
        struct ebb_page_heap_stats ph0, ph1;
        ebbi_page_heap_stats(&ph0);
        ebb_free(live[j]);
        ebbi_page_heap_stats(&ph1);
        if (ph1.released_by[EBB_WHY_SOFT] > ph0.released_by[EBB_WHY_SOFT]) {
            over++;
            if (ph1.reuse_floor)
                fail_msg("step %d: the soft limit released, the reuse floor stayed %zu MiB", k,
                         ph1.reuse_floor >> 20);
            if (ph0.reuse_floor) ended++;
        }
        struct ebb_stats s;
        ebb_stats(&s);
        size_t resident = s.mapped - s.released - s.metadata;
        if (resident > (64u << 20) && s.page_free)
            fail_msg("step %d: %zu MiB resident, %zu MiB of it free", k, resident >> 20,
                     (size_t)s.page_free >> 20);
        r = r * 1103515245 + 12345;
        size_t n = (10u << 20) + (size_t)((r >> 8) % (20u << 20));
        live[j] = ebb_malloc(n);
        memset(live[j], k, n);
    }
    printf("# at %d of %d frees the soft limit released memory, %d of them ending a reuse floor\n", over,
           STEPS, ended);
    assert_true(over > 0);  /* the limit was in play */
    assert_true(ended > 0); /* and so was the floor */
    for (int j = 0; j < 3; j++) ebb_free(live[j]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(under_the_soft_limit_the_timer_rules),
        cmocka_unit_test(over_the_soft_limit_releases_at_once),
        cmocka_unit_test(sizes_that_come_back_stay_under_the_soft_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
