/* fault.c: messages without stdio, and the reports that stop the process.
 *
 * Below every tier: any file may call into it, and it calls nothing above the page map.
 * A report releases every ebbmalloc lock its thread holds before abort(), so that a
 * crash handler that allocates (the JVM writes its error report from the SIGABRT
 * handler) finds the allocator usable instead of waiting for ever. */
#include <stdarg.h>
#include <stdlib.h>

#include "internal.h"

/* ---------------------------------------------------------------- messages
 * A small formatter (%s %d %u %zu %zd %lu %llu %x %p %%): stdio may allocate or hold
 * locks, so no path of ebbmalloc uses it. */
static size_t put_num(char *b, size_t room, unsigned long long v, unsigned base, bool neg) {
    char tmp[24];
    size_t n = 0, out = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    if (neg && out < room) b[out++] = '-';
    while (n && out < room) b[out++] = tmp[--n];
    return out;
}

static int vformat(char *buf, size_t size, const char *fmt, va_list ap) {
    size_t o = 0;
    if (!size) return 0;
    size_t room = size - 1;
    for (const char *f = fmt; *f && o < room; f++) {
        if (*f != '%') {
            buf[o++] = *f;
            continue;
        }
        f++;
        int lng = 0;
        bool zsz = false;
        while (*f == 'l') lng++, f++;
        if (*f == 'z') zsz = true, f++;
        unsigned long long u;
        long long s;
        switch (*f) {
        case 's': {
            const char *str = va_arg(ap, const char *);
            if (!str) str = "(null)";
            while (*str && o < room) buf[o++] = *str++;
            break;
        }
        case 'd':
            s = zsz ? (long long)va_arg(ap, ssize_t) : lng ? va_arg(ap, long long) : va_arg(ap, int);
            o +=
                put_num(buf + o, room - o, s < 0 ? -(unsigned long long)s : (unsigned long long)s, 10, s < 0);
            break;
        case 'u':
        case 'x':
            u = zsz ? va_arg(ap, size_t) : lng ? va_arg(ap, unsigned long long) : va_arg(ap, unsigned);
            o += put_num(buf + o, room - o, u, *f == 'x' ? 16 : 10, false);
            break;
        case 'p':
            u = (uintptr_t)va_arg(ap, void *);
            if (o + 2 <= room) buf[o++] = '0', buf[o++] = 'x';
            o += put_num(buf + o, room - o, u, 16, false);
            break;
        case '%': buf[o++] = '%'; break;
        default: buf[o++] = '?'; break;
        }
        if (!*f) break;
    }
    buf[o] = 0;
    return (int)o;
}

int ebbi_snprintf(char *buf, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = vformat(buf, n, fmt, ap);
    va_end(ap);
    return r;
}

void ebbi_fatal(const char *fmt, ...) {
    char buf[512];
    size_t o = (size_t)ebbi_snprintf(buf, sizeof buf, "ebbmalloc: ");
    va_list ap;
    va_start(ap, fmt);
    o += (size_t)vformat(buf + o, sizeof buf - o - 1, fmt, ap);
    va_end(ap);
    buf[o++] = '\n';
    ebbi_write_err(buf, o);
    ebbi_unlock_all_held();
    abort();
}

/* ---------------------------------------------------------------- misuse */
void ebbi_corrupt_link(void *obj) {
    unsigned cls = ebbi_pm_class((uintptr_t)obj);
    ebbi_fatal("malloc(): corrupted free list: the link in free block %p (%u-byte size class) "
               "was overwritten (heap overflow or use after free)",
               obj, ebbi_classes[cls].size);
}

/* The span whose pages hold address a, or NULL.  The page map knows every page of a
 * small-object span but only the first and last page of any other, so look back
 * through the leaf for the nearest page it knows (a diagnostic: no lock, and span
 * records are never unmapped, so a racing change gives a wrong answer, not a fault). */
static struct ebb_span *span_around(uintptr_t a) {
    if (a >> EBB_ADDR_BITS) return NULL;
    struct ebb_pm_leaf *leaf = ebbi_pm_leaf(a);
    if (!leaf) return NULL;
    for (size_t i = ebbi_pm_slot(a) + 1; i-- > 0;) {
        struct ebb_span *s = __atomic_load_n(&leaf->span[i], __ATOMIC_RELAXED);
        if (!s) continue;
        return a >= s->start && a < s->start + (s->npages << EBB_PAGE_SHIFT) ? s : NULL;
    }
    return NULL;
}

#define STALE_OR_INTERIOR \
    "not its start: an interior pointer, or a block freed earlier whose memory was reused"

/* Names the fault in p, which free() or realloc() could not accept, and stops. */
void ebbi_reject(const char *what, void *p) {
    unsigned cls = ebbi_pm_class((uintptr_t)p);
    if (cls) {
        struct ebb_span *sp = ebbi_pm_span((uintptr_t)p);
        if (sp && (uintptr_t)p < ebbi_span_blocks(sp))
            ebbi_fatal("%s: invalid pointer %p (before the first %u-byte block of its span)", what, p,
                       ebbi_classes[cls].size);
        if (!ebbi_pm_block_start((uintptr_t)p, cls))
            ebbi_fatal("%s: invalid pointer %p (inside a %u-byte block, " STALE_OR_INTERIOR ")", what, p,
                       ebbi_classes[cls].size);
        ebbi_fatal("%s: double free of %p (%u-byte size class)", what, p, ebbi_classes[cls].size);
    }
    struct ebb_span *s = span_around((uintptr_t)p);
    if (s && (s->state == SPAN_FREE || s->state == SPAN_RELEASING))
        ebbi_fatal("%s: double free of %p (large block, or a block whose pages are free already)", what, p);
    if (s) ebbi_fatal("%s: invalid pointer %p (inside a large block, " STALE_OR_INTERIOR ")", what, p);
    ebbi_fatal("%s: invalid pointer %p (not a block ebbmalloc handed out, or one already freed "
               "whose memory went back)",
               what, p);
}
