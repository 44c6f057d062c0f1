/* The misuse corpus: one row per way a program can misuse the heap.  misuse_helper
 * commits the misuse named on its command line; misuse_corpus runs it under ebbmalloc
 * (LD_PRELOAD) and checks the process stopped with SIGABRT after one line naming the
 * fault, the address and the size class, or runs it under plain glibc to record what
 * glibc does.
 *
 * `fault` and `cls` are substrings the one line on stderr must contain ('|' separates
 * accepted alternatives, where ebbmalloc cannot know more: a block whose span went back
 * has no class any more), after
 * "ebbmalloc: " and the function name; the address printed must be one the helper
 * reports on stdout (lines "ADDR 0x...": the block misused, and for a corrupted link
 * also where the link leads).  cls NULL: no class (not a block).
 *
 * `pending`: ebbmalloc does not stop on this one today (or names the wrong fault).
 * These rows stay out of the default run (misuse_corpus --pending runs them); each
 * one is explained in tests/hardening/README.md. */
#ifndef MISUSE_CASES_H
#define MISUSE_CASES_H

struct misuse_case {
    const char *name;
    const char *what;  /* one line for the README table */
    const char *func;  /* "free()", "realloc()", "malloc()" */
    const char *fault; /* "double free", "invalid pointer", "corrupted free list" */
    const char *cls;   /* "48-byte size class", "large block", or NULL */
    int pending;
};

static const struct misuse_case misuse_cases[] = {
    {"double_free_small", "free(p); free(p), 40-byte block", "free()", "double free", "48-byte size class",
     0},
    {"double_free_small_later", "double free after other frees of the same class", "free()", "double free",
     "48-byte size class", 0},
    {"double_free_small_cache_full", "double free after the block left the thread cache", "free()",
     "double free", "48-byte size class", 0},
    {"double_free_small_other_thread", "freed on another thread, then freed again", "free()", "double free",
     "48-byte size class", 0},
    {"double_free_small_aligned", "double free of aligned_alloc(256, 200)", "free()", "double free",
     "256-byte size class", 0},
    {"double_free_large", "free(p); free(p), 1 MiB block between live ones", "free()", "double free",
     "large block", 0},
    {"double_free_large_aligned", "double free of memalign(1 MiB, 300000)", "free()", "double free",
     "large block", 0},
    /* The new span may cover p's first page without starting there: then p is inside a
     * live block, and the line names both ways that can happen. */
    {"double_free_large_reused", "double free of a 300000-byte block after a new span reused its pages",
     "free()", "double free|freed earlier whose memory was reused", "large block|212992-byte", 0},
    {"double_free_small_span_gone", "double free after malloc_trim returned the span", "free()",
     "double free", "3072-byte size class|pages are free already", 0},
    {"double_free_small_span_gone_first", "the same, block at the start of its span", "free()", "double free",
     "3072-byte size class|pages are free already", 0},
    {"double_free_large_merged", "double free of a 1 MiB block after it merged with a free neighbour",
     "free()", "double free|already freed", NULL, 0},
    {"double_free_mapped", "double free of a 64 MiB block (own mapping)", "free()",
     "double free|already freed", NULL, 0},
    {"free_stack", "free of a stack array", "free()", "invalid pointer", NULL, 0},
    {"free_stack_unaligned", "free of a stack address + 3", "free()", "invalid pointer", NULL, 0},
    {"free_static", "free of a static array", "free()", "invalid pointer", NULL, 0},
    {"free_wild", "free((void *)0x10000)", "free()", "invalid pointer", NULL, 0},
    {"free_noncanonical", "free of an address above 2^48", "free()", "invalid pointer", NULL, 0},
    {"free_mmap", "free of a page from mmap", "free()", "invalid pointer", NULL, 0},
    {"free_foreign_glibc", "free of a block from glibc's __libc_malloc", "free()", "invalid pointer", NULL,
     0},
    {"free_interior_small_unaligned", "free(p + 8), 48-byte block", "free()", "invalid pointer", "48-byte",
     0},
    {"free_interior_large", "free(p + 4096), 1 MiB block", "free()", "invalid pointer", NULL, 0},
    {"free_interior_large_middle", "free(p + 512 KiB), 1 MiB block", "free()", "invalid pointer", NULL, 0},
    {"free_interior_small_aligned", "free(p + 16), 48-byte block", "free()", "invalid pointer", "48-byte", 0},
    {"free_never_handed_out", "free of a slot of a span not yet handed out", "free()",
     "invalid pointer|double free", "3584-byte", 0},
    {"free_span_head", "free of the unused bytes before a span's first block", "free()", "invalid pointer",
     "1792-byte", 0},
    {"realloc_freed_small", "realloc of a freed 48-byte block", "realloc()", "double free",
     "48-byte size class", 0},
    {"realloc_freed_large", "realloc of a freed 1 MiB block", "realloc()", "double free", "large block", 0},
    {"realloc_stack", "realloc of a stack array", "realloc()", "invalid pointer", NULL, 0},
    {"realloc_interior", "realloc(p + 8), 48-byte block", "realloc()", "invalid pointer", "48-byte", 0},
    {"corrupt_link_overflow", "freed block's link overwritten (overflow), then 2 mallocs", "malloc()",
     "corrupted free list", "48-byte size class", 0},
    {"corrupt_link_bitflip", "one bit of a freed block's link flipped, then 2 mallocs", "malloc()",
     "corrupted free list", "48-byte size class", 0},
};
#define MISUSE_NCASES (sizeof misuse_cases / sizeof misuse_cases[0])

#endif
