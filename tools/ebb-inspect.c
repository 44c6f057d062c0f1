/* ebb-inspect: where a process's native memory sits.
 *
 *   ebb-inspect [--json] [--watch SECONDS [--count N]] PID
 *
 * Exit status: 0 complete; 1 usage error, no such process, or the process exited;
 * 2 partial: the mappings were unreadable (permission), only totals were printed. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "inspect/inspect.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ebb-inspect [--json] [--watch SECONDS [--count N]] PID\n"
            "Shows where the resident memory of process PID sits: glibc main heap and per-thread\n"
            "arenas, thread stacks, Java heap / metaspace / code cache of a JVM, ebbmalloc's own\n"
            "breakdown, shared libraries, mapped files, other anonymous memory, huge pages, and\n"
            "the cgroup's usage and limit, with hints.\n"
            "  --json           print JSON (one object per sample)\n"
            "  --watch SECONDS  sample every SECONDS and show growth since the first sample\n"
            "  --count N        with --watch: stop after N samples (default: until interrupted)\n"
            "  --no-memory-read never read the process's memory: glibc arena heaps are then\n"
            "                   recognised by their layout only, without checking their headers\n"
            "Exit status: 0 complete, 1 error or process gone, 2 partial (mappings unreadable).\n");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    bool json = false;
    double watch = 0;
    long count = 0;
    unsigned flags = 0;
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},       {"watch", required_argument, NULL, 'w'},
        {"count", required_argument, NULL, 'n'}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},    {"no-memory-read", no_argument, NULL, 'M'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "jw:n:hV", opts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'j':
            json = true;
            break;
        case 'w':
            watch = strtod(optarg, &end);
            if (*end || watch <= 0) {
                fprintf(stderr, "ebb-inspect: --watch needs a positive number of seconds\n");
                return 1;
            }
            break;
        case 'n':
            count = strtol(optarg, &end, 10);
            if (*end || count <= 0) {
                fprintf(stderr, "ebb-inspect: --count needs a positive number\n");
                return 1;
            }
            break;
        case 'M':
            flags |= INSPECT_NO_MEMORY;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("ebb-inspect (ebbmalloc) %d.%d.%d\n", EBB_VERSION_MAJOR, EBB_VERSION_MINOR,
                   EBB_VERSION_PATCH);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 1;
    }
    char *end;
    long pid = strtol(argv[optind], &end, 10);
    if (*end || pid <= 0 || pid > 0x3fffffff) {
        fprintf(stderr, "ebb-inspect: '%s' is not a pid\n", argv[optind]);
        return 1;
    }

    char err[256];
    struct inspection base, cur;
    int rc = inspect(&base, (pid_t)pid, flags, err, sizeof(err));
    if (rc == 1) {
        fprintf(stderr, "ebb-inspect: %s\n", err);
        return 1;
    }
    if (json)
        report_json(stdout, &base, NULL, 0);
    else
        report_text(stdout, &base);
    if (rc == 2)
        fprintf(stderr, "ebb-inspect: incomplete: the mappings of process %ld could not be read "
                        "(see \"could not read\")\n", pid);
    fflush(stdout);

    if (watch > 0) {
        double t0 = now_s();
        for (long n = 1; !count || n < count; n++) {
            struct timespec ts = {(time_t)watch, (long)((watch - (double)(time_t)watch) * 1e9)};
            while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
            int r = inspect(&cur, (pid_t)pid, flags, err, sizeof(err));
            if (r == 1) {
                fprintf(stderr, "ebb-inspect: %s\n", err);
                inspection_free(&base);
                return 1;
            }
            if (json)
                report_json(stdout, &cur, &base, now_s() - t0);
            else
                report_growth(stdout, &cur, &base, now_s() - t0);
            fflush(stdout);
            if (r > rc)
                rc = r;
            inspection_free(&cur);
        }
    }
    inspection_free(&base);
    return rc;
}
