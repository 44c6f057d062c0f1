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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(under_the_soft_limit_the_timer_rules),
        cmocka_unit_test(over_the_soft_limit_releases_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
