/* Reading what other programs print: callgrind's output file (the instructions spent
 * in calls made from one function) and db_bench's result lines. */
#define _GNU_SOURCE
#include "bench.h"

#include <stdlib.h>
#include <string.h>

/* The function name of an "fn=" / "cfn=" value: "name", "(id) name" or "(id)".
 * With ids (compressed names) the first mention names the id; *id is -1 without one. */
static const char *fn_name(const char *v, long *id) {
    *id = -1;
    if (*v != '(') return v;
    char *end;
    *id = strtol(v + 1, &end, 10);
    if (*end != ')') return v;
    end++;
    while (*end == ' ') end++;
    return end;
}

/* Is the function named by this "fn=" value the caller?  Remembers the caller's id. */
static bool is_caller(const char *v, size_t len, const char *caller, long *caller_id) {
    char buf[512];
    if (len >= sizeof buf) len = sizeof buf - 1;
    memcpy(buf, v, len);
    buf[len] = '\0';
    long id;
    const char *name = fn_name(buf, &id);
    if (*name && strcmp(name, caller) == 0) {
        if (id >= 0) *caller_id = id;
        return true;
    }
    return !*name && id >= 0 && id == *caller_id;
}

int bench_callgrind_parse(const char *text, const char *caller, struct bench_callgrind *out) {
    memset(out, 0, sizeof *out);
    out->total = -1;
    bool in_caller = false, cost_next = false;
    long caller_id = -2;
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        if (cost_next) {
            /* "POSITION COST": the inclusive cost of the call just announced. */
            const char *sp = memchr(line, ' ', len);
            if (sp) out->inclusive += strtoll(sp + 1, NULL, 10);
            cost_next = false;
        } else if (len > 3 && strncmp(line, "fn=", 3) == 0) {
            in_caller = is_caller(line + 3, len - 3, caller, &caller_id);
        } else if (len > 4 && strncmp(line, "cfn=", 4) == 0) {
            is_caller(line + 4, len - 4, caller, &caller_id); /* ids name callees too */
        } else if (in_caller && len > 6 && strncmp(line, "calls=", 6) == 0) {
            out->calls += strtoll(line + 6, NULL, 10);
            cost_next = true;
        } else if (len > 7 && strncmp(line, "totals:", 7) == 0) {
            out->total = strtoll(line + 7, NULL, 10);
        } else if (len > 8 && strncmp(line, "summary:", 8) == 0 && out->total < 0) {
            out->total = strtoll(line + 8, NULL, 10);
        }
        line = nl ? nl + 1 : NULL;
    }
    return out->total >= 0 ? 0 : -1;
}

bool bench_parse_dbbench_line(const char *line, struct bench_result *out) {
    char name[32];
    double us, rate, secs;
    unsigned long long ops;
    memset(out, 0, sizeof *out);
    if (sscanf(line, "%31[a-zA-Z0-9_] : %lf micros/op %lf ops/sec %lf seconds %llu operations", name, &us,
               &rate, &secs, &ops) != 5)
        return false;
    if (!(secs >= 0) || ops == 0) return false;
    snprintf(out->name, sizeof out->name, "%s", name);
    out->ops = ops;
    out->ns = (uint64_t)(secs * 1e9 + 0.5);
    return true;
}
