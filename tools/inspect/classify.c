/* Which category each byte of the address space belongs to.
 *
 * Regions recognised as a whole (a glibc arena heap, a thread stack, the Java heap...)
 * are recorded as claims: address ranges, independent of how the kernel happened to
 * split or merge the mappings.  Claims are made in order of confidence; a later rule
 * never takes bytes an earlier one claimed.  Whatever no claim covers falls to the
 * mapping's own kind (library, file, shared memory, other anonymous).  Resident bytes
 * of a claim that covers part of a mapping come from the page map (exact) or, if that
 * is unreadable, a proportional share (marked approximate). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "inspect.h"

#define MiB ((uint64_t)1 << 20)

static const char *const cat_keys[CAT_COUNT] = {
    [CAT_MAIN_HEAP] = "glibc_main_heap",    [CAT_ARENAS] = "glibc_arenas",
    [CAT_STACKS] = "thread_stacks",         [CAT_JAVA_HEAP] = "java_heap",
    [CAT_JVM_CLASS] = "jvm_class_metadata", [CAT_JVM_CODE] = "jvm_code_cache",
    [CAT_EBBMALLOC] = "ebbmalloc",          [CAT_LIBS] = "shared_libraries",
    [CAT_FILES] = "mapped_files",           [CAT_SHMEM] = "shared_memory",
    [CAT_ANON_OTHER] = "other_anonymous",
};

const char *cat_key(enum category c) { return cat_keys[c]; }

const char *cat_label(const struct inspection *in, enum category c) {
    switch (c) {
    case CAT_MAIN_HEAP:
        return strcmp(in->allocator, "glibc") == 0 ? "glibc main heap ([heap])" : "brk heap ([heap])";
    case CAT_ARENAS: return "glibc per-thread arenas";
    case CAT_STACKS: return "thread stacks";
    case CAT_JAVA_HEAP: return "Java heap";
    case CAT_JVM_CLASS: return "JVM class metadata (metaspace, CDS)";
    case CAT_JVM_CODE: return "JVM code cache";
    case CAT_EBBMALLOC:
        return in->stats.state == STATS_OK ? "ebbmalloc (per its stats page)" : "ebbmalloc stats page";
    case CAT_LIBS: return "program and shared libraries";
    case CAT_FILES: return "other mapped files";
    case CAT_SHMEM: return "shared memory";
    case CAT_ANON_OTHER:
        return in->uses_ebbmalloc ? "other anonymous" : "other anonymous (incl. large malloc blocks)";
    default: return "?";
    }
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static bool is_shared_object(const char *path) {
    const char *b = base_name(path);
    const char *so = strstr(b, ".so");
    return so && (so[3] == '\0' || so[3] == '.' || so[3] == ' ');
}

static bool is_jsa(const struct procfs_vma *v) {
    size_t n = strlen(v->path);
    return n > 4 && strcmp(v->path + n - 4, ".jsa") == 0;
}

/* ---- claims ---- */

static bool claimed(const struct inspection *in, uint64_t lo, uint64_t hi) {
    for (size_t i = 0; i < in->nclaims; i++)
        if (in->claims[i].lo < hi && lo < in->claims[i].hi) return true;
    return false;
}

static void claim(struct inspection *in, uint64_t lo, uint64_t hi, enum category cat, int heap) {
    if (in->nclaims == in->capclaims) {
        size_t nc = in->capclaims ? in->capclaims * 2 : 64;
        struct claim *n = realloc(in->claims, nc * sizeof(*n));
        if (!n) return;
        in->claims = n;
        in->capclaims = nc;
    }
    in->claims[in->nclaims++] = (struct claim){lo, hi, cat, heap};
}

/* Index of the mapping containing addr, or -1. */
static long vma_at(const struct inspection *in, uint64_t addr) {
    size_t lo = 0, hi = in->maps.n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const struct procfs_vma *v = &in->maps.v[mid];
        if (addr < v->start) hi = mid;
        else if (addr >= v->end) lo = mid + 1;
        else return (long)mid;
    }
    return -1;
}

/* Is [lo, lo+size) covered without gaps by unclaimed private anonymous mappings
 * (and, when jsa is set, the JVM's CDS archive file)?  *boundary: it ends where a
 * mapping ends. */
static bool window_ok(const struct inspection *in, uint64_t lo, uint64_t size, bool jsa, bool *boundary) {
    long i = vma_at(in, lo);
    if (i < 0 || claimed(in, lo, lo + size)) return false;
    uint64_t at = lo, hi = lo + size;
    for (size_t k = (size_t)i; k < in->maps.n && at < hi; k++) {
        const struct procfs_vma *v = &in->maps.v[k];
        if (v->start != at && k != (size_t)i) return false;
        if (!procfs_vma_anon(v) && !(jsa && is_jsa(v))) return false;
        at = v->end;
    }
    if (at < hi) return false;
    if (boundary) *boundary = at == hi;
    return true;
}

/* ---- allocator ---- */

static void detect_allocator(struct inspection *in) {
    strcpy(in->allocator, "unknown");
    bool libc = false;
    static const char *const others[] = {"libjemalloc", "libtcmalloc", "libmimalloc", "librpmalloc",
                                         "libsnmalloc"};
    for (size_t i = 0; i < in->maps.n; i++) {
        const char *path = in->maps.v[i].path;
        size_t len = strlen(path);
        if (procfs_lib_named(path, len, "libebbmalloc") || strncmp(path, "/dev/shm/ebbmalloc.", 19) == 0)
            in->uses_ebbmalloc = true;
        if (procfs_lib_named(path, len, "libc.so") || procfs_lib_named(path, len, "libc-")) libc = true;
        if (strcmp(base_name(path), "libjvm.so") == 0) in->is_jvm = true;
        for (size_t k = 0; k < sizeof(others) / sizeof(others[0]); k++)
            if (procfs_lib_named(path, len, others[k]) && !strcmp(in->allocator, "unknown"))
                snprintf(in->allocator, sizeof(in->allocator), "%s", others[k] + 3);
    }
    if (in->uses_ebbmalloc) strcpy(in->allocator, "ebbmalloc");
    else if (!strcmp(in->allocator, "unknown") && libc) strcpy(in->allocator, "glibc");
}

/* ---- JVM options ---- */

/* Value of a JVM size option in the process's arguments and Java option variables,
 * later sources overriding earlier ones as the JVM does. */
static uint64_t jvm_size_option(const struct inspection *in, const char *const *prefixes, char *source,
                                size_t srclen) {
    uint64_t val = 0;
    const char *vars[] = {"JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", NULL, "_JAVA_OPTIONS"};
    for (int src = 0; src < 4; src++) {
        char *copy = NULL;
        const char *tok;
        char *save = NULL;
        char **argv = NULL;
        size_t ai = 0;
        if (src == 2) {
            argv = in->proc.argv;
            if (!argv) continue;
            tok = argv[0];
        } else {
            const char *e = proc_getenv(&in->proc, vars[src]);
            if (!e || !(copy = strdup(e))) continue;
            tok = strtok_r(copy, " \t", &save);
        }
        while (tok) {
            for (size_t p = 0; prefixes[p]; p++) {
                size_t n = strlen(prefixes[p]);
                if (strncmp(tok, prefixes[p], n) == 0) {
                    bool ok;
                    uint64_t v = parse_size(tok + n, &ok);
                    if (ok) {
                        val = v;
                        snprintf(source, srclen, "%s%s", src == 2 ? "" : vars[src],
                                 src == 2 ? "command line" : "");
                    }
                }
            }
            if (src == 2) tok = argv[++ai];
            else tok = strtok_r(NULL, " \t", &save);
        }
        free(copy);
    }
    return val;
}

static void region_set(struct jvm_region *r, uint64_t lo, uint64_t hi, bool confirmed) {
    r->start = lo;
    r->end = hi;
    r->found = true;
    r->confirmed = confirmed;
}

/* The JVM rounds the heap reservation up to its heap alignment (1 to 32 MiB): look
 * for a contiguous anonymous window of such a size starting at a mapping, preferring
 * one that also ends where a mapping ends, then the smallest alignment. */
static bool heap_window(struct inspection *in, uint64_t want, const char *source, bool confirmed) {
    uint64_t best = 0, best_size = 0;
    bool best_boundary = false;
    for (uint64_t align = MiB; align <= 32 * MiB; align *= 2) {
        uint64_t size = (want + align - 1) / align * align;
        for (size_t i = 0; i < in->maps.n && !best_boundary; i++) {
            const struct procfs_vma *v = &in->maps.v[i];
            bool boundary;
            if (!procfs_vma_anon(v) || !window_ok(in, v->start, size, true, &boundary)) continue;
            if (!best || boundary) {
                best = v->start;
                best_size = size;
                best_boundary = boundary;
            }
        }
    }
    if (!best) return false;
    region_set(&in->java_heap, best, best + best_size, confirmed);
    snprintf(in->java_heap.how, sizeof(in->java_heap.how),
             "a %s reservation of %llu MiB, the maximum heap size from %s",
             best_boundary ? "contiguous" : "contiguous (merged at its end)",
             (unsigned long long)(best_size / MiB), source);
    claim(in, best, best + best_size, CAT_JAVA_HEAP, -1);
    return true;
}

static uint64_t mem_total(void) {
    char buf[4096];
    if (!procfs_read_buf("/proc/meminfo", buf, sizeof(buf))) return 0;
    long long kib = procfs_field_kib(buf, "MemTotal");
    return kib < 0 ? 0 : (uint64_t)kib * 1024;
}

static void find_java_heap(struct inspection *in) {
    static const char *const pre[] = {"-Xmx", "-XX:MaxHeapSize=", NULL};
    in->xmx = jvm_size_option(in, pre, in->xmx_source, sizeof(in->xmx_source));
    if (in->xmx) {
        heap_window(in, in->xmx, in->xmx_source, true);
        return;
    }
    /* No flag: the JVM's default is a share of the memory it sees (the cgroup limit
     * when there is one), 25% unless -XX:MaxRAMPercentage says otherwise. */
    uint64_t ram = mem_total();
    uint64_t lim = in->cg.eff_limit ? in->cg.eff_limit : in->cg.limit;
    if (lim && (lim < ram || !ram)) ram = lim;
    double pct = 25;
    for (char **a = in->proc.argv; a && *a; a++)
        if (!strncmp(*a, "-XX:MaxRAMPercentage=", 21)) pct = strtod(*a + 21, NULL);
    if (ram && pct > 0)
        heap_window(in, (uint64_t)((double)ram * pct / 100.0), "the JVM's default share of memory (no -Xmx)",
                    false);
}

static void find_class_space(struct inspection *in) {
    static const char *const pre[] = {"-XX:CompressedClassSpaceSize=", NULL};
    char src[64] = "the default";
    uint64_t size = jvm_size_option(in, pre, src, sizeof(src));
    if (!size) size = 1024 * MiB;
    /* The CDS archive (a .jsa file mapped outside the Java heap) and the class space,
     * placed right after it by default. */
    uint64_t cds_end = 0;
    for (size_t i = 0; i < in->maps.n; i++) {
        const struct procfs_vma *v = &in->maps.v[i];
        if (is_jsa(v) && !claimed(in, v->start, v->end)) {
            claim(in, v->start, v->end, CAT_JVM_CLASS, -1);
            cds_end = v->end;
        }
    }
    uint64_t best = 0;
    int best_score = -1;
    for (size_t i = 0; i < in->maps.n; i++) {
        const struct procfs_vma *v = &in->maps.v[i];
        bool boundary;
        if (!procfs_vma_anon(v) || !window_ok(in, v->start, size, false, &boundary) || !boundary) continue;
        int score = (cds_end && v->start >= cds_end && v->start - cds_end <= 16 * MiB) ? 2 : 0;
        if (score > best_score) {
            best = v->start;
            best_score = score;
        }
    }
    if (best_score < 0) return;
    region_set(&in->class_space, best, best + size, best_score == 2);
    snprintf(in->class_space.how, sizeof(in->class_space.how),
             "a %llu MiB reservation (compressed class space size, %s)%s", (unsigned long long)(size / MiB),
             src, best_score == 2 ? " right after the CDS archive" : ", guess: no CDS archive next to it");
    claim(in, best, best + size, CAT_JVM_CLASS, -1);
    /* the padding between the archive and the class space belongs to the archive */
    if (best_score == 2 && best > cds_end && window_ok(in, cds_end, best - cds_end, false, NULL))
        claim(in, cds_end, best, CAT_JVM_CLASS, -1);
}

static void find_code_cache(struct inspection *in) {
    static const char *const pre[] = {"-XX:ReservedCodeCacheSize=", NULL};
    char src[64] = "";
    uint64_t want = jvm_size_option(in, pre, src, sizeof(src));
    long first = -1;
    for (size_t i = 0; i < in->maps.n; i++)
        if (procfs_vma_anon(&in->maps.v[i]) && in->maps.v[i].perms[2] == 'x' &&
            !claimed(in, in->maps.v[i].start, in->maps.v[i].end)) {
            first = (long)i;
            break;
        }
    if (first < 0) return;
    /* the reservation begins at or before the first executable part */
    uint64_t sizes[3] = {want, 240 * MiB, 48 * MiB};
    for (int s = want ? 0 : 1; s < 3; s++) {
        for (long k = first; k >= 0; k--) {
            const struct procfs_vma *v = &in->maps.v[k];
            if (!procfs_vma_anon(v) || (k < first && v->end != in->maps.v[k + 1].start)) break;
            bool boundary;
            if (v->start + sizes[s] >= in->maps.v[first].end &&
                window_ok(in, v->start, sizes[s], false, &boundary) && boundary) {
                region_set(&in->code_cache, v->start, v->start + sizes[s], true);
                snprintf(in->code_cache.how, sizeof(in->code_cache.how),
                         "executable anonymous memory in a %llu MiB reservation (%s)",
                         (unsigned long long)(sizes[s] / MiB),
                         s == 0   ? "-XX:ReservedCodeCacheSize"
                         : s == 1 ? "the default with tiered compilation"
                                  : "the default without tiered compilation");
                claim(in, v->start, v->start + sizes[s], CAT_JVM_CODE, -1);
                return;
            }
        }
    }
    /* guess: the contiguous anonymous run around the executable mapping */
    long lo = first, hi = first;
    while (lo > 0 && procfs_vma_anon(&in->maps.v[lo - 1]) && in->maps.v[lo - 1].end == in->maps.v[lo].start &&
           !claimed(in, in->maps.v[lo - 1].start, in->maps.v[lo - 1].end))
        lo--;
    while ((size_t)hi + 1 < in->maps.n && procfs_vma_anon(&in->maps.v[hi + 1]) &&
           in->maps.v[hi + 1].start == in->maps.v[hi].end &&
           !claimed(in, in->maps.v[hi + 1].start, in->maps.v[hi + 1].end))
        hi++;
    region_set(&in->code_cache, in->maps.v[lo].start, in->maps.v[hi].end, false);
    snprintf(in->code_cache.how, sizeof(in->code_cache.how),
             "guess: the anonymous run around executable anonymous memory, size matches no known setting");
    claim(in, in->code_cache.start, in->code_cache.end, CAT_JVM_CODE, -1);
}

/* Metaspace (JDK 16+) reserves 64 MiB nodes aligned to 16 MiB.  Only a guess. */
static void find_metaspace(struct inspection *in) {
    for (size_t i = 0; i < in->maps.n; i++) {
        const struct procfs_vma *v = &in->maps.v[i];
        bool boundary;
        if (!procfs_vma_anon(v) || v->start % (16 * MiB) || !procfs_vma_is(v, "rw-p") ||
            !window_ok(in, v->start, 64 * MiB, false, &boundary) || !boundary)
            continue;
        bool reserve = false;
        for (size_t k = i; k < in->maps.n && in->maps.v[k].end <= v->start + 64 * MiB; k++)
            if (procfs_vma_is(&in->maps.v[k], "---p")) reserve = true;
        if (!reserve) continue;
        claim(in, v->start, v->start + 64 * MiB, CAT_JVM_CLASS, -1);
        in->metaspace_nodes++;
    }
}

static void guess_java_heap(struct inspection *in) {
    /* no -Xmx: the largest contiguous anonymous reservation left */
    uint64_t best_lo = 0, best_len = 0;
    for (size_t i = 0; i < in->maps.n;) {
        size_t k = i;
        uint64_t lo = in->maps.v[i].start, hi = lo;
        while (k < in->maps.n && (procfs_vma_anon(&in->maps.v[k]) || is_jsa(&in->maps.v[k])) &&
               in->maps.v[k].start == hi && !claimed(in, in->maps.v[k].start, in->maps.v[k].end)) {
            hi = in->maps.v[k].end;
            k++;
        }
        if (hi - lo > best_len) {
            best_len = hi - lo;
            best_lo = lo;
        }
        i = k > i ? k : i + 1;
    }
    if (best_len < 16 * MiB) return;
    region_set(&in->java_heap, best_lo, best_lo + best_len, false);
    snprintf(in->java_heap.how, sizeof(in->java_heap.how),
             "guess: no -Xmx found, taken as the largest contiguous anonymous reservation (%llu MiB)",
             (unsigned long long)(best_len / MiB));
    claim(in, best_lo, best_lo + best_len, CAT_JAVA_HEAP, -1);
}

/* ---- glibc arenas ---- */

static bool read_mem(void *ctx, uint64_t addr, void *buf, size_t len) {
    const struct inspection *in = ctx;
    return pread(in->mem_fd, buf, len, (off_t)addr) == (ssize_t)len;
}

static bool taken(void *ctx, uint64_t lo, uint64_t hi) { return claimed(ctx, lo, hi); }

static void add_heap(struct inspection *in, uint64_t start, uint64_t rw, uint64_t arena) {
    struct arena_heap *n = realloc(in->heaps, (in->nheaps + 1) * sizeof(*n));
    if (!n) return;
    in->heaps = n;
    in->heaps[in->nheaps] = (struct arena_heap){.start = start, .rw = rw, .arena = arena};
    claim(in, start, start + PROCFS_HEAP_SIZE, CAT_ARENAS, (int)in->nheaps);
    in->nheaps++;
}

/* The rule ebb-bench counts by too (lib/procfs/heaps.c): the layout glibc leaves, a
 * MAP_NORESERVE read-write part where smaps shows the flags, and, with the process's
 * memory readable, a consistent heap header at the start of every heap.  Windows the JVM
 * rules claimed first are not heaps. */
static void find_arenas(struct inspection *in) {
    struct procfs_heap_probe probe = {in->mem_fd >= 0 ? read_mem : NULL, taken, in};
    struct procfs_heaps h;
    if (procfs_find_heaps(&in->maps, &probe, &h) < 0) return;
    for (size_t i = 0; i < h.n; i++) add_heap(in, h.h[i].start, h.h[i].rw, h.h[i].arena);
    in->narenas = h.arenas;
    in->heaps_verified = h.verified;
    procfs_heaps_free(&h);
}

/* ---- thread stacks ---- */

static void find_stacks(struct inspection *in) {
    /* Kernels since 6.7 mark MAP_STACK mappings "nh"; where any stack candidate has it,
     * require it, which keeps small JVM reservations out. */
    bool marked = false;
    for (size_t i = 1; i < in->maps.n; i++)
        if (in->maps.v[i].nh && procfs_vma_anon(&in->maps.v[i]) && procfs_vma_is(&in->maps.v[i], "rw-p"))
            marked = true;
    for (size_t i = 1; i < in->maps.n; i++) {
        const struct procfs_vma *g = &in->maps.v[i - 1], *v = &in->maps.v[i];
        if (!procfs_vma_anon(v) || !procfs_vma_is(v, "rw-p") || !procfs_vma_anon(g) ||
            !procfs_vma_is(g, "---p") || g->end != v->start || g->end - g->start > 256 * 1024 ||
            (marked && !v->nh) || claimed(in, g->start, v->end))
            continue;
        claim(in, g->start, v->end, CAT_STACKS, -1);
    }
    for (size_t i = 0; i < in->maps.n; i++)
        if (!strcmp(in->maps.v[i].path, "[stack]"))
            claim(in, in->maps.v[i].start, in->maps.v[i].end, CAT_STACKS, -1);
}

/* ---- accounting ---- */

static enum category default_category(const struct inspection *in, const struct procfs_vma *v) {
    const char *p = v->path;
    if (!strcmp(p, "[heap]")) return CAT_MAIN_HEAP;
    if (!strncmp(p, "/dev/shm/ebbmalloc.", 19)) return CAT_EBBMALLOC;
    if (!strncmp(p, "/memfd:", 7) || !strncmp(p, "/dev/shm/", 9) || !strncmp(p, "/SYSV", 5) ||
        !strncmp(p, "[anon_shmem", 11) || (p[0] == '\0' && v->perms[3] == 's'))
        return CAT_SHMEM;
    if (p[0] == '/') {
        if (is_shared_object(p)) return CAT_LIBS;
        if (in->proc.exe_known && v->inode == in->proc.exe_ino &&
            makedev(v->dev_major, v->dev_minor) == in->proc.exe_dev)
            return CAT_LIBS;
        return CAT_FILES;
    }
    return CAT_ANON_OTHER;
}

static int claim_cmp(const void *a, const void *b) {
    const struct claim *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static struct jvm_region *claim_region(struct inspection *in, const struct claim *c) {
    struct jvm_region *r[3] = {&in->java_heap, &in->class_space, &in->code_cache};
    for (int i = 0; i < 3; i++)
        if (r[i]->found && c->lo >= r[i]->start && c->hi <= r[i]->end) return r[i];
    return NULL;
}

static void add_use(struct cat_total *t, const struct range_use *u, uint64_t size) {
    t->rss += u->rss;
    t->swap += u->swap;
    t->anon_huge += u->anon_huge;
    t->size += size;
}

static void account(struct inspection *in) {
    qsort(in->claims, in->nclaims, sizeof(*in->claims), claim_cmp);
    size_t k = 0;
    for (size_t i = 0; i < in->maps.n; i++) {
        const struct procfs_vma *v = &in->maps.v[i];
        enum category dc = default_category(in, v);
        bool counted = false;
        while (k < in->nclaims && in->claims[k].hi <= v->start) k++;
        uint64_t at = v->start;
        for (size_t c = k; c < in->nclaims && in->claims[c].lo < v->end; c++) {
            const struct claim *cl = &in->claims[c];
            uint64_t lo = cl->lo > at ? cl->lo : at, hi = cl->hi < v->end ? cl->hi : v->end;
            struct range_use u;
            if (lo > at) {
                range_usage(in, v, at, lo, &u);
                add_use(&in->cat[dc], &u, lo - at);
                if (!counted) in->cat[dc].count++;
                counted = true;
            }
            range_usage(in, v, lo, hi, &u);
            add_use(&in->cat[cl->cat], &u, hi - lo);
            if (cl->heap >= 0) {
                in->heaps[cl->heap].rss += u.rss;
                in->heaps[cl->heap].swap += u.swap;
            }
            struct jvm_region *r = claim_region(in, cl);
            if (r) r->rss += u.rss;
            at = hi;
        }
        if (at < v->end) {
            struct range_use u;
            range_usage(in, v, at, v->end, &u);
            add_use(&in->cat[dc], &u, v->end - at);
            if (!counted) in->cat[dc].count++;
        }
        in->rss += v->rss;
        in->size += v->end - v->start;
        in->swap += v->swap;
        in->anon_huge += v->anon_huge;
    }
    /* claimed categories count regions, not mappings */
    for (size_t c = 0; c < in->nclaims; c++)
        if (in->claims[c].cat != CAT_JVM_CLASS || c == 0 || in->claims[c].cat != in->claims[c - 1].cat ||
            in->claims[c - 1].hi != in->claims[c].lo)
            in->cat[in->claims[c].cat].count++;

    /* ebbmalloc's memory is anonymous: take what its stats page says out of
     * "other anonymous" (never more than is there). */
    if (in->stats.state == STATS_OK) {
        struct cat_total *o = &in->cat[CAT_ANON_OTHER], *e = &in->cat[CAT_EBBMALLOC];
        uint64_t r = in->stats.page.stats.resident, m = in->stats.page.stats.mapped;
        if (r > o->rss) r = o->rss;
        if (m > o->size) m = o->size;
        o->rss -= r;
        o->size -= m;
        e->rss += r;
        e->size += m;
    }
}

void classify(struct inspection *in) {
    detect_allocator(in);
    if (in->is_jvm) {
        find_java_heap(in);
        find_class_space(in);
        find_code_cache(in);
    }
    /* without the headers, the layout alone is trusted in a process that uses glibc's malloc */
    if (in->mem_fd >= 0 || !strcmp(in->allocator, "glibc")) find_arenas(in);
    if (in->is_jvm) {
        if (!in->java_heap.found) guess_java_heap(in);
        find_metaspace(in);
    }
    find_stacks(in);
    account(in);
}
