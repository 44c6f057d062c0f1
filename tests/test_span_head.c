/* A span's unused bytes sit before its first block (central.c), and free's fast path
 * finds where blocks begin from 32 bits of the class map and one multiply.  No address
 * in that unused head may pass for a block: for every class thread caches keep, free of
 * the head's first byte, of its last 16 bytes, and of the one address where a 32-bit
 * offset that wrapped below the first block would be a multiple of the size (2^32 mod
 * size before the first block) must stop the process naming an invalid pointer, and a
 * real block of the same span must still be freed and reused normally.
 *
 * Uses the ebb_ API (static library) and internals. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "ebb_test_mem.h"
#include "internal.h"

/* free(p) in a child whose list of p's class has room (so the fast path is the one that
 * must refuse p): true if the child died of SIGABRT with "invalid pointer" said. */
static void *refused_p;
static unsigned refused_cls;
static void free_in_child(void) {
    for (int i = 0; i < 8; i++) (void)ebb_malloc(ebbi_classes[refused_cls].size); /* room made */
    if (ebbi_tc_list_len(refused_cls) >= ebbi_tc_list_max(refused_cls)) _exit(3);
    ebb_free(refused_p);
    /* accepted: the list now holds p; the next malloc of the class would hand it out */
}
static bool free_is_refused(void *p, unsigned cls) {
    refused_p = p, refused_cls = cls;
    char msg[512];
    int st = child_stderr(free_in_child, msg, sizeof msg);
    if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 3)
        fail_msg("class %u: no room in the list, the fast path would not run", cls);
    return died_of_abort(st, msg, "invalid pointer");
}

static void unused_head_is_no_block(void **state) {
    (void)state;
    unsigned checked = 0, classes = 0;
    for (unsigned c = 1; c < EBB_NCLASS; c++) {
        size_t size = ebbi_classes[c].size;
        if (size > 32768) break; /* bigger blocks skip the thread caches (their free is slow) */
        /* a block the heap profile sampled has a span of its own (LARGE): another one */
        char *b, *sampled[8];
        struct ebb_span *s;
        int nsampled = 0;
        for (;;) {
            b = ebb_malloc(size);
            assert_non_null(b);
            s = ebbi_pm_span((uintptr_t)b);
            assert_non_null(s);
            if (s->state == SPAN_SMALL) break;
            assert_true(nsampled < 8);
            sampled[nsampled++] = b;
        }
        while (nsampled) ebb_free(sampled[--nsampled]);
        uintptr_t blocks = ebbi_span_blocks(s), head = blocks - s->start;
        if (!head) {
            ebb_free(b);
            continue;
        }
        classes++;
        uintptr_t wrap = (uintptr_t)(((uint64_t)1 << 32) % size); /* see struct ebb_cm_entry */
        uintptr_t cand[3] = {s->start, blocks - 16, wrap && wrap <= head ? blocks - wrap : 0};
        for (int i = 0; i < 3; i++) {
            if (!cand[i]) continue;
            if (!free_is_refused((void *)cand[i], c))
                fail_msg("class %u (%zu bytes): free(%p), %zu bytes before the first block, was "
                         "accepted",
                         c, size, (void *)cand[i], (size_t)(blocks - cand[i]));
            checked++;
        }
        /* the span's real blocks are untouched by all that (the children had copies) */
        memset(b, 0x5a, size);
        ebb_free(b);
        char *again = ebb_malloc(size);
        assert_non_null(again);
        ebb_free(again);
    }
    print_message("%u addresses in the unused heads of %u classes refused\n", checked, classes);
    assert_true(classes > 10); /* most classes have an unused head: the test saw them */
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(unused_head_is_no_block)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
