/* glibc's arena heaps, one rule for ebb-bench and ebb-inspect.
 *
 * A thread arena lives in heaps: 64 MiB reservations at 64 MiB boundaries, mapped
 * MAP_NORESERVE and inaccessible, made read-write from the start as the arena grows.  In
 * the maps a heap is a window [a, a + 64 MiB), a 64 MiB-aligned, of anonymous private
 * memory without gaps: a read-write part, then the inaccessible (---p) rest, if any;
 * nothing read-write after the rest.
 *
 * The kernel merges neighbouring mappings with the same flags, so a window's edges need
 * not be mapping edges.  The rule for merged and adjacent mappings:
 *  - the window may start inside a read-write mapping when the window just before it was
 *    counted (a full heap merged with the next heap's read-write part), or when it has an
 *    inaccessible rest that ends at the window's end (something merged into its start);
 *  - it may end inside a read-write mapping only when the next window is laid out as a
 *    heap too (the read-write part runs on into the next heap);
 *  - its inaccessible rest may run on past the window by less than 16 MiB (merged with a
 *    guard page or a small reservation); 16 MiB or more is a larger reservation with a
 *    committed start (a JVM heap or class space), not a heap.
 * The evidence then decides how much is asked beyond the layout:
 *  - maps only (ebb-bench's samples): the layout;
 *  - smaps (ebb-inspect): the read-write part must also be MAP_NORESERVE (VmFlags "nr");
 *  - the process's memory readable (ebb-inspect, by default): every window must also
 *    start with a consistent heap header (glibc's heap_info: arena pointer, previous
 *    heap, size, protected size, the protected part read-write in the maps), and a later
 *    heap must point at an arena whose first heap is among them.  The header check only
 *    takes windows away, so for glibc's own heaps every way of looking counts the same. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "procfs.h"

#define HEAP PROCFS_HEAP_SIZE
#define TAIL_SLACK ((uint64_t)16 << 20)

enum region_kind { R_OTHER, R_RW, R_NONE };

struct region {
    uint64_t start, end;
    enum region_kind kind;
};

struct regions {
    struct region *r;
    size_t n, cap;
};

static enum region_kind kind_of(uint64_t inode, bool named, const char *perms, bool flags_known, bool nr) {
    if (inode || named || perms[3] != 'p') return R_OTHER;
    if (!memcmp(perms, "rw-p", 4)) return !flags_known || nr ? R_RW : R_OTHER;
    if (!memcmp(perms, "---p", 4)) return R_NONE;
    return R_OTHER;
}

static int add_region(struct regions *l, uint64_t start, uint64_t end, enum region_kind k) {
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 256;
        struct region *nr = realloc(l->r, nc * sizeof *nr);
        if (!nr) return -1;
        l->r = nr;
        l->cap = nc;
    }
    l->r[l->n++] = (struct region){start, end, k};
    return 0;
}

/* ---- the layout ---- */

struct window {
    bool start_boundary; /* a mapping starts exactly at the window's start */
    bool end_boundary;   /* the window ends where a mapping (or its ---p rest, nearly) ends */
    bool has_tail;       /* the window ends with a ---p part */
    uint64_t rw;         /* bytes of its read-write part */
};

/* Is [a, a + 64 MiB) a read-write part then an optional ---p rest, in contiguous
 * anonymous private mappings, region i holding a? */
static bool window_layout_ok(const struct regions *l, size_t i, uint64_t a, struct window *w) {
    uint64_t e = a + HEAP;
    uint64_t pos = l->r[i].start;
    bool in_none = false;
    memset(w, 0, sizeof *w);
    w->start_boundary = l->r[i].start == a;
    if (l->r[i].kind != R_RW) return false;
    for (size_t j = i; j < l->n && pos < e; j++) {
        const struct region *r = &l->r[j];
        if (j > i && r->start != pos) return false; /* a hole */
        if (r->kind == R_OTHER) return false;
        if (r->kind == R_RW) {
            if (in_none) return false; /* read-write after ---p: not one heap */
            w->rw = (r->end < e ? r->end : e) - a;
        } else {
            in_none = true;
        }
        pos = r->end;
        if (pos >= e) {
            w->has_tail = in_none;
            if (pos == e) w->end_boundary = true;
            else if (r->kind == R_NONE) {
                if (pos - e >= TAIL_SLACK) return false;
                w->end_boundary = true;
            }
        }
    }
    return pos >= e;
}

struct cand {
    uint64_t start, rw;
};

/* The windows the layout rule accepts, in address order (malloc'd into *out). */
static int layout_candidates(const struct regions *l, const struct procfs_heap_probe *probe,
                             struct cand **out, size_t *nout) {
    struct cand *c = NULL;
    size_t n = 0, cap = 0;
    uint64_t last_counted = UINT64_MAX;
    for (size_t i = 0; i < l->n; i++) {
        if (l->r[i].kind != R_RW) continue;
        uint64_t a = (l->r[i].start + HEAP - 1) & ~(HEAP - 1);
        for (; a < l->r[i].end; a += HEAP) {
            struct window w;
            if (!window_layout_ok(l, i, a, &w)) continue;
            bool start_ok = w.start_boundary || last_counted == a - HEAP || (w.has_tail && w.end_boundary);
            if (!start_ok) continue;
            if (!w.end_boundary) {
                struct window nw;
                uint64_t next = a + HEAP;
                size_t k = i;
                while (k < l->n && l->r[k].end <= next) k++;
                if (k >= l->n || l->r[k].start > next || !window_layout_ok(l, k, next, &nw)) continue;
            }
            if (probe && probe->taken && probe->taken(probe->ctx, a, a + HEAP)) continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                struct cand *nc = realloc(c, cap * sizeof *nc);
                if (!nc) {
                    free(c);
                    return -1;
                }
                c = nc;
            }
            c[n++] = (struct cand){a, w.rw};
            last_counted = a;
        }
    }
    *out = c;
    *nout = n;
    return 0;
}

/* ---- the headers ---- */

/* The first words of every non-main heap (glibc's heap_info). */
struct heap_words {
    uint64_t ar_ptr, prev, size, mprotect_size;
};

static bool rw_from(const struct regions *l, uint64_t lo, uint64_t hi) {
    for (size_t i = 0; i < l->n && lo < hi; i++) {
        if (l->r[i].end <= lo) continue;
        if (l->r[i].start > lo || l->r[i].kind != R_RW) return false;
        lo = l->r[i].end;
    }
    return lo >= hi;
}

struct checked {
    struct heap_words w;
    bool ok, first;
};

static int verify(const struct regions *l, const struct procfs_heap_probe *probe, const struct cand *c,
                  size_t n, struct procfs_heaps *out) {
    uint64_t ps = (uint64_t)sysconf(_SC_PAGESIZE);
    struct checked *k = calloc(n ? n : 1, sizeof *k);
    if (!k) return -1;
    for (size_t i = 0; i < n; i++) {
        struct heap_words *w = &k[i].w;
        uint64_t h = c[i].start;
        if (!probe->read_mem(probe->ctx, h, w, sizeof *w)) continue;
        if (!w->size || w->size % ps || w->mprotect_size % ps || w->size > w->mprotect_size ||
            w->mprotect_size > HEAP || !rw_from(l, h, h + w->mprotect_size))
            continue;
        k[i].first = w->prev == 0 && w->ar_ptr > h && w->ar_ptr <= h + 64 && w->ar_ptr % 16 == 0;
        k[i].ok = k[i].first || (w->prev && w->prev % HEAP == 0 && w->prev != h);
    }
    out->h = calloc(n ? n : 1, sizeof *out->h);
    if (!out->h) {
        free(k);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        /* a later heap must point at an arena living in a first heap found here */
        bool ok = k[i].ok && k[i].first;
        for (size_t j = 0; k[i].ok && !ok && j < n; j++)
            ok = k[j].ok && k[j].first && k[j].w.ar_ptr == k[i].w.ar_ptr;
        if (!ok) continue;
        out->h[out->n++] = (struct procfs_heap){c[i].start, k[i].w.mprotect_size, k[i].w.ar_ptr};
        if (k[i].first) out->arenas++;
    }
    out->verified = true;
    free(k);
    return 0;
}

static int find(const struct regions *l, const struct procfs_heap_probe *probe, struct procfs_heaps *out) {
    memset(out, 0, sizeof *out);
    struct cand *c;
    size_t n;
    if (layout_candidates(l, probe, &c, &n) < 0) return -1;
    int r = 0;
    if (probe && probe->read_mem) {
        r = verify(l, probe, c, n, out);
    } else {
        out->h = calloc(n ? n : 1, sizeof *out->h);
        if (!out->h) r = -1;
        for (size_t i = 0; out->h && i < n; i++)
            out->h[out->n++] = (struct procfs_heap){c[i].start, c[i].rw, 0};
    }
    free(c);
    return r;
}

int procfs_find_heaps(const struct procfs_vmas *m, const struct procfs_heap_probe *probe,
                      struct procfs_heaps *out) {
    struct regions l = {0};
    for (size_t i = 0; i < m->n; i++) {
        const struct procfs_vma *v = &m->v[i];
        enum region_kind k = kind_of(v->inode, v->path[0] != '\0', v->perms, m->have_smaps, v->nr);
        if (add_region(&l, v->start, v->end, k) < 0) {
            free(l.r);
            return -1;
        }
    }
    int r = find(&l, probe, out);
    free(l.r);
    return r;
}

void procfs_heaps_free(struct procfs_heaps *h) {
    free(h->h);
    memset(h, 0, sizeof *h);
}

int procfs_count_heaps(const char *maps_text) {
    struct regions l = {0};
    struct procfs_map e;
    for (const char *c = maps_text; procfs_maps_next(&c, &e);)
        if (add_region(&l, e.start, e.end, kind_of(e.inode, e.path_len != 0, e.perms, false, false)) < 0) {
            free(l.r);
            return -1;
        }
    struct procfs_heaps h;
    int r = find(&l, NULL, &h);
    free(l.r);
    if (r < 0) return -1;
    int n = (int)h.n;
    procfs_heaps_free(&h);
    return n;
}
