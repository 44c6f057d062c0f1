/* The cgroup rules (alloc/cgroup.c), one set of tests for both of their users.
 *
 * Built twice: with -DREAD_WITH_ALLOCATOR the rules come from the allocator's static
 * library and read through its ebbi_read_file; without, from the tools' procfs library
 * reading through procfs_read_buf, which also runs ebb-inspect's cgroup reader on the
 * same trees and checks that it finds the limit the allocator would.  The trees are in
 * tests/data/procfs/cgroup-*: a process's "cgroup" and "mountinfo" files and its
 * "root" (v2 under Kubernetes, v1 in a Docker container, a systemd hybrid). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#ifdef READ_WITH_ALLOCATOR
#include "internal.h"
#define read_file ebbi_read_file
#else
#include "cgroup.h"
#include "procfs.h"
#define read_file procfs_read_buf
#endif

/* ---------------------------------------------------------------- text */
static void which_line(void **st) {
    (void)st;
    char p[64];
    const char *t = "12:memory:/docker/abc\n11:cpu,cpuacct:/docker/cpu\n1:name=systemd:/s\n0::/unified\n";
    assert_true(ebbi_cgroup_path(t, "memory", p, sizeof p));
    assert_string_equal(p, "/docker/abc");
    assert_true(ebbi_cgroup_path(t, "cpu", p, sizeof p)); /* one of a comma list */
    assert_string_equal(p, "/docker/cpu");
    assert_true(ebbi_cgroup_path(t, "cpuacct", p, sizeof p));
    assert_false(ebbi_cgroup_path(t, "cpuset", p, sizeof p));
    assert_false(ebbi_cgroup_path(t, "mem", p, sizeof p)); /* a prefix is not a name */
    assert_true(ebbi_cgroup_path(t, NULL, p, sizeof p));
    assert_string_equal(p, "/unified");
    /* v2 is hierarchy 0 with no controllers */
    assert_false(ebbi_cgroup_path("3::/x\n4:memory:/y", NULL, p, sizeof p));
    assert_false(ebbi_cgroup_path("", "memory", p, sizeof p));
    assert_false(ebbi_cgroup_path("garbage\n", NULL, p, sizeof p));
    assert_false(ebbi_cgroup_path("0::/a/rather/long/path\n", NULL, p, 8)); /* does not fit */
    assert_true(ebbi_cgroup_path("0::/", NULL, p, sizeof p));               /* no newline at the end */
    assert_string_equal(p, "/");
}

static void limit_values(void **st) {
    (void)st;
    uint64_t v = 1;
    assert_true(ebbi_cgroup_limit_value("max\n", &v) && v == 0);
    assert_true(ebbi_cgroup_limit_value("1073741824\n", &v) && v == 1073741824ull);
    assert_true(ebbi_cgroup_limit_value("9223372036854771712\n", &v) && v == 0); /* v1's none */
    assert_true(ebbi_cgroup_limit_value("1152921504606846976\n", &v) && v == 0); /* 2^60 */
    assert_true(ebbi_cgroup_limit_value("1152921504606846975\n", &v) && v == (1ull << 60) - 1);
    assert_true(ebbi_cgroup_limit_value("99999999999999999999999\n", &v) && v == 0);
    assert_false(ebbi_cgroup_limit_value("", &v));
    assert_false(ebbi_cgroup_limit_value("-1\n", &v));
    assert_false(ebbi_cgroup_limit_value("lots\n", &v));
}

/* ---------------------------------------------------------------- trees written here */
static char tmpdir[256];
static void put(const char *rel, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, rel);
    for (char *s = path + strlen(tmpdir) + 1; (s = strchr(s, '/')); s++) {
        *s = 0;
        mkdir(path, 0755);
        *s = '/';
    }
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void cgroup_limits_v1_v2_none_max(void **st) {
    (void)st;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ebb-cgroup-%d", getpid());
    mkdir(tmpdir, 0755);
    char v2[300], v1[300];
    snprintf(v2, sizeof v2, "%s/v2", tmpdir);
    snprintf(v1, sizeof v1, "%s/v1", tmpdir);
    /* v2: a pod's limit */
    put("v2/memory.max", "max\n");
    put("v2/kubepods/pod1/memory.max", "1073741824\n");
    put("v2/kubepods/pod1/app/memory.max", "max\n");
    assert_int_equal(ebbi_cgroup_parse_limit(read_file, v2, "0::/kubepods/pod1/app\n"), 1073741824ull);
    /* a parent's smaller limit wins */
    put("v2/kubepods/memory.max", "536870912\n");
    assert_int_equal(ebbi_cgroup_parse_limit(read_file, v2, "0::/kubepods/pod1/app\n"), 536870912ull);
    /* "max" all the way up: no limit */
    assert_int_equal(ebbi_cgroup_parse_limit(read_file, v2, "0::/\n"), 0);
    /* inside a container the path may not exist under the mount: the mount's root counts */
    put("v2/memory.max", "268435456\n");
    assert_int_equal(ebbi_cgroup_parse_limit(read_file, v2, "0::/some/host/path\n"), 268435456ull);
    /* v1 */
    put("v1/memory/memory.limit_in_bytes", "9223372036854771712\n");
    put("v1/memory/docker/abc/memory.limit_in_bytes", "536870912\n");
    const char *proc_v1 = "12:memory:/docker/abc\n11:cpu,cpuacct:/docker/abc\n1:name=systemd:/x\n";
    assert_int_equal(ebbi_cgroup_parse_limit(read_file, v1, proc_v1), 536870912ull);
    assert_int_equal(ebbi_cgroup_parse_limit(read_file, v1, "12:memory:/\n"), 0); /* v1's "unlimited" */
    assert_int_equal(ebbi_cgroup_parse_limit(read_file, v1, "2:cpu:/\n"), 0);     /* no memory controller */
    /* CPU quota */
    put("v2/kubepods/pod1/app/cpu.max", "150000 100000\n");
    assert_true(ebbi_cgroup_parse_cpus(read_file, v2, "0::/kubepods/pod1/app\n") == 1.5);
    put("v2/kubepods/pod1/app/cpu.max", "max 100000\n");
    assert_true(ebbi_cgroup_parse_cpus(read_file, v2, "0::/kubepods/pod1/app\n") == 0);
    put("v1/cpu/docker/abc/cpu.cfs_quota_us", "200000\n");
    put("v1/cpu/docker/abc/cpu.cfs_period_us", "100000\n");
    assert_true(ebbi_cgroup_parse_cpus(read_file, v1, proc_v1) == 2.0);
    put("v1/cpu/docker/abc/cpu.cfs_quota_us", "-1\n");
    assert_true(ebbi_cgroup_parse_cpus(read_file, v1, proc_v1) == 0);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    assert_int_equal(system(cmd), 0);
}

/* ---------------------------------------------------------------- the sample trees */
/* What the allocator finds for the tree's process (its files as under /sys/fs/cgroup). */
struct seen {
    uint64_t limit;
    double cpus;
};

static struct seen allocator_view(const char *tree) {
    char path[512], root[512], text[4096];
    snprintf(path, sizeof path, "%s/%s/cgroup", PROCFS_DATA, tree);
    snprintf(root, sizeof root, "%s/%s/root/sys/fs/cgroup", PROCFS_DATA, tree);
    if (!read_file(path, text, sizeof text)) fail_msg("cannot read %s", path);
    struct seen s = {ebbi_cgroup_parse_limit(read_file, root, text),
                     ebbi_cgroup_parse_cpus(read_file, root, text)};
    return s;
}

static void sample_v2(void **st) {
    (void)st;
    struct seen s = allocator_view("cgroup-v2");
    assert_int_equal(s.limit, 1073741824ull); /* the pod's, two levels up */
    assert_true(s.cpus == 1.5);
}

/* Mounted from the container's own cgroup (mountinfo root /docker/abc): the process's
 * path is not under the mount, whose own limit is the container's. */
static void sample_v1_container(void **st) {
    (void)st;
    struct seen s = allocator_view("cgroup-v1");
    assert_int_equal(s.limit, 536870912ull);
    assert_true(s.cpus == 2.0);
}

/* v2 mounted for systemd only, memory accounted in v1: the v1 limit counts. */
static void sample_hybrid(void **st) {
    (void)st;
    struct seen s = allocator_view("cgroup-hybrid");
    assert_int_equal(s.limit, 2147483648ull);
    assert_true(s.cpus == 0);
}

#ifndef READ_WITH_ALLOCATOR
/* ebb-inspect's reader on the same trees, in the process's own view only. */
static void inspect_view(const char *tree, struct procfs_cgroup *cg) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", PROCFS_DATA, tree);
    procfs_cgroup_read(dir, false, cg);
    if (!cg->found) fail_msg("%s: no cgroup found (%s)", tree, cg->nunread ? cg->unread[0].why : "");
    assert_int_equal(cg->eff_limit, allocator_view(tree).limit); /* the allocator agrees */
}

static void reader_v2(void **st) {
    (void)st;
    struct procfs_cgroup cg;
    inspect_view("cgroup-v2", &cg);
    assert_int_equal(cg.version, 2);
    assert_string_equal(cg.path, "/kubepods/pod1/app");
    assert_true(cg.have_usage && cg.usage == 524288000ull);
    assert_true(cg.have_limit && cg.limit == 0); /* "max" */
    assert_int_equal(cg.eff_limit, 1073741824ull);
    assert_string_equal(cg.eff_limit_at, "/sys/fs/cgroup/kubepods/pod1");
    assert_true(cg.have_stat);
    assert_int_equal(cg.anon, 367001600ull);
    assert_int_equal(cg.file, 146800640ull);
    assert_int_equal(cg.anon_thp, 62914560ull);
    assert_int_equal(cg.shmem, 4194304ull);
    assert_true(cg.have_kernel && cg.kernel == 10485760ull); /* not kernel_stack */
    assert_int_equal(cg.active_file, 41943040ull);
    assert_int_equal(cg.inactive_file, 104857600ull);
    assert_int_equal(cg.nunread, 0);
}

static void reader_v1_container(void **st) {
    (void)st;
    struct procfs_cgroup cg;
    inspect_view("cgroup-v1", &cg);
    assert_int_equal(cg.version, 1);
    assert_string_equal(cg.path, "/docker/abc");
    assert_int_equal(cg.usage, 314572800ull); /* the mount point is the container's cgroup */
    assert_int_equal(cg.limit, 536870912ull);
    assert_string_equal(cg.eff_limit_at, "hierarchical_memory_limit");
    /* the hierarchical totals, not the cgroup's own */
    assert_int_equal(cg.anon, 194969600ull);
    assert_int_equal(cg.file, 109051904ull);
    assert_int_equal(cg.active_file, 33554432ull);
    assert_int_equal(cg.inactive_file, 75497472ull);
    assert_false(cg.have_kernel);
}

static void reader_hybrid(void **st) {
    (void)st;
    struct procfs_cgroup cg;
    inspect_view("cgroup-hybrid", &cg);
    assert_int_equal(cg.version, 1);
    assert_string_equal(cg.path, "/user.slice/app.scope");
    assert_int_equal(cg.limit, 0); /* v1's huge number */
    assert_int_equal(cg.usage, 1610612736ull);
    assert_string_equal(cg.eff_limit_at, "/sys/fs/cgroup/memory/user.slice");
    assert_int_equal(cg.anon, 1048576000ull); /* no totals: the cgroup's own */
    assert_int_equal(cg.inactive_file, 268435456ull);
}

static void reader_nothing_there(void **st) {
    (void)st;
    struct procfs_cgroup cg;
    procfs_cgroup_read("/nonexistent/proc/1", false, &cg);
    assert_false(cg.found);
    assert_int_equal(cg.nunread, 1);
    assert_string_equal(cg.unread[0].what, "/proc/PID/cgroup");
    /* in a cgroup whose hierarchy is not mounted in the process's view */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/cgroup-unmounted", PROCFS_DATA);
    procfs_cgroup_read(dir, false, &cg);
    assert_false(cg.found);
    assert_int_equal(cg.nunread, 1);
    assert_string_equal(cg.unread[0].what, "memory cgroup");
    assert_non_null(strstr(cg.unread[0].why, "not mounted"));
}
#endif

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(which_line),
        cmocka_unit_test(limit_values),
        cmocka_unit_test(cgroup_limits_v1_v2_none_max),
        cmocka_unit_test(sample_v2),
        cmocka_unit_test(sample_v1_container),
        cmocka_unit_test(sample_hybrid),
#ifndef READ_WITH_ALLOCATOR
        cmocka_unit_test(reader_v2),
        cmocka_unit_test(reader_v1_container),
        cmocka_unit_test(reader_hybrid),
        cmocka_unit_test(reader_nothing_there),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
