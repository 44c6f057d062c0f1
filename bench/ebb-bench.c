/* ebb-bench: runs a benchmark workload under several allocator configurations
 * side by side, and reports a table, CSV files and an SVG chart.
 *
 *   ebb-bench WORKLOAD [--quick|--long] [--configs NAME,...] [--runs N]
 *             [--csv FILE] [--svg FILE] [--out DIR] [--lib PATH] [-- WORKLOAD-ARGS]
 *
 * Workloads: arena-creep, jvm, throughput, dbbench, fastpath (instructions per
 * malloc and per free under callgrind, and nanoseconds per pair natively).
 * This file is the command line; driver.h lists the rest of the driver.
 */
#define _GNU_SOURCE
#include "driver.h"

#include <getopt.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef EBB_LIB_PATH
#define EBB_LIB_PATH ""
#endif

struct bench_opts O;
struct bench_config cfgs[MAX_CFGS];
int n_cfgs;

static struct bench_config known[MAX_CFGS];
static int n_known;

/* --preload-config NAME=PATH, kept until the known configurations are built. */
static struct {
    char name[32];
    char path[PATH_MAX];
} custom[8];
static int n_custom;
static bool list_only;

static void usage(FILE *f) {
    fprintf(f, "usage: ebb-bench WORKLOAD [options] [-- workload options]\n"
               "\n"
               "Workloads:\n"
               "  arena-creep  many short-lived handler threads, mixed sizes, cross-thread frees;\n"
               "               load, then drop to ~8 MiB live and idle (the field reports' creep);\n"
               "               --long: 10 minutes of load, and whether RSS stays flat\n"
               "  jvm          an OpenJDK process doing zlib streams, direct buffers and\n"
               "               cross-thread native frees\n"
               "  throughput   one process per section: fastpath, larson 2/8 threads, larson with\n"
               "               spread sizes, 64 and 256 threads, pipeline, producer/consumers,\n"
               "               large blocks (5-25 MiB), a structure built and dropped (bulk),\n"
               "               buffers grown by realloc, bursts of one size freed by their\n"
               "               own thread, bursts with pauses between them;\n"
               "               time, peak RSS and page faults\n"
               "  dbbench      RocksDB's db_bench (rocksdb-tools): fillrandom then readrandom\n"
               "  fastpath     instructions per malloc and per free under callgrind, on two loops,\n"
               "               and ns per pair natively\n"
               "\n"
               "Options:\n"
               "  --quick            short run (about a minute for all configurations), 1 run each\n"
               "  --long             much longer load and idle, 1 run each unless --runs\n"
               "  --configs LIST     comma-separated names or groups: all (default), glibc-all,\n"
               "                     arena, peers, ebb; see --list\n"
               "  --sections LIST    throughput: only these sections (comma-separated)\n"
               "  --runs N           runs per configuration (default 3; --quick/--long: 1)\n"
               "  --out DIR          where results go (default ./ebb-bench-results)\n"
               "  --csv FILE         CSV of every sample (default DIR/WORKLOAD-samples.csv)\n"
               "  --svg FILE         chart of RSS over time (default DIR/WORKLOAD.svg)\n"
               "  --lib PATH         the ebbmalloc library (default: env EBB_LIB, else the built one)\n"
               "  --preload-config NAME=PATH   add a configuration that preloads PATH\n"
               "  --interval MS      RSS sampling interval (default 50 quick, 100, 250 long)\n"
               "  --list             show the configurations and whether they are available\n"
               "  -v                 show the workloads' messages\n");
}

static void find_exe_dir(void) {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        snprintf(O.exe_dir, sizeof O.exe_dir, "%s", dirname(self));
    } else {
        snprintf(O.exe_dir, sizeof O.exe_dir, ".");
    }
}

/* ------------------------------------------------------------ the command line */

enum {
    OPT_QUICK = 256,
    OPT_LONG,
    OPT_CONFIGS,
    OPT_SECTIONS,
    OPT_RUNS,
    OPT_CSV,
    OPT_SVG,
    OPT_OUT,
    OPT_LIB,
    OPT_PRELOAD,
    OPT_INTERVAL,
    OPT_LIST
};

static const struct option long_opts[] = {
    {"quick", no_argument, 0, OPT_QUICK},
    {"long", no_argument, 0, OPT_LONG},
    {"configs", required_argument, 0, OPT_CONFIGS},
    {"sections", required_argument, 0, OPT_SECTIONS},
    {"runs", required_argument, 0, OPT_RUNS},
    {"csv", required_argument, 0, OPT_CSV},
    {"svg", required_argument, 0, OPT_SVG},
    {"out", required_argument, 0, OPT_OUT},
    {"lib", required_argument, 0, OPT_LIB},
    {"preload-config", required_argument, 0, OPT_PRELOAD},
    {"interval", required_argument, 0, OPT_INTERVAL},
    {"list", no_argument, 0, OPT_LIST},
    {"help", no_argument, 0, 'h'},
    {0, 0, 0, 0},
};

static int add_custom(const char *arg) {
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg || !eq[1] || n_custom == 8) {
        fprintf(stderr, "ebb-bench: --preload-config wants NAME=PATH\n");
        return -1;
    }
    int nl = (int)(eq - arg);
    if (nl > (int)sizeof custom[n_custom].name - 1) nl = (int)sizeof custom[n_custom].name - 1;
    memcpy(custom[n_custom].name, arg, (size_t)nl);
    custom[n_custom].name[nl] = '\0';
    snprintf(custom[n_custom].path, sizeof custom[n_custom].path, "%s", eq + 1);
    n_custom++;
    return 0;
}

/* The options that keep their argument as it is, and where. */
static const struct {
    int ch;
    const char **to;
} kept_args[] = {
    {OPT_CONFIGS, &O.configs}, {OPT_SECTIONS, &O.sections}, {OPT_CSV, &O.csv},
    {OPT_SVG, &O.svg},         {OPT_OUT, &O.out},           {OPT_LIB, &O.lib},
};

/* One option; returns 0, or the exit status to stop with (-1: none, stop with 0). */
static int take_option(int ch) {
    for (size_t i = 0; i < sizeof kept_args / sizeof kept_args[0]; i++)
        if (kept_args[i].ch == ch) {
            *kept_args[i].to = optarg;
            return 0;
        }
    switch (ch) {
    case OPT_QUICK: O.mode = "quick"; return 0;
    case OPT_LONG: O.mode = "long"; return 0;
    case OPT_RUNS:
        O.runs = atoi(optarg);
        if (O.runs < 1 || O.runs > 64) {
            fprintf(stderr, "ebb-bench: --runs must be 1..64\n");
            return 2;
        }
        return 0;
    case OPT_PRELOAD: return add_custom(optarg) < 0 ? 2 : 0;
    case OPT_INTERVAL: O.interval_ms = (unsigned)atoi(optarg); return 0;
    case OPT_LIST: list_only = true; return 0;
    case 'v': O.verbose = true; return 0;
    case 'h': usage(stdout); return -1;
    default: usage(stderr); return 2;
    }
}

/* Everything after the first "--" belongs to the workload; getopt sees only what is
 * before it.  Returns the new argc. */
static int split_workload_args(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--") == 0) {
            O.extra = argv + i + 1;
            O.n_extra = argc - i - 1;
            argv[i] = NULL;
            return i;
        }
    return argc;
}

/* The workload, when it did not come first. */
static int take_workload_arg(int argc, char **argv) {
    if (!O.workload && optind < argc) O.workload = argv[optind++];
    if (optind < argc) {
        fprintf(stderr, "ebb-bench: unexpected argument %s (workload options go after --)\n", argv[optind]);
        return 2;
    }
    return 0;
}

/* Returns 0 to go on, else the exit status (-1 for a clean stop, e.g. --help). */
static int parse_command_line(int argc, char **argv) {
    O.mode = "default";
    O.runs = -1;
    O.out = "ebb-bench-results";
    O.tty = isatty(2);
    O.lib = getenv("EBB_LIB");
    if (!O.lib || !*O.lib) O.lib = EBB_LIB_PATH;
    argc = split_workload_args(argc, argv);
    /* "ebb-bench WORKLOAD options": take the workload first. */
    if (argc > 1 && argv[1][0] != '-') {
        O.workload = argv[1];
        argv[1] = argv[0];
        argv++;
        argc--;
    }
    int ch;
    while ((ch = getopt_long(argc, argv, "+hv", long_opts, NULL)) != -1) {
        int st = take_option(ch);
        if (st) return st;
    }
    return list_only ? 0 : take_workload_arg(argc, argv);
}

/* ------------------------------------------------------------ configurations */

static void build_known_configs(void) {
    n_known = bench_builtin_configs(known, MAX_CFGS, O.lib);
    for (int i = 0; i < n_custom && n_known < MAX_CFGS; i++) {
        struct bench_config *c = &known[n_known++];
        memset(c, 0, sizeof *c);
        memcpy(c->name, custom[i].name, sizeof c->name);
        snprintf(c->what, sizeof c->what, "LD_PRELOAD given on the command line");
        snprintf(c->preload, sizeof c->preload, "%s", custom[i].path);
    }
}

static void list_configs(void) {
    bench_mark_missing(known, n_known);
    for (int i = 0; i < n_known; i++)
        printf("%-16s %s%s%s%s\n", known[i].name, known[i].what, known[i].preload[0] ? " " : "",
               known[i].preload, known[i].skipped ? "  [not available]" : "");
    printf("groups: all, glibc-all, arena, peers, ebb\n");
}

static int select_configs(void) {
    /* The glibc tunables do not change a single thread's fast path: by default
     * fastpath compares glibc with the other allocators only. */
    if (!O.configs && strcmp(O.workload, "fastpath") == 0) O.configs = "glibc,peers,ebb";
    char err[256];
    n_cfgs = bench_select_configs(known, n_known, O.configs, cfgs, MAX_CFGS, err, sizeof err);
    if (n_cfgs < 0) {
        fprintf(stderr, "ebb-bench: %s (see --list)\n", err);
        return 2;
    }
    bench_mark_missing(cfgs, n_cfgs);
    return 0;
}

/* ------------------------------------------------------------ main */

static int run_workload(void) {
    if (strcmp(O.workload, "fastpath") == 0) return run_fastpath();
    static struct bench_part parts[MAX_PARTS];
    int np = workload_parts(parts, MAX_PARTS);
    if (np < 0) {
        workload_cleanup();
        return strcmp(O.workload, "arena-creep") && strcmp(O.workload, "throughput") &&
                       strcmp(O.workload, "jvm") && strcmp(O.workload, "dbbench")
                   ? 2
                   : 1;
    }
    int st = drive_comparison(parts, np);
    workload_cleanup();
    return st;
}

int main(int argc, char **argv) {
    find_exe_dir();
    int st = parse_command_line(argc, argv);
    if (st) return st < 0 ? 0 : st;
    build_known_configs();
    if (list_only) {
        list_configs();
        return 0;
    }
    if (!O.workload) {
        usage(stderr);
        return 2;
    }
    if (O.runs < 0) O.runs = strcmp(O.mode, "default") == 0 ? 3 : 1;
    st = select_configs();
    if (st) return st;
    return run_workload();
}
