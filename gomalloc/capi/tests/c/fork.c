/*
 * fork() while other threads allocate: run under LD_PRELOAD by
 * gomalloc/capi/tests/preload.rs (it also runs on plain glibc).
 *
 *   fork [forks=50] [threads=4]
 *
 * Worker threads allocate, fill, verify and free blocks in a loop (some of
 * them handed to each other through a mutex-protected exchange) while the
 * main thread forks again and again. Each child, which inherits the
 * allocator in whatever state the fork caught it, allocates and frees
 * (small, large and aligned blocks), frees blocks the parent's threads
 * allocated, starts a thread that does the same, sometimes forks a
 * grandchild, and leaves with _exit(0). The parent waits for every child
 * with a 10 s limit: a child that hangs (a deadlock on an allocator lock
 * left held across the fork) is killed and reported.
 *
 * Prints "fork ok" and exits 0 on success; prints what failed on stderr and
 * exits 1 otherwise.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXCHANGE_SLOTS 256
#define CHILD_TIMEOUT_MS 10000

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *fmt, ...) {
    va_list ap;
    fputs("fork FAIL: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    _exit(1);
}

/* In a child: no stdio (its lock may have been held at the fork). */
static void child_fail(const char *msg) __attribute__((noreturn));
static void child_fail(const char *msg) {
    static const char pre[] = "fork FAIL (child): ";
    ssize_t r = write(2, pre, sizeof pre - 1);
    r = write(2, msg, strlen(msg));
    r = write(2, "\n", 1);
    (void)r;
    _exit(2);
}

static uint64_t rnd(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static size_t rnd_size(uint64_t *s) {
    unsigned r = (unsigned)(rnd(s) % 1000);
    if (r < 800) return (size_t)(rnd(s) % 512);
    if (r < 990) return 512 + (size_t)(rnd(s) % 16384);
    return 16384 + (size_t)(rnd(s) % (1u << 20));
}

/* Blocks carry their size and a fill byte in a header so anyone can verify. */
typedef struct {
    size_t size;
    unsigned char fill;
} hdr;

static hdr *blk_new(uint64_t *rs) {
    size_t size = rnd_size(rs);
    hdr *h = malloc(sizeof(hdr) + size);
    if (!h) return NULL;
    h->size = size;
    h->fill = (unsigned char)rnd(rs);
    memset(h + 1, h->fill, size);
    return h;
}

/* Returns 0 when the block is intact (and frees it). */
static int blk_free(hdr *h) {
    if (!h) return 0;
    const unsigned char *p = (const unsigned char *)(h + 1);
    for (size_t i = 0; i < h->size; i++)
        if (p[i] != h->fill) return -1;
    free(h);
    return 0;
}

static pthread_mutex_t exch_lock = PTHREAD_MUTEX_INITIALIZER;
static hdr *exchange[EXCHANGE_SLOTS];
static atomic_int stop;
static atomic_long worker_ops;

/* Our own lock must not be held across the fork either. */
static void exch_prepare(void) { pthread_mutex_lock(&exch_lock); }
static void exch_parent(void) { pthread_mutex_unlock(&exch_lock); }
static void exch_child(void) { pthread_mutex_unlock(&exch_lock); }

static hdr *exchange_swap(hdr *h, uint64_t *rs) {
    size_t i = (size_t)(rnd(rs) % EXCHANGE_SLOTS);
    pthread_mutex_lock(&exch_lock);
    hdr *prev = exchange[i];
    exchange[i] = h;
    pthread_mutex_unlock(&exch_lock);
    return prev;
}

static void *worker(void *arg) {
    uint64_t rs = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ULL | 1;
    hdr *mine[64] = {0};
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        size_t i = (size_t)(rnd(&rs) % 64);
        if (blk_free(mine[i]) != 0) fail("worker: block corrupted");
        mine[i] = blk_new(&rs);
        if (!mine[i]) fail("worker: malloc failed");
        if (rnd(&rs) % 4 == 0) {
            hdr *other = exchange_swap(mine[i], &rs);
            mine[i] = NULL;
            if (blk_free(other) != 0) fail("worker: exchanged block corrupted");
        }
        atomic_fetch_add_explicit(&worker_ops, 1, memory_order_relaxed);
    }
    for (int i = 0; i < 64; i++)
        if (blk_free(mine[i]) != 0) fail("worker: block corrupted at exit");
    return NULL;
}

/* ---------- the child ---------- */

static int child_churn(uint64_t *rs, int rounds) {
    hdr *b[32] = {0};
    for (int r = 0; r < rounds; r++) {
        size_t i = (size_t)(rnd(rs) % 32);
        if (blk_free(b[i]) != 0) return -1;
        b[i] = blk_new(rs);
        if (!b[i]) return -1;
    }
    for (int i = 0; i < 32; i++)
        if (blk_free(b[i]) != 0) return -1;
    /* aligned and large blocks too */
    void *a = NULL;
    if (posix_memalign(&a, 4096, 10000) != 0 || ((uintptr_t)a & 4095)) return -1;
    memset(a, 1, 10000);
    free(a);
    char *big = malloc(3u << 20);
    if (!big) return -1;
    memset(big, 2, 3u << 20);
    big = realloc(big, 5u << 20);
    if (!big || big[(3u << 20) - 1] != 2) return -1;
    free(big);
    char *c = calloc(1000, 8);
    if (!c) return -1;
    for (int i = 0; i < 8000; i++)
        if (c[i]) return -1;
    free(c);
    return 0;
}

static void *child_thread(void *arg) {
    uint64_t rs = (uint64_t)(uintptr_t)arg | 1;
    return (void *)(intptr_t)child_churn(&rs, 500);
}

static int wait_child(pid_t pid, int *status, int timeout_ms) {
    struct timespec ms = {0, 1000000};
    for (int waited = 0;; waited++) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid) return 0;
        if (r < 0 && errno != EINTR) return -1;
        if (waited >= timeout_ms) return 1;
        nanosleep(&ms, NULL);
    }
}

static void child_main(int n, hdr **inherited, int ninherited) {
    uint64_t rs = 0xC0FFEEULL + (uint64_t)n;
    /* free what the parent's main thread held at the fork */
    for (int i = 0; i < ninherited; i++)
        if (blk_free(inherited[i]) != 0) child_fail("inherited block corrupted");
    /* and what the parent's other threads left in the exchange (their
     * caches are gone in the child) */
    pthread_mutex_lock(&exch_lock);
    for (int i = 0; i < EXCHANGE_SLOTS; i += 3) {
        if (blk_free(exchange[i]) != 0) child_fail("exchange block corrupted");
        exchange[i] = NULL;
    }
    pthread_mutex_unlock(&exch_lock);
    if (child_churn(&rs, 2000) != 0) child_fail("allocation in the child failed");
    pthread_t t;
    if (pthread_create(&t, NULL, child_thread, (void *)(uintptr_t)rnd(&rs)) != 0)
        child_fail("pthread_create in the child");
    void *ret;
    if (pthread_join(t, &ret) != 0 || ret != NULL) child_fail("thread in the child failed");
    if (n % 10 == 0) {
        /* a grandchild, forked from a process that itself came from a fork */
        pid_t g = fork();
        if (g < 0) child_fail("fork in the child");
        if (g == 0) {
            uint64_t grs = 77;
            if (child_churn(&grs, 300) != 0) child_fail("allocation in the grandchild failed");
            _exit(0);
        }
        int st;
        int w = wait_child(g, &st, CHILD_TIMEOUT_MS);
        if (w == 1) {
            kill(g, SIGKILL);
            waitpid(g, &st, 0);
            child_fail("grandchild hung for 10 s (deadlock after fork?)");
        }
        if (w != 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) child_fail("grandchild failed");
    }
    _exit(0);
}

/* With EXPECT_MALLOC_FROM=NAME set, malloc and free must come from a
 * library whose path contains NAME (proof that LD_PRELOAD took). */
static void check_provider(void) {
    const char *want = getenv("EXPECT_MALLOC_FROM");
    if (!want) return;
    void *fns[] = {(void *)malloc, (void *)free, (void *)realloc};
    for (size_t i = 0; i < 3; i++) {
        Dl_info info;
        if (!dladdr(fns[i], &info) || !info.dli_fname || !strstr(info.dli_fname, want))
            fail("malloc/free/realloc do not come from %s (LD_PRELOAD not in effect?)", want);
    }
}

int main(int argc, char **argv) {
    int forks = argc > 1 ? atoi(argv[1]) : 50;
    int nthreads = argc > 2 ? atoi(argv[2]) : 4;
    if (forks < 1 || nthreads < 1) fail("usage: fork [forks] [threads]");
    check_provider();
    if (pthread_atfork(exch_prepare, exch_parent, exch_child) != 0) fail("pthread_atfork");

    pthread_t *t = malloc(sizeof(pthread_t) * (size_t)nthreads);
    if (!t) fail("malloc");
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(i + 1)) != 0)
            fail("pthread_create");

    uint64_t rs = 4242;
    enum { HELD = 16 };
    hdr *held[HELD];
    for (int n = 0; n < forks; n++) {
        for (int i = 0; i < HELD; i++) {
            held[i] = blk_new(&rs);
            if (!held[i]) fail("malloc in the parent");
        }
        /* let the workers get going between forks */
        long before = atomic_load(&worker_ops);
        struct timespec ms = {0, 200000};
        for (int spin = 0; spin < 50 && atomic_load(&worker_ops) - before < 200; spin++)
            nanosleep(&ms, NULL);

        pid_t pid = fork();
        if (pid < 0) fail("fork: %s", strerror(errno));
        if (pid == 0) child_main(n, held, HELD);

        for (int i = 0; i < HELD; i++)
            if (blk_free(held[i]) != 0) fail("parent block corrupted after fork %d", n);
        int status = 0;
        int w = wait_child(pid, &status, CHILD_TIMEOUT_MS);
        if (w == 1) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fail("child %d (pid %d) hung for %d ms: deadlock after fork?", n, (int)pid,
                 CHILD_TIMEOUT_MS);
        }
        if (w != 0) fail("waitpid: %s", strerror(errno));
        if (WIFSIGNALED(status))
            fail("child %d killed by signal %d (%s)", n, WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail("child %d exited with status %d", n, WEXITSTATUS(status));
    }

    atomic_store(&stop, 1);
    for (int i = 0; i < nthreads; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < EXCHANGE_SLOTS; i++)
        if (blk_free(exchange[i]) != 0) fail("exchange block corrupted at the end");
    free(t);
    if (atomic_load(&worker_ops) < forks)
        fail("workers made only %ld operations during %d forks", atomic_load(&worker_ops), forks);
    printf("fork ok\n");
    return 0;
}
