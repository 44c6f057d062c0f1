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
#include <stdbool.h>
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
            say("CORRUPTION: %p handed out over the live block %p (%s)\n", (void *)v[i], (void *)victim,
                size_note);
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

/* Cases about large blocks free one first, so that nothing allocated behind ebbmalloc's
 * back can reuse a large block's pages between the two frees of a double free.  (It once
 * started ebbmalloc's release thread, whose creation allocates; that thread now starts
 * only at the program's first pthread_create, and these cases have one thread.)
 * double_free_large_reused is about that reuse. */
static void start_background(void) { free(launder(malloc(1 << 20))); }

static void *free_on_thread(void *p) {
    free(p);
    return NULL;
}

/* ---------------------------------------------------------------- double frees */
static int double_free_small(void) {
    void *p = launder(malloc(40));
    addr(p);
    free(p);
    free(launder(p));
    return survived("48", NULL, 0, 40);
}

static int double_free_small_later(void) {
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

static int double_free_small_cache_full(void) {
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

static int double_free_small_other_thread(void) {
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

static int double_free_small_aligned(void) {
    void *p = launder(aligned_alloc(256, 200));
    addr(p);
    free(p);
    free(launder(p));
    return survived("256", NULL, 0, 200);
}

static int double_free_large(void) {
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

static int double_free_large_aligned(void) {
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

/* Two blocks of a class nothing else uses, so their span holds only them; the lower
 * one is the span's first byte, the higher one is not.  first_of_span: which one is
 * freed twice. */
static int double_free_span_gone(bool first_of_span) {
    unsigned char *a = launder(malloc(3000)), *b = launder(malloc(3000));
    unsigned char *p = (a > b) == !first_of_span ? a : b;
    addr(p);
    free(a);
    free(b);
    malloc_trim(0); /* caches drain, the span goes back to the page heap */
    free(launder(p));
    return survived("3000", NULL, 0, 3000);
}

static int double_free_small_span_gone(void) { return double_free_span_gone(false); }
static int double_free_small_span_gone_first(void) { return double_free_span_gone(true); }

static int double_free_large_reused(void) {
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

static int double_free_large_merged(void) {
    start_background();
    unsigned char *a = launder(malloc(1 << 20)), *b = launder(malloc(1 << 20));
    addr(b);
    if (b != a + (1 << 20)) say("NOTE: blocks not adjacent (%p %p)\n", (void *)a, (void *)b);
    free(a);
    free(b); /* b's pages join a's free pages */
    free(launder(b));
    return survived("1 MiB", NULL, 0, 1 << 20);
}

static int double_free_mapped(void) {
    start_background();
    void *p = launder(malloc((size_t)64 << 20));
    addr(p);
    free(p);
    free(launder(p));
    return survived("64 MiB", NULL, 0, (size_t)64 << 20);
}

/* ---------------------------------------------------------------- frees of memory malloc never handed out */
static int free_stack(void) {
    _Alignas(64) char buf[256];
    memset(buf, 1, sizeof buf);
    addr(buf + 64);
    free(launder(buf + 64));
    return survived("stack", NULL, 0, 64);
}

static int free_stack_unaligned(void) {
    char buf[256];
    memset(buf, 1, sizeof buf);
    addr(buf + 3);
    free(launder(buf + 3));
    return survived("stack", NULL, 0, 64);
}

static int free_static(void) {
    static _Alignas(64) char buf[256];
    addr(buf + 64);
    free(launder(buf + 64));
    return survived("static", NULL, 0, 64);
}

static int free_wild(void) {
    void *p = (void *)0x10000;
    addr(p);
    free(launder(p));
    return survived("wild", NULL, 0, 64);
}

static int free_noncanonical(void) {
    void *p = (void *)0xdead000000001000ull;
    addr(p);
    free(launder(p));
    return survived("wild", NULL, 0, 64);
}

static int free_mmap(void) {
    char *p = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 98;
    memset(p, 0, 1 << 16);
    addr(p + 4096);
    free(launder(p + 4096));
    return survived("mmap", NULL, 0, 64);
}

static int free_foreign_glibc(void) {
    void *p = launder(__libc_malloc(64));
    addr(p);
    free(p);
    return survived("glibc", NULL, 0, 64);
}

/* ---------------------------------------------------------------- frees inside a live block */
static int free_interior_small_unaligned(void) {
    unsigned char *p = launder(malloc(40));
    addr(p + 8);
    free(launder(p + 8));
    return survived("48", p, 40, 40);
}

static int free_interior_small_aligned(void) {
    unsigned char *p = launder(malloc(40));
    addr(p + 16);
    free(launder(p + 16));
    return survived("48", p, 40, 40);
}

static int free_interior_large(void) {
    unsigned char *p = launder(malloc(1 << 20));
    addr(p + 4096);
    free(launder(p + 4096));
    return survived("1 MiB", p, 1 << 20, 8192);
}

static int free_interior_large_middle(void) {
    unsigned char *p = launder(malloc(1 << 20));
    addr(p + (512 << 10));
    free(launder(p + (512 << 10)));
    return survived("1 MiB", p, 1 << 20, 8192);
}

static int free_never_handed_out(void) {
    /* The first block of a class nothing else uses: the slots after it in its span
     * have not been handed out yet. */
    unsigned char *p = launder(malloc(3500));
    size_t us = malloc_usable_size(p);
    addr(p + 2 * us);
    free(launder(p + 2 * us));
    return survived("3500", p, 3500, 3500);
}

static int free_span_head(void) {
    /* The first block of a class nothing else uses is the first block of its span (one
     * 8 KiB page, four 1792-byte blocks), which keeps its 1024 unused bytes before its
     * first block: the span's first byte is in the class's page, but no block start. */
    unsigned char *p = launder(malloc(1700));
    addr(p - 1024);
    free(launder(p - 1024));
    void *q[8];
    for (int i = 0; i < 8; i++) q[i] = launder(malloc(1700));
    for (int i = 0; i < 8; i++)
        if (q[i] == p - 1024) say("CORRUPTION: malloc returned %p, before its span's first block\n", q[i]);
    return survived("1792", p, 1700, 1700);
}

/* ---------------------------------------------------------------- realloc of what is not a live block */
static int realloc_freed_small(void) {
    void *p = launder(malloc(40));
    addr(p);
    free(p);
    void *q = realloc(launder(p), 100);
    say("SURVIVED: realloc returned %p\n", q);
    return survived("48", NULL, 0, 40);
}

static int realloc_freed_large(void) {
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

static int realloc_stack(void) {
    _Alignas(64) char buf[256];
    memset(buf, 1, sizeof buf);
    addr(buf + 64);
    void *q = realloc(launder(buf + 64), 100);
    say("SURVIVED: realloc returned %p\n", q);
    return survived("stack", NULL, 0, 64);
}

static int realloc_interior(void) {
    unsigned char *p = launder(malloc(40));
    addr(p + 8);
    void *q = realloc(launder(p + 8), 100);
    say("SURVIVED: realloc returned %p\n", q);
    return survived("48", NULL, 0, 40);
}

/* ---------------------------------------------------------------- corrupted free lists */
static int corrupt_link_overflow(void) {
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

static int corrupt_link_bitflip(void) {
    /* One bit of a free block's link flipped: the decoded next block is 32 bytes off,
     * still 16-aligned, inside or beside a real block. */
    unsigned char *keep = launder(malloc(40));
    unsigned char *a = launder(malloc(40)), *q = launder(malloc(40));
    addr(q);
    free(a);
    free(q);                                      /* list: q -> a */
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

/* ---------------------------------------------------------------- the cases by name */
static const struct {
    const char *name;
    int (*commit)(void);
} cases[] = {
    {"double_free_small", double_free_small},
    {"double_free_small_later", double_free_small_later},
    {"double_free_small_cache_full", double_free_small_cache_full},
    {"double_free_small_other_thread", double_free_small_other_thread},
    {"double_free_small_aligned", double_free_small_aligned},
    {"double_free_large", double_free_large},
    {"double_free_large_aligned", double_free_large_aligned},
    {"double_free_small_span_gone", double_free_small_span_gone},
    {"double_free_small_span_gone_first", double_free_small_span_gone_first},
    {"double_free_large_reused", double_free_large_reused},
    {"double_free_large_merged", double_free_large_merged},
    {"double_free_mapped", double_free_mapped},
    {"free_stack", free_stack},
    {"free_stack_unaligned", free_stack_unaligned},
    {"free_static", free_static},
    {"free_wild", free_wild},
    {"free_noncanonical", free_noncanonical},
    {"free_mmap", free_mmap},
    {"free_foreign_glibc", free_foreign_glibc},
    {"free_interior_small_unaligned", free_interior_small_unaligned},
    {"free_interior_small_aligned", free_interior_small_aligned},
    {"free_interior_large", free_interior_large},
    {"free_interior_large_middle", free_interior_large_middle},
    {"free_never_handed_out", free_never_handed_out},
    {"free_span_head", free_span_head},
    {"realloc_freed_small", realloc_freed_small},
    {"realloc_freed_large", realloc_freed_large},
    {"realloc_stack", realloc_stack},
    {"realloc_interior", realloc_interior},
    {"corrupt_link_overflow", corrupt_link_overflow},
    {"corrupt_link_bitflip", corrupt_link_bitflip},
};

static int run(const char *c) {
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (!strcmp(c, cases[i].name)) return cases[i].commit();
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
