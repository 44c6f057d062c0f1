/* ebb-bench's driver: the command line (ebb-bench.c), how each workload is started
 * (workloads.c), running a comparison and writing its results (drive.c), and the
 * fast-path instruction counts (fastpath.c). */
#ifndef EBB_BENCH_DRIVER_H
#define EBB_BENCH_DRIVER_H

#include "bench.h"

#define MAX_CFGS 32
#define MAX_PARTS 16

/* The command line, as parsed once in main. */
struct bench_opts {
    const char *workload;
    const char *mode; /* quick, default, long */
    const char *configs;
    const char *sections; /* throughput: which sections, NULL for all */
    int runs;
    const char *csv, *svg, *out;
    const char *lib;
    unsigned interval_ms;
    bool verbose;
    int n_extra; /* the workload's own options, after "--" */
    char **extra;
    char exe_dir[PATH_MAX]; /* where ebb-bench and the workloads are */
    bool tty;
};
extern struct bench_opts O;

/* The selected configurations, in table order. */
extern struct bench_config cfgs[MAX_CFGS];
extern int n_cfgs;

/* An argument vector with storage for formatted arguments. */
struct argv_buf {
    char *v[96];
    int n;
    char store[16][PATH_MAX + 128];
    int ns;
};
void av_add(struct argv_buf *a, const char *s);
const char *av_fmt(struct argv_buf *a, const char *fmt, const char *s);

/* One process of a comparison, run under every configuration: a whole workload, or one
 * section of a sectioned workload (throughput). */
struct bench_part {
    const char *name; /* the section, NULL for a whole workload */
    struct argv_buf argv;
    const char *exec_path; /* see struct bench_spec */
    bool (*parse_line)(const char *line, struct bench_result *out);
};

/* workloads.c: fill parts for O.workload; returns how many, or -1 after a message. */
int workload_parts(struct bench_part *parts, int max);
void workload_cleanup(void);

/* drive.c */
int drive_comparison(struct bench_part *parts, int n_parts);
double now_s(void);
int mkdir_p(const char *dir);
bool have_program(const char *name);
void print_skips(void);
void out_path(char *dst, size_t n, const char *given, const char *suffix);

/* fastpath.c */
int run_fastpath(void);

#endif
