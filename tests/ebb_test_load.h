/* ebb_test_load.h: a thread that allocates and frees until ebb_test_load_stop is set: 512
 * slots of blocks of mixed sizes (most under 3000 bytes, one in eight up to 600 KB, so
 * that small, medium and large paths all run), for tests of counters read under load.
 * Uses the ebb_ API; arg seeds the sizes. */
#ifndef EBB_TEST_LOAD_H
#define EBB_TEST_LOAD_H

#include <stdint.h>

#include "ebbmalloc.h"

static _Atomic int ebb_test_load_stop;

static inline void *ebb_test_load(void *arg) {
    unsigned r = (unsigned)(uintptr_t)arg + 1;
    void *v[512] = {0};
    while (!ebb_test_load_stop) {
        r = r * 1103515245 + 12345;
        int k = (r >> 8) % 512;
        ebb_free(v[k]);
        v[k] = ebb_malloc((r >> 4) % ((r & 7) ? 3000 : 600000));
    }
    for (int i = 0; i < 512; i++) ebb_free(v[i]);
    return NULL;
}

#endif
