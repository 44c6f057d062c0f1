/* Measuring part of a mapping (the mappings themselves: procfs_vmas_parse). */
#define _GNU_SOURCE
#include <unistd.h>

#include "inspect.h"

/* Count present and swapped pages of [lo,hi) from /proc/PID/pagemap (one 64-bit
 * entry per page: bit 63 present, bit 62 swapped). */
static int pagemap_count(int fd, uint64_t lo, uint64_t hi, uint64_t *present, uint64_t *swapped) {
    long ps = sysconf(_SC_PAGESIZE);
    uint64_t buf[512];
    *present = *swapped = 0;
    for (uint64_t a = lo; a < hi;) {
        uint64_t pages = (hi - a) / (uint64_t)ps;
        if (pages > 512) pages = 512;
        if (pages == 0) break;
        ssize_t r = pread(fd, buf, pages * 8, (off_t)(a / (uint64_t)ps * 8));
        if (r <= 0) return -1;
        size_t got = (size_t)r / 8;
        for (size_t i = 0; i < got; i++) {
            if (buf[i] >> 63 & 1) (*present)++;
            else if (buf[i] >> 62 & 1) (*swapped)++;
        }
        a += got * (uint64_t)ps;
    }
    *present *= (uint64_t)ps;
    *swapped *= (uint64_t)ps;
    return 0;
}

void range_usage(struct inspection *in, const struct procfs_vma *v, uint64_t lo, uint64_t hi,
                 struct range_use *u) {
    if (lo <= v->start && hi >= v->end) {
        u->rss = v->rss;
        u->swap = v->swap;
        u->anon_huge = v->anon_huge;
        return;
    }
    if (lo < v->start) lo = v->start;
    if (hi > v->end) hi = v->end;
    uint64_t len = hi - lo, whole = v->end - v->start;
    /* huge pages: share of the mapping's (pagemap does not say which are huge) */
    u->anon_huge = (uint64_t)((double)v->anon_huge * (double)len / (double)whole);
    if (in->pagemap_fd >= 0 && v->rss && pagemap_count(in->pagemap_fd, lo, hi, &u->rss, &u->swap) == 0)
        return;
    if (v->rss || v->swap) in->approx = true;
    u->rss = (uint64_t)((double)v->rss * (double)len / (double)whole);
    u->swap = (uint64_t)((double)v->swap * (double)len / (double)whole);
}
