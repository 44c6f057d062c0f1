/* A library that leaks: built -O2 -fomit-frame-pointer, like most distribution and JNI
 * libraries, and loaded with dlopen by real-leak.  Its blocks are kept in a list of its
 * own so that the compiler cannot drop them. */
#include <stdlib.h>
#include <string.h>

struct kept {
    struct kept *next;
};
static struct kept *kept;

/* Allocates `total` bytes in blocks of `block` bytes and never frees them; returns the
 * bytes allocated. */
size_t real_leak_grow(size_t total, size_t block);
size_t real_leak_grow(size_t total, size_t block) {
    size_t done = 0;
    while (done < total) {
        struct kept *k = malloc(block);
        if (!k) break;
        memset(k, 0x6c, block);
        k->next = kept;
        kept = k;
        done += block;
    }
    return done;
}
