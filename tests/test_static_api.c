/* The installed static library: only the ebb_ API is global, and linking it leaves the
 * process's own malloc in place. */
#define _GNU_SOURCE
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ebb_test_mem.h"
#include "ebbmalloc.h"

static void glibc_malloc_stays(void **st) {
    (void)st;
    void *g = malloc(1);
    assert_int_equal(malloc_usable_size(g), 24); /* glibc's smallest chunk */
    free(g);
    void *e = ebb_malloc(1);
    assert_int_equal(ebb_malloc_usable_size(e), 16); /* ebbmalloc's smallest class */
    ebb_free(e);
    assert_false(maps_mention("libebbmalloc"));
}

static void only_the_api_is_global(void **st) {
    (void)st;
    const char *lib = getenv("EBB_STATIC_LIB");
    assert_non_null(lib);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "nm -g --defined-only '%s' | awk 'NF==3 {print $3}'", lib);
    FILE *p = popen(cmd, "r");
    char sym[256];
    int n = 0;
    while (fgets(sym, sizeof sym, p)) {
        if (strncmp(sym, "ebb_", 4)) fail_msg("internal symbol exported: %s", sym);
        n++;
    }
    pclose(p);
    assert_true(n >= 20);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(glibc_malloc_stays),
        cmocka_unit_test(only_the_api_is_global),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
