/* Baseline files: a heap profile saved by --heap --baseline FILE, compared by --diff FILE.
 *
 * The file is text, one record per line, so that it can be read, grepped and kept:
 *
 *   ebb-inspect heap baseline 1
 *   pid 4242
 *   start_time 9876543
 *   taken_ms 1764582000000
 *   sample_interval 524288
 *   module 3f1c...e2 /usr/lib/x86_64-linux-gnu/libfoo.so.1    (build id, "-" if none)
 *   stack LIVE_BYTES LIVE_OBJECTS TOTAL_BYTES TOTAL_OBJECTS DEPTH
 *   f libfoo.so.1!Foo::grow(unsigned long)+0x2c                (DEPTH lines, innermost first)
 *   ...
 *   end
 *
 * A frame is stored as its key (struct frame_sym): library!function+offset, library+0xREL
 * without a symbol, "[jit or anonymous]", "[vdso]", "[unmapped]".  Keys do not depend on
 * where the libraries were loaded, so a baseline still compares after a restart (same
 * builds of the libraries: the module lines say which, by build id).  Addresses are not
 * kept.  Lines after "end" and unknown record names are errors: a file that is not a
 * baseline is never half read. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inspect.h"

#define BASELINE_MAGIC "ebb-inspect heap baseline 1"

int heap_baseline_save(const char *file, const struct inspection *in, const struct heap_profile *hp,
                       char *err, size_t errlen) {
    char *tmp;
    if (asprintf(&tmp, "%s.tmp.%d", file, (int)getpid()) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    FILE *f = fopen(tmp, "w");
    if (!f) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    fprintf(f,
            BASELINE_MAGIC "\npid %d\nstart_time %" PRIu64 "\ntaken_ms %" PRIu64 "\nsample_interval %" PRIu64
                           "\n",
            (int)in->proc.pid, in->proc.start_time, hp->taken_ms, hp->hdr.sample_interval);
    /* each file once: the symbolizer gives one path string per file */
    const char **seen = calloc(64, sizeof(*seen));
    size_t nseen = 0;
    for (size_t i = 0; seen && i < hp->n; i++)
        for (uint32_t k = 0; hp->st[i].sym && k < hp->st[i].depth; k++) {
            const struct frame_sym *fs = hp->st[i].sym[k];
            if (fs->kind != FRAME_FILE || !fs->path) continue;
            size_t j = 0;
            while (j < nseen && seen[j] != fs->path) j++;
            if (j < nseen || nseen == 64) continue;
            seen[nseen++] = fs->path;
            fprintf(f, "module %s %s\n", fs->build_id ? fs->build_id : "-", fs->path);
        }
    free(seen);
    for (size_t i = 0; i < hp->n; i++) {
        const struct heap_stack *s = &hp->st[i];
        fprintf(f, "stack %" PRId64 " %" PRId64 " %" PRIu64 " %" PRIu64 " %" PRIu32 "\n", s->live_bytes,
                s->live_objects, s->total_bytes, s->total_objects, s->depth);
        for (uint32_t k = 0; k < s->depth; k++) fprintf(f, "f %s\n", heap_frame_key(s, k));
    }
    fputs("end\n", f);
    bool bad = ferror(f);
    if (fclose(f) != 0 || bad || rename(tmp, file) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", file, strerror(errno));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}

static int fail(char *err, size_t errlen, const char *file, unsigned line, const char *why) {
    snprintf(err, errlen, "%s line %u: %s", file, line, why);
    return -1;
}

int heap_baseline_load(const char *file, struct heap_profile *hp, char *err, size_t errlen) {
    memset(hp, 0, sizeof(*hp));
    FILE *f = fopen(file, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read %s: %s", file, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0, stcap = 0;
    ssize_t len;
    unsigned no = 0;
    int rc = -1;
    bool ended = false;
    struct heap_stack *cur = NULL;
    uint32_t filled = 0;
    size_t mlen = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        no++;
        if (len && line[len - 1] == '\n') line[--len] = '\0';
        if (no == 1) {
            if (strcmp(line, BASELINE_MAGIC)) {
                fail(err, errlen, file, no, "not an ebb-inspect heap baseline (or another version)");
                goto out;
            }
            continue;
        }
        if (ended) {
            fail(err, errlen, file, no, "text after \"end\"");
            goto out;
        }
        if (cur && filled < cur->depth) {
            if (strncmp(line, "f ", 2) || !line[2]) {
                fail(err, errlen, file, no, "a frame (\"f KEY\") was expected");
                goto out;
            }
            if (!(cur->keys[filled++] = strdup(line + 2))) {
                fail(err, errlen, file, no, "out of memory");
                goto out;
            }
            continue;
        }
        unsigned long long a, c, d;
        long long lb, lo;
        unsigned dep;
        int end = 0;
        if (sscanf(line, "pid %llu%n", &a, &end) == 1 && !line[end]) {
            hp->pid = (int32_t)a;
        } else if (sscanf(line, "start_time %llu%n", &a, &end) == 1 && !line[end]) {
            hp->start_time = a;
        } else if (sscanf(line, "taken_ms %llu%n", &a, &end) == 1 && !line[end]) {
            hp->taken_ms = a;
        } else if (sscanf(line, "sample_interval %llu%n", &a, &end) == 1 && !line[end]) {
            hp->hdr.sample_interval = a;
        } else if (!strncmp(line, "module ", 7)) {
            size_t l = strlen(line);
            if (mlen + l + 2 < sizeof(hp->modules)) {
                memcpy(hp->modules + mlen, line + 7, l - 7);
                mlen += l - 7;
                hp->modules[mlen++] = '\n';
                hp->modules[mlen] = '\0';
            }
        } else if (sscanf(line, "stack %lld %lld %llu %llu %u%n", &lb, &lo, &c, &d, &dep, &end) == 5 &&
                   !line[end]) {
            if (dep == 0 || dep > EBB_PROF_MAX_FRAMES) {
                fail(err, errlen, file, no, "a stack has no frames or more than 64");
                goto out;
            }
            if (hp->n == stcap) {
                size_t nc = stcap ? stcap * 2 : 64;
                struct heap_stack *ns = realloc(hp->st, nc * sizeof(*ns));
                if (!ns) {
                    fail(err, errlen, file, no, "out of memory");
                    goto out;
                }
                hp->st = ns;
                stcap = nc;
            }
            cur = &hp->st[hp->n++];
            memset(cur, 0, sizeof(*cur));
            cur->live_bytes = lb;
            cur->live_objects = lo;
            cur->total_bytes = c;
            cur->total_objects = d;
            cur->depth = dep;
            filled = 0;
            if (!(cur->keys = calloc(dep, sizeof(char *)))) {
                fail(err, errlen, file, no, "out of memory");
                goto out;
            }
        } else if (!strcmp(line, "end")) {
            ended = true;
        } else {
            fail(err, errlen, file, no, "unknown record");
            goto out;
        }
    }
    if (!ended) {
        fail(err, errlen, file, no, "the file ends before \"end\" (cut short?)");
        goto out;
    }
    hp->state = HEAP_OK;
    snprintf(hp->path, sizeof(hp->path), "%s", file);
    snprintf(hp->reason, sizeof(hp->reason), "%s", file);
    heap_sort(hp);
    rc = 0;
out:
    if (rc < 0) {
        /* a stack whose frames were not all read: free what it has */
        if (cur) cur->depth = filled;
        heap_free(hp);
    }
    free(line);
    fclose(f);
    return rc;
}
