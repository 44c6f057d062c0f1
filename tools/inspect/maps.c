/* Parsing /proc/PID/smaps (or maps) and measuring part of a mapping. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inspect.h"

bool vma_anon(const struct vma *v)
{
    return v->inode == 0 && v->path[0] == '\0' && v->perms[3] == 'p';
}

bool vma_is(const struct vma *v, const char *perms)
{
    return memcmp(v->perms, perms, 4) == 0;
}

static int push(struct vmas *m)
{
    if (m->n == m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 256;
        struct vma *nv = realloc(m->v, nc * sizeof(*nv));
        if (!nv)
            return -1;
        m->v = nv;
        m->cap = nc;
    }
    memset(&m->v[m->n], 0, sizeof(m->v[0]));
    m->n++;
    return 0;
}

static int parse_header(struct vma *v, char *line)
{
    char *p = line, *e;
    v->start = strtoull(p, &e, 16);
    if (*e != '-')
        return -1;
    v->end = strtoull(e + 1, &p, 16);
    while (*p == ' ')
        p++;
    if (strlen(p) < 4)
        return -1;
    memcpy(v->perms, p, 4);
    v->perms[4] = '\0';
    p += 4;
    v->offset = strtoull(p, &p, 16);
    v->dev_major = (unsigned)strtoul(p, &e, 16);
    if (*e != ':')
        return -1;
    v->dev_minor = (unsigned)strtoul(e + 1, &p, 16);
    v->inode = strtoull(p, &p, 10);
    while (*p == ' ')
        p++;
    v->path = p;
    return 0;
}

/* text is modified in place; vma paths point into it, so the caller keeps it. */
int maps_parse(struct vmas *out, char *text, bool smaps)
{
    out->have_smaps = smaps;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if ((line[0] >= '0' && line[0] <= '9') || (line[0] >= 'a' && line[0] <= 'f')) {
            if (push(out) < 0)
                return -1;
            if (parse_header(&out->v[out->n - 1], line) < 0) {
                out->n--;
                errno = EINVAL;
                return -1;
            }
            continue;
        }
        if (!out->n)
            continue;
        struct vma *v = &out->v[out->n - 1];
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        size_t klen = (size_t)(colon - line);
        uint64_t val = strtoull(colon + 1, NULL, 10) * 1024;
#define KEY(k) (klen == sizeof(k) - 1 && memcmp(line, k, klen) == 0)
        if (KEY("Rss"))
            v->rss = val;
        else if (KEY("Pss"))
            v->pss = val;
        else if (KEY("Swap"))
            v->swap = val;
        else if (KEY("Anonymous"))
            v->anon = val;
        else if (KEY("AnonHugePages"))
            v->anon_huge = val;
        else if (KEY("VmFlags")) {
            v->nr = strstr(colon, " nr") != NULL;
            v->nh = strstr(colon, " nh") != NULL;
        }
#undef KEY
    }
    return 0;
}

void maps_free(struct vmas *m)
{
    free(m->v);
    m->v = NULL;
    m->n = m->cap = 0;
}

/* Count present and swapped pages of [lo,hi) from /proc/PID/pagemap (one 64-bit
 * entry per page: bit 63 present, bit 62 swapped). */
static int pagemap_count(int fd, uint64_t lo, uint64_t hi, uint64_t *present, uint64_t *swapped)
{
    long ps = sysconf(_SC_PAGESIZE);
    uint64_t buf[512];
    *present = *swapped = 0;
    for (uint64_t a = lo; a < hi;) {
        uint64_t pages = (hi - a) / (uint64_t)ps;
        if (pages > 512)
            pages = 512;
        if (pages == 0)
            break;
        ssize_t r = pread(fd, buf, pages * 8, (off_t)(a / (uint64_t)ps * 8));
        if (r <= 0)
            return -1;
        size_t got = (size_t)r / 8;
        for (size_t i = 0; i < got; i++) {
            if (buf[i] >> 63 & 1)
                (*present)++;
            else if (buf[i] >> 62 & 1)
                (*swapped)++;
        }
        a += got * (uint64_t)ps;
    }
    *present *= (uint64_t)ps;
    *swapped *= (uint64_t)ps;
    return 0;
}

void range_usage(struct inspection *in, const struct vma *v, uint64_t lo, uint64_t hi,
                 struct range_use *u)
{
    if (lo <= v->start && hi >= v->end) {
        u->rss = v->rss;
        u->swap = v->swap;
        u->anon_huge = v->anon_huge;
        return;
    }
    if (lo < v->start)
        lo = v->start;
    if (hi > v->end)
        hi = v->end;
    uint64_t len = hi - lo, whole = v->end - v->start;
    /* huge pages: share of the mapping's (pagemap does not say which are huge) */
    u->anon_huge = (uint64_t)((double)v->anon_huge * (double)len / (double)whole);
    if (in->pagemap_fd >= 0 && v->rss &&
        pagemap_count(in->pagemap_fd, lo, hi, &u->rss, &u->swap) == 0)
        return;
    if (v->rss || v->swap)
        in->approx = true;
    u->rss = (uint64_t)((double)v->rss * (double)len / (double)whole);
    u->swap = (uint64_t)((double)v->swap * (double)len / (double)whole);
}
