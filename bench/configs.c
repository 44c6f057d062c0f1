/* The allocator configurations ebb-bench compares, and the check that a
 * configuration really took effect in the child. */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static const char *const lib_dirs[] = {
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/riscv64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    NULL,
};

/* First existing dir/name, else the first candidate (so the message names a path). */
static void find_system_lib(const char *name, char *out, size_t len) {
    for (const char *const *d = lib_dirs; *d; d++) {
        snprintf(out, len, "%s/%s", *d, name);
        if (access(out, R_OK) == 0) return;
    }
    snprintf(out, len, "%s/%s", lib_dirs[0], name);
}

static struct bench_config glibc_env(const char *name, const char *what, const char *assignment) {
    struct bench_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "%s", name);
    snprintf(c.what, sizeof c.what, "%s", what);
    if (assignment) {
        snprintf(c.env[0], sizeof c.env[0], "%s", assignment);
        c.n_env = 1;
    }
    return c;
}

static struct bench_config peer(const char *name, const char *what, const char *soname, const char *package) {
    struct bench_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "%s", name);
    snprintf(c.what, sizeof c.what, "%s", what);
    find_system_lib(soname, c.preload, sizeof c.preload);
    snprintf(c.hint, sizeof c.hint, "apt-get install %s", package);
    return c;
}

int bench_builtin_configs(struct bench_config *out, int max, const char *ebb_lib) {
    struct bench_config all[16];
    int n = 0;
    all[n++] = glibc_env("glibc", "glibc malloc, default settings (arenas up to 8 x cores)", NULL);
    all[n++] = glibc_env("arena-max-1", "glibc, MALLOC_ARENA_MAX=1", "MALLOC_ARENA_MAX=1");
    all[n++] = glibc_env("arena-max-2", "glibc, MALLOC_ARENA_MAX=2", "MALLOC_ARENA_MAX=2");
    all[n++] = glibc_env("arena-max-4", "glibc, MALLOC_ARENA_MAX=4", "MALLOC_ARENA_MAX=4");
    all[n++] = glibc_env("arena-max-8", "glibc, MALLOC_ARENA_MAX=8", "MALLOC_ARENA_MAX=8");
    all[n++] =
        glibc_env("mmap-128k", "glibc, MALLOC_MMAP_THRESHOLD_=131072 (fixed: larger blocks always mmap)",
                  "MALLOC_MMAP_THRESHOLD_=131072");
    all[n++] = glibc_env("trim-64k", "glibc, MALLOC_TRIM_THRESHOLD_=65536 (fixed, half the default)",
                         "MALLOC_TRIM_THRESHOLD_=65536");
    all[n++] =
        peer("jemalloc", "jemalloc (Debian libjemalloc2), LD_PRELOAD", "libjemalloc.so.2", "libjemalloc2");
    all[n++] = peer("tcmalloc", "gperftools tcmalloc (Debian libtcmalloc-minimal4), LD_PRELOAD",
                    "libtcmalloc_minimal.so.4", "libtcmalloc-minimal4");
    all[n++] = peer("mimalloc", "mimalloc (Debian libmimalloc2.0), LD_PRELOAD", "libmimalloc.so.2",
                    "libmimalloc2.0");
    struct bench_config e;
    memset(&e, 0, sizeof e);
    snprintf(e.name, sizeof e.name, "ebbmalloc");
    snprintf(e.what, sizeof e.what, "ebbmalloc (this repository), LD_PRELOAD");
    snprintf(e.preload, sizeof e.preload, "%s", ebb_lib ? ebb_lib : "");
    snprintf(e.hint, sizeof e.hint,
             "build it: meson setup build && ninja -C build (or pass --lib PATH / EBB_LIB)");
    all[n++] = e;
    /* The same library with the sampled heap profile off: the profile's cost is the
     * ratio of the two rows of one run. */
    snprintf(e.name, sizeof e.name, "ebbmalloc-noprof");
    snprintf(e.what, sizeof e.what, "ebbmalloc with EBB_PROF=0 (heap profile off), LD_PRELOAD");
    snprintf(e.env[0], sizeof e.env[0], "EBB_PROF=0");
    e.n_env = 1;
    all[n++] = e;
    if (n > max) n = max;
    memcpy(out, all, (size_t)n * sizeof *out);
    return n;
}

static const char *const group_glibc[] = {"glibc",       "arena-max-1", "arena-max-2", "arena-max-4",
                                          "arena-max-8", "mmap-128k",   "trim-64k",    NULL};
static const char *const group_arena[] = {"arena-max-1", "arena-max-2", "arena-max-4", "arena-max-8", NULL};
static const char *const group_peers[] = {"jemalloc", "tcmalloc", "mimalloc", NULL};
static const char *const group_ebb[] = {"ebbmalloc", "ebbmalloc-noprof", NULL};

static int add_config(const struct bench_config *known, int n_known, const char *name,
                      struct bench_config *out, int *n, int max, char *err, size_t err_len) {
    for (int i = 0; i < *n; i++)
        if (strcmp(out[i].name, name) == 0) return 0; /* already selected */
    for (int i = 0; i < n_known; i++) {
        if (strcmp(known[i].name, name) == 0) {
            if (*n >= max) {
                snprintf(err, err_len, "too many configurations");
                return -1;
            }
            out[(*n)++] = known[i];
            return 0;
        }
    }
    snprintf(err, err_len, "unknown configuration '%s'", name);
    return -1;
}

int bench_select_configs(const struct bench_config *known, int n_known, const char *list,
                         struct bench_config *out, int max, char *err, size_t err_len) {
    int n = 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", list && *list ? list : "all");
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        if (!*tok) continue;
        const char *const *group = NULL;
        if (strcmp(tok, "all") == 0) {
            for (int i = 0; i < n_known; i++)
                if (add_config(known, n_known, known[i].name, out, &n, max, err, err_len) < 0) return -1;
            continue;
        }
        if (strcmp(tok, "glibc-all") == 0) group = group_glibc;
        else if (strcmp(tok, "arena") == 0) group = group_arena;
        else if (strcmp(tok, "peers") == 0) group = group_peers;
        else if (strcmp(tok, "ebb") == 0) group = group_ebb;
        if (group) {
            for (; *group; group++)
                if (add_config(known, n_known, *group, out, &n, max, err, err_len) < 0) return -1;
            continue;
        }
        if (add_config(known, n_known, tok, out, &n, max, err, err_len) < 0) return -1;
    }
    return n;
}

void bench_mark_missing(struct bench_config *cfgs, int n) {
    for (int i = 0; i < n; i++) {
        struct bench_config *c = &cfgs[i];
        if (!c->preload[0] && c->hint[0]) {
            c->skipped = true;
            snprintf(c->skip_reason, sizeof c->skip_reason, "no library path; %s", c->hint);
        } else if (c->preload[0] && access(c->preload, R_OK) != 0) {
            c->skipped = true;
            snprintf(c->skip_reason, sizeof c->skip_reason, "%s not found; %s", c->preload,
                     c->hint[0] ? c->hint : "check the path");
        }
    }
}

static bool dropped_from_child(const char *kv) {
    static const char *const exact[] = {"LD_PRELOAD", "GLIBC_TUNABLES", NULL};
    static const char *const prefix[] = {"MALLOC_", "MIMALLOC_", "TCMALLOC_", "JEMALLOC_", "EBB_", NULL};
    const char *eq = strchr(kv, '=');
    size_t nl = eq ? (size_t)(eq - kv) : strlen(kv);
    for (const char *const *p = exact; *p; p++)
        if (strlen(*p) == nl && memcmp(kv, *p, nl) == 0) return true;
    for (const char *const *p = prefix; *p; p++)
        if (strncmp(kv, *p, strlen(*p)) == 0) return true;
    return false;
}

char **bench_child_env(char *const *base, const struct bench_config *cfg) {
    size_t n = 0;
    while (base && base[n]) n++;
    char **env = calloc(n + BENCH_MAX_ENV + 2, sizeof *env);
    if (!env) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!dropped_from_child(base[i])) env[k++] = strdup(base[i]);
    for (int i = 0; i < cfg->n_env; i++) env[k++] = strdup(cfg->env[i]);
    if (cfg->preload[0]) {
        size_t l = strlen(cfg->preload) + sizeof "LD_PRELOAD=";
        env[k] = malloc(l);
        if (env[k]) snprintf(env[k++], l, "LD_PRELOAD=%s", cfg->preload);
    }
    env[k] = NULL;
    for (size_t i = 0; i < k; i++)
        if (!env[i]) {
            bench_free_env(env);
            return NULL;
        }
    return env;
}

void bench_free_env(char **env) {
    if (!env) return;
    for (char **p = env; *p; p++) free(*p);
    free(env);
}

static const char *const foreign_allocators[] = {
    "libjemalloc", "libtcmalloc", "libmimalloc", "libebbmalloc", "libhoard", "libsnmalloc", NULL,
};

static const char *base_name(const char *p) {
    const char *b = strrchr(p, '/');
    return b ? b + 1 : p;
}

static bool same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return false;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

bool bench_check_config(const struct bench_config *cfg, const struct bench_evidence *ev, char *why,
                        size_t why_len) {
    for (int i = 0; i < cfg->n_env; i++) {
        if (!ev->environ || !procfs_environ_has(ev->environ, ev->environ_len, cfg->env[i])) {
            snprintf(why, why_len, "%s is not in the child's environment", cfg->env[i]);
            return false;
        }
    }
    if (!ev->maps) {
        snprintf(why, why_len, "could not read the child's maps");
        return false;
    }
    if (cfg->preload[0]) {
        char real[PATH_MAX];
        struct stat st;
        const char *rp = realpath(cfg->preload, real) ? real : cfg->preload;
        bool have_stat = stat(cfg->preload, &st) == 0;
        if (!procfs_maps_has_file(ev->maps, rp, have_stat ? major(st.st_dev) : 0,
                                  have_stat ? minor(st.st_dev) : 0, have_stat ? st.st_ino : 0)) {
            snprintf(why, why_len,
                     "LD_PRELOAD=%s is not mapped in the child (ld.so ignored it: not a "
                     "loadable library?)",
                     cfg->preload);
            return false;
        }
        if (ev->malloc_from && ev->malloc_from[0] != '?' && !same_file(ev->malloc_from, cfg->preload)) {
            snprintf(why, why_len, "the child's malloc comes from %s, not from %s", ev->malloc_from,
                     cfg->preload);
            return false;
        }
    } else {
        char found[PATH_MAX];
        if (procfs_maps_find_lib(ev->maps, foreign_allocators, found, sizeof found)) {
            snprintf(why, why_len, "glibc configuration but %s is mapped in the child", found);
            return false;
        }
        if (ev->malloc_from && ev->malloc_from[0] != '?' &&
            strncmp(base_name(ev->malloc_from), "libc.so", 7) != 0 &&
            strncmp(base_name(ev->malloc_from), "libc-", 5) != 0) {
            snprintf(why, why_len, "glibc configuration but the child's malloc comes from %s",
                     ev->malloc_from);
            return false;
        }
    }
    return true;
}
