/* Parsers for the /proc files ebb-bench samples.  All of them work on text in
 * memory so that the tests can feed them sample files. */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int proc_read_file(const char *path, char **buf, size_t *cap, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t n = 0;
    for (;;) {
        if (*cap < n + 4096 + 1) {
            size_t nc = *cap ? *cap * 2 : 16384;
            while (nc < n + 4096 + 1)
                nc *= 2;
            char *nb = realloc(*buf, nc);
            if (!nb) {
                close(fd);
                return -ENOMEM;
            }
            *buf = nb;
            *cap = nc;
        }
        ssize_t r = read(fd, *buf + n, *cap - n - 1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = -errno;
            close(fd);
            return e;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    (*buf)[n] = '\0';
    *len = n;
    return 0;
}

long long proc_field_kib(const char *text, const char *field)
{
    size_t fl = strlen(field);
    const char *p = text;
    while (p && *p) {
        if (strncmp(p, field, fl) == 0 && p[fl] == ':') {
            char *end;
            long long v = strtoll(p + fl + 1, &end, 10);
            if (end == p + fl + 1)
                return -1;
            return v;
        }
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return -1;
}

int proc_parse_smaps_rollup(const char *text, struct proc_rollup *out)
{
    out->rss_kib = proc_field_kib(text, "Rss");
    out->pss_kib = proc_field_kib(text, "Pss");
    out->anon_kib = proc_field_kib(text, "Anonymous");
    out->anon_huge_kib = proc_field_kib(text, "AnonHugePages");
    out->swap_kib = proc_field_kib(text, "Swap");
    return out->rss_kib < 0 ? -1 : 0;
}

static const char *parse_hex(const char *p, const char *end, uint64_t *v)
{
    uint64_t x = 0;
    const char *s = p;
    while (p < end) {
        unsigned d;
        char c = *p;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            break;
        x = x * 16 + d;
        p++;
    }
    if (p == s)
        return NULL;
    *v = x;
    return p;
}

static const char *parse_dec(const char *p, const char *end, uint64_t *v)
{
    uint64_t x = 0;
    const char *s = p;
    while (p < end && *p >= '0' && *p <= '9')
        x = x * 10 + (uint64_t)(*p++ - '0');
    if (p == s)
        return NULL;
    *v = x;
    return p;
}

static const char *skip_spaces(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

/* "start-end perms offset major:minor inode   path" */
int proc_parse_maps_line(const char *line, size_t len, struct maps_entry *e)
{
    const char *p = line, *end = line + len;
    uint64_t maj, min;
    memset(e, 0, sizeof *e);
    if (!(p = parse_hex(p, end, &e->start)) || p >= end || *p++ != '-')
        return -1;
    if (!(p = parse_hex(p, end, &e->end)) || p >= end || *p++ != ' ')
        return -1;
    if (end - p < 5 || p[4] != ' ')
        return -1;
    memcpy(e->perms, p, 4);
    e->perms[4] = '\0';
    p += 5;
    if (!(p = parse_hex(p, end, &e->offset)) || p >= end || *p++ != ' ')
        return -1;
    if (!(p = parse_hex(p, end, &maj)) || p >= end || *p++ != ':')
        return -1;
    if (!(p = parse_hex(p, end, &min)) || p >= end || *p++ != ' ')
        return -1;
    if (!(p = parse_dec(p, end, &e->inode)))
        return -1;
    if (e->end < e->start)
        return -1;
    e->dev_major = (unsigned)maj;
    e->dev_minor = (unsigned)min;
    p = skip_spaces(p, end);
    size_t pl = (size_t)(end - p);
    static const char deleted[] = " (deleted)";
    if (pl >= sizeof deleted - 1 && memcmp(end - (sizeof deleted - 1), deleted, sizeof deleted - 1) == 0)
        pl -= sizeof deleted - 1;
    e->path = p;
    e->path_len = pl;
    return 0;
}

/* Calls fn for every parsable line; stops early when fn returns nonzero. */
static int maps_each(const char *text, int (*fn)(const struct maps_entry *, void *), void *arg)
{
    const char *p = text;
    while (p && *p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        struct maps_entry e;
        if (len && proc_parse_maps_line(p, len, &e) == 0) {
            int r = fn(&e, arg);
            if (r)
                return r;
        }
        p = nl ? nl + 1 : NULL;
    }
    return 0;
}

/* Anonymous private memory as the heap counter sees it. */
enum region_kind { R_OTHER, R_RW, R_NONE };

struct region {
    uint64_t start, end;
    enum region_kind kind;
};

struct region_list {
    struct region *r;
    size_t n, cap;
};

static int collect_region(const struct maps_entry *e, void *arg)
{
    struct region_list *l = arg;
    enum region_kind k = R_OTHER;
    if (e->inode == 0 && e->path_len == 0) {
        if (strcmp(e->perms, "rw-p") == 0)
            k = R_RW;
        else if (strcmp(e->perms, "---p") == 0)
            k = R_NONE;
    }
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 256;
        struct region *nr = realloc(l->r, nc * sizeof *nr);
        if (!nr)
            return -1;
        l->r = nr;
        l->cap = nc;
    }
    l->r[l->n++] = (struct region){e->start, e->end, k};
    return 0;
}

/* The inaccessible part of a heap may have been merged by the kernel with a
 * following guard page or small PROT_NONE mapping; a reservation that goes on
 * for this much past the window is something else (e.g. a JVM heap). */
#define HEAP_TAIL_SLACK (16ull << 20)

struct window {
    bool start_boundary; /* a mapping starts exactly at the window's start */
    bool end_boundary;   /* the window's end is the end of a mapping (or of its ---p tail) */
    bool has_tail;       /* the window ends with a ---p part */
};

/* Is [a, a + 64 MiB) a read-write prefix followed by an optional ---p rest, all
 * in contiguous anonymous private mappings, region i holding a? */
static bool window_layout_ok(const struct region_list *l, size_t i, uint64_t a, struct window *w)
{
    uint64_t e = a + BENCH_HEAP_SIZE;
    uint64_t pos = l->r[i].start;
    bool in_none = false;
    w->start_boundary = l->r[i].start == a;
    w->end_boundary = false;
    w->has_tail = false;
    if (l->r[i].kind != R_RW)
        return false;
    for (size_t j = i; j < l->n && pos < e; j++) {
        const struct region *r = &l->r[j];
        if (j > i && r->start != pos)
            return false; /* a hole */
        if (r->kind == R_OTHER)
            return false;
        if (r->kind == R_RW) {
            if (in_none)
                return false; /* rw after ---p: not one heap */
        } else {
            in_none = true;
        }
        pos = r->end;
        if (pos >= e) {
            w->has_tail = in_none;
            if (pos == e)
                w->end_boundary = true;
            else if (r->kind == R_NONE) {
                if (pos - e >= HEAP_TAIL_SLACK)
                    return false; /* a larger reservation, not a 64 MiB heap */
                w->end_boundary = true;
            }
        }
    }
    return pos >= e;
}

int proc_count_arena_heaps(const char *maps_text)
{
    struct region_list l = {0};
    if (maps_each(maps_text, collect_region, &l) < 0) {
        free(l.r);
        return -1;
    }
    int count = 0;
    uint64_t last_counted = UINT64_MAX;
    for (size_t i = 0; i < l.n; i++) {
        if (l.r[i].kind != R_RW)
            continue;
        uint64_t a = (l.r[i].start + BENCH_HEAP_SIZE - 1) & ~(BENCH_HEAP_SIZE - 1);
        for (; a < l.r[i].end; a += BENCH_HEAP_SIZE) {
            struct window w;
            if (!window_layout_ok(&l, i, a, &w))
                continue;
            /* A window that starts inside a mapping is a heap when it follows a
             * heap (the kernel merged a full heap with the next one's rw part)
             * or when it has the rw + ---p signature up to its aligned end (a
             * neighbouring mapping merged into its start). */
            bool start_ok = w.start_boundary || last_counted == a - BENCH_HEAP_SIZE ||
                            (w.has_tail && w.end_boundary);
            if (!start_ok)
                continue;
            if (!w.end_boundary) {
                /* Ends inside a read-write mapping: only when the next heap follows. */
                struct window nw;
                uint64_t next = a + BENCH_HEAP_SIZE;
                size_t k = i;
                while (k < l.n && l.r[k].end <= next)
                    k++;
                if (k >= l.n || l.r[k].start > next || !window_layout_ok(&l, k, next, &nw))
                    continue;
            }
            count++;
            last_counted = a;
        }
    }
    free(l.r);
    return count;
}

struct find_file {
    const char *real_path;
    unsigned maj, min;
    uint64_t inode;
};

static int match_file(const struct maps_entry *e, void *arg)
{
    const struct find_file *f = arg;
    if (e->path_len == 0 || e->path[0] != '/')
        return 0;
    if (f->real_path && strlen(f->real_path) == e->path_len &&
        memcmp(f->real_path, e->path, e->path_len) == 0)
        return 1;
    if (f->inode && e->inode == f->inode && e->dev_major == f->maj && e->dev_minor == f->min)
        return 1;
    return 0;
}

bool proc_maps_has_file(const char *maps_text, const char *real_path, unsigned dev_major,
                        unsigned dev_minor, uint64_t inode)
{
    struct find_file f = {real_path, dev_major, dev_minor, inode};
    return maps_each(maps_text, match_file, &f) == 1;
}

struct find_lib {
    const char *const *prefixes;
    char *out;
    size_t out_len;
};

static int match_lib(const struct maps_entry *e, void *arg)
{
    struct find_lib *f = arg;
    if (e->path_len == 0 || e->path[0] != '/')
        return 0;
    const char *base = e->path + e->path_len;
    while (base > e->path && base[-1] != '/')
        base--;
    size_t bl = (size_t)(e->path + e->path_len - base);
    for (const char *const *p = f->prefixes; *p; p++) {
        size_t pl = strlen(*p);
        if (bl >= pl && memcmp(base, *p, pl) == 0) {
            size_t n = e->path_len < f->out_len - 1 ? e->path_len : f->out_len - 1;
            memcpy(f->out, e->path, n);
            f->out[n] = '\0';
            return 1;
        }
    }
    return 0;
}

bool proc_maps_find_lib(const char *maps_text, const char *const *prefixes, char *out,
                        size_t out_len)
{
    struct find_lib f = {prefixes, out, out_len};
    if (out_len)
        out[0] = '\0';
    return maps_each(maps_text, match_lib, &f) == 1;
}

bool proc_environ_has(const char *buf, size_t len, const char *assignment)
{
    size_t al = strlen(assignment);
    size_t i = 0;
    while (i < len) {
        const char *s = buf + i;
        size_t sl = strnlen(s, len - i);
        if (sl == al && memcmp(s, assignment, al) == 0)
            return true;
        i += sl + 1;
    }
    return false;
}
