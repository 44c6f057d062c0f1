/* What the stand-ins for ebbmalloc's publishers (fake-stats-page, fake-heap-prof) share:
 * the files are named, created and mapped as the library does it, and the stats page's
 * header is filled the same way. */
#ifndef EBB_FAKE_PUBLISH_H
#define EBB_FAKE_PUBLISH_H

#include <stddef.h>
#include <stdint.h>

#include "ebbmalloc.h"

/* The inode of this process's PID namespace: the library names its files after it. */
unsigned long long fake_pid_ns(void);
/* This process's start time (field 22 of /proc/self/stat), 0 if unreadable. */
uint64_t fake_start_time(void);
/* Milliseconds of the real-time clock, as updated_ms counts them. */
uint64_t fake_now_ms(void);
/* Creates (or truncates) the file at path with size bytes and maps it MAP_SHARED; its
 * descriptor in *fdp.  Exits with a message when it cannot. */
void *fake_map_file(const char *path, size_t size, int *fdp);
/* A stats page's header as the library writes it: this process, seq 2 (one update). */
void fake_stats_header(struct ebb_shm_page *pg);
/* Says "ready" on stdout and waits for a signal to end it. */
__attribute__((noreturn)) void fake_serve(void);

#endif
