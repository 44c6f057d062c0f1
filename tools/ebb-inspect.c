/* ebb-inspect: where a process's native memory sits.
 *
 *   ebb-inspect [--json] [--watch SECONDS [--count N]] PID
 *   ebb-inspect --heap [--top N] [--json | --collapsed | --pprof FILE | --baseline FILE |
 *               --diff FILE] [--watch SECONDS [--count N]] PID
 *
 * Exit status: 0 complete; 1 usage error, no such process, or the process exited;
 * 2 partial: the mappings were unreadable (permission), only totals were printed;
 * 3 (--heap) the process publishes no heap profile, or one that is not trusted. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "inspect/inspect.h"

static void usage(FILE *f) {
    fprintf(f, "usage: ebb-inspect [--json] [--watch SECONDS [--count N]] PID\n"
               "Shows where the resident memory of process PID sits: glibc main heap and per-thread\n"
               "arenas, thread stacks, Java heap / metaspace / code cache of a JVM, ebbmalloc's own\n"
               "breakdown, shared libraries, mapped files, other anonymous memory, huge pages, and\n"
               "the cgroup's usage and limit, with hints.\n"
               "  --json           print JSON (one object per sample)\n"
               "  --watch SECONDS  sample every SECONDS and show growth since the first sample\n"
               "  --count N        with --watch: stop after N samples (default: until interrupted)\n"
               "  --no-memory-read never read the process's memory: glibc arena heaps are then\n"
               "                   recognised by their layout only, without checking their headers\n"
               "Heap profile of a process using ebbmalloc (which call stacks hold the memory):\n"
               "  --heap           the top stacks by estimated live bytes, symbolised, a summary by\n"
               "                   library and hints (with --watch: growth per stack over time)\n"
               "  --top N          with --heap: how many stacks to show (default 10)\n"
               "  --collapsed      one line per stack, root first, frames joined by ';', then the\n"
               "                   estimated live bytes (flamegraph.pl, speedscope)\n"
               "  --pprof FILE     write a gzip-compressed pprof profile.proto to FILE\n"
               "  --baseline FILE  save the profile to FILE for a later --diff\n"
               "  --diff FILE      show the stacks whose live bytes grew since the baseline FILE\n"
               "Exit status: 0 complete, 1 error or process gone, 2 partial (mappings unreadable),\n"
               "3 no heap profile, or one not trusted (--heap).\n");
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct heap_opts {
    bool json, collapsed;
    const char *pprof, *baseline, *diff;
    size_t top;
    double watch;
    long count;
};

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* One heap profile, read, checked and symbolised; 0, or the exit status. */
static int heap_snapshot(struct inspection *in, struct heap_profile *hp, struct symbolizer *sym, long pid,
                         unsigned flags, bool json) {
    char err[256];
    int rc = inspect(in, (pid_t)pid, flags, err, sizeof(err));
    if (rc == 1) {
        fprintf(stderr, "ebb-inspect: %s\n", err);
        return 1;
    }
    if (rc == 2) {
        fprintf(stderr,
                "ebb-inspect: the mappings of process %ld could not be read: no heap "
                "profile without them (run as root or as the process's user)\n",
                pid);
        inspection_free(in);
        return 2;
    }
    heap_read(in, hp);
    if (hp->state != HEAP_OK) {
        if (json) {
            in->heap = hp;
            report_json(stdout, in, NULL, 0);
        }
        fprintf(stderr, "ebb-inspect: no heap profile %s for process %ld: %s\n",
                hp->state == HEAP_REFUSED ? "trusted" : "published", pid, hp->reason);
        heap_free(hp);
        inspection_free(in);
        return 3;
    }
    if (heap_symbolize(sym, in, hp) < 0)
        fprintf(stderr,
                "ebb-inspect: /proc/%ld/maps could not be read again: frames are "
                "symbolised against the mappings read before the profile\n",
                pid);
    heap_attribute(hp);
    return 0;
}

static int run_heap(long pid, unsigned flags, const struct heap_opts *o) {
    struct inspection base, cur;
    struct heap_profile hp, hp2, old;
    struct heap_growth g;
    char err[512];
    struct symbolizer *sym = sym_new();
    if (!sym) {
        fprintf(stderr, "ebb-inspect: out of memory\n");
        return 1;
    }
    if (o->diff && heap_baseline_load(o->diff, &old, err, sizeof(err)) < 0) {
        fprintf(stderr, "ebb-inspect: %s\n", err);
        sym_free(sym);
        return 1;
    }
    int rc = heap_snapshot(&base, &hp, sym, pid, flags, o->json);
    if (rc) {
        if (o->diff) heap_free(&old);
        sym_free(sym);
        return rc;
    }
    double t0 = now_s();
    if (o->collapsed) {
        heap_report_collapsed(stdout, &hp);
    } else if (o->pprof) {
        if (heap_pprof_write(o->pprof, &base, &hp, err, sizeof(err)) < 0) {
            fprintf(stderr, "ebb-inspect: %s\n", err);
            rc = 1;
        } else {
            printf("wrote a pprof heap profile of process %ld (%zu stacks) to %s\n", pid, hp.n, o->pprof);
        }
    } else if (o->diff) {
        if (heap_growth(&old, &hp, &g) < 0) {
            fprintf(stderr, "ebb-inspect: out of memory\n");
            rc = 1;
        } else {
            if (old.pid != hp.pid || old.start_time != base.proc.start_time)
                fprintf(o->json ? stderr : stdout,
                        "(the baseline is of another process, pid %d: stacks are compared by "
                        "their symbolised frames)\n",
                        (int)old.pid);
            if (o->json) {
                base.heap = &hp;
                base.heap_growth = &g;
                report_json(stdout, &base, NULL, 0);
            } else {
                heap_report_diff(stdout, &base, &hp, &g, o->diff, o->top);
            }
            heap_growth_free(&g);
        }
        heap_free(&old);
    } else {
        if (o->json) {
            base.heap = &hp;
            report_json(stdout, &base, NULL, 0);
        } else {
            heap_report_text(stdout, &base, &hp, o->top);
        }
        if (o->baseline) {
            if (heap_baseline_save(o->baseline, &base, &hp, err, sizeof(err)) < 0) {
                fprintf(stderr, "ebb-inspect: %s\n", err);
                rc = 1;
            } else {
                fprintf(o->json ? stderr : stdout,
                        "\nbaseline of %zu stacks saved to %s "
                        "(compare later: ebb-inspect --heap --diff %s %ld)\n",
                        hp.n, o->baseline, o->baseline, pid);
            }
        }
    }
    fflush(stdout);

    for (long n = 1; o->watch > 0 && rc == 0 && (!o->count || n < o->count); n++) {
        sleep_s(o->watch);
        int r = heap_snapshot(&cur, &hp2, sym, pid, flags, false);
        if (r) {
            rc = r;
            break;
        }
        if (heap_growth(&hp, &hp2, &g) == 0) {
            g.elapsed_s = now_s() - t0;
            if (o->json) {
                cur.heap = &hp2;
                cur.heap_growth = &g;
                report_json(stdout, &cur, &base, g.elapsed_s);
            } else {
                heap_report_watch(stdout, &hp2, &g, o->top);
            }
            heap_growth_free(&g);
        }
        fflush(stdout);
        heap_free(&hp2);
        inspection_free(&cur);
    }
    heap_free(&hp);
    inspection_free(&base);
    sym_free(sym);
    return rc;
}

/* What the command line asks for. */
struct cli {
    bool json, heap;
    double watch;
    long count;
    unsigned flags;
    struct heap_opts ho;
    long pid;
};

/* One option into *a; returns -1 to go on, or the exit status to stop with. */
static int take_option(struct cli *a, int c) {
    char *end;
    switch (c) {
    case 'j': a->json = true; return -1;
    case 'w':
        a->watch = strtod(optarg, &end);
        if (*end || a->watch <= 0) {
            fprintf(stderr, "ebb-inspect: --watch needs a positive number of seconds\n");
            return 1;
        }
        return -1;
    case 'n':
        a->count = strtol(optarg, &end, 10);
        if (*end || a->count <= 0) {
            fprintf(stderr, "ebb-inspect: --count needs a positive number\n");
            return 1;
        }
        return -1;
    case 'M': a->flags |= INSPECT_NO_MEMORY; return -1;
    case 'H': a->heap = true; return -1;
    case 'C': a->heap = a->ho.collapsed = true; return -1;
    case 'P':
        a->heap = true;
        a->ho.pprof = optarg;
        return -1;
    case 'B':
        a->heap = true;
        a->ho.baseline = optarg;
        return -1;
    case 'D':
        a->heap = true;
        a->ho.diff = optarg;
        return -1;
    case 'T': {
        long t = strtol(optarg, &end, 10);
        if (*end || t <= 0) {
            fprintf(stderr, "ebb-inspect: --top needs a positive number\n");
            return 1;
        }
        a->ho.top = (size_t)t;
        return -1;
    }
    case 'h': usage(stdout); return 0;
    case 'V':
        printf("ebb-inspect (ebbmalloc) %d.%d.%d\n", EBB_VERSION_MAJOR, EBB_VERSION_MINOR, EBB_VERSION_PATCH);
        return 0;
    default: usage(stderr); return 1;
    }
}

/* The options and the pid; returns -1 to go on, or the exit status to stop with. */
static int parse_args(int argc, char **argv, struct cli *a) {
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"watch", required_argument, NULL, 'w'},
        {"count", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"no-memory-read", no_argument, NULL, 'M'},
        {"heap", no_argument, NULL, 'H'},
        {"collapsed", no_argument, NULL, 'C'},
        {"pprof", required_argument, NULL, 'P'},
        {"baseline", required_argument, NULL, 'B'},
        {"diff", required_argument, NULL, 'D'},
        {"top", required_argument, NULL, 'T'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "jw:n:hV", opts, NULL)) != -1) {
        int st = take_option(a, c);
        if (st >= 0) return st;
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 1;
    }
    char *end;
    a->pid = strtol(argv[optind], &end, 10);
    if (*end || a->pid <= 0 || a->pid > 0x3fffffff) {
        fprintf(stderr, "ebb-inspect: '%s' is not a pid\n", argv[optind]);
        return 1;
    }
    return -1;
}

/* --heap and the outputs that go with it. */
static int heap_mode(struct cli *a) {
    struct heap_opts *ho = &a->ho;
    int outputs = ho->collapsed + !!ho->pprof + !!ho->baseline + !!ho->diff;
    if (outputs > 1 || (a->json && (ho->collapsed || ho->pprof))) {
        fprintf(stderr, "ebb-inspect: --collapsed, --pprof, --baseline and --diff go one at a "
                        "time, and --json only with --baseline or --diff\n");
        return 1;
    }
    if (a->watch > 0 && outputs) {
        fprintf(stderr, "ebb-inspect: --watch goes with --heap alone (growth per stack over "
                        "time), not with --collapsed, --pprof, --baseline or --diff\n");
        return 1;
    }
    ho->json = a->json;
    ho->watch = a->watch;
    ho->count = a->count;
    return run_heap(a->pid, a->flags, ho);
}

/* Where the process's memory sits, once or (--watch) again and again against the first
 * reading. */
static int memory_mode(const struct cli *a) {
    char err[256];
    struct inspection base, cur;
    int rc = inspect(&base, (pid_t)a->pid, a->flags, err, sizeof(err));
    if (rc == 1) {
        fprintf(stderr, "ebb-inspect: %s\n", err);
        return 1;
    }
    if (a->json) report_json(stdout, &base, NULL, 0);
    else report_text(stdout, &base);
    if (rc == 2)
        fprintf(stderr,
                "ebb-inspect: incomplete: the mappings of process %ld could not be read "
                "(see \"could not read\")\n",
                a->pid);
    fflush(stdout);

    if (a->watch > 0) {
        double t0 = now_s(), watch = a->watch;
        for (long n = 1; !a->count || n < a->count; n++) {
            struct timespec ts = {(time_t)watch, (long)((watch - (double)(time_t)watch) * 1e9)};
            while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
            int r = inspect(&cur, (pid_t)a->pid, a->flags, err, sizeof(err));
            if (r == 1) {
                fprintf(stderr, "ebb-inspect: %s\n", err);
                inspection_free(&base);
                return 1;
            }
            if (a->json) report_json(stdout, &cur, &base, now_s() - t0);
            else report_growth(stdout, &cur, &base, now_s() - t0);
            fflush(stdout);
            if (r > rc) rc = r;
            inspection_free(&cur);
        }
    }
    inspection_free(&base);
    return rc;
}

int main(int argc, char **argv) {
    struct cli a = {.ho = {.top = 10}};
    int st = parse_args(argc, argv, &a);
    if (st >= 0) return st;
    return a.heap ? heap_mode(&a) : memory_mode(&a);
}
