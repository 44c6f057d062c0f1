/* Test helper: a process with ebbmalloc as its malloc that publishes its stats page.
 *
 *   shm-publisher [CHILDREN [PID]]
 *
 * Forks CHILDREN children first (each publishes its own page too), the first with pid
 * PID in its PID namespace (set through /proc/sys/kernel/ns_last_pid); every process
 * allocates until its page shows in its own maps (at most 60 s), prints
 * "ready <pid> <page path>" (the pid as it sees itself) and waits to be killed. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The stats page among this process's mappings (not its heap profile). */
static int find_page(char *out, size_t n) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return 0;
    char line[1024];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        char *p = strstr(line, "/dev/shm/ebbmalloc.");
        if (!p) continue;
        p[strcspn(p, "\n")] = 0;
        if (strstr(p, ".heap")) continue;
        snprintf(out, n, "%s", p);
        found = 1;
    }
    fclose(f);
    return found;
}

int main(int argc, char **argv) {
    int children = argc > 1 ? atoi(argv[1]) : 0;
    if (children && argc > 2) {
        FILE *f = fopen("/proc/sys/kernel/ns_last_pid", "w");
        if (!f || fprintf(f, "%d", atoi(argv[2]) - 1) < 0 || fclose(f)) {
            printf("cannot set ns_last_pid\n");
            return 1;
        }
    }
    for (int i = 0; i < children; i++)
        if (fork() == 0) break;
    char page[512];
    double deadline = now() + 60;
    while (!find_page(page, sizeof page)) {
        if (now() > deadline) {
            printf("timeout %d\n", (int)getpid());
            return 1;
        }
        char *volatile p = malloc(1 << 20); /* large blocks: the slow path, the release tick */
        memset(p, 1, 4096);
        free(p);
        usleep(2000);
    }
    printf("ready %d %s\n", (int)getpid(), page);
    fflush(stdout);
    for (;;) pause();
}
