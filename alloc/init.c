/* init.c: first use, fork, and the end of the process.
 *
 * Initialisation happens on the first slow-path call, which may come from the dynamic
 * loader before any constructor has run: it reads the environment and a few /proc and
 * /sys files with plain system calls and allocates nothing from anyone.  The fork
 * handlers are registered from a constructor, not from the first malloc: libc's
 * pthread_atfork takes its atfork lock and allocates under it, so registering from
 * inside a malloc that libc itself made while registering a handler would wait for ever.
 *
 * Fork: the prepare handler takes every ebbmalloc lock so the child inherits consistent
 * structures.  libc's fork takes the stdio list lock after the handlers; a thread inside
 * fflush(NULL) or printf holds that lock and may be about to malloc, which would deadlock
 * against a forking thread that holds ebbmalloc's locks and waits for stdio's.  So the
 * handler takes the stdio list lock first (it is recursive, libc's own fork takes it
 * again), then ebbmalloc's, in the one order every other path uses.  Only where libc
 * takes it too, in a multi-threaded process: libc resets it in that child, and with one
 * thread it leaves it alone, so that stdio interrupted by a signal handler's fork resumes
 * in the child with its lock as it was.
 *
 * Fork from a signal handler: when the handler interrupted ebbmalloc on the forking
 * thread itself (it holds or is taking an ebbmalloc lock, has shared state in hand, is
 * in a thread-cache slow path, or is inside these handlers: ebbi_inside()), the handlers take no lock and change
 * nothing, as libc's fork does in a single-threaded process.  Taking the locks would wait
 * for ever for the thread's own; resetting or finishing anything would pull state from
 * under the interrupted frames, which resume in the parent and in the child alike.  The
 * child then has the parent's state exactly: if the process had one thread, it may go
 * on as the parent does; otherwise it may call only async-signal-safe functions, as
 * POSIX says.  Such forks nest (a handler's fork may itself be interrupted), so each
 * thread counts the forks it skipped, and the parent and child handlers of a skipped
 * fork only count down. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/single_threaded.h>

#include "internal.h"

_Atomic int ebbi_init_state;
/* Held from the store of 1 to the store of 2 in ebbi_init_slow, and by a fork's prepare
 * handler: so a fork never copies a half-done initialisation (state 1, the lock held by a
 * thread the child does not have), which would leave the child's first malloc waiting
 * for ever.  It is the outermost ebbmalloc lock (initialisation takes others inside it);
 * stdio's list lock comes before it, since a thread in printf may malloc for the first
 * time.  Only a process that starts threads before its first malloc meets it: a program
 * linked with the ebb_ API, whose first ebb_malloc may come from any thread. */
static ebb_lock_t init_lock;
void (*ebbi_init_hook)(void);

/* libc's stdio list lock (exported by glibc). */
extern void _IO_list_lock(void) __attribute__((weak));
extern void _IO_list_unlock(void) __attribute__((weak));

static EBB_TLS unsigned forks_skipped; /* this thread's forks whose prepare took nothing */
/* Whether this fork's prepare took the stdio list lock: only in a multi-threaded process,
 * as libc does.  With one thread nobody else can hold it, and libc's fork leaves it alone
 * in the child (a fork from a signal handler may have interrupted stdio, which then
 * resumes in the child and releases it): the child must not reset it either. */
static EBB_TLS bool took_io_lock;

static void fork_prepare(void) {
    if (ebbi_inside()) {
        forks_skipped++;
        return;
    }
    ebbi_held.forking = true;
    atomic_signal_fence(memory_order_seq_cst);
    took_io_lock = _IO_list_lock && !__libc_single_threaded;
    if (took_io_lock) _IO_list_lock();
    ebbi_lock_raw(&init_lock);
    ebbi_tc_fork_prepare();
    ebbi_central_fork_prepare();
    ebbi_lock_raw(&ebbi_ph_lock);
    ebbi_pm_fork_prepare();
    ebbi_meta_fork_prepare();
}

static void fork_parent(void) {
    if (forks_skipped) {
        forks_skipped--;
        return;
    }
    ebbi_meta_fork_parent();
    ebbi_pm_fork_parent();
    ebbi_unlock_raw(&ebbi_ph_lock);
    ebbi_central_fork_parent();
    ebbi_tc_fork_parent();
    ebbi_unlock_raw(&init_lock);
    if (took_io_lock) _IO_list_unlock();
    atomic_signal_fence(memory_order_seq_cst);
    ebbi_held.forking = false;
}

static void fork_child(void) {
    if (forks_skipped) {
        forks_skipped--;
        /* What no interrupted frame can be using: that no release thread runs here, and
         * the parent's stats page unless this thread may be writing it (working). */
        ebbi_release_fork_child(true);
        if (!ebbi_held.working) ebbi_shm_fork_child();
        ebbi_prof_fork_child(true); /* the parent's heap profile becomes private, and off */
        return;
    }
    ebbi_meta_fork_child();
    ebbi_pm_fork_child();
    ebbi_lock_reset(&ebbi_ph_lock);
    ebbi_page_fork_child();
    ebbi_central_fork_child();
    ebbi_tc_fork_child();
    ebbi_lock_reset(&init_lock);
    ebbi_shm_fork_child();
    ebbi_prof_fork_child(false);
    /* The stdio list lock: libc reset it in the child when it took it (the process had
     * threads: took_io_lock); otherwise neither took it. */
    atomic_signal_fence(memory_order_seq_cst);
    ebbi_held.forking = false;
    ebbi_release_fork_child(false);
}

/* errno is the caller's again on the way out: the file reads and number parsing of
 * initialisation happen inside its first malloc. */
void ebbi_init_slow(void) {
    int saved = errno;
    ebbi_lock(&init_lock);
    if (atomic_load(&ebbi_init_state) == 2) {
        ebbi_unlock(&init_lock);
        errno = saved;
        return;
    }
    atomic_store(&ebbi_init_state, 1);
    if (ebbi_init_hook) ebbi_init_hook();
    ebbi_options_init();
    ebbi_link_keys_init();
    ebbi_pm_init(); /* before the first span */
    ebbi_central_init();
    ebbi_release_init();
    ebbi_stats_init();
    ebbi_tc_init();
    ebbi_size_class_init(); /* last: from here on the fast path serves requests */
    atomic_store_explicit(&ebbi_init_state, 2, memory_order_release);
    ebbi_unlock(&init_lock);
    errno = saved;
}

/* At load, before main and before any fork: a point where libc holds none of its locks
 * for us.  The handlers work whether or not initialisation has happened (the locks are
 * static). */
__attribute__((constructor)) static void register_fork_handlers(void) {
    int saved = errno;
    pthread_atfork(fork_prepare, fork_parent, fork_child);
#if EBB_OVERRIDE
    ebbi_os_find_key_delete(); /* see there */
#endif
    errno = saved;
}

__attribute__((destructor)) static void at_exit(void) {
    if (atomic_load(&ebbi_init_state) != 2) return;
    /* exit() from a signal handler that interrupted ebbmalloc (a skipped fork's child
     * does this): the report would wait for this thread's own locks. */
    if (ebbi_opt(EBB_OPT_STATS) && !ebbi_inside()) ebbi_stats_at_exit();
    ebbi_shm_unlink();
    ebbi_prof_at_exit();
}
