/* init.c: first use, fork, and the end of the process.
 *
 * Initialisation happens on the first slow-path call, which may come from the dynamic
 * loader before any constructor has run: it reads the environment and a few /proc and
 * /sys files with plain system calls and allocates nothing from anyone.  Registering the
 * fork handlers (which may allocate inside libc) happens after the allocator is usable.
 *
 * Fork: the prepare handler takes every ebbmalloc lock so the child inherits consistent
 * structures.  libc's fork takes the stdio list lock after the handlers; a thread inside
 * fflush(NULL) or printf holds that lock and may be about to malloc, which would deadlock
 * against a forking thread that holds ebbmalloc's locks and waits for stdio's.  So the
 * handler takes the stdio list lock first (it is recursive, libc's own fork takes it
 * again), then ebbmalloc's, in the one order every other path uses. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>

#include "internal.h"

_Atomic int ebbi_init_state;
static ebb_lock_t init_lock;
uintptr_t ebbi_link_secret;
uint64_t ebbi_free_key;

/* libc's stdio list lock (exported by glibc). */
extern void _IO_list_lock(void) __attribute__((weak));
extern void _IO_list_unlock(void) __attribute__((weak));
extern void _IO_list_resetlock(void) __attribute__((weak));

static void fork_prepare(void) {
    if (_IO_list_lock) _IO_list_lock();
    ebbi_tc_fork_prepare();
    ebbi_central_fork_prepare();
    ebbi_lock(&ebbi_ph_lock);
    ebbi_pm_fork_prepare();
    ebbi_meta_fork_prepare();
}

static void fork_parent(void) {
    ebbi_meta_fork_parent();
    ebbi_pm_fork_parent();
    ebbi_unlock(&ebbi_ph_lock);
    ebbi_central_fork_parent();
    ebbi_tc_fork_parent();
    if (_IO_list_unlock) _IO_list_unlock();
}

static void fork_child(void) {
    ebbi_meta_fork_child();
    ebbi_pm_fork_child();
    ebbi_lock_reset(&ebbi_ph_lock);
    ebbi_page_fork_child();
    ebbi_central_fork_child();
    ebbi_tc_fork_child();
    ebbi_release_fork_child();
    ebbi_shm_fork_child();
    /* libc has reset its own stdio locks in the child; resetting again is harmless and
     * also covers a fork from a single-threaded parent, where libc did not take it. */
    if (_IO_list_resetlock) _IO_list_resetlock();
}

void ebbi_init_slow(void) {
    ebbi_lock(&init_lock);
    if (atomic_load(&ebbi_init_state) == 2) {
        ebbi_unlock(&init_lock);
        return;
    }
    atomic_store(&ebbi_init_state, 1);
    ebbi_options_init();
    ebbi_link_secret = (uintptr_t)ebbi_random64();
    ebbi_free_key = ebbi_random64() | 1;
    ebbi_central_init();
    ebbi_release_init();
    ebbi_stats_init();
    ebbi_tc_init();
    ebbi_size_class_init(); /* last: from here on the fast path serves requests */
    atomic_store_explicit(&ebbi_init_state, 2, memory_order_release);
    ebbi_unlock(&init_lock);
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

__attribute__((destructor)) static void at_exit(void) {
    if (atomic_load(&ebbi_init_state) != 2) return;
    if (ebbi_opt(EBB_OPT_STATS)) ebbi_stats_at_exit();
    ebbi_shm_unlink();
}
