/* The chart of a comparison: RSS over time, one line per configuration (its median
 * run by peak RSS), a dot where the load ended, the workload's live bytes dashed.
 * Written directly as SVG, so no plotting tool is needed. */
#define _GNU_SOURCE
#include "report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void xml_text(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

static const char *config_color(const char *name, int i) {
    static const struct {
        const char *name, *color;
    } fixed[] = {
        {"glibc", "#d62728"},       {"arena-max-1", "#ff7f0e"}, {"arena-max-2", "#b8860b"},
        {"arena-max-4", "#8c564b"}, {"arena-max-8", "#e377c2"}, {"mmap-128k", "#17becf"},
        {"trim-64k", "#9467bd"},    {"jemalloc", "#1f77b4"},    {"tcmalloc", "#2ca02c"},
        {"mimalloc", "#bcbd22"},    {"ebbmalloc", "#000000"},   {"ebbmalloc-noprof", "#7f7f7f"},
    };
    static const char *const spare[] = {"#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"};
    for (size_t k = 0; k < sizeof fixed / sizeof fixed[0]; k++)
        if (strcmp(fixed[k].name, name) == 0) return fixed[k].color;
    return spare[i % 5];
}

/* A step of 1, 2 or 5 x 10^k giving at most about `want` ticks up to max. */
static double nice_step(double max, int want) {
    if (!(max > 0)) return 1;
    double raw = max / want;
    double p = pow(10, floor(log10(raw)));
    double m = raw / p;
    double step = m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10;
    return step * p;
}

/* The plot area and its scales. */
struct frame {
    double W, H, L, T, pw, ph; /* canvas, left and top margins, plot width and height */
    double xright, ytop;       /* seconds and MiB at the right and top edges */
    double xstep, ystep;
};

static double xp(const struct frame *fr, double x) { return fr->L + x / fr->xright * fr->pw; }

static double yp(const struct frame *fr, double y) { return fr->T + fr->ph - y / fr->ytop * fr->ph; }

/* Medians per configuration; the time and MiB ranges of the median runs; the run whose
 * live bytes are drawn (glibc's when there is one). */
static int svg_scan(const struct bench_table *t, struct cstats *st, struct frame *fr) {
    char names[BENCH_MAX_RESULTS][32];
    int nn = report_result_names(t, names, BENCH_MAX_RESULTS);
    double tmax = 0, ymax = 0;
    int live_cfg = -1;
    for (int c = 0; c < t->n_cfgs; c++) {
        report_compute(t, c, names, nn, &st[c]);
        if (st[c].median_run < 0) continue;
        const struct bench_run *r = report_run_at(t, c, st[c].median_run);
        for (size_t i = 0; i < r->n; i++) {
            tmax = fmax(tmax, r->s[i].t_ms / 1000.0);
            ymax = fmax(ymax, r->s[i].rss_kib / 1024.0);
            if (r->has_live) ymax = fmax(ymax, r->s[i].live / BENCH_MIB);
        }
        if (r->has_live && (live_cfg < 0 || strcmp(t->cfgs[c].name, "glibc") == 0)) live_cfg = c;
    }
    *fr = (struct frame){1110, 560, 70, 66, 1110 - 70 - 380, 560 - 66 - 56, 0, 0, 0, 0};
    fr->ystep = nice_step(ymax * 1.05, 8);
    fr->xstep = nice_step(tmax, 10);
    fr->ytop = ceil(ymax * 1.05 / fr->ystep) * fr->ystep;
    fr->xright = ceil(tmax / fr->xstep) * fr->xstep;
    if (!(fr->ytop > 0)) fr->ytop = 1;
    if (!(fr->xright > 0)) fr->xright = 1;
    return live_cfg;
}

static void svg_titles(FILE *f, const struct bench_table *t, const struct frame *fr) {
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n",
            fr->W, fr->H, fr->W, fr->H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%.0f\" y=\"22\" font-size=\"16\" font-weight=\"bold\">ebb-bench ", fr->L);
    xml_text(f, t->workload);
    if (t->part) {
        fprintf(f, ": ");
        xml_text(f, t->part);
    }
    fprintf(f, ": resident memory over time, one line per allocator configuration</text>\n");
    fprintf(f, "<text x=\"%.0f\" y=\"40\" fill=\"#444\">", fr->L);
    char sub[400];
    snprintf(sub, sizeof sub, "%s mode, median run (by peak RSS) of %d; %s, %d CPUs, %s RAM, %s, %s", t->mode,
             t->n_runs, t->machine.cpu, t->machine.cpus, t->machine.mem, t->machine.kernel, t->machine.libc);
    xml_text(f, sub);
    fprintf(f, "</text>\n");
    fprintf(f,
            "<text x=\"%.0f\" y=\"56\" fill=\"#444\">Dots mark where the load ended and live "
            "bytes fell to the kept set; the dashed grey line is the workload's own live "
            "bytes.</text>\n",
            fr->L);
}

static void svg_axes(FILE *f, const struct frame *fr) {
    double L = fr->L, T = fr->T, pw = fr->pw, ph = fr->ph;
    for (double y = 0; y <= fr->ytop + 1e-9; y += fr->ystep) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>\n", L,
                yp(fr, y), L + pw, yp(fr, y));
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", L - 6, yp(fr, y) + 4, y);
    }
    for (double x = 0; x <= fr->xright + 1e-9; x += fr->xstep) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#f0f0f0\"/>\n", xp(fr, x),
                T, xp(fr, x), T + ph);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", xp(fr, x), T + ph + 16,
                x);
    }
    fprintf(f,
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
            "stroke=\"#888\"/>\n",
            L, T, pw, ph);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">seconds since start</text>\n", L + pw / 2,
            fr->H - 14);
    fprintf(f,
            "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">MiB "
            "(RSS from /proc/PID/status)</text>\n",
            T + ph / 2);
}

static void svg_live(FILE *f, const struct frame *fr, const struct bench_run *r) {
    fprintf(f, "<polyline fill=\"none\" stroke=\"#999\" stroke-width=\"1.5\" "
               "stroke-dasharray=\"5,4\" points=\"");
    for (size_t i = 0; i < r->n; i++)
        fprintf(f, "%.1f,%.1f ", xp(fr, r->s[i].t_ms / 1000.0), yp(fr, r->s[i].live / BENCH_MIB));
    fprintf(f, "\"/>\n");
}

/* One configuration's RSS line, the dot where its load ended, and its legend entry. */
static void svg_config(FILE *f, const struct frame *fr, const struct bench_config *cfg, const char *col,
                       const struct bench_run *r, double ly) {
    bool ebb = strcmp(cfg->name, "ebbmalloc") == 0;
    fprintf(f,
            "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%s\" "
            "stroke-linejoin=\"round\" points=\"",
            col, ebb ? "3" : "1.8");
    for (size_t i = 0; i < r->n; i++)
        fprintf(f, "%.1f,%.1f ", xp(fr, r->s[i].t_ms / 1000.0), yp(fr, r->s[i].rss_kib / 1024.0));
    fprintf(f, "\"><title>");
    xml_text(f, cfg->name);
    fprintf(f, "</title></polyline>\n");
    for (size_t i = 0; r->t_drop_ms >= 0 && i < r->n; i++)
        if (r->s[i].t_ms >= (uint32_t)r->t_drop_ms) {
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n",
                    xp(fr, r->s[i].t_ms / 1000.0), yp(fr, r->s[i].rss_kib / 1024.0), col);
            break;
        }
    double lx = fr->L + fr->pw;
    fprintf(f,
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
            "stroke-width=\"%s\"/>\n",
            lx + 10, ly, lx + 30, ly, col, ebb ? "3" : "2");
    char label[200];
    if (r->rss_after_kib >= 0)
        snprintf(label, sizeof label, "%s: peak %.0f, 2 s after load %.0f MiB", cfg->name,
                 r->peak_rss_kib / 1024.0, r->rss_after_kib / 1024.0);
    else snprintf(label, sizeof label, "%s: peak %.0f MiB", cfg->name, r->peak_rss_kib / 1024.0);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\"%s>", lx + 34, ly + 4, ebb ? " font-weight=\"bold\"" : "");
    xml_text(f, label);
    fprintf(f, "</text>\n");
}

static void svg_legend_text(FILE *f, const struct frame *fr, double ly, const char *text) {
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#999\">", fr->L + fr->pw + 34, ly + 4);
    xml_text(f, text);
    fprintf(f, "</text>\n");
}

static void svg_live_legend(FILE *f, const struct frame *fr, double ly, const char *name) {
    double lx = fr->L + fr->pw;
    fprintf(f,
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999\" "
            "stroke-width=\"1.5\" stroke-dasharray=\"5,4\"/>\n",
            lx + 10, ly, lx + 30, ly);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">live bytes (", lx + 34, ly + 4);
    xml_text(f, name);
    fprintf(f, " run)</text>\n");
}

int bench_write_svg(const char *path, const struct bench_table *t) {
    struct cstats *st = calloc((size_t)t->n_cfgs, sizeof *st);
    if (!st) return -1;
    struct frame fr;
    int live_cfg = svg_scan(t, st, &fr);
    FILE *f = fopen(path, "w");
    if (!f) {
        free(st);
        return -1;
    }
    svg_titles(f, t, &fr);
    svg_axes(f, &fr);
    if (live_cfg >= 0) svg_live(f, &fr, report_run_at(t, live_cfg, st[live_cfg].median_run));
    double ly = fr.T + 4;
    for (int c = 0; c < t->n_cfgs; c++, ly += 19) {
        const struct bench_config *cfg = &t->cfgs[c];
        if (st[c].median_run >= 0) {
            svg_config(f, &fr, cfg, config_color(cfg->name, c), report_run_at(t, c, st[c].median_run), ly);
            continue;
        }
        char label[200];
        snprintf(label, sizeof label, "%s: %s", cfg->name,
                 cfg->skipped ? "skipped (not installed)" : "no valid run");
        svg_legend_text(f, &fr, ly, label);
    }
    if (live_cfg >= 0) svg_live_legend(f, &fr, ly, t->cfgs[live_cfg].name);
    fprintf(f, "</svg>\n");
    free(st);
    return fclose(f) == 0 ? 0 : -1;
}
