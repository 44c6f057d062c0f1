/* misuse_helper CASE: commits one heap misuse from misuse_cases.h with the process's
 * malloc, whichever it is (ebbmalloc through LD_PRELOAD, or plain glibc).
 *
 * Before the misuse it writes "ADDR 0x...\n" to stdout: the address the allocator should
 * name.  A process that survives the misuse looks for what the misuse did to the heap
 * (the same address handed out twice, a block handed out inside a live one), says what
 * it found on stdout and exits 3 if the heap is now corrupt, 0 if it saw nothing wrong.
 * Nothing here may be optimised away: pointers go through launder(). */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t); /* glibc's own malloc, also under LD_PRELOAD */

static void *launder(void *p) {
    __asm__ volatile("" : "+r"(p)::"memory");
    return p;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof buf - 1) n = (int)sizeof buf - 1;
    if (write(1, buf, (size_t)n) < 0) _exit(99);
}

static void addr(const void *p) { say("ADDR %p\n", p); }

/* The process survived: did the misuse leave two live blocks on the same bytes?
 * `victim` is a block that must stay intact; n allocations of `size` follow. */
static int survived(const char *size_note, unsigned char *victim, size_t vlen, size_t size) {
    enum { N = 64 };
    unsigned char *v[N];
    if (victim) memset(victim, 0x5a, vlen);
    for (int i = 0; i < N; i++) {
        v[i] = launder(malloc(size));
        if (!v[i]) {
            say("SURVIVED: malloc(%zu) returned NULL\n", size);
            return 3;
        }
        memset(v[i], 0, size);
    }
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < i; j++)
            if (v[i] == v[j]) {
                say("CORRUPTION: %p handed out twice (%s)\n", (void *)v[i], size_note);
                return 3;
            }
        if (victim && v[i] < victim + vlen && v[i] + size > victim) {
            say("CORRUPTION: %p handed out over the live block %p (%s)\n", (void *)v[i],
                (void *)victim, size_note);
            return 3;
        }
    }
    if (victim)
        for (size_t i = 0; i < vlen; i++)
            if (victim[i] != 0x5a) {
                say("CORRUPTION: live block %p overwritten\n", (void *)victim);
                return 3;
            }
    say("SURVIVED: no corruption seen\n");
    return 0;
}

/* ebbmalloc starts its release thread at the first free of pages, and the thread's
 * creation allocates (under LD_PRELOAD, from ebbmalloc): those small blocks would reuse
 * a large block's pages between the two frees of a double free.  Cases that are about
 * large blocks start it first; double_free_large_reused is about that reuse. */
static void start_background(void) { free(launder(malloc(1 << 20))); }

static void *free_on_thread(void *p) {
    free(p);
    return NULL;
}

static int run(const char *c) {
#define IS(name) (!strcmp(c, name))
    if (IS("double_free_small")) {
        void *p = launder(malloc(40));
        addr(p);
        free(p);
        free(launder(p));
        return survived("48", NULL, 0, 40);
    }
    if (IS("double_free_small_later")) {
        void *p = launder(malloc(40)), *q = launder(malloc(40));
        void *other[32];
        addr(p);
        free(p);
        for (int i = 0; i < 32; i++) other[i] = launder(malloc((size_t)i * 100 + 1));
        for (int i = 0; i < 32; i++) free(other[i]);
        free(q);
        free(launder(p));
        return survived("48", NULL, 0, 40);
    }
    if (IS("double_free_small_cache_full")) {
        void *keep[16];
        for (int i = 0; i < 16; i++) keep[i] = launder(malloc(40));
        void *p = launder(malloc(40));
        addr(p);
        free(p);
        malloc_trim(0); /* the thread's cache goes back to the central tier */
        free(launder(p));
        for (int i = 0; i < 16; i++) free(keep[i]);
        return survived("48", NULL, 0, 40);
    }
    if (IS("double_free_small_other_thread")) {
        void *keep[8]; /* the span stays in use when the thread's cache goes back */
        for (int i = 0; i < 8; i++) keep[i] = launder(malloc(40));
        void *p = launder(malloc(40));
        addr(p);
        pthread_t t;
        pthread_create(&t, NULL, free_on_thread, p);
        pthread_join(t, NULL);
        free(launder(p));
        for (int i = 0; i < 8; i++) free(keep[i]);
        return survived("48", NULL, 0, 40);
    }
    if (IS("double_free_small_aligned")) {
        void *p = launder(aligned_alloc(256, 200));
        addr(p);
        free(p);
        free(launder(p));
        return survived("256", NULL, 0, 200);
    }
    if (IS("double_free_large")) {
        start_background();
        void *below = launder(malloc(1 << 20)); /* live neighbours: p merges with nothing */
        void *p = launder(malloc(1 << 20));
        void *above = launder(malloc(1 << 20));
        addr(p);
        free(p);
        free(launder(p));
        free(below), free(above);
        return survived("1 MiB", NULL, 0, 1 << 20);
    }
    if (IS("double_free_large_aligned")) {
        start_background();
        void *below = launder(malloc(1 << 20));
        void *p = launder(memalign(1 << 20, 300000));
        void *above = launder(malloc(1 << 20));
        addr(p);
        free(p);
        free(launder(p));
        free(below), free(above);
        return survived("300000", NULL, 0, 300000);
    }
    if (IS("double_free_small_span_gone") || IS("double_free_small_span_gone_first")) {
        /* Two blocks of a class nothing else uses, so their span holds only them; the
         * lower one is the span's first byte, the higher one is not. */
        unsigned char *a = launder(malloc(3000)), *b = launder(malloc(3000));
        unsigned char *p = (a > b) == IS("double_free_small_span_gone") ? a : b;
        addr(p);
        free(a);
        free(b);
        malloc_trim(0); /* caches drain, the span goes back to the page heap */
        free(launder(p));
        return survived("3000", NULL, 0, 3000);
    }
    if (IS("double_free_large_reused")) {
        start_background();
        void *below = launder(malloc(1 << 20));
        unsigned char *p = launder(malloc(300000));
        void *above = launder(malloc(1 << 20));
        addr(p);
        free(p);
        /* Blocks of a class nothing else uses need a new span: the page heap's best fit is
         * the free 300000-byte hole p left. */
        unsigned char *v[8];
        for (int i = 0; i < 8; i++) v[i] = launder(malloc(200000));
        free(launder(p));
        for (int i = 0; i < 8; i++)
            if (v[i] == p) {
                say("NOTE: the live block v[%d] sits where the large block was\n", i);
                return survived("200000", v[i], 200000, 200000);
            }
        free(below), free(above);
        return survived("1 MiB", NULL, 0, 1 << 20);
    }
    if (IS("double_free_large_merged")) {
        start_background();
        unsigned char *a = launder(malloc(1 << 20)), *b = launder(malloc(1 << 20));
        addr(b);
        if (b != a + (1 << 20)) say("NOTE: blocks not adjacent (%p %p)\n", (void *)a, (void *)b);
        free(a);
        free(b); /* b's pages join a's free pages */
        free(launder(b));
        return survived("1 MiB", NULL, 0, 1 << 20);
    }
    if (IS("double_free_mapped")) {
        start_background();
        void *p = launder(malloc((size_t)64 << 20));
        addr(p);
        free(p);
        free(launder(p));
        return survived("64 MiB", NULL, 0, (size_t)64 << 20);
    }
    if (IS("free_stack")) {
        _Alignas(64) char buf[256];
        memset(buf, 1, sizeof buf);
        addr(buf + 64);
        free(launder(buf + 64));
        return survived("stack", NULL, 0, 64);
    }
    if (IS("free_stack_unaligned")) {
        char buf[256];
        memset(buf, 1, sizeof buf);
        addr(buf + 3);
        free(launder(buf + 3));
        return survived("stack", NULL, 0, 64);
    }
    if (IS("free_static")) {
        static _Alignas(64) char buf[256];
        addr(buf + 64);
        free(launder(buf + 64));
        return survived("static", NULL, 0, 64);
    }
    if (IS("free_wild")) {
        void *p = (void *)0x10000;
        addr(p);
        free(launder(p));
        return survived("wild", NULL, 0, 64);
    }
    if (IS("free_noncanonical")) {
        void *p = (void *)0xdead000000001000ull;
        addr(p);
        free(launder(p));
        return survived("wild", NULL, 0, 64);
    }
    if (IS("free_mmap")) {
        char *p = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return 98;
        memset(p, 0, 1 << 16);
        addr(p + 4096);
        free(launder(p + 4096));
        return survived("mmap", NULL, 0, 64);
    }
    if (IS("free_foreign_glibc")) {
        void *p = launder(__libc_malloc(64));
        addr(p);
        free(p);
        return survived("glibc", NULL, 0, 64);
    }
    if (IS("free_interior_small_unaligned")) {
        unsigned char *p = launder(malloc(40));
        addr(p + 8);
        free(launder(p + 8));
        return survived("48", p, 40, 40);
    }
    if (IS("free_interior_small_aligned")) {
        unsigned char *p = launder(malloc(40));
        addr(p + 16);
        free(launder(p + 16));
        return survived("48", p, 40, 40);
    }
    if (IS("free_interior_large")) {
        unsigned char *p = launder(malloc(1 << 20));
        addr(p + 4096);
        free(launder(p + 4096));
        return survived("1 MiB", p, 1 << 20, 8192);
    }
    if (IS("free_interior_large_middle")) {
        unsigned char *p = launder(malloc(1 << 20));
        addr(p + (512 << 10));
        free(launder(p + (512 << 10)));
        return survived("1 MiB", p, 1 << 20, 8192);
    }
    if (IS("free_never_handed_out")) {
        /* The first block of a class nothing else uses: the slots after it in its span
         * have not been handed out yet. */
        unsigned char *p = launder(malloc(3500));
        size_t us = malloc_usable_size(p);
        addr(p + 2 * us);
        free(launder(p + 2 * us));
        return survived("3500", p, 3500, 3500);
    }
    if (IS("free_span_tail")) {
        /* The first block of a class nothing else uses starts its span (one 8 KiB page,
         * four 1792-byte blocks); 7168 bytes on is a multiple of the size, but past the
         * last block: a block there would run 768 bytes into the next page. */
        unsigned char *p = launder(malloc(1700));
        addr(p + 4 * 1792);
        free(launder(p + 4 * 1792));
        void *q[8];
        for (int i = 0; i < 8; i++) q[i] = launder(malloc(1700));
        for (int i = 0; i < 8; i++)
            if (q[i] == p + 4 * 1792) say("CORRUPTION: malloc returned %p, past its span\n", q[i]);
        return survived("1792", p, 1700, 1700);
    }
    if (IS("realloc_freed_small")) {
        void *p = launder(malloc(40));
        addr(p);
        free(p);
        void *q = realloc(launder(p), 100);
        say("SURVIVED: realloc returned %p\n", q);
        return survived("48", NULL, 0, 40);
    }
    if (IS("realloc_freed_large")) {
        start_background();
        void *below = launder(malloc(1 << 20));
        void *p = launder(malloc(1 << 20));
        void *above = launder(malloc(1 << 20));
        (void)below, (void)above;
        addr(p);
        free(p);
        void *q = realloc(launder(p), 2 << 20);
        say("SURVIVED: realloc returned %p\n", q);
        return survived("1 MiB", NULL, 0, 1 << 20);
    }
    if (IS("realloc_stack")) {
        _Alignas(64) char buf[256];
        memset(buf, 1, sizeof buf);
        addr(buf + 64);
        void *q = realloc(launder(buf + 64), 100);
        say("SURVIVED: realloc returned %p\n", q);
        return survived("stack", NULL, 0, 64);
    }
    if (IS("realloc_interior")) {
        unsigned char *p = launder(malloc(40));
        addr(p + 8);
        void *q = realloc(launder(p + 8), 100);
        say("SURVIVED: realloc returned %p\n", q);
        return survived("48", NULL, 0, 40);
    }
    if (IS("corrupt_link_overflow")) {
        /* A write past the end of a live block runs over a free block: its link and its
         * second word become 'A's.  The second malloc follows that link. */
        unsigned char *keep = launder(malloc(40));
        unsigned char *a = launder(malloc(40)), *q = launder(malloc(40));
        addr(q);
        free(a);
        free(q); /* list: q -> a */
        memset(launder(q), 'A', 16);
        void *r1 = launder(malloc(40));
        void *r2 = launder(malloc(40));
        say("CORRUPTION: malloc returned %p then %p\n", r1, r2);
        free(keep);
        return 3;
    }
    if (IS("corrupt_link_bitflip")) {
        /* One bit of a free block's link flipped: the decoded next block is 32 bytes off,
         * still 16-aligned, inside or beside a real block. */
        unsigned char *keep = launder(malloc(40));
        unsigned char *a = launder(malloc(40)), *q = launder(malloc(40));
        addr(q);
        free(a);
        free(q); /* list: q -> a */
        addr((unsigned char *)((uintptr_t)a ^ 0x20)); /* where the flipped link leads */
        ((volatile uintptr_t *)launder(q))[0] ^= 0x20;
        void *r1 = launder(malloc(40));
        void *r2 = launder(malloc(40));
        if (r2 != a) {
            say("CORRUPTION: malloc returned %p then %p, not %p\n", r1, r2, (void *)a);
            return 3;
        }
        free(keep);
        return survived("48", NULL, 0, 40);
    }
    say("unknown case %s\n", c);
    return 97;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: misuse_helper CASE\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IONBF, 0);
    return run(argv[1]);
}
