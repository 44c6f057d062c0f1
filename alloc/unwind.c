/* unwind.c: the call stack of a sampled allocation, taken inside malloc.
 *
 * The walk interprets the DWARF call-frame information of the loaded objects itself
 * (.eh_frame, found through the sorted table of .eh_frame_hdr), so that code built
 * without frame pointers (most distribution libraries, JNI libraries) gives its frames.
 * It never calls the dynamic loader (no dl_iterate_phdr, no dladdr, no libgcc unwinder:
 * they take the loader's locks, which a thread inside dlopen or inside a
 * dl_iterate_phdr callback holds while it mallocs), takes no lock a thread can wait on,
 * and allocates nothing.
 *
 * Where the objects are comes from /proc/self/maps and the ELF program headers in
 * memory, read once into a module table and read again when a return address falls
 * outside every known object and outside every known anonymous executable mapping
 * (JIT code).  Memory is never read on trust:
 *   - stack slots (saved registers, return addresses, what expressions dereference)
 *     only inside the thread's stack mapping, as /proc/self/maps showed it, from the
 *     walk's stack pointer up, and only after every kernel page of that part was read
 *     through process_vm_readv (see "the thread's stack" below);
 *   - unwind tables only inside the segment of their object that holds .eh_frame_hdr,
 *     after the object was checked in this walk: its first 16 header bytes read through
 *     process_vm_readv on the process itself (EFAULT, not SIGSEGV, if a dlclose unmapped
 *     it) must equal what the scan saw, so a table entry left by an object that was
 *     unloaded (and perhaps replaced at the same address) is never followed.
 * A return address inside a known object without unwind information for it is followed
 * by its frame pointer when that points into the stack; one outside every object (JIT
 * code, which has no unwind information) is recorded and ends the walk.
 *
 * The module table is two buffers: readers count themselves into the current one; a
 * rescan (one thread at a time, waited for only while it progresses) fills the other
 * only while nobody reads it, then publishes it.  All four steps are seq_cst, so a
 * reader that counted itself into a buffer and then saw it still current is seen by
 * the rescanner's check (and backs off otherwise); on arm64 as on x86. */
#define _GNU_SOURCE
#include <elf.h>
#include <fcntl.h>
#include <string.h>

#include "internal.h"

#if defined(__x86_64__)
#define UW_NREG 17 /* rax..r15, then the return-address column */
#define UW_SP 7
#define UW_FP 6
#define UW_RA 16
#define UW_SAVED ((1ull << 3) | (1ull << 6) | (1ull << 7) | (0xfull << 12)) /* rbx rbp rsp r12-15 */
#elif defined(__aarch64__)
#define UW_NREG 32 /* x0..x30, sp */
#define UW_SP 31
#define UW_FP 29
#define UW_RA 30
#define UW_SAVED (0xfffull << 19 | (1ull << 31)) /* x19..x30, sp */
#else
#define UW_NREG 0
#endif

#define UW_MODULES 512
#define UW_ANON 64
#define UW_STACKS 4096  /* readable anonymous mappings a table knows: where stacks may be */
#define UW_PROBE_MAX 64 /* kernel pages of a stack probed at one lookup at most */
#define UW_VERIFY 16    /* objects checked per walk */
#define UW_RESCANS 32   /* rescans per second at most (garbage return addresses) */
#define UW_SKIP_MAX 24  /* allocator frames are among the first this many */
#define UW_REMEMBER 4   /* DW_CFA_remember_state depth */

struct uw_range {
    uintptr_t lo, hi;
};

/* One loaded ELF object.  Immutable once its table is published. */
struct uw_module {
    uintptr_t text_lo, text_hi; /* its executable segments */
    uintptr_t seg_lo, seg_hi;   /* the segment holding .eh_frame_hdr: every CFI read stays in it */
    uintptr_t hdr, table;       /* .eh_frame_hdr and its search table; 0: none usable */
    uint32_t fde_count;
    bool self;       /* ebbmalloc's own object (the shared library) */
    uint32_t id;     /* the same for an object found again unchanged by a rescan */
    uint8_t sig[16]; /* the first bytes at hdr when the object was scanned */
};

struct uw_table {
    _Atomic int readers;
    unsigned n_mod, n_anon, n_stk;
    struct uw_module mod[UW_MODULES]; /* sorted by text_lo */
    struct uw_range anon[UW_ANON];    /* executable mappings that are no ELF object */
    /* Readable, not executable anonymous mappings (thread stacks among them), sorted and
     * disjoint as the maps list them; the first UW_STACKS only. */
    struct uw_range stk[UW_STACKS];
};

static struct uw_table *uw_buf[2];
static struct uw_table *_Atomic uw_cur;
static _Atomic int uw_scanning;        /* a rescan is running (trylock; see scan_wait) */
static _Atomic unsigned uw_scan_lines; /* maps lines a rescan has read: its progress */
static EBB_TLS bool tl_scanning;       /* this thread holds uw_scanning (a handler here waits not) */
static _Atomic uint64_t uw_window_ms;  /* the second in which rescans are counted */
static _Atomic unsigned uw_window_n;   /* rescans started in it */
static _Atomic int uw_pid;             /* for process_vm_readv on ourselves */
static _Atomic int uw_safe_read = 1;   /* process_vm_readv works here (seccomp may forbid it) */
/* Pages of return addresses that no rescan could place: they do not trigger another. */
static _Atomic uintptr_t uw_unknown[16];
static _Atomic unsigned uw_unknown_pos;
/* Maps text for rescans; used only by the thread that holds uw_scanning. */
static char uw_maps_buf[8192];

/* The thread's stacks: where stack reads are allowed, each the part of a stack mapping
 * from the lowest kernel page probed (see stack_range) to the mapping's end.  [0] is
 * where the last walk started; [1] the one before (a signal stack and the thread's
 * stack).  Written by this thread only; see tl_set for a walk in a signal handler. */
static EBB_TLS struct uw_range tl_stack[2];
/* How stacks were found (tests, ebbi_unwind_counts): /proc/self/maps read by one thread
 * for its own stack, and lookups in the shared table that held. */
static _Atomic uint64_t uw_maps_reads, uw_stack_hits;

/* ---------------------------------------------------------------- memory reads */
static int self_pid(void) { /* for process_vm_readv on ourselves */
    int pid = atomic_load_explicit(&uw_pid, memory_order_relaxed);
    if (!pid) atomic_store_explicit(&uw_pid, pid = ebbi_os_getpid(), memory_order_relaxed);
    return pid;
}

/* Reads n bytes at src through the kernel: 0 if they were all readable. */
static int safe_copy(void *dst, uintptr_t src, size_t n) {
    if (atomic_load_explicit(&uw_safe_read, memory_order_relaxed)) {
        long r = ebbi_os_read_mem(self_pid(), dst, (const void *)src, n);
        if (r == (long)n) return 0;
        if (r != EBB_READ_UNSUPPORTED) return -1;
        atomic_store_explicit(&uw_safe_read, 0, memory_order_relaxed);
    }
    /* Without process_vm_readv the ranges checked against /proc/self/maps are all there
     * is: the object was mapped when the maps were read a moment ago. */
    memcpy(dst, (const void *)src, n);
    return 0;
}

/* A stack slot: inside one of the thread's stack mappings (checked by the caller).
 * Stack memory of other frames is not the sanitizers' business. */
__attribute__((no_sanitize_address, no_sanitize("thread"))) static uint64_t stack_load(uintptr_t a) {
    return *(const volatile uint64_t *)a;
}

/* ---------------------------------------------------------------- /proc/self/maps */
struct maps_line {
    uintptr_t lo, hi, offset;
    uint64_t dev, inode;
    char perms[4];
};

struct maps_reader {
    int fd;
    char *buf;
    size_t cap, len, pos;
    bool eof;
};

static bool maps_open(struct maps_reader *m, char *buf, size_t cap) {
    m->fd = ebbi_os_open("/proc/self/maps", O_RDONLY, 0);
    m->buf = buf, m->cap = cap, m->len = m->pos = 0, m->eof = false;
    return m->fd >= 0;
}

static void maps_close(struct maps_reader *m) {
    if (m->fd >= 0) ebbi_os_close(m->fd);
    m->fd = -1;
}

static uint64_t parse_hex(const char **pp, const char *end) {
    const char *p = *pp;
    uint64_t v = 0;
    for (; p < end; p++) {
        unsigned c = (unsigned char)*p, d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else break;
        v = v << 4 | d;
    }
    *pp = p;
    return v;
}

/* The next line, its fields parsed; a line longer than the buffer is cut (only the
 * fields before the path are needed). */
static bool maps_next(struct maps_reader *m, struct maps_line *l) {
    for (;;) {
        char *nl = memchr(m->buf + m->pos, '\n', m->len - m->pos);
        if (!nl && !m->eof) {
            if (m->pos) { /* move the partial line to the front and read more */
                memmove(m->buf, m->buf + m->pos, m->len - m->pos);
                m->len -= m->pos, m->pos = 0;
            }
            if (m->len == m->cap) { /* a line longer than the buffer: keep its start */
                nl = m->buf + m->cap - 1;
            } else {
                long r = ebbi_os_read(m->fd, m->buf + m->len, m->cap - m->len);
                if (r <= 0) m->eof = true;
                else m->len += (size_t)r;
                continue;
            }
        }
        if (!nl) {
            if (m->pos >= m->len) return false;
            nl = m->buf + m->len; /* last line without a newline */
        }
        const char *p = m->buf + m->pos, *end = nl;
        bool cut = nl == m->buf + m->cap - 1 && *nl != '\n';
        m->pos = (size_t)(nl - m->buf) + 1;
        if (m->pos > m->len) m->pos = m->len;
        if (cut) { /* drop the rest of this line on the next reads */
            m->len = m->pos = 0;
            for (;;) {
                long r = ebbi_os_read(m->fd, m->buf, m->cap);
                if (r <= 0) {
                    m->eof = true;
                    break;
                }
                char *q = memchr(m->buf, '\n', (size_t)r);
                if (q) {
                    m->len = (size_t)r, m->pos = (size_t)(q - m->buf) + 1;
                    break;
                }
            }
        }
        l->lo = parse_hex(&p, end);
        if (p >= end || *p++ != '-') continue;
        l->hi = parse_hex(&p, end);
        if (p + 6 > end || *p++ != ' ') continue;
        memcpy(l->perms, p, 4);
        p += 5;
        l->offset = parse_hex(&p, end);
        if (p >= end || *p++ != ' ') continue;
        uint64_t major = parse_hex(&p, end);
        if (p >= end || *p++ != ':') continue;
        l->dev = major << 32 | parse_hex(&p, end);
        if (p >= end || *p++ != ' ') continue;
        uint64_t ino = 0;
        for (; p < end && *p >= '0' && *p <= '9'; p++) ino = ino * 10 + (uint64_t)(*p - '0');
        l->inode = ino;
        return true;
    }
}

/* The mapping that holds address a (the thread's stack), from /proc/self/maps. */
static bool find_mapping(uintptr_t a, struct uw_range *r) {
    char buf[1024];
    struct maps_reader m;
    if (!maps_open(&m, buf, sizeof buf)) return false;
    struct maps_line l;
    bool found = false;
    while (maps_next(&m, &l)) {
        if (a < l.lo) break;
        if (a < l.hi) {
            found = l.perms[0] == 'r';
            r->lo = l.lo, r->hi = l.hi;
            break;
        }
    }
    maps_close(&m);
    return found;
}

/* ---------------------------------------------------------------- the module table */
#define GROUP_MAX 16
struct group {
    uint64_t dev, inode;
    unsigned n;
    bool exec;
    struct maps_line l[GROUP_MAX];
};

static bool group_covers(const struct group *g, uintptr_t lo, uintptr_t hi, char perm) {
    uintptr_t a = lo;
    for (unsigned i = 0; i < g->n && a < hi; i++) {
        const struct maps_line *l = &g->l[i];
        if (l->lo <= a && a < l->hi) {
            if (l->perms[0] != 'r' || (perm == 'x' && l->perms[2] != 'x')) return false;
            a = l->hi;
        }
    }
    return a >= hi;
}

static void add_anon(struct uw_table *t, uintptr_t lo, uintptr_t hi) {
    if (t->n_anon && t->anon[t->n_anon - 1].hi == lo) {
        t->anon[t->n_anon - 1].hi = hi;
        return;
    }
    if (t->n_anon < UW_ANON) t->anon[t->n_anon++] = (struct uw_range){lo, hi};
}

static size_t enc_size(uint8_t enc) {
    switch (enc & 0x0f) {
    case 0x00:
    case 0x04:
    case 0x0c: return 8;
    case 0x02:
    case 0x0a: return 2;
    case 0x03:
    case 0x0b: return 4;
    default: return 0;
    }
}

static uintptr_t read_enc_fixed(const uint8_t *p, uint8_t enc, uintptr_t at, uintptr_t datarel) {
    uintptr_t v;
    switch (enc & 0x0f) {
    case 0x00:
    case 0x04:
    case 0x0c: memcpy(&v, p, 8); break;
    case 0x02: {
        uint16_t x;
        memcpy(&x, p, 2);
        v = x;
        break;
    }
    case 0x0a: {
        int16_t x;
        memcpy(&x, p, 2);
        v = (uintptr_t)(intptr_t)x;
        break;
    }
    case 0x03: {
        uint32_t x;
        memcpy(&x, p, 4);
        v = x;
        break;
    }
    case 0x0b: {
        int32_t x;
        memcpy(&x, p, 4);
        v = (uintptr_t)(intptr_t)x;
        break;
    }
    default: return 0;
    }
    switch (enc & 0x70) {
    case 0x10: return v + at;
    case 0x30: return v + datarel;
    case 0x00: return v;
    default: return 0;
    }
}

/* A group of mappings of one file: an ELF object if its first mapping holds the header. */
static void add_group(struct uw_table *t, const struct group *g, uintptr_t self_pc) {
    if (!g->n || !g->exec) return;
    const struct maps_line *first = &g->l[0];
    bool ok = first->offset == 0 && first->perms[0] == 'r' && t->n_mod < UW_MODULES;
    Elf64_Ehdr eh;
    Elf64_Phdr ph[32];
    if (ok)
        ok = !safe_copy(&eh, first->lo, sizeof eh) && !memcmp(eh.e_ident, ELFMAG, SELFMAG) &&
             eh.e_ident[EI_CLASS] == ELFCLASS64 && eh.e_phentsize == sizeof(Elf64_Phdr) && eh.e_phnum > 0 &&
             eh.e_phnum <= 32 &&
             eh.e_phoff + (size_t)eh.e_phnum * sizeof(Elf64_Phdr) <= first->hi - first->lo &&
             !safe_copy(ph, first->lo + eh.e_phoff, eh.e_phnum * sizeof(Elf64_Phdr));
    uintptr_t bias = 0;
    bool have_bias = false;
    if (ok) {
        size_t ps = ebbi_os_page_size();
        for (unsigned i = 0; i < eh.e_phnum; i++)
            if (ph[i].p_type == PT_LOAD && (ph[i].p_offset & ~(ps - 1)) == 0) {
                bias = first->lo - (ph[i].p_vaddr & ~(uintptr_t)(ps - 1));
                have_bias = true;
                break;
            }
    }
    struct uw_module md = {0};
    md.text_lo = UINTPTR_MAX;
    uintptr_t hdr_vaddr = 0;
    if (ok && have_bias) {
        for (unsigned i = 0; i < eh.e_phnum; i++) {
            if (ph[i].p_type == PT_LOAD && (ph[i].p_flags & PF_X)) {
                uintptr_t lo = bias + ph[i].p_vaddr, hi = lo + ph[i].p_memsz;
                if (!group_covers(g, lo, hi, 'x')) continue;
                if (lo < md.text_lo) md.text_lo = lo;
                if (hi > md.text_hi) md.text_hi = hi;
            }
            if (ph[i].p_type == PT_GNU_EH_FRAME) hdr_vaddr = ph[i].p_vaddr;
        }
    }
    if (!ok || !have_bias || md.text_lo >= md.text_hi) { /* not an object we can read */
        for (unsigned i = 0; i < g->n; i++)
            if (g->l[i].perms[2] == 'x') add_anon(t, g->l[i].lo, g->l[i].hi);
        return;
    }
    for (unsigned i = 0; hdr_vaddr && i < eh.e_phnum; i++) {
        if (ph[i].p_type != PT_LOAD || hdr_vaddr < ph[i].p_vaddr ||
            hdr_vaddr >= ph[i].p_vaddr + ph[i].p_memsz)
            continue;
        uintptr_t lo = bias + ph[i].p_vaddr, hi = lo + ph[i].p_filesz, h = bias + hdr_vaddr;
        uint8_t sig[16];
        if (!group_covers(g, lo, hi, 'r') || h + 16 > hi || safe_copy(sig, h, sizeof sig)) break;
        /* version 1; the search table must be sorted (datarel sdata4) */
        size_t ep = enc_size(sig[1]), fc = enc_size(sig[2]);
        if (sig[0] != 1 || sig[3] != 0x3b || !ep || !fc || 4 + ep + fc > 12) break;
        uintptr_t count = read_enc_fixed(sig + 4 + ep, sig[2], h + 4 + ep, h);
        uintptr_t table = h + 4 + ep + fc;
        if (!count || count > (hi - table) / 8) break;
        md.seg_lo = lo, md.seg_hi = hi, md.hdr = h, md.table = table;
        md.fde_count = (uint32_t)count;
        memcpy(md.sig, sig, sizeof sig);
    }
    /* ebbmalloc's own object: the shared library holds nothing else; linked into a
     * program (the static library), frames are known by their functions instead */
    md.self = EBB_OVERRIDE && self_pc >= md.text_lo && self_pc < md.text_hi;
    /* sorted insert */
    unsigned i = t->n_mod;
    while (i > 0 && t->mod[i - 1].text_lo > md.text_lo) {
        t->mod[i] = t->mod[i - 1];
        i--;
    }
    t->mod[i] = md;
    t->n_mod++;
}

/* Fills t from /proc/self/maps.  Caller holds uw_scanning. */
static bool scan_into(struct uw_table *t) {
    struct maps_reader m;
    if (!maps_open(&m, uw_maps_buf, sizeof uw_maps_buf)) return false;
    t->n_mod = t->n_anon = t->n_stk = 0;
    const uintptr_t self_pc = (uintptr_t)&scan_into;
    static struct group g; /* under uw_scanning */
    g.n = 0;
    struct maps_line l;
    while (maps_next(&m, &l)) {
        atomic_fetch_add_explicit(&uw_scan_lines, 1, memory_order_relaxed);
        bool exec = l.perms[2] == 'x';
        if (l.inode && g.n && l.inode == g.inode && l.dev == g.dev) {
            if (g.n < GROUP_MAX) g.l[g.n++] = l;
            g.exec |= exec;
            continue;
        }
        if (!l.inode) {
            /* an anonymous mapping inside or after an object (its .bss, a gap) leaves
             * the group open; executable anonymous memory is JIT code, readable data
             * may be a thread's stack */
            if (exec) add_anon(t, l.lo, l.hi);
            else if (l.perms[0] == 'r' && t->n_stk < UW_STACKS)
                t->stk[t->n_stk++] = (struct uw_range){l.lo, l.hi};
            continue;
        }
        add_group(t, &g, self_pc);
        g.dev = l.dev, g.inode = l.inode, g.n = 1, g.exec = exec;
        g.l[0] = l;
    }
    add_group(t, &g, self_pc);
    maps_close(&m);
    return true;
}

/* The current table with the caller counted in, or NULL (never scanned). */
static struct uw_table *table_acquire(void) {
    for (;;) {
        struct uw_table *t = atomic_load(&uw_cur);
        if (!t) return NULL;
        atomic_fetch_add(&t->readers, 1);
        if (atomic_load(&uw_cur) == t) return t;
        atomic_fetch_sub(&t->readers, 1);
    }
}

static void table_release(struct uw_table *t) {
    if (t) atomic_fetch_sub_explicit(&t->readers, 1, memory_order_release);
}

static bool tables_map(void);
static const struct uw_module *find_module(const struct uw_table *t, uintptr_t pc);
static uint32_t uw_ids; /* module ids handed out; under uw_scanning */

static bool rescan_allowed(void);
static const struct uw_range *table_stack(const struct uw_table *t, uintptr_t sp);
static void learn_tp_end(uintptr_t sp, uintptr_t hi);

/* Reads the maps into the buffer nobody reads, and makes it current.  False if another
 * thread is scanning, or still reads the other buffer, or the maps cannot be read, or
 * UW_RESCANS scans ran this second already (only scans count: a thread that waits for
 * another's scan costs nothing). */
static bool rescan(void) {
    /* tl_scanning is set before uw_scanning is taken and cleared after it is given back,
     * so that a handler here never waits for its own thread's scan; restored, not
     * cleared: a handler's own rescan may run inside the outer one's window */
    const bool was = tl_scanning;
    tl_scanning = true;
    atomic_signal_fence(memory_order_seq_cst);
    if (atomic_exchange_explicit(&uw_scanning, 1, memory_order_acquire)) {
        atomic_signal_fence(memory_order_seq_cst);
        tl_scanning = was;
        return false;
    }
    bool done = false;
    atomic_fetch_add_explicit(&uw_scan_lines, 1, memory_order_relaxed); /* opened (qemu reads it all here) */
    if (rescan_allowed() && (uw_buf[0] || tables_map())) {
        struct uw_table *cur = atomic_load(&uw_cur);
        struct uw_table *next = cur == uw_buf[0] ? uw_buf[1] : uw_buf[0];
        if (atomic_load(&next->readers) == 0 && scan_into(next)) {
            /* an object seen before keeps its id (and the cached rows made from it) */
            for (unsigned i = 0; i < next->n_mod; i++) {
                struct uw_module *m = &next->mod[i];
                const struct uw_module *old = cur ? find_module(cur, m->text_lo) : NULL;
                if (old && old->text_lo == m->text_lo && old->text_hi == m->text_hi && old->hdr == m->hdr &&
                    !memcmp(old->sig, m->sig, sizeof m->sig))
                    m->id = old->id;
                else m->id = ++uw_ids;
            }
            /* something changed: pages no scan could place may hold code now */
            if (!cur || next->n_mod != cur->n_mod)
                for (int i = 0; i < 16; i++) atomic_store_explicit(&uw_unknown[i], 0, memory_order_relaxed);
            /* this thread's stack as the scan saw it, which cannot be stale for it: the
             * view is recorded before the threads that wait see the table */
            const uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
            const struct uw_range *mine = table_stack(next, sp);
            if (mine) learn_tp_end(sp, mine->hi);
            atomic_store(&uw_cur, next);
            done = true;
        }
    }
    atomic_store_explicit(&uw_scanning, 0, memory_order_release);
    atomic_signal_fence(memory_order_seq_cst);
    tl_scanning = was;
    return done;
}

/* A rescan may start: under UW_RESCANS this second (racy counts are good enough). */
static bool rescan_allowed(void) {
    uint64_t now = ebbi_now_ms();
    if (now - atomic_load_explicit(&uw_window_ms, memory_order_relaxed) >= 1000) {
        atomic_store_explicit(&uw_window_ms, now, memory_order_relaxed);
        atomic_store_explicit(&uw_window_n, 0, memory_order_relaxed);
    }
    return atomic_fetch_add_explicit(&uw_window_n, 1, memory_order_relaxed) < UW_RESCANS;
}

/* Waits for another thread's scan to end.  A scan takes what reading the maps takes: a
 * millisecond or two for a few hundred mappings, tens of milliseconds for a JVM's
 * thousands or under a sanitizer, which is what the waiter would spend reading them
 * itself.  So it waits as long as the scanner reads a line every UW_SCAN_STALL_MS, and
 * UW_SCAN_WAIT_MS in all: a scanner stopped in a signal handler (a JVM's suspension) or
 * by a debugger costs a waiter at most that stall.  A handler that interrupted this
 * thread's own scan never waits (tl_scanning: the scan cannot go on before it returns).
 * The waiter spins briefly, then sleeps a millisecond at a time (clock_nanosleep through
 * syscall(): async-signal-safe, and not a cancellation point).  Only a thread that looks
 * for its stack waits (its other way is to read the maps itself); a walk that met an
 * unknown return address does not, it ends there.  Ordering: the scanner publishes
 * uw_cur before its release store of uw_scanning; the acquire load here that finds 0
 * makes the new table visible. */
#define UW_SCAN_STALL_MS 20
#define UW_SCAN_WAIT_MS 1000
/* Set by a test before its threads start, never while one waits: both limits (0: the
 * defaults), so that a scanner the scheduler keeps off the CPU longer than the stall
 * (a loaded machine, a sanitizer) is still waited for.  Plain: written before the
 * threads that read it are created. */
uint64_t ebbi_unwind_patience_ms;

static void scan_wait(void) {
    if (tl_scanning) return;
    const uint64_t stall = ebbi_unwind_patience_ms ? ebbi_unwind_patience_ms : UW_SCAN_STALL_MS,
                   limit = ebbi_unwind_patience_ms ? ebbi_unwind_patience_ms : UW_SCAN_WAIT_MS;
    const uint64_t start = ebbi_now_ms();
    uint64_t moved = start;
    unsigned lines = atomic_load_explicit(&uw_scan_lines, memory_order_relaxed);
    for (unsigned spin = 0; atomic_load_explicit(&uw_scanning, memory_order_acquire); spin++) {
        const uint64_t now = ebbi_now_ms();
        const unsigned l = atomic_load_explicit(&uw_scan_lines, memory_order_relaxed);
        if (l != lines) lines = l, moved = now;
        else if (now - moved >= stall) return;
        if (now - start >= limit) return;
        if (spin < 64) ebbi_cpu_relax();
        else ebbi_os_sleep_ms(1);
    }
}

/* A newer table than `seen`: scanned here (*own, when not NULL), or by the thread that
 * was scanning (waited for when `wait`). */
static bool refresh(struct uw_table *seen, bool wait, bool *own) {
    if (rescan()) {
        if (own) *own = true;
        return true;
    }
    if (wait) scan_wait();
    return atomic_load(&uw_cur) != seen;
}

static const struct uw_module *find_module(const struct uw_table *t, uintptr_t pc) {
    unsigned lo = 0, hi = t->n_mod;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (t->mod[mid].text_lo <= pc) lo = mid + 1;
        else hi = mid;
    }
    if (lo && pc < t->mod[lo - 1].text_hi) return &t->mod[lo - 1];
    return NULL;
}

static bool in_anon(const struct uw_table *t, uintptr_t pc) {
    for (unsigned i = 0; i < t->n_anon; i++)
        if (pc >= t->anon[i].lo && pc < t->anon[i].hi) return true;
    return false;
}

static bool unknown_page(uintptr_t pc) {
    uintptr_t page = pc >> 12;
    for (unsigned i = 0; i < 16; i++)
        if (atomic_load_explicit(&uw_unknown[i], memory_order_relaxed) == page) return true;
    return false;
}

static void note_unknown(uintptr_t pc) {
    unsigned i = atomic_fetch_add_explicit(&uw_unknown_pos, 1, memory_order_relaxed) % 16;
    atomic_store_explicit(&uw_unknown[i], pc >> 12, memory_order_relaxed);
}

/* ---------------------------------------------------------------- CFI */
struct cursor {
    const uint8_t *p, *end;
    bool bad;
};

static uint8_t c_u8(struct cursor *c) {
    if (c->p >= c->end) {
        c->bad = true;
        return 0;
    }
    return *c->p++;
}

static uint64_t c_fixed(struct cursor *c, size_t n) {
    if ((size_t)(c->end - c->p) < n) {
        c->bad = true;
        c->p = c->end;
        return 0;
    }
    uint64_t v = 0;
    memcpy(&v, c->p, n); /* little-endian targets only */
    c->p += n;
    return v;
}

static uint64_t c_uleb(struct cursor *c) {
    uint64_t v = 0;
    for (unsigned shift = 0;; shift += 7) {
        uint8_t b = c_u8(c);
        if (shift < 64) v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80) || c->bad) return v;
    }
}

static int64_t c_sleb(struct cursor *c) {
    uint64_t v = 0;
    unsigned shift = 0;
    uint8_t b;
    do {
        b = c_u8(c);
        if (shift < 64) v |= (uint64_t)(b & 0x7f) << shift;
        shift += 7;
    } while ((b & 0x80) && !c->bad);
    if (shift < 64 && (b & 0x40)) v |= ~(uint64_t)0 << shift;
    return (int64_t)v;
}

static uintptr_t c_encoded(struct cursor *c, uint8_t enc) {
    if (enc == 0xff) return 0;
    uintptr_t at = (uintptr_t)c->p, v;
    switch (enc & 0x0f) {
    case 0x00:
    case 0x04:
    case 0x0c: v = c_fixed(c, 8); break;
    case 0x01: v = c_uleb(c); break;
    case 0x09: v = (uintptr_t)c_sleb(c); break;
    case 0x02: v = (uint16_t)c_fixed(c, 2); break;
    case 0x0a: v = (uintptr_t)(intptr_t)(int16_t)c_fixed(c, 2); break;
    case 0x03: v = (uint32_t)c_fixed(c, 4); break;
    case 0x0b: v = (uintptr_t)(intptr_t)(int32_t)c_fixed(c, 4); break;
    default: c->bad = true; return 0;
    }
    switch (enc & 0x70) {
    case 0x00: break;
    case 0x10: v += at; break;
    default: c->bad = true; return 0; /* textrel, datarel, funcrel: not used in .eh_frame here */
    }
    return v;
}

struct cie {
    uintptr_t addr;
    const uint8_t *insns, *end;
    uint64_t code_align;
    int64_t data_align;
    unsigned ra;
    uint8_t fde_enc;
    bool aug_z, signal;
};

/* A length-prefixed CIE or FDE record at a, inside the module's segment. */
static bool record_at(const struct uw_module *m, uintptr_t a, struct cursor *c) {
    if (a < m->seg_lo || a + 4 > m->seg_hi) return false;
    c->p = (const uint8_t *)a, c->end = (const uint8_t *)m->seg_hi, c->bad = false;
    uint64_t len = c_fixed(c, 4);
    if (len == 0xffffffffu) len = c_fixed(c, 8);
    if (c->bad || len == 0 || len > (uint64_t)(c->end - c->p)) return false;
    c->end = c->p + len;
    return true;
}

static bool parse_cie(const struct uw_module *m, uintptr_t a, struct cie *ci) {
    struct cursor c;
    if (!record_at(m, a, &c) || c_fixed(&c, 4) != 0) return false;
    uint8_t version = c_u8(&c);
    if (version != 1 && version != 3) return false;
    char aug[8];
    unsigned n = 0;
    for (;;) {
        uint8_t ch = c_u8(&c);
        if (c.bad) return false;
        if (!ch) break;
        if (n == sizeof aug - 1) return false;
        aug[n++] = (char)ch;
    }
    aug[n] = 0;
    ci->addr = a;
    ci->code_align = c_uleb(&c);
    ci->data_align = c_sleb(&c);
    ci->ra = version == 1 ? c_u8(&c) : (unsigned)c_uleb(&c);
    ci->fde_enc = 0;
    ci->aug_z = aug[0] == 'z';
    ci->signal = false;
    const uint8_t *aug_end = NULL;
    if (ci->aug_z) {
        uint64_t al = c_uleb(&c);
        if (c.bad || al > (uint64_t)(c.end - c.p)) return false;
        aug_end = c.p + al;
    } else if (n) {
        return false; /* an augmentation we cannot skip */
    }
    for (unsigned i = 1; i < n; i++) {
        switch (aug[i]) {
        case 'R': ci->fde_enc = c_u8(&c); break;
        case 'L': c_u8(&c); break;
        case 'P': {
            uint8_t e = c_u8(&c);
            c_encoded(&c, e & 0x7f);
            break;
        }
        case 'S': ci->signal = true; break;
        case 'B':
        case 'G': break;
        default: i = n; break; /* unknown: the 'z' length skips its data */
        }
    }
    if (c.bad) return false;
    if (aug_end) c.p = aug_end;
    ci->insns = c.p, ci->end = c.end;
    return true;
}

struct fde {
    uintptr_t begin, end;
    const uint8_t *insns, *insns_end;
};

/* The FDE that covers pc, with its CIE (cached across the frames of one walk). */
static bool find_fde(const struct uw_module *m, uintptr_t pc, struct fde *f, struct cie *ci) {
    if (!m->table) return false;
    const int32_t *t = (const int32_t *)m->table;
    uint32_t lo = 0, hi = m->fde_count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (m->hdr + (intptr_t)t[2 * mid] <= pc) lo = mid + 1;
        else hi = mid;
    }
    if (!lo) return false;
    uintptr_t a = m->hdr + (intptr_t)t[2 * (lo - 1) + 1];
    struct cursor c;
    if (!record_at(m, a, &c)) return false;
    uintptr_t id_at = (uintptr_t)c.p;
    uint32_t id = (uint32_t)c_fixed(&c, 4);
    if (c.bad || !id) return false;
    uintptr_t cie_at = id_at - id;
    if (ci->addr != cie_at && !parse_cie(m, cie_at, ci)) {
        ci->addr = 0;
        return false;
    }
    f->begin = c_encoded(&c, ci->fde_enc);
    f->end = f->begin + (c_encoded(&c, ci->fde_enc & 0x0f));
    if (ci->aug_z) {
        uint64_t al = c_uleb(&c);
        if (al > (uint64_t)(c.end - c.p)) return false;
        c.p += al;
    }
    if (c.bad || pc < f->begin || pc >= f->end) return false;
    f->insns = c.p, f->insns_end = c.end;
    return true;
}

/* Register rules of one row. */
enum { R_SAME, R_UNDEF, R_OFFSET, R_VAL_OFFSET, R_REG, R_EXPR, R_VAL_EXPR };
struct rules {
    int64_t cfa_off;
    uintptr_t cfa_expr; /* length-prefixed expression; 0: cfa = cfa_reg + cfa_off */
    unsigned cfa_reg;
    bool ra_signed; /* arm64 pointer authentication: the return address is signed */
    uint8_t kind[UW_NREG ? UW_NREG : 1];
    int64_t val[UW_NREG ? UW_NREG : 1];
};

static void set_rule(struct rules *r, uint64_t reg, int kind, int64_t val) {
    if (reg < UW_NREG) r->kind[reg] = (uint8_t)kind, r->val[reg] = val;
}

/* Runs CFA instructions [p, end) from location loc until the row for pc is complete. */
static bool run_cfa(const struct uw_module *m, const struct cie *ci, const uint8_t *p, const uint8_t *end,
                    uintptr_t loc, uintptr_t pc, struct rules *r, const struct rules *init) {
    struct rules saved[UW_REMEMBER];
    unsigned depth = 0;
    struct cursor c = {p, end, false};
    (void)m;
    while (c.p < c.end && !c.bad) {
        uint8_t op = c_u8(&c);
        uint64_t reg, delta = 0;
        bool advance = false;
        switch (op & 0xc0) {
        case 0x40:
            delta = op & 0x3f;
            advance = true;
            break;
        case 0x80:
            reg = op & 0x3f;
            set_rule(r, reg, R_OFFSET, (int64_t)c_uleb(&c) * ci->data_align);
            continue;
        case 0xc0:
            reg = op & 0x3f;
            if (reg < UW_NREG) r->kind[reg] = init->kind[reg], r->val[reg] = init->val[reg];
            continue;
        }
        if (!advance) {
            switch (op) {
            case 0x00: break;
            case 0x01: {
                uintptr_t to = c_encoded(&c, ci->fde_enc);
                if (to > pc) return !c.bad;
                loc = to;
                break;
            }
            case 0x02:
                delta = c_u8(&c);
                advance = true;
                break;
            case 0x03:
                delta = c_fixed(&c, 2);
                advance = true;
                break;
            case 0x04:
                delta = c_fixed(&c, 4);
                advance = true;
                break;
            case 0x05:
                reg = c_uleb(&c);
                set_rule(r, reg, R_OFFSET, (int64_t)c_uleb(&c) * ci->data_align);
                break;
            case 0x06:
                reg = c_uleb(&c);
                if (reg < UW_NREG) r->kind[reg] = init->kind[reg], r->val[reg] = init->val[reg];
                break;
            case 0x07: set_rule(r, c_uleb(&c), R_UNDEF, 0); break;
            case 0x08: set_rule(r, c_uleb(&c), R_SAME, 0); break;
            case 0x09:
                reg = c_uleb(&c);
                set_rule(r, reg, R_REG, (int64_t)c_uleb(&c));
                break;
            case 0x0a:
                if (depth == UW_REMEMBER) return false;
                saved[depth++] = *r;
                break;
            case 0x0b:
                if (!depth) return false;
                {
                    bool s = r->ra_signed;
                    *r = saved[--depth];
                    r->ra_signed = s;
                }
                break;
            case 0x0c:
                r->cfa_reg = (unsigned)c_uleb(&c);
                r->cfa_off = (int64_t)c_uleb(&c);
                r->cfa_expr = 0;
                break;
            case 0x0d:
                r->cfa_reg = (unsigned)c_uleb(&c);
                r->cfa_expr = 0;
                break;
            case 0x0e: r->cfa_off = (int64_t)c_uleb(&c); break;
            case 0x0f: {
                r->cfa_expr = (uintptr_t)c.p;
                uint64_t len = c_uleb(&c);
                if (len > (uint64_t)(c.end - c.p)) return false;
                c.p += len;
                break;
            }
            case 0x10:
            case 0x16: {
                reg = c_uleb(&c);
                uintptr_t at = (uintptr_t)c.p;
                uint64_t len = c_uleb(&c);
                if (len > (uint64_t)(c.end - c.p)) return false;
                c.p += len;
                set_rule(r, reg, op == 0x10 ? R_EXPR : R_VAL_EXPR, (int64_t)at);
                break;
            }
            case 0x11:
                reg = c_uleb(&c);
                set_rule(r, reg, R_OFFSET, c_sleb(&c) * ci->data_align);
                break;
            case 0x12:
                r->cfa_reg = (unsigned)c_uleb(&c);
                r->cfa_off = c_sleb(&c) * ci->data_align;
                r->cfa_expr = 0;
                break;
            case 0x13: r->cfa_off = c_sleb(&c) * ci->data_align; break;
            case 0x14:
                reg = c_uleb(&c);
                set_rule(r, reg, R_VAL_OFFSET, (int64_t)c_uleb(&c) * ci->data_align);
                break;
            case 0x15:
                reg = c_uleb(&c);
                set_rule(r, reg, R_VAL_OFFSET, c_sleb(&c) * ci->data_align);
                break;
            case 0x2e: c_uleb(&c); break; /* GNU_args_size */
            case 0x2f:
                reg = c_uleb(&c);
                set_rule(r, reg, R_OFFSET, -(int64_t)c_uleb(&c) * ci->data_align);
                break;
#if defined(__aarch64__)
            case 0x2d: r->ra_signed = !r->ra_signed; break; /* AARCH64_negate_ra_state */
#endif
            default: return false;
            }
        }
        if (advance) {
            uintptr_t to = loc + delta * ci->code_align;
            if (to > pc) return !c.bad;
            loc = to;
        }
    }
    return !c.bad;
}

/* ---------------------------------------------------------------- the walk */
struct walk {
    uint64_t r[UW_NREG ? UW_NREG : 1];
    uint64_t valid; /* bit i: r[i] is known */
    uintptr_t pc;
    bool exact; /* pc is where execution stopped, not a return address */
    struct uw_range stk[2];
    struct uw_table *tab;
    const struct uw_module *checked[UW_VERIFY];
    unsigned nchecked;
    struct cie cie;
};

static bool stack_ok(const struct walk *w, uintptr_t a) {
    if (a & 7) return false;
    for (int i = 0; i < 2; i++)
        if (a >= w->stk[i].lo && a + 8 <= w->stk[i].hi) return true;
    return false;
}

/* The module may be followed in this walk: its header is what the scan saw. */
static bool module_checked(struct walk *w, const struct uw_module *m) {
    for (unsigned i = 0; i < w->nchecked; i++)
        if (w->checked[i] == m) return true;
    if (w->nchecked == UW_VERIFY) return false;
    uint8_t sig[16];
    if (safe_copy(sig, m->hdr, sizeof sig) || memcmp(sig, m->sig, sizeof sig)) return false;
    w->checked[w->nchecked++] = m;
    return true;
}

/* DWARF expression: the value it leaves.  Dereferences only stack slots. */
static bool eval(struct walk *w, const struct uw_module *m, uintptr_t at, bool push_cfa, uintptr_t cfa,
                 uint64_t *out) {
    struct cursor c = {(const uint8_t *)at, (const uint8_t *)m->seg_hi, false};
    if (at < m->seg_lo || at >= m->seg_hi) return false;
    uint64_t len = c_uleb(&c);
    if (c.bad || len > (uint64_t)(c.end - c.p)) return false;
    c.end = c.p + len;
    uint64_t st[16];
    unsigned sp = 0;
    if (push_cfa) st[sp++] = cfa;
#define NEED(k)                     \
    do {                            \
        if (sp < (k)) return false; \
    } while (0)
#define PUSH(v)                     \
    do {                            \
        uint64_t v_ = (v);          \
        if (sp == 16) return false; \
        st[sp++] = v_;              \
    } while (0)
    while (c.p < c.end) {
        uint8_t op = c_u8(&c);
        uint64_t a, b;
        if (op >= 0x30 && op <= 0x4f) {
            PUSH(op - 0x30u);
            continue;
        }                               /* lit */
        if (op >= 0x70 && op <= 0x8f) { /* breg */
            unsigned reg = op - 0x70u;
            int64_t off = c_sleb(&c);
            if (reg >= UW_NREG || !(w->valid >> reg & 1)) return false;
            PUSH(w->r[reg] + (uint64_t)off);
            continue;
        }
        switch (op) {
        case 0x06: /* deref */
            NEED(1);
            if (!stack_ok(w, st[sp - 1])) return false;
            st[sp - 1] = stack_load(st[sp - 1]);
            break;
        case 0x08: PUSH((uint8_t)c_fixed(&c, 1)); break;
        case 0x09: PUSH((uint64_t)(int64_t)(int8_t)c_fixed(&c, 1)); break;
        case 0x0a: PUSH((uint16_t)c_fixed(&c, 2)); break;
        case 0x0b: PUSH((uint64_t)(int64_t)(int16_t)c_fixed(&c, 2)); break;
        case 0x0c: PUSH((uint32_t)c_fixed(&c, 4)); break;
        case 0x0d: PUSH((uint64_t)(int64_t)(int32_t)c_fixed(&c, 4)); break;
        case 0x0e:
        case 0x0f: PUSH(c_fixed(&c, 8)); break;
        case 0x10: PUSH(c_uleb(&c)); break;
        case 0x11: PUSH((uint64_t)c_sleb(&c)); break;
        case 0x12:
            NEED(1);
            PUSH(st[sp - 1]);
            break; /* dup */
        case 0x13:
            NEED(1);
            sp--;
            break; /* drop */
        case 0x14:
            NEED(2);
            PUSH(st[sp - 2]);
            break; /* over */
        case 0x16:
            NEED(2);
            a = st[sp - 1];
            st[sp - 1] = st[sp - 2];
            st[sp - 2] = a;
            break;
        case 0x1a:
            NEED(2);
            sp--;
            st[sp - 1] &= st[sp];
            break;
        case 0x1c:
            NEED(2);
            sp--;
            st[sp - 1] -= st[sp];
            break;
        case 0x1e:
            NEED(2);
            sp--;
            st[sp - 1] *= st[sp];
            break;
        case 0x1f:
            NEED(1);
            st[sp - 1] = -st[sp - 1];
            break;
        case 0x20:
            NEED(1);
            st[sp - 1] = ~st[sp - 1];
            break;
        case 0x21:
            NEED(2);
            sp--;
            st[sp - 1] |= st[sp];
            break;
        case 0x22:
            NEED(2);
            sp--;
            st[sp - 1] += st[sp];
            break;
        case 0x23:
            NEED(1);
            st[sp - 1] += c_uleb(&c);
            break; /* plus_uconst */
        case 0x24:
            NEED(2);
            sp--;
            st[sp - 1] = st[sp] < 64 ? st[sp - 1] << st[sp] : 0;
            break;
        case 0x25:
            NEED(2);
            sp--;
            st[sp - 1] = st[sp] < 64 ? st[sp - 1] >> st[sp] : 0;
            break;
        case 0x26:
            NEED(2);
            sp--;
            st[sp - 1] = (uint64_t)((int64_t)st[sp - 1] >> (st[sp] < 63 ? st[sp] : 63));
            break;
        case 0x27:
            NEED(2);
            sp--;
            st[sp - 1] ^= st[sp];
            break;
        case 0x29:
        case 0x2a:
        case 0x2b:
        case 0x2c:
        case 0x2d:
        case 0x2e: /* eq ge gt le lt ne */
            NEED(2);
            sp--;
            a = st[sp - 1], b = st[sp];
            st[sp - 1] = op == 0x29   ? a == b
                         : op == 0x2a ? (int64_t)a >= (int64_t)b
                         : op == 0x2b ? (int64_t)a > (int64_t)b
                         : op == 0x2c ? (int64_t)a <= (int64_t)b
                         : op == 0x2d ? (int64_t)a < (int64_t)b
                                      : a != b;
            break;
        case 0x2f: {
            int16_t d = (int16_t)c_fixed(&c, 2);
            if (d < 0) return false;
            c.p += d;
            break;
        } /* skip, forward only */
        case 0x28: {
            int16_t d = (int16_t)c_fixed(&c, 2);
            NEED(1);
            if (st[--sp]) {
                if (d < 0) return false;
                c.p += d;
            }
            break;
        }
        case 0x92: { /* bregx */
            uint64_t reg = c_uleb(&c);
            int64_t off = c_sleb(&c);
            if (reg >= UW_NREG || !(w->valid >> reg & 1)) return false;
            PUSH(w->r[reg] + (uint64_t)off);
            break;
        }
        case 0x96: break; /* nop */
        default: return false;
        }
        if (c.bad || c.p > c.end) return false;
    }
#undef NEED
#undef PUSH
    if (!sp) return false;
    *out = st[sp - 1];
    return true;
}

/* ---------------------------------------------------------------- the row cache
 * Most samples walk through call sites seen before.  The row of a return address (CFA
 * and saved-register rules), when it is the common kind (CFA = register + offset, the
 * callee-saved registers and the return address in stack slots or unchanged, every
 * other register unchanged), is kept here, so that the walk does not read the unwind
 * tables, nor check their object, for it again.  Applying a row reads only the stack,
 * which is checked as always, so a row left by an object that was since unloaded gives
 * wrong frames at worst, never a fault.  Two ways per set, by return address (so that
 * two frames of one stack whose addresses hash alike do not evict each other at every
 * walk: under a direct map they did, for two of the ten frames of the fast-path
 * benchmark's samples under callgrind, and cost two walks of the tables a sample); each
 * entry is a seqlock (seq odd while written; a reader that saw the same even seq before and
 * after, with an acquire fence between its reads and the second look, read one whole
 * entry); a writer that finds it odd leaves it. */
#if defined(__x86_64__)
#define UW_NSAVE 7
static const uint8_t save_reg[UW_NSAVE] = {3, 6, 12, 13, 14, 15, 16};
#elif defined(__aarch64__)
#define UW_NSAVE 12
static const uint8_t save_reg[UW_NSAVE] = {19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30};
#else
#define UW_NSAVE 1
static const uint8_t save_reg[UW_NSAVE] = {0};
#endif
#define UW_ROWS 2048
#define ROW_SAME INT16_MIN
#define ROW_UNDEF (INT16_MIN + 1)
#define ROW_SIGNAL 1 /* the frame is a signal trampoline: the next pc is exact */
#define ROW_SELF 2   /* the frame is ebbmalloc's (its own shared object) */

#define ROW_FIELDS                                         \
    uintptr_t key; /* pc * 2 + exact; 0: empty */          \
    uintptr_t fn;  /* start of the frame's function */     \
    uint32_t mod;  /* id of the object it was made from */ \
    int32_t cfa_off;                                       \
    uint8_t cfa_reg, flags;                                \
    int16_t off[UW_NSAVE]; /* slot at CFA + 8 * off, or ROW_SAME / ROW_UNDEF */
struct row_data {
    ROW_FIELDS
};
#define ROW_WORDS ((sizeof(struct row_data) + 7) / 8)
struct row {
    union {
        struct {
            ROW_FIELDS
        };
        uint64_t w[ROW_WORDS]; /* copied word by word under the seqlock */
    };
    _Atomic uint64_t seq;
};

_Static_assert(offsetof(struct row, key) == 0, "w[0] is the key (row_put reads it)");

static struct row *uw_rows; /* UW_ROWS, mapped with the module tables */

/* The two module tables and the row cache, touched only where used.  Under uw_scanning. */
static bool tables_map(void) {
    size_t ps = ebbi_os_page_size(), n = 2 * sizeof(struct uw_table) + UW_ROWS * sizeof(struct row);
    struct uw_table *b = ebbi_os.map((n + ps - 1) & ~(ps - 1)); /* whole kernel pages */
    if (!b) return false;
    uw_rows = (struct row *)(b + 2);
    uw_buf[1] = b + 1;
    uw_buf[0] = b;
    return true;
}

/* The first of the two entries of key's set. */
static struct row *row_set(uintptr_t key) {
    uint64_t h = (uint64_t)key * 0x9E3779B97F4A7C15ull;
    return &uw_rows[(h >> (64 - 10)) * 2];
}
_Static_assert(UW_ROWS == 2 << 10, "row_set's shift");

static bool row_read(struct row *r, uintptr_t key, struct row *out) {
    uint64_t s1 = atomic_load_explicit(&r->seq, memory_order_acquire);
    if (s1 & 1) return false;
    for (size_t i = 0; i < ROW_WORDS; i++) out->w[i] = __atomic_load_n(&r->w[i], __ATOMIC_RELAXED);
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(&r->seq, memory_order_relaxed) == s1 && out->key == key;
}

static bool row_get(uintptr_t key, struct row *out) {
    if (!uw_rows) return false;
    struct row *r = row_set(key);
    return row_read(r, key, out) || row_read(r + 1, key, out);
}

/* Into the entry of its set that holds its key, else an empty one, else the one its key
 * picks (the keys are read without the seqlock: a wrong guess only places it worse). */
static void row_put(const struct row *in) {
    if (!uw_rows) return;
    struct row *r = row_set(in->key);
    uintptr_t k0 = __atomic_load_n(&r[0].w[0], __ATOMIC_RELAXED),
              k1 = __atomic_load_n(&r[1].w[0], __ATOMIC_RELAXED);
    if (k0 != in->key && (k1 == in->key || (k0 && (!k1 || (in->key >> 3 & 1))))) r++;
    uint64_t s = atomic_load_explicit(&r->seq, memory_order_relaxed);
    if ((s & 1) || !atomic_compare_exchange_strong_explicit(&r->seq, &s, s + 1, memory_order_relaxed,
                                                            memory_order_relaxed))
        return;
    atomic_thread_fence(memory_order_release);
    for (size_t i = 0; i < ROW_WORDS; i++) __atomic_store_n(&r->w[i], in->w[i], __ATOMIC_RELAXED);
    atomic_store_explicit(&r->seq, s + 2, memory_order_release);
}

/* For tests: two rows whose keys fall into one set are both kept.  False while the row
 * cache is not mapped (before the first walk).  The keys are no return address (above
 * user space); the two entries they take are recomputed by the next walk that needs
 * them. */
bool ebbi_unwind_rows_share_a_set(void) {
    if (!uw_rows) return false;
    uintptr_t a = (uintptr_t)1 << 62, b = a + 2;
    while (row_set(b) != row_set(a)) b += 2;
    struct row ra, rb, out;
    memset(&ra, 0, sizeof ra);
    memset(&rb, 0, sizeof rb);
    ra.key = a, rb.key = b;
    row_put(&ra);
    row_put(&rb);
    return row_get(a, &out) && row_get(b, &out);
}

/* For tests: the first entry of that set is left as a writer that a fork cut off leaves
 * it (seq odd), or (cut false) made whole again. */
void ebbi_unwind_row_cut(bool cut) {
    if (!uw_rows) return;
    struct row *r = row_set((uintptr_t)1 << 62);
    uint64_t seq = atomic_load_explicit(&r->seq, memory_order_relaxed);
    if (cut != (bool)(seq & 1)) atomic_store_explicit(&r->seq, seq + 1, memory_order_relaxed);
}

/* The compact form of rules r, if they have one. */
static bool row_make(const struct rules *r, unsigned ra_col, struct row *out) {
    if (r->cfa_expr || r->cfa_reg >= UW_NREG || r->cfa_off != (int32_t)r->cfa_off || ra_col != UW_RA)
        return false;
    out->cfa_reg = (uint8_t)r->cfa_reg;
    out->cfa_off = (int32_t)r->cfa_off;
    uint64_t in_set = 0;
    for (int i = 0; i < UW_NSAVE; i++) {
        unsigned g = save_reg[i];
        in_set |= 1ull << g;
        switch (r->kind[g]) {
        case R_SAME: out->off[i] = ROW_SAME; break;
        case R_UNDEF: out->off[i] = ROW_UNDEF; break;
        case R_OFFSET:
            if ((r->val[g] & 7) || r->val[g] / 8 <= ROW_UNDEF || r->val[g] / 8 > INT16_MAX) return false;
            out->off[i] = (int16_t)(r->val[g] / 8);
            break;
        default: return false;
        }
    }
    for (unsigned g = 0; g < UW_NREG; g++)
        if (!(in_set >> g & 1) && g != UW_SP && r->kind[g] != R_SAME) return false;
    return r->kind[UW_SP] == R_SAME;
}

/* ---------------------------------------------------------------- steps */
/* Frame-pointer step for a frame without unwind information. */
static bool fp_step(struct walk *w) {
    if (!(w->valid >> UW_FP & 1)) return false;
    uintptr_t fp = w->r[UW_FP];
    if (fp < w->r[UW_SP] || !stack_ok(w, fp) || !stack_ok(w, fp + 8)) return false;
    uint64_t ra = stack_load(fp + 8), next = stack_load(fp);
    w->r[UW_SP] = fp + 16;
    w->r[UW_FP] = next;
    w->valid = 1ull << UW_SP | 1ull << UW_FP;
    w->pc = ra & ((1ull << EBB_ADDR_BITS) - 1);
    w->exact = false;
    return w->pc != 0;
}

/* The stack grows down: a frame that does not move outward ends the walk, except
 * across a signal frame (from a signal stack to the thread's stack). */
static bool moved_out(const struct walk *w, uint64_t new_sp, bool signal) {
    return signal || new_sp > w->r[UW_SP];
}

/* One frame outward by a cached row. */
static bool row_step(struct walk *w, const struct row *r) {
    if (r->cfa_reg >= UW_NREG || !(w->valid >> r->cfa_reg & 1)) return false;
    uint64_t cfa = w->r[r->cfa_reg] + (uint64_t)(int64_t)r->cfa_off;
    uint64_t v[UW_NSAVE], nvalid = w->valid;
    for (int i = 0; i < UW_NSAVE; i++) {
        unsigned g = save_reg[i];
        v[i] = w->r[g];
        if (r->off[i] == ROW_SAME) continue;
        nvalid &= ~(1ull << g);
        if (r->off[i] == ROW_UNDEF) continue;
        uint64_t a = cfa + (uint64_t)(int64_t)r->off[i] * 8;
        if (stack_ok(w, a)) v[i] = stack_load(a), nvalid |= 1ull << g;
    }
    if (!(nvalid >> UW_RA & 1) || !moved_out(w, cfa, r->flags & ROW_SIGNAL)) return false;
    uint64_t ra = UW_RA == save_reg[UW_NSAVE - 1] ? v[UW_NSAVE - 1] : w->r[UW_RA];
    for (int i = 0; i < UW_NSAVE; i++) w->r[save_reg[i]] = v[i];
    w->r[UW_SP] = cfa;
    w->valid = nvalid | 1ull << UW_SP;
    w->pc = ra & ((1ull << EBB_ADDR_BITS) - 1); /* arm64: the pointer authentication bits go */
    w->exact = r->flags & ROW_SIGNAL;
    return w->pc != 0;
}

/* One frame outward from the unwind tables of m, which holds w->pc.  Fills *row with
 * the compact form when there is one (row->key 0 otherwise). */
static bool cfi_step(struct walk *w, const struct uw_module *m, struct row *row) {
    row->key = 0;
    row->fn = 0;
    uintptr_t look = w->exact ? w->pc : w->pc - 1;
    struct fde f;
    if (!m->table || !module_checked(w, m) || !find_fde(m, look, &f, &w->cie)) return fp_step(w);
    row->fn = f.begin;
    struct rules init = {0}, r;
    init.cfa_reg = UW_SP;
    if (!run_cfa(m, &w->cie, w->cie.insns, w->cie.end, 0, UINTPTR_MAX, &init, &init)) return false;
    init.ra_signed = false;
    r = init;
    if (!run_cfa(m, &w->cie, f.insns, f.insns_end, f.begin, look, &r, &init)) return false;
    uint64_t cfa;
    if (r.cfa_expr) {
        if (!eval(w, m, r.cfa_expr, false, 0, &cfa)) return false;
    } else {
        if (r.cfa_reg >= UW_NREG || !(w->valid >> r.cfa_reg & 1)) return false;
        cfa = w->r[r.cfa_reg] + (uint64_t)r.cfa_off;
    }
    unsigned ra_col = w->cie.ra;
    if (row_make(&r, ra_col, row)) {
        row->key = w->pc * 2 + w->exact;
        row->flags = (uint8_t)((w->cie.signal ? ROW_SIGNAL : 0) | (m->self ? ROW_SELF : 0));
    }
    if (ra_col >= UW_NREG || r.kind[ra_col] == R_UNDEF) return false; /* the outermost frame */
    uint64_t nr[UW_NREG], nvalid = 0;
    for (unsigned i = 0; i < UW_NREG; i++) {
        uint64_t v = 0, a;
        bool ok = false;
        switch (r.kind[i]) {
        case R_SAME: v = w->r[i], ok = w->valid >> i & 1; break;
        case R_UNDEF: break;
        case R_OFFSET:
            a = cfa + (uint64_t)r.val[i];
            if ((ok = stack_ok(w, a))) v = stack_load(a);
            break;
        case R_VAL_OFFSET: v = cfa + (uint64_t)r.val[i], ok = true; break;
        case R_REG:
            if (r.val[i] >= 0 && r.val[i] < UW_NREG) v = w->r[r.val[i]], ok = w->valid >> r.val[i] & 1;
            break;
        case R_EXPR:
            if ((ok = eval(w, m, (uintptr_t)r.val[i], true, cfa, &a) && stack_ok(w, a))) v = stack_load(a);
            break;
        case R_VAL_EXPR: ok = eval(w, m, (uintptr_t)r.val[i], true, cfa, &v); break;
        }
        nr[i] = v;
        if (ok) nvalid |= 1ull << i;
    }
    if (!(nvalid >> ra_col & 1)) return false;
    if (r.kind[UW_SP] == R_SAME) nr[UW_SP] = cfa, nvalid |= 1ull << UW_SP;
    if (!moved_out(w, nr[UW_SP], w->cie.signal)) return false;
    bool sig = w->cie.signal;
    memcpy(w->r, nr, sizeof nr);
    w->valid = nvalid;
    w->pc = nr[ra_col] & ((1ull << EBB_ADDR_BITS) - 1); /* arm64: the pointer authentication bits go */
    w->exact = sig;
    return w->pc != 0;
}

/* ---------------------------------------------------------------- capture */
/* The functions that can be the outermost allocator frame of a sample, for builds where
 * the allocator shares its object with the program (the static library). */
static const void *const entry_fns[] = {
    (const void *)ebb_malloc,       (const void *)ebb_calloc,         (const void *)ebb_realloc,
    (const void *)ebb_reallocarray, (const void *)ebb_posix_memalign, (const void *)ebb_aligned_alloc,
    (const void *)ebb_memalign,     (const void *)ebb_valloc,         (const void *)ebb_pvalloc,
    (const void *)ebbi_malloc_slow, (const void *)ebbi_large_alloc,   (const void *)ebbi_prof_sample_alloc,
    (const void *)ebbi_prof_large,  (const void *)ebbi_prof_regrow,   (const void *)ebbi_unwind,
};

static bool entry_fn(uintptr_t fn) {
    for (size_t i = 0; i < sizeof entry_fns / sizeof entry_fns[0]; i++)
        if ((uintptr_t)entry_fns[i] == fn) return true;
    return false;
}

/* ---------------------------------------------------------------- the thread's stack
 * A walk reads stack slots only in [lo, hi) of the stack it runs on: hi the end of the
 * mapping that holds its stack pointer, lo at or below that stack pointer's kernel
 * page.  Each thread keeps the ranges it found (tl_stack).  A thread's first walk finds
 * its stack in the module table's list of anonymous mappings, which all threads share:
 * one read of /proc/self/maps serves every thread whose stack that scan saw, where each
 * thread used to read the maps for itself (O(threads x mappings) in all: 40 M
 * instructions for 256 threads in ebb-bench's threads-256).
 *
 * The table may be stale: the mapping it lists may have been unmapped since, and
 * another mapped across its place (a new thread's stack where an old one was).  So the
 * part a walk may read, from the stack pointer's kernel page to hi, is read first, 8
 * bytes of every kernel page, through process_vm_readv (an unmapped or unreadable page
 * fails with EFAULT, never with a fault).  Then: the stack pointer is in this thread's
 * stack now (the thread runs on it), every page from it up to hi was readable a moment
 * ago, and the table saw them as one mapping with it.  What the probe cannot see is
 * where the stack ends when a stale entry runs on past it into another readable mapping
 * (the new stack mapped at the bottom of an old region whose upper part stayed): the
 * walk would then trust memory that is not its stack for the thread's life, and fault
 * once that mapping goes.  So the entry must also end where the thread's stack ends:
 * glibc puts the thread's descriptor at the top of every stack it starts a thread on
 * (its own or one the program gave, pthread_attr_setstack), just below the end on
 * x86-64 (the TCB is the descriptor: 2,368 bytes below it with glibc 2.36) and below the
 * static TLS block on arm64, the same distance for every such stack but for alignment.
 * On arm64 that distance is learned (see uw_tp_end); an entry is trusted only if the
 * thread pointer lies in [sp, hi) less than a kernel page further below hi than it: a
 * stale entry that runs on past the stack does so by a whole page at least.  A lookup that misses, or whose probe or end test fails,
 * rescans the table once (one thread scans, rate-limited with the module rescans) and
 * looks again; a table this thread scanned itself is trusted without the end test (the
 * main thread, whose TLS is mapped apart from its stack, a signal stack, a coroutine's
 * stack).  Failing that the thread reads the maps for itself, as before.  So does a
 * thread where process_vm_readv is refused (nothing to probe with), or whose range
 * would take more than UW_PROBE_MAX probes (a first walk deep down a stack).  Either
 * way the range is kept for the thread's life (tl_stack): a moment's view of a mapping,
 * the trust a read of the maps by the thread itself gave.  A later walk from deeper
 * down probes only the pages it adds below lo.
 *
 * Ordering: the list is written by the scanning thread before it publishes the table,
 * and never while a reader has it (the table's reader count, seq_cst, see above), so a
 * thread that acquired the table reads it whole, on arm64 too.  A fork child keeps the
 * table and its thread's ranges: it has the parent's mappings, the other threads'
 * stacks included (they stay mapped), and what changes after is caught by the probe. */

/* The thread pointer: glibc's descriptor of this thread (see above). */
static inline uintptr_t thread_pointer(void) {
    uintptr_t tp;
#if defined(__x86_64__)
    __asm__("movq %%fs:0, %0" : "=r"(tp));
#elif defined(__aarch64__)
    __asm__("mrs %0, tpidr_el0" : "=r"(tp));
#else
    tp = 0; /* no end test: every lookup fails it, and the maps are read */
#endif
    return tp;
}

/* Every kernel page of [lo, hi) was readable a moment ago (8 bytes of each read through
 * the kernel).  False where one was not, and where process_vm_readv cannot be used. */
static bool pages_readable(uintptr_t lo, uintptr_t hi) {
    if (!atomic_load_explicit(&uw_safe_read, memory_order_relaxed)) return false;
    const size_t ps = ebbi_os_page_size();
    for (uintptr_t a = lo & ~(uintptr_t)(ps - 1); a < hi; a += ps) {
        uint64_t v;
        long r = ebbi_os_read_mem(self_pid(), &v, (const void *)a, sizeof v);
        if (r == EBB_READ_UNSUPPORTED) atomic_store_explicit(&uw_safe_read, 0, memory_order_relaxed);
        if (r != (long)sizeof v) return false;
    }
    return true;
}

/* The table's mapping that holds sp, or NULL. */
static const struct uw_range *table_stack(const struct uw_table *t, uintptr_t sp) {
    unsigned lo = 0, hi = t->n_stk;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (t->stk[mid].lo <= sp) lo = mid + 1;
        else hi = mid;
    }
    return lo && sp < t->stk[lo - 1].hi ? &t->stk[lo - 1] : NULL;
}

/* The distance from the thread pointer up to its stack's end.  On x86-64 the descriptor
 * is the TCB, whose end is the stack's: less than a kernel page (2,368 bytes with glibc
 * 2.36), nothing to learn.  On arm64 the static TLS block lies between them, of a size
 * each process has its own, so the distance is learned from views that cannot be stale
 * for the thread: but one such view may still not end where glibc put the stack's end
 * (a stack the program gave inside a bigger mapping, a stack the kernel merged with a
 * neighbour), and a distance learned too large would trust stale entries again.  So a
 * distance counts only once two views of stacks ending at different places agree on it
 * exactly, as every stack glibc set up does (uw_tp_seen holds the last view: its end's
 * page in the high half, its distance in the low one); uw_tp_end is the smallest that
 * did (0: none yet).  Relaxed: hints that a racing thread at worst makes count later;
 * a thread that reads 0 trusts no entry, one that reads an older (larger) value trusts
 * what the agreement rule allowed before the smaller distance was learned. */
#if defined(__aarch64__)
static _Atomic uint64_t uw_tp_seen;
static _Atomic uintptr_t uw_tp_end;
#endif

static void learn_tp_end(uintptr_t sp, uintptr_t hi) {
#if defined(__aarch64__)
    const uintptr_t tp = thread_pointer();
    if (tp < sp || tp >= hi || hi - tp > UINT32_MAX) return; /* the main thread, a signal stack */
    const uintptr_t d = hi - tp;
    const uint64_t view = (uint64_t)(hi >> 12) << 32 | d,
                   last = atomic_exchange_explicit(&uw_tp_seen, view, memory_order_relaxed);
    if ((uint32_t)last != d || last >> 32 == view >> 32) return; /* no two stacks agree yet */
    uintptr_t old = atomic_load_explicit(&uw_tp_end, memory_order_relaxed);
    while ((!old || d < old) && !atomic_compare_exchange_weak_explicit(
                                    &uw_tp_end, &old, d, memory_order_relaxed, memory_order_relaxed)) {}
#else
    (void)sp, (void)hi;
#endif
}

/* The largest distance from the thread pointer up to an entry's end that is trusted
 * (exclusive), 0 for none. */
static uintptr_t tp_end_limit(size_t ps) {
#if defined(__aarch64__)
    const uintptr_t d = atomic_load_explicit(&uw_tp_end, memory_order_relaxed);
    return d ? d + ps : 0;
#elif defined(__x86_64__)
    return ps;
#else
    (void)ps;
    return 0; /* no thread pointer read (see thread_pointer): the maps are read */
#endif
}

/* sp's stack from the table, its pages probed: [sp's kernel page, the mapping's end).
 * Pages of a range this thread probed already (same end, higher lo) are not read again.
 * `fresh`: the table was scanned after this thread's stack was mapped (by this thread
 * just now, or by a later scan), so it is what a read of the maps would give; otherwise the entry must end where the thread's
 * stack ends (see above): its thread pointer in [sp, hi), less than a kernel page
 * further from hi than the distance known (stacks glibc set up differ in it by their
 * alignment only, and a stale entry runs on at least a page past the stack it holds). */
static bool table_range(const struct uw_table *t, uintptr_t sp, struct uw_range *r, bool fresh) {
    const struct uw_range *m = t ? table_stack(t, sp) : NULL;
    if (!m) return false;
    const size_t ps = ebbi_os_page_size();
    if (!fresh) {
        const uintptr_t tp = thread_pointer();
        if (tp < sp || tp >= m->hi || m->hi - tp >= tp_end_limit(ps)) return false;
    }
    uintptr_t lo = sp & ~(uintptr_t)(ps - 1), to = m->hi;
    for (int i = 0; i < 2; i++)
        if (tl_stack[i].hi == m->hi && tl_stack[i].lo > lo && tl_stack[i].lo < to) to = tl_stack[i].lo;
    if ((to - lo) / ps > UW_PROBE_MAX || !pages_readable(lo, to)) return false;
    *r = (struct uw_range){lo, m->hi};
    return true; /* this thread's own scan learned from its view of this stack (rescan) */
}

/* A walk in a signal handler that interrupted this thread's walk reads tl_stack too:
 * an entry is emptied (hi 0 holds no address) before its bounds change, then filled lo
 * first and hi last, so that the handler sees the old range, none, or the new one,
 * never a mix.  Only this thread writes it: signal fences keep the compiler's order. */
static void tl_set(int i, struct uw_range r) {
    tl_stack[i].hi = 0;
    atomic_signal_fence(memory_order_seq_cst);
    tl_stack[i].lo = r.lo;
    atomic_signal_fence(memory_order_seq_cst);
    tl_stack[i].hi = r.hi;
    atomic_signal_fence(memory_order_seq_cst);
}

/* The stacks the walk may read, the one holding sp first.  The walk holds the table
 * (w->tab), which a rescan here replaces (*rescanned: the one rescan of this walk);
 * false, with w->tab perhaps NULL, when sp's stack cannot be found. */
static EBB_TLS bool tl_stack_busy; /* see stack_range */

static bool find_stack(struct walk *w, uintptr_t sp, bool *rescanned, bool nested);

/* A walk in a signal handler that interrupted this thread's own stack_range (its own
 * sample, on an alternate signal stack) goes through here too.  It may read tl_stack:
 * the interrupted thread stands still at one point of its tl_set, so the handler sees
 * each entry old, empty (hi 0) or new.  But it must not write it: the interrupted copy
 * of an entry, or its tl_set, would then finish over the handler's and leave a range
 * made of two stacks, trusted for the thread's life.  So a nested walk uses the range
 * it found for itself alone.  tl_stack_busy is this thread's own (signal fences keep the
 * compiler's order; no other thread reads it). */
static bool stack_range(struct walk *w, uintptr_t sp, bool *rescanned) {
    const bool nested = tl_stack_busy;
    tl_stack_busy = true;
    atomic_signal_fence(memory_order_seq_cst);
    bool ok = find_stack(w, sp, rescanned, nested);
    atomic_signal_fence(memory_order_seq_cst);
    tl_stack_busy = nested;
    return ok;
}

static bool find_stack(struct walk *w, uintptr_t sp, bool *rescanned, bool nested) {
    for (int i = 0; i < 2; i++)
        if (sp >= tl_stack[i].lo && sp < tl_stack[i].hi) {
            w->stk[0] = tl_stack[i], w->stk[1] = tl_stack[!i];
            return true;
        }
    struct uw_range r;
    bool found = table_range(w->tab, sp, &r, false);
    if (!found && !*rescanned) {
        *rescanned = true;
        bool own = false;
        if (refresh(w->tab, true, &own)) {
            table_release(w->tab);
            w->tab = table_acquire();
            w->nchecked = 0;
            found = table_range(w->tab, sp, &r, own);
        }
    }
    if (found) {
        atomic_fetch_add_explicit(&uw_stack_hits, 1, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&uw_maps_reads, 1, memory_order_relaxed);
        if (!find_mapping(sp, &r)) return false;
        learn_tp_end(sp, r.hi);
    }
    if (nested) {
        w->stk[0] = r, w->stk[1] = (struct uw_range){0, 0};
        return true;
    }
    int i = tl_stack[1].hi == r.hi; /* the same stack, deeper: its entry grows */
    if (!i && tl_stack[0].hi != r.hi) tl_set(1, tl_stack[0]);
    tl_set(i, r);
    w->stk[0] = tl_stack[i], w->stk[1] = tl_stack[!i];
    return true;
}

bool ebbi_unwind_stack_bounds(uintptr_t *lo, uintptr_t *hi) {
    struct walk w;
    bool rescanned = false, ok;
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
    w.nchecked = 0;
    if (!(w.tab = table_acquire())) {
        refresh(NULL, true, NULL);
        if (!(w.tab = table_acquire())) return false;
    }
    if ((ok = stack_range(&w, sp, &rescanned))) *lo = w.stk[0].lo, *hi = w.stk[0].hi;
    table_release(w.tab);
    return ok;
}

void ebbi_unwind_counts(uint64_t *maps_reads, uint64_t *table_hits) {
    *maps_reads = atomic_load_explicit(&uw_maps_reads, memory_order_relaxed);
    *table_hits = atomic_load_explicit(&uw_stack_hits, memory_order_relaxed);
}

#if UW_NREG
/* The registers at this point of this function; the walk starts from its own frame. */
#if defined(__x86_64__)
#define CAPTURE(r, pc)                         \
    __asm__ volatile("lea 0(%%rip), %%rax\n\t" \
                     "mov %%rax, %0\n\t"       \
                     "mov %%rbx, 24(%1)\n\t"   \
                     "mov %%rbp, 48(%1)\n\t"   \
                     "mov %%rsp, 56(%1)\n\t"   \
                     "mov %%r12, 96(%1)\n\t"   \
                     "mov %%r13, 104(%1)\n\t"  \
                     "mov %%r14, 112(%1)\n\t"  \
                     "mov %%r15, 120(%1)\n\t"  \
                     : "=m"(pc)                \
                     : "r"(r)                  \
                     : "rax", "memory")
#else
#define CAPTURE(r, pc)                              \
    __asm__ volatile("adr x16, .\n\t"               \
                     "str x16, %0\n\t"              \
                     "mov x17, sp\n\t"              \
                     "str x17, [%1, #248]\n\t"      \
                     "stp x19, x20, [%1, #152]\n\t" \
                     "stp x21, x22, [%1, #168]\n\t" \
                     "stp x23, x24, [%1, #184]\n\t" \
                     "stp x25, x26, [%1, #200]\n\t" \
                     "stp x27, x28, [%1, #216]\n\t" \
                     "stp x29, x30, [%1, #232]\n\t" \
                     : "=m"(pc)                     \
                     : "r"(r)                       \
                     : "x16", "x17", "memory")
#endif
#endif

#define UW_RAW (EBB_PROF_MAX_FRAMES + UW_SKIP_MAX)

EBB_NOINLINE int ebbi_unwind(uint64_t *out, int max) {
#if UW_NREG
    struct walk w;
    memset(w.r, 0, sizeof w.r);
    w.tab = NULL;
    w.nchecked = 0;
    w.cie.addr = 0;
    w.valid = UW_SAVED;
    uintptr_t pc = 0;
    CAPTURE(w.r, pc);
    w.pc = pc;
    w.exact = true;
    if (!(w.tab = table_acquire())) {
        refresh(NULL, true, NULL);
        if (!(w.tab = table_acquire())) return 0;
    }
    bool rescanned = false;
    if (!stack_range(&w, w.r[UW_SP], &rescanned) || !w.tab) {
        table_release(w.tab);
        return 0;
    }
    uint64_t raw[UW_RAW];
    bool alloc[UW_RAW];
    int n = 0, skip = 0;
    for (;;) {
        bool record = !w.exact || n; /* every frame but the capture point: a return address */
        struct row row;
        const struct uw_module *m = NULL;
        /* a row made from the object that is at pc now (by the module table) */
        if (row_get(w.pc * 2 + w.exact, &row) && (m = find_module(w.tab, w.pc)) && m->id == row.mod) {
            if (record) {
                raw[n] = w.pc;
                alloc[n++] = (row.flags & ROW_SELF) || (!EBB_OVERRIDE && entry_fn(row.fn));
            }
            if (n == UW_RAW || !row_step(&w, &row)) break;
            continue;
        }
        if (!m) m = find_module(w.tab, w.pc);
        /* Code mapped since the last scan (a dlopen), or an object that is not what the
         * scan saw (unloaded, another one at its place): read the maps again, once. */
        bool stale = m && m->table && !module_checked(&w, m);
        if (((!m && !in_anon(w.tab, w.pc) && !unknown_page(w.pc)) || stale) && !rescanned) {
            rescanned = true;
            struct uw_table *seen = w.tab;
            if (refresh(seen, false, NULL)) {
                table_release(w.tab);
                w.tab = table_acquire();
                w.nchecked = 0;
                if (!w.tab) break;
                m = find_module(w.tab, w.pc);
                if (!m && !in_anon(w.tab, w.pc)) note_unknown(w.pc); /* a fresh scan cannot place it */
            }
        }
        if (record) {
            if (!m && !in_anon(w.tab, w.pc)) break; /* nothing executable there */
            raw[n] = w.pc;
            alloc[n++] = m && m->self;
        }
        if (!m || n == UW_RAW) break; /* JIT code, or enough */
        bool ok = cfi_step(&w, m, &row);
        /* what the step left was the frame of pc's function: the allocator's? */
        if (record && !EBB_OVERRIDE && entry_fn(row.fn)) alloc[n - 1] = true;
        if (row.key) {
            row.mod = m->id;
            row_put(&row);
        }
        if (!ok) break;
    }
    table_release(w.tab);
    /* The frames up to the outermost allocator function are ebbmalloc's; the frame that
     * starts a thread is ebbmalloc's too but holds the program's, and ends the search. */
    for (int i = 0; i < n && i < UW_SKIP_MAX && !ebbi_thread_start_frame(raw[i]); i++)
        if (alloc[i]) skip = i + 1;
    int depth = n - skip < max ? n - skip : max;
    for (int i = 0; i < depth; i++) out[i] = raw[skip + i];
    return depth;
#else
    (void)out, (void)max;
    return 0;
#endif
}

/* ---------------------------------------------------------------- fork */
/* The child has one thread: nobody reads either buffer or scans.  Its maps are the
 * parent's, so the table stays valid. */
void ebbi_unwind_fork_child(void) {
    atomic_store(&uw_scanning, 0);
    atomic_store(&uw_pid, 0);
    for (int i = 0; i < 2; i++)
        if (uw_buf[i]) atomic_store(&uw_buf[i]->readers, 0);
    /* A row another thread was writing when the parent forked stays odd, and no writer
     * would take it again: it is emptied (key 0 matches no return address). */
    for (size_t i = 0; uw_rows && i < UW_ROWS; i++) {
        uint64_t seq = atomic_load_explicit(&uw_rows[i].seq, memory_order_relaxed);
        if (!(seq & 1)) continue;
        uw_rows[i].key = 0;
        atomic_store_explicit(&uw_rows[i].seq, seq + 1, memory_order_relaxed);
    }
}
