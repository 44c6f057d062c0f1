/* meta.c: memory for ebbmalloc's own records.  Carved from mappings of 1 MiB with a
 * bump pointer and never returned; span records are recycled through a free list.
 * ebbmalloc never calls malloc for itself. */
#include <string.h>

#include "internal.h"

#define META_CHUNK ((size_t)1 << 20)

static ebb_lock_t meta_lock;
static char *meta_bump, *meta_end;
static size_t meta_mapped; /* bytes of chunks, for stats */
static struct ebb_span *span_free;

static void *meta_alloc_locked(size_t size) {
    size = (size + 63) & ~(size_t)63;
    if ((size_t)(meta_end - meta_bump) < size) {
        size_t chunk = size > META_CHUNK ? size : META_CHUNK;
        char *c = ebbi_os.map(chunk);
        if (!c) return NULL;
        meta_bump = c, meta_end = c + chunk;
        meta_mapped += chunk;
    }
    void *p = meta_bump;
    meta_bump += size;
    return p;
}

void *ebbi_meta_alloc(size_t size) {
    ebbi_lock(&meta_lock);
    void *p = meta_alloc_locked(size);
    ebbi_unlock(&meta_lock);
    return p;
}

struct ebb_span *ebbi_span_new(void) {
    ebbi_lock(&meta_lock);
    struct ebb_span *s = span_free;
    if (s)
        span_free = s->next;
    else
        s = meta_alloc_locked(sizeof *s);
    ebbi_unlock(&meta_lock);
    if (s) memset(s, 0, sizeof *s);
    return s;
}

void ebbi_span_delete(struct ebb_span *s) {
    ebbi_lock(&meta_lock);
    s->state = 0;
    s->next = span_free;
    span_free = s;
    ebbi_unlock(&meta_lock);
}

size_t ebbi_meta_bytes(void) {
    ebbi_lock(&meta_lock);
    /* The untouched part of the current chunk is not resident: count what was carved. */
    size_t b = meta_mapped - (size_t)(meta_end - meta_bump);
    ebbi_unlock(&meta_lock);
    return b;
}

void ebbi_meta_fork_prepare(void) { ebbi_lock(&meta_lock); }
void ebbi_meta_fork_parent(void) { ebbi_unlock(&meta_lock); }
void ebbi_meta_fork_child(void) { ebbi_lock_reset(&meta_lock); }
