/*
 * gomalloc's own malloc stress program, run under LD_PRELOAD by
 * gomalloc/capi/tests/preload.rs (it also runs on plain glibc).
 *
 *   stress [threads=4] [generations=4] [ops-per-thread=30000]
 *
 * Several generations of worker threads (each generation exits and a new one
 * starts, and workers also start short-lived helper threads) allocate objects
 * of mixed sizes (skewed small, a few up to 4 MiB) through every allocation
 * entry point, fill each one with a pattern derived from its seed and verify
 * the pattern before every free and realloc. Objects travel between threads
 * (and generations) through a mutex-protected exchange array, so most frees
 * are of blocks another, often dead, thread allocated.
 *
 * Prints "stress ok" and exits 0 on success; prints what failed on stderr and
 * exits 1 otherwise.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOCAL_SLOTS 128
#define EXCHANGE_SLOTS 512
#define KIB ((size_t)1024)
#define MIB (KIB * KIB)

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *fmt, ...) {
    va_list ap;
    fputs("stress FAIL: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    fflush(stdout);
    _exit(1);
}

/* ---------- randomness ---------- */

static uint64_t rnd(uint64_t *s) {
    /* xorshift64* */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static size_t rnd_range(uint64_t *s, size_t lo, size_t hi) { /* [lo, hi] */
    return lo + (size_t)(rnd(s) % (uint64_t)(hi - lo + 1));
}

/* Skewed small: 70% <= 256 B, 20% <= 4 KiB, 8% <= 64 KiB, 1.7% <= 1 MiB,
 * 0.3% up to 4 MiB. */
static size_t rnd_size(uint64_t *s) {
    unsigned r = (unsigned)(rnd(s) % 1000);
    if (r < 700) return rnd_range(s, 0, 256);
    if (r < 900) return rnd_range(s, 257, 4 * KIB);
    if (r < 980) return rnd_range(s, 4 * KIB + 1, 64 * KIB);
    if (r < 997) return rnd_range(s, 64 * KIB + 1, MIB);
    return rnd_range(s, MIB + 1, 4 * MIB);
}

/* ---------- objects ---------- */

typedef struct {
    unsigned char *p;
    size_t size;  /* requested size */
    size_t fill;  /* bytes covered by the pattern (size, or the usable size) */
    size_t align; /* alignment asked for (0: plain malloc family) */
    uint32_t seed;
    const char *how; /* which call produced it, for failure messages */
} obj;

/* The pattern: byte i of an object is byte (i % 8) of the little-endian
 * word wpat(seed, i / 8), so every position and every object differs. */
static inline uint64_t wpat(uint32_t seed, size_t w) {
    return (((uint64_t)seed << 32) | seed) ^ ((uint64_t)(w + 1) * 0x9E3779B97F4A7C15ULL);
}

static inline unsigned char pat(uint32_t seed, size_t i) {
    return (unsigned char)(wpat(seed, i >> 3) >> (8 * (i & 7)));
}

static void fill_range(const obj *o, size_t from, size_t to) {
    size_t i = from;
    for (; i < to && (i & 7); i++) o->p[i] = pat(o->seed, i);
    for (; i + 8 <= to; i += 8) {
        uint64_t w = wpat(o->seed, i >> 3);
        memcpy(o->p + i, &w, 8);
    }
    for (; i < to; i++) o->p[i] = pat(o->seed, i);
}

static void verify_bytes(const obj *o, size_t from, size_t to, const char *when) {
    for (size_t i = from; i < to; i++) {
        if (o->p[i] != pat(o->seed, i)) {
            fail("%s: object %p (size %zu, from %s, align %zu) corrupted at byte %zu: "
                 "0x%02x, expected 0x%02x",
                 when, (void *)o->p, o->size, o->how, o->align, i, o->p[i], pat(o->seed, i));
        }
    }
}

static void verify_range(const obj *o, size_t from, size_t to, const char *when) {
    size_t i = from;
    for (; i < to && (i & 7); i++) verify_bytes(o, i, i + 1, when);
    for (; i + 8 <= to; i += 8) {
        uint64_t w;
        memcpy(&w, o->p + i, 8);
        if (w != wpat(o->seed, i >> 3)) verify_bytes(o, i, i + 8, when);
    }
    verify_bytes(o, i, to, when);
}

/* The alignment C requires of malloc for a block of `size` bytes on this ABI:
 * 16 (alignof(max_align_t)) once the block can hold such an object. */
static size_t min_malloc_align(size_t size) { return size >= 16 ? 16 : 8; }

static void check_new(obj *o, uint64_t *rs) {
    if (o->p == NULL) fail("%s(%zu, align %zu) returned NULL", o->how, o->size, o->align);
    size_t need = o->align ? o->align : min_malloc_align(o->size);
    if ((uintptr_t)o->p % need != 0)
        fail("%s(%zu) returned %p, not %zu-byte aligned", o->how, o->size, (void *)o->p, need);
    size_t usable = malloc_usable_size(o->p);
    if (usable < o->size)
        fail("malloc_usable_size(%p) = %zu < requested %zu (from %s)", (void *)o->p, usable,
             o->size, o->how);
    /* A quarter of the time use every usable byte: they must be ours. */
    o->fill = (rnd(rs) & 3) == 0 ? usable : o->size;
}

static void obj_free(obj *o, const char *when) {
    if (o->p == NULL) return;
    verify_range(o, 0, o->fill, when);
    free(o->p);
    o->p = NULL;
}

static void obj_alloc(obj *o, uint64_t *rs) {
    size_t size = rnd_size(rs);
    unsigned kind = (unsigned)(rnd(rs) % 100);
    o->size = size;
    o->align = 0;
    o->seed = (uint32_t)rnd(rs);
    if (kind < 60) {
        o->how = "malloc";
        o->p = malloc(size);
    } else if (kind < 75) {
        o->how = "calloc";
        size_t n, each;
        if (size > 0 && (rnd(rs) & 1)) {
            /* split into n elements of `each` bytes */
            each = rnd_range(rs, 1, 64);
            n = size / each;
            if (n == 0) n = 1;
            size = n * each;
            o->size = size;
        } else {
            n = size;
            each = 1;
        }
        o->p = calloc(n, each);
        if (o->p == NULL) fail("calloc(%zu, %zu) returned NULL", n, each);
        for (size_t i = 0; i < size; i++)
            if (o->p[i] != 0)
                fail("calloc(%zu, %zu) = %p: byte %zu is 0x%02x, not zero", n, each,
                     (void *)o->p, i, o->p[i]);
    } else if (kind < 95) {
        /* alignments 8 .. 64 KiB, and rarely up to 1 MiB */
        unsigned shift = (rnd(rs) % 200 == 0) ? (unsigned)rnd_range(rs, 17, 20)
                                              : (unsigned)rnd_range(rs, 3, 16);
        size_t align = (size_t)1 << shift;
        unsigned which = (unsigned)(rnd(rs) % 3);
        o->align = align;
        if (which == 0) {
            o->how = "posix_memalign";
            void *p = NULL;
            int rc = posix_memalign(&p, align, size);
            if (rc != 0) fail("posix_memalign(align %zu, %zu) returned %d", align, size, rc);
            o->p = p;
        } else if (which == 1) {
            o->how = "aligned_alloc";
            /* C11 wants size to be a multiple of the alignment */
            size = (size + align - 1) / align * align;
            o->size = size;
            o->p = aligned_alloc(align, size);
        } else {
            o->how = "memalign";
            o->p = memalign(align, size);
        }
    } else {
        o->how = "realloc(NULL)";
        o->p = realloc(NULL, size);
    }
    check_new(o, rs);
    fill_range(o, 0, o->fill);
}

/* Grow or shrink `o` with realloc (or reallocarray); the common prefix must
 * survive. */
static void obj_realloc(obj *o, uint64_t *rs) {
    verify_range(o, 0, o->fill, "before realloc");
    size_t old = o->size;
    size_t nsize;
    unsigned r = (unsigned)(rnd(rs) % 4);
    if (r == 0) nsize = old / 2 + 1;                    /* shrink */
    else if (r == 1) nsize = old + rnd_range(rs, 1, 64); /* small growth */
    else if (r == 2) nsize = old * 2 + 1;                /* double */
    else nsize = rnd_size(rs);                          /* anything */
    if (nsize > 4 * MIB) nsize = 4 * MIB;
    if (nsize == 0) nsize = 1; /* realloc(p, 0) would free p */
    unsigned char *np;
    const char *how;
    if (rnd(rs) & 1) {
        how = "realloc";
        np = realloc(o->p, nsize);
    } else {
        how = "reallocarray";
        /* nsize = n * 1, or split when it divides evenly */
        size_t each = (nsize % 8 == 0 && nsize) ? 8 : 1;
        np = reallocarray(o->p, nsize / each, each);
    }
    if (np == NULL) fail("%s(%p, %zu) returned NULL", how, (void *)o->p, nsize);
    o->p = np;
    o->how = how;
    o->align = 0; /* realloc promises only malloc's alignment */
    size_t keep = old < nsize ? old : nsize;
    if (keep > o->fill) keep = o->fill;
    verify_range(o, 0, keep, "after realloc (contents not preserved)");
    o->size = nsize;
    check_new(o, rs);
    fill_range(o, keep, o->fill);
}

/* ---------- exchange: objects handed to other threads ---------- */

static pthread_mutex_t exch_lock = PTHREAD_MUTEX_INITIALIZER;
static obj exchange[EXCHANGE_SLOTS];

/* Puts `o` into a random exchange slot and returns (in *out) what was there. */
static void exchange_swap(obj *o, uint64_t *rs) {
    size_t i = (size_t)(rnd(rs) % EXCHANGE_SLOTS);
    pthread_mutex_lock(&exch_lock);
    obj prev = exchange[i];
    exchange[i] = *o;
    pthread_mutex_unlock(&exch_lock);
    *o = prev;
}

/* ---------- workers ---------- */

typedef struct {
    uint64_t seed;
    long ops;
    int id;
} worker_arg;

static void *helper(void *arg) {
    /* A short-lived thread: allocates a few blocks, hands some to others,
     * frees the rest, exits (its cache must be handed back). */
    uint64_t rs = (uint64_t)(uintptr_t)arg | 1;
    obj mine[16];
    memset(mine, 0, sizeof mine);
    for (int i = 0; i < 16; i++) obj_alloc(&mine[i], &rs);
    for (int i = 0; i < 16; i += 2) {
        exchange_swap(&mine[i], &rs);
    }
    for (int i = 0; i < 16; i++) obj_free(&mine[i], "helper free");
    return NULL;
}

static void *worker(void *argp) {
    worker_arg *arg = argp;
    uint64_t rs = arg->seed | 1;
    obj *slots = calloc(LOCAL_SLOTS, sizeof(obj));
    if (!slots) fail("calloc for worker slots");
    for (long op = 0; op < arg->ops; op++) {
        obj *o = &slots[rnd(&rs) % LOCAL_SLOTS];
        unsigned r = (unsigned)(rnd(&rs) % 100);
        if (o->p == NULL) {
            obj_alloc(o, &rs);
        } else if (r < 45) {
            obj_free(o, "local free");
        } else if (r < 60) {
            obj_realloc(o, &rs);
        } else if (r < 85) {
            /* hand it over; free what was there (another thread's block) */
            exchange_swap(o, &rs);
            obj_free(o, "cross-thread free");
        } else {
            verify_range(o, 0, o->fill, "spot check");
            obj_free(o, "local free");
            obj_alloc(o, &rs);
        }
        if (op % 5000 == 4999) {
            pthread_t t;
            if (pthread_create(&t, NULL, helper, (void *)(uintptr_t)rnd(&rs)) != 0)
                fail("pthread_create (helper)");
            if (pthread_join(t, NULL) != 0) fail("pthread_join (helper)");
        }
    }
    /* leave half of the survivors in the exchange for the next generation */
    for (int i = 0; i < LOCAL_SLOTS; i++) {
        if (slots[i].p && (i & 1)) exchange_swap(&slots[i], &rs);
        obj_free(&slots[i], "worker exit free");
    }
    free(slots);
    return NULL;
}

/* ---------- single-threaded API checks ---------- */

static void check_api(void) {
    /* free(NULL) is a no-op */
    free(NULL);

    /* malloc(0) gives a unique, freeable pointer (glibc) */
    void *z1 = malloc(0), *z2 = malloc(0);
    if (!z1 || !z2 || z1 == z2) fail("malloc(0) gave %p and %p", z1, z2);
    free(z1);
    free(z2);

    /* realloc(NULL, n) is malloc; realloc(p, 0) frees and returns NULL (glibc) */
    char *p = realloc(NULL, 100);
    if (!p) fail("realloc(NULL, 100) returned NULL");
    memset(p, 0x5a, 100);
    errno = 0;
    void *q = realloc(p, 0);
    if (q != NULL) fail("realloc(p, 0) returned %p, expected NULL (glibc frees p)", q);

    /* overflow and impossible sizes: NULL with ENOMEM */
    volatile size_t big = SIZE_MAX / 2 + 2, three = 3, huge = SIZE_MAX - 4096;
    errno = 0;
    if (reallocarray(NULL, big, three) != NULL) fail("reallocarray(NULL, SIZE_MAX/2+2, 3) != NULL");
    if (errno != ENOMEM) fail("reallocarray overflow: errno %d, expected ENOMEM", errno);
    char *keep = malloc(32);
    if (!keep) fail("malloc(32)");
    memset(keep, 0x11, 32);
    errno = 0;
    if (reallocarray(keep, big, three) != NULL) fail("reallocarray(p, SIZE_MAX/2+2, 3) != NULL");
    if (errno != ENOMEM) fail("reallocarray(p) overflow: errno %d, expected ENOMEM", errno);
    for (int i = 0; i < 32; i++)
        if (keep[i] != 0x11) fail("failed reallocarray changed the old block");
    errno = 0;
    if (calloc(big, three) != NULL) fail("calloc(SIZE_MAX/2+2, 3) != NULL");
    if (errno != ENOMEM) fail("calloc overflow: errno %d, expected ENOMEM", errno);
    errno = 0;
    if (calloc(three, big) != NULL) fail("calloc(3, SIZE_MAX/2+2) != NULL");
    if (errno != ENOMEM) fail("calloc overflow: errno %d, expected ENOMEM", errno);
    errno = 0;
    if (malloc(huge) != NULL) fail("malloc(SIZE_MAX - 4096) != NULL");
    if (errno != ENOMEM) fail("malloc(huge): errno %d, expected ENOMEM", errno);
    errno = 0;
    if (realloc(keep, huge) != NULL) fail("realloc(p, SIZE_MAX - 4096) != NULL");
    if (errno != ENOMEM) fail("realloc(huge): errno %d, expected ENOMEM", errno);
    for (int i = 0; i < 32; i++)
        if (keep[i] != 0x11) fail("failed realloc changed the old block");
    void *ap = NULL;
    volatile size_t a64 = 64;
    if (posix_memalign(&ap, a64, huge) != ENOMEM) fail("posix_memalign(64, huge) != ENOMEM");
    free(keep);

    /* posix_memalign: a bad alignment is EINVAL */
    static const size_t bad[] = {0, 1, 2, 3, 4, 12, 24, 48, 100, 4097};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        void *m = (void *)0x1;
        int rc = posix_memalign(&m, bad[i], 64);
        if (rc != EINVAL) fail("posix_memalign(align %zu) returned %d, expected EINVAL", bad[i], rc);
    }
    /* every valid alignment, sizes 0 and odd */
    for (size_t a = sizeof(void *); a <= 4 * MIB; a *= 2) {
        static const size_t sizes[] = {0, 1, 7, 100, 4096, 70000};
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            void *m = NULL;
            int rc = posix_memalign(&m, a, sizes[s]);
            if (rc != 0 || !m) fail("posix_memalign(%zu, %zu) = %d", a, sizes[s], rc);
            if ((uintptr_t)m % a) fail("posix_memalign(%zu, %zu) = %p misaligned", a, sizes[s], m);
            if (malloc_usable_size(m) < sizes[s]) fail("posix_memalign usable size");
            memset(m, 0xee, sizes[s]);
            free(m);
            void *m2 = memalign(a, sizes[s]);
            if (!m2 || (uintptr_t)m2 % a) fail("memalign(%zu, %zu) = %p", a, sizes[s], m2);
            memset(m2, 0xdd, sizes[s]);
            free(m2);
            size_t as = (sizes[s] + a - 1) / a * a;
            void *m3 = aligned_alloc(a, as);
            if (!m3 || (uintptr_t)m3 % a) fail("aligned_alloc(%zu, %zu) = %p", a, as, m3);
            memset(m3, 0xcc, as);
            free(m3);
        }
    }

    /* valloc / pvalloc: page aligned; pvalloc rounds the size up to a page */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void *v = valloc(100);
    if (!v || (uintptr_t)v % page) fail("valloc(100) = %p, not page aligned", v);
    if (malloc_usable_size(v) < 100) fail("valloc usable size");
    memset(v, 1, 100);
    free(v);
    void *pv = pvalloc(page + 1);
    if (!pv || (uintptr_t)pv % page) fail("pvalloc(page+1) = %p, not page aligned", pv);
    if (malloc_usable_size(pv) < 2 * page)
        fail("pvalloc(page+1): usable %zu < two pages", malloc_usable_size(pv));
    memset(pv, 2, 2 * page);
    free(pv);

    /* free_sized / free_aligned_sized (C23; glibc 2.36 lacks them, so look
     * them up at run time: under LD_PRELOAD they must be there) */
    void (*fs)(void *, size_t) = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "free_sized");
    void (*fas)(void *, size_t, size_t) =
        (void (*)(void *, size_t, size_t))dlsym(RTLD_DEFAULT, "free_aligned_sized");
    if (getenv("STRESS_REQUIRE_FREE_SIZED") && (!fs || !fas))
        fail("free_sized / free_aligned_sized not exported");
    if (fs) {
        for (size_t s = 1; s <= 2 * MIB; s = s * 3 + 1) {
            char *b = malloc(s);
            if (!b) fail("malloc(%zu)", s);
            memset(b, 3, s);
            fs(b, s);
        }
        fs(NULL, 0);
    }
    if (fas) {
        for (size_t a = 8; a <= 64 * KIB; a *= 4) {
            size_t s = 3 * a;
            char *b = aligned_alloc(a, s);
            if (!b || (uintptr_t)b % a) fail("aligned_alloc(%zu, %zu)", a, s);
            memset(b, 4, s);
            fas(b, a, s);
        }
        fas(NULL, 64, 0);
    }

    /* mallinfo2: sane numbers; live blocks are counted somewhere */
    enum { HELD = 16 };
    char *held[HELD];
    size_t held_bytes = 0;
    for (int i = 0; i < HELD; i++) {
        size_t s = (i & 1) ? 512 * KIB : 3000;
        held[i] = malloc(s);
        if (!held[i]) fail("malloc for mallinfo2");
        memset(held[i], 7, s);
        held_bytes += s;
    }
    struct mallinfo2 mi = mallinfo2();
    const size_t absurd = (size_t)1 << 46; /* 64 TiB: a wrapped counter */
    size_t fields[] = {mi.arena, mi.ordblks, mi.smblks, mi.hblks, mi.hblkhd,
                       mi.usmblks, mi.fsmblks, mi.uordblks, mi.fordblks, mi.keepcost};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (fields[i] >= absurd) fail("mallinfo2 field %zu is absurd: %zu", i, fields[i]);
    if (mi.uordblks + mi.hblkhd < held_bytes)
        fail("mallinfo2: uordblks %zu + hblkhd %zu < %zu bytes held live", mi.uordblks,
             mi.hblkhd, held_bytes);
    for (int i = 0; i < HELD; i++) free(held[i]);

    /* malloc_trim returns 0 or 1 */
    int t = malloc_trim(0);
    if (t != 0 && t != 1) fail("malloc_trim(0) returned %d", t);
    t = malloc_trim(64 * KIB);
    if (t != 0 && t != 1) fail("malloc_trim(64 KiB) returned %d", t);

    /* malloc_stats must not crash (or deadlock) */
    malloc_stats();
}

/* With EXPECT_MALLOC_FROM=NAME set, every allocation entry point must come
 * from a library whose path contains NAME (proof that LD_PRELOAD took). */
static void check_provider(void) {
    const char *want = getenv("EXPECT_MALLOC_FROM");
    if (!want) return;
    struct {
        const char *name;
        void *fn;
    } fns[] = {
        {"malloc", (void *)malloc},
        {"free", (void *)free},
        {"calloc", (void *)calloc},
        {"realloc", (void *)realloc},
        {"reallocarray", (void *)reallocarray},
        {"posix_memalign", (void *)posix_memalign},
        {"aligned_alloc", (void *)aligned_alloc},
        {"memalign", (void *)memalign},
        {"valloc", (void *)valloc},
        {"pvalloc", (void *)pvalloc},
        {"malloc_usable_size", (void *)malloc_usable_size},
        {"malloc_trim", (void *)malloc_trim},
        {"malloc_stats", (void *)malloc_stats},
        {"mallinfo2", (void *)mallinfo2},
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        Dl_info info;
        if (!dladdr(fns[i].fn, &info) || !info.dli_fname)
            fail("dladdr(%s) found no library", fns[i].name);
        if (!strstr(info.dli_fname, want))
            fail("%s comes from %s, not from %s (LD_PRELOAD not in effect?)", fns[i].name,
                 info.dli_fname, want);
    }
}

/* The heap still works after a trim. */
static void check_after_trim(void) {
    uint64_t rs = 12345;
    obj o[64];
    memset(o, 0, sizeof o);
    for (int i = 0; i < 64; i++) obj_alloc(&o[i], &rs);
    for (int i = 0; i < 64; i++) obj_free(&o[i], "after trim");
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    int gens = argc > 2 ? atoi(argv[2]) : 4;
    long ops = argc > 3 ? atol(argv[3]) : 30000;
    if (threads < 1 || gens < 1 || ops < 1) fail("usage: stress [threads] [generations] [ops]");

    check_provider();
    check_api();

    pthread_t *tids = malloc(sizeof(pthread_t) * (size_t)threads);
    worker_arg *args = malloc(sizeof(worker_arg) * (size_t)threads);
    if (!tids || !args) fail("malloc for thread ids");
    for (int g = 0; g < gens; g++) {
        for (int i = 0; i < threads; i++) {
            args[i].seed = 0x9E3779B97F4A7C15ULL * (uint64_t)(g * 1000 + i + 1);
            args[i].ops = ops;
            args[i].id = i;
            if (pthread_create(&tids[i], NULL, worker, &args[i]) != 0) fail("pthread_create");
        }
        for (int i = 0; i < threads; i++)
            if (pthread_join(tids[i], NULL) != 0) fail("pthread_join");
    }
    /* the main thread frees whatever the dead threads left behind */
    for (int i = 0; i < EXCHANGE_SLOTS; i++) obj_free(&exchange[i], "final drain");
    free(tids);
    free(args);

    int t = malloc_trim(0);
    if (t != 0 && t != 1) fail("malloc_trim(0) after the run returned %d", t);
    check_after_trim();

    printf("stress ok\n");
    return 0;
}
