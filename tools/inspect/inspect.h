/* ebb-inspect internals: where a process's resident memory sits.
 *
 * One inspection reads /proc/PID (through a directory fd held for the whole run, so a
 * recycled pid is never mixed in), classifies every mapping into a category, finds
 * glibc arena heaps and JVM regions, reads ebbmalloc's stats page and the cgroup, and
 * keeps a list of everything it could not read.  report.c prints it.
 *
 * Parsing /proc, glibc's arena heaps and the cgroup come from the shared procfs library
 * (lib/procfs/procfs.h), which ebb-bench and the tests use too.
 *
 * Files:  procfs.c   the process: status, stat, cmdline, environ, through its /proc fd
 *         maps.c     resident bytes of part of a mapping (pagemap)
 *         classify.c categories, glibc arenas, thread stacks, JVM regions
 *         shmstats.c ebbmalloc's live stats page, validated
 *         report.c   text and JSON output, hints, --watch growth
 *         inspect.c  one inspection, in that order, and the cgroup
 *
 * The heap profile (--heap), read after an inspection:
 *         heapprof.c  ebbmalloc's published table of sampled stacks, validated and copied
 *         symbolize.c addresses to library!function+offset (file:line) from the ELF files
 *         heapreport.c attribution, text, collapsed, JSON, hints, growth
 *         heapbase.c  baseline files (--baseline / --diff)
 *         pprof.c     gzip-compressed pprof profile.proto
 */
#ifndef EBB_INSPECT_H
#define EBB_INSPECT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "ebbmalloc.h"
#include "procfs.h"

/* ---- procfs.c ---- */

struct unreadable {
    char what[160]; /* file or source that could not be read */
    char why[160];  /* errno text or reason */
};

struct proc {
    pid_t pid;
    int dirfd;   /* open /proc/PID: every read goes through it */
    pid_t nspid; /* pid inside the process's own pid namespace */
    char comm[64];
    char state;          /* from /proc/PID/stat */
    uint64_t start_time; /* field 22 of /proc/PID/stat */
    uid_t ruid, euid;
    long threads;
    uint64_t vm_rss, rss_anon, rss_file, rss_shmem, vm_swap; /* bytes, from status */
    char *cmdline;         /* arguments joined by spaces, NULL if unreadable */
    char **argv;           /* NULL-terminated, NULL if unreadable */
    char **environ;        /* NULL-terminated, NULL if unreadable */
    char *argbuf, *envbuf; /* the buffers argv and environ point into */
    dev_t exe_dev;
    ino_t exe_ino;
    bool exe_known;
};

int proc_open(struct proc *p, pid_t pid, char *err, size_t errlen);
void proc_close(struct proc *p);
/* Whole file below /proc/PID as a NUL-terminated buffer; NULL with errno set. */
char *proc_read(const struct proc *p, const char *name, size_t *len);
int proc_read_stat(struct proc *p); /* state and start_time; -1 if gone */
const char *proc_getenv(const struct proc *p, const char *name);

/* ---- maps.c ---- */

/* Resident / swapped bytes of [lo,hi) of v.  Whole mapping: smaps numbers;
 * part of one: the page map, or a proportional share (sets *approx). */
struct range_use {
    uint64_t rss, swap, anon_huge;
};
struct inspection;
void range_usage(struct inspection *in, const struct procfs_vma *v, uint64_t lo, uint64_t hi,
                 struct range_use *u);

/* ---- classify.c ---- */

enum category {
    CAT_MAIN_HEAP,
    CAT_ARENAS,
    CAT_STACKS,
    CAT_JAVA_HEAP,
    CAT_JVM_CLASS,
    CAT_JVM_CODE,
    CAT_EBBMALLOC,
    CAT_LIBS,
    CAT_FILES,
    CAT_SHMEM,
    CAT_ANON_OTHER,
    CAT_COUNT
};

struct cat_total {
    uint64_t rss, size, swap, anon_huge;
    unsigned count; /* mappings, heaps or stacks, as the category counts */
};

struct arena_heap {
    uint64_t start; /* 64 MiB aligned */
    uint64_t rw;    /* bytes made read-write (mprotect_size or the rw mapping) */
    uint64_t rss, swap;
    uint64_t arena; /* the malloc_state it belongs to, 0 if unknown */
};

/* A recognised JVM region. */
struct jvm_region {
    uint64_t start, end;
    uint64_t rss;
    bool found;
    bool confirmed; /* size matched a flag or a known default exactly */
    char how[200];  /* how it was recognised, in words */
};

struct claim {
    uint64_t lo, hi;
    enum category cat;
    int heap; /* index in arena_heaps for CAT_ARENAS, else -1 */
};

enum stats_state { STATS_ABSENT, STATS_OK, STATS_REFUSED };

struct shm_result {
    enum stats_state state;
    char reason[256]; /* why it was refused, or where it was read from */
    struct ebb_shm_page page;
    int64_t age_ms; /* now - updated_ms */
    bool has_flow;  /* a version 2 page: page.flow holds the library's counters */
};

struct heap_profile;
struct heap_growth;

struct inspection {
    struct proc proc;
    struct procfs_vmas maps;
    char *maps_text; /* smaps text: mapping paths point into it */
    bool maps_ok;
    int pagemap_fd; /* -1 when unreadable */
    int mem_fd;     /* -1 when unreadable */
    bool approx;    /* some resident figure is a proportional estimate */

    char allocator[64]; /* glibc, ebbmalloc, jemalloc, ... */
    bool uses_ebbmalloc;
    bool is_jvm;

    struct cat_total cat[CAT_COUNT];
    uint64_t rss, size, swap, anon_huge;

    struct arena_heap *heaps;
    size_t nheaps;
    unsigned narenas;    /* distinct malloc_state pointers (verified heaps only) */
    bool heaps_verified; /* heap headers were read and checked */

    uint64_t xmx; /* -Xmx in bytes, 0 unknown */
    char xmx_source[64];
    struct jvm_region java_heap, class_space, code_cache;
    unsigned metaspace_nodes;

    struct claim *claims;
    size_t nclaims, capclaims;

    struct shm_result stats;
    struct procfs_cgroup cg;

    struct unreadable unread[16];
    size_t nunread;
    char *hints[12];
    size_t nhints;

    /* --heap: the profile and its growth, printed by report_json (not owned) */
    const struct heap_profile *heap;
    const struct heap_growth *heap_growth;
};

/* Run one inspection of pid.  Returns 0 (complete), 2 (partial: maps unreadable),
 * or 1 (no such process / exited) with err filled. */
#define INSPECT_NO_MEMORY 1u /* never read the process's memory (arena heap headers) */
int inspect(struct inspection *in, pid_t pid, unsigned flags, char *err, size_t errlen);
void inspection_free(struct inspection *in);
void note_unreadable(struct inspection *in, const char *what, const char *why);
void classify(struct inspection *in);
const char *cat_key(enum category c);
const char *cat_label(const struct inspection *in, enum category c);

/* ---- shmstats.c ---- */
/* Read and validate the stats page of the inspected process. */
void shm_stats_read(struct inspection *in);
/* The name the process's stats page has: /dev/shm/ebbmalloc.<ns>.<pid> (see
 * ebbmalloc.h), as the process sees it (open it below /proc/PID/root); its heap profile
 * is the same plus ".heap".  Returns its length. */
size_t shm_page_path(const struct proc *p, char *buf, size_t n);
/* Validation of one candidate page against the process (exposed for tests). */
const char *shm_page_check(const struct ebb_shm_page *pg, pid_t nspid, uint64_t start_time);
/* The path the process's stats page has (as the process sees it). */
/* Open the file behind mapping v: through /proc/PID/root when that name is still the
 * mapped file (same device and inode), else through /proc/PID/map_files; -1 if neither. */
int shm_open_mapped(const struct inspection *in, const struct procfs_vma *v, bool *via_map_files);

/* ---- heapprof.c ---- */

enum heap_state { HEAP_ABSENT, HEAP_OK, HEAP_REFUSED };

struct frame_sym;

/* One call stack of the profile.  From a running process: pcs are the recorded return
 * addresses, innermost first, and sym[i] (after heap_symbolize) what each one is.  From a
 * baseline file: no pcs, only keys[i], each frame's identity (see struct frame_sym). */
struct heap_stack {
    uint32_t depth;
    uint64_t *pcs;
    const struct frame_sym **sym;
    char **keys;
    int64_t live_bytes, live_objects; /* estimates, as the table holds them */
    uint64_t total_bytes, total_objects;
    int attr; /* frame the stack is attributed to (heap_attribute) */
};

/* A snapshot of a process's heap profile.  state HEAP_OK: header and stacks copied
 * from the table, every index checked; otherwise reason says why there is none. */
struct heap_profile {
    enum heap_state state;
    char reason[512];
    char path[300]; /* the .heap file, as the process sees it */
    bool via_map_files;
    struct ebb_prof_header hdr;
    uint64_t taken_ms;     /* CLOCK_REALTIME of the copy */
    int64_t age_ms;        /* taken_ms - hdr.updated_ms */
    struct heap_stack *st; /* biggest live bytes first */
    size_t n;
    size_t changed; /* slots skipped: rewritten while they were read */
    int64_t live_bytes, live_objects;
    int32_t pid;
    uint64_t start_time;
    char modules[4096]; /* baseline only: its "module" lines, for showing */
};

/* The heap profile's file name, from the stats page's: the one place that says so. */
void heap_file_name(const char *stats_page, char *buf, size_t len);
/* Validation of a header against the file and the process (exposed for tests);
 * NULL when it is trusted, else why not. */
const char *heap_header_check(const struct ebb_prof_header *h, uint64_t file_size, pid_t nspid,
                              uint64_t start_time);
/* Read the profile of the inspected process into hp (always initialised). */
void heap_read(const struct inspection *in, struct heap_profile *hp);
void heap_free(struct heap_profile *hp);
/* Sums of counters read from another process: saturating, whatever they hold. */
int64_t heap_add(int64_t a, int64_t b);
int64_t heap_sub(int64_t a, int64_t b);
/* Sort stacks by live bytes, biggest first, and recompute the totals. */
void heap_sort(struct heap_profile *hp);

/* ---- symbolize.c ---- */

enum frame_kind {
    FRAME_FILE,     /* in a mapped file; function NULL if no symbol covers it */
    FRAME_ANON,     /* anonymous memory: JIT-compiled code, or garbage */
    FRAME_SPECIAL,  /* [vdso] and the like */
    FRAME_UNMAPPED, /* nothing mapped there now (a library unloaded since) */
};

/* What one recorded address is.  text is what the reports print:
 *   library!function+0xoff (file.c:line)     symbol and line found
 *   library!function+0xoff                   symbol, no debug information
 *   library+0xREL                            in the file, no symbol covers it
 *   [jit or anonymous 0xADDR]  [vdso 0xADDR]  [unmapped 0xADDR]
 *   [other stacks: not recorded, the table was full]   (address 0: the overflow stack)
 * off is from the symbol's start to the return address; REL is the return address as
 * an ELF virtual address of the library (its file offset when the file could not be read).  key is the frame's identity across processes
 * and relocations: "library!function+0xoff", "library+0xREL", "[jit or anonymous]",
 * "[vdso]", "[unmapped]", "[table full]" (so JIT frames, whose addresses mean nothing across time,
 * compare equal). */
struct frame_sym {
    enum frame_kind kind;
    uint64_t pc;
    const char *module;                      /* basename of the file, or "[vdso]"; "" when unmapped */
    const char *path;                        /* the file as maps shows it, NULL when not a file */
    const char *build_id;                    /* hex, NULL if the file has none */
    uint64_t map_start, map_end, map_offset; /* the mapping holding pc */
    const char *function;                    /* demangled */
    const char *system_name;                 /* as the symbol table spells it */
    uint64_t offset, rel;
    const char *src_file; /* NULL without line information */
    int line;
    bool runtime; /* allocator, libc, loader or C++ runtime (see heap_attribute) */
    const char *text, *key;
};

struct symbolizer;
struct symbolizer *sym_new(void);
void sym_free(struct symbolizer *s);
/* Symbolise every frame of hp against the process's current mappings. 0, or -1 with
 * errno when /proc/PID/maps is unreadable (frames then show as unmapped). */
int heap_symbolize(struct symbolizer *s, const struct inspection *in, struct heap_profile *hp);
/* One address (tests). */
const struct frame_sym *sym_lookup(struct symbolizer *s, const struct inspection *in,
                                   const struct procfs_vmas *maps, uint64_t pc);

/* ---- heapreport.c ---- */

/* Growth of each stack (by frame keys) between two profiles. */
struct heap_delta {
    const struct heap_stack *cur; /* the biggest current stack with this identity */
    int64_t bytes, objects;       /* growth */
    int64_t now_bytes, base_bytes;
};
struct heap_growth {
    struct heap_delta *d; /* growing stacks only, biggest growth first */
    size_t n;
    int64_t total_now, total_base;
    double elapsed_s; /* since the baseline */
};

const char *heap_frame_key(const struct heap_stack *s, uint32_t i);
/* Attribute every stack to its first frame outside the runtime (struct frame_sym). */
void heap_attribute(struct heap_profile *hp);
const char *heap_library(const struct heap_stack *s);
int heap_growth(const struct heap_profile *base, const struct heap_profile *cur, struct heap_growth *g);
void heap_growth_free(struct heap_growth *g);
/* Plain-language hints about hp (and its growth, if g); caller frees each. */
size_t heap_hints(const struct inspection *in, const struct heap_profile *hp, const struct heap_growth *g,
                  char **out, size_t max);
void heap_report_text(FILE *f, const struct inspection *in, const struct heap_profile *hp, size_t top);
void heap_report_diff(FILE *f, const struct inspection *in, const struct heap_profile *hp,
                      const struct heap_growth *g, const char *from, size_t top);
void heap_report_watch(FILE *f, const struct heap_profile *hp, const struct heap_growth *g, size_t top);
void heap_report_collapsed(FILE *f, const struct heap_profile *hp);
void heap_json(FILE *f, const struct inspection *in, const struct heap_profile *hp,
               const struct heap_growth *g);
/* Decoded JNI name: Java_org_x_Y_m -> "org.x.Y.m"; false if name is not one. */
bool jni_java_name(const char *name, char *buf, size_t len);

/* ---- heapbase.c ---- */
int heap_baseline_save(const char *file, const struct inspection *in, const struct heap_profile *hp,
                       char *err, size_t errlen);
int heap_baseline_load(const char *file, struct heap_profile *hp, char *err, size_t errlen);

/* ---- pprof.c ---- */
int heap_pprof_write(const char *file, const struct inspection *in, const struct heap_profile *hp, char *err,
                     size_t errlen);

/* ---- report.c ---- */
void make_hints(struct inspection *in);
void report_text(FILE *f, const struct inspection *in);
void report_json(FILE *f, const struct inspection *in, const struct inspection *base, double elapsed);
void report_growth(FILE *f, const struct inspection *in, const struct inspection *base, double elapsed);
char *fmt_bytes(char *buf, size_t len, uint64_t b);
/* A malloc'd formatted string (the caller frees it); NULL when out of memory. */
char *str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *str_vprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
uint64_t parse_size(const char *s, bool *ok);

#endif
