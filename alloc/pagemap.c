/* pagemap.c: from an address to its span and size class, with no header on objects.
 * Readers (free, malloc_usable_size) take no lock: a leaf is published with a release
 * store after it is mapped, and entries are written before the memory they describe is
 * handed out. */
#include "internal.h"

struct ebb_pm_leaf *ebbi_pm_root[1 << EBB_PM_ROOT_BITS];
static ebb_lock_t pm_lock;
static size_t pm_leaves;

bool ebbi_pm_ensure(uintptr_t start, size_t len) {
    if (!len) return true;
    uintptr_t last = start + len - 1;
    if (last < start || (last >> EBB_ADDR_BITS)) return false;
    bool ok = true;
    ebbi_lock(&pm_lock);
    for (uintptr_t i = start >> EBB_PM_LEAF_SHIFT; i <= last >> EBB_PM_LEAF_SHIFT; i++) {
        if (ebbi_pm_root[i]) continue;
        struct ebb_pm_leaf *l = ebbi_os.map(sizeof(struct ebb_pm_leaf));
        if (!l) {
            ok = false;
            break;
        }
        __atomic_store_n(&ebbi_pm_root[i], l, __ATOMIC_RELEASE);
        __atomic_store_n(&pm_leaves, pm_leaves + 1, __ATOMIC_RELAXED);
    }
    ebbi_unlock(&pm_lock);
    return ok;
}

void ebbi_pm_set(uintptr_t page_addr, struct ebb_span *s, unsigned cls) {
    struct ebb_pm_leaf *l = ebbi_pm_leaf(page_addr);
    ebb_assert(l);
    size_t i = ebbi_pm_slot(page_addr);
    l->span[i] = s;
    l->start[i] = s ? s->start : 0;
    __atomic_store_n(&l->cls[i], (uint8_t)cls, __ATOMIC_RELEASE);
}

/* SMALL spans: every page, with the class.  Others: first and last page, class 0. */
void ebbi_pm_set_span(struct ebb_span *s) {
    uintptr_t end = s->start + (s->npages << EBB_PAGE_SHIFT);
    if (s->state == SPAN_SMALL) {
        for (uintptr_t a = s->start; a < end; a += EBB_PAGE) ebbi_pm_set(a, s, s->cls);
    } else {
        ebbi_pm_set(s->start, s, 0);
        ebbi_pm_set(end - EBB_PAGE, s, 0);
    }
}

/* Forget every page of the span (its pages become part of another span next). */
void ebbi_pm_clear_span(struct ebb_span *s) {
    uintptr_t end = s->start + (s->npages << EBB_PAGE_SHIFT);
    if (s->state == SPAN_SMALL) {
        for (uintptr_t a = s->start; a < end; a += EBB_PAGE) ebbi_pm_set(a, NULL, 0);
    } else {
        ebbi_pm_set(s->start, NULL, 0);
        ebbi_pm_set(end - EBB_PAGE, NULL, 0);
    }
}

/* Resident bytes of the page map, estimated: only touched parts of the leaves are in
 * memory, about one class byte, one span pointer and one start per page of `mapped`,
 * plus a page of the root per leaf. */
size_t ebbi_pm_bytes(size_t mapped) {
    return (mapped >> EBB_PAGE_SHIFT) * (1 + sizeof(struct ebb_span *) + sizeof(uintptr_t)) +
           __atomic_load_n(&pm_leaves, __ATOMIC_RELAXED) * 4096;
}

void ebbi_pm_fork_prepare(void) { ebbi_lock(&pm_lock); }
void ebbi_pm_fork_parent(void) { ebbi_unlock(&pm_lock); }
void ebbi_pm_fork_child(void) { ebbi_lock_reset(&pm_lock); }
