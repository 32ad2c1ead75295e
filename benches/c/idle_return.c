/* idle-return: how much of a freed heap an allocator gives back to the OS.
 *
 * usage: idle_return [MIB [IDLE_MS]]   (defaults 1200 and 3000)
 *
 * The workload `idle-return` of `cargo xtask compare` (issue 6), run under
 * each allocator's library in LD_PRELOAD (glibc's malloc without one):
 *
 * 1. The main thread allocates objects until their sizes add up to MIB MiB.
 *    Sizes come from a hash of the object's index (so nothing but the index
 *    needs keeping): an octave k of 16 B .. 128 KiB (k = 4..16) with
 *    probability proportional to 2^-k, uniform inside it, so every octave
 *    holds about the same bytes: half the objects are 16-31 B, about a
 *    seventh of the bytes is in objects over 32 KiB (gomalloc's large
 *    objects, spans of their own), and every size class gets some. Every
 *    byte of each object is written with a pattern derived from its index,
 *    so every page is resident. The pointers live in an array of their own
 *    mapping (mmap), not in the measured heap.
 * 2. A second thread frees the odd-indexed objects while the main thread
 *    frees the even ones (so half the frees are of another thread's
 *    objects), each checking the pattern first (a mismatch: a message and
 *    abort()). The pointer array is unmapped. `elapsed_ns` is steps 1-2.
 * 3. Resident memory (/proc/self/statm) right after the free; again after
 *    IDLE_MS milliseconds of sleep (100 ms steps, allocating nothing, so
 *    only an allocator's background work can give memory back); again after
 *    malloc_trim(0); then the peak (VmHWM of /proc/self/status).
 *
 * Prints the suite's result line (see xtask/src/compare/protocol.rs):
 *   workload=idle-return threads=2 size=MIB ops=OBJECTS elapsed_ns=N
 *   checksum=16HEX peak_rss_kib=N rss_freed_kib=N rss_idle_kib=N
 *   rss_trim_kib=N
 * The checksum depends on MIB alone. Exit 2 on a usage error.
 *
 * Nothing between the first malloc and the last reading allocates on its
 * own: /proc is read with open/read into stack buffers, and stdio is used
 * only for the result line at the end (and the message before an abort).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MIN_OCTAVE 4  /* 16 B */
#define MAX_OCTAVE 16 /* objects below 2^17 = 128 KiB */

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* The seed of object i's size and pattern. */
static uint64_t object_seed(uint64_t i) { return splitmix64(i ^ 0x1D1E5EEDull); }

/* Object i's size: octave k (MIN_OCTAVE..MAX_OCTAVE) with probability
 * proportional to 2^-k, uniform inside it. */
static size_t object_size(uint64_t i) {
    uint64_t h = object_seed(i);
    /* Geometric over the octaves: count the trailing zeros of the low
     * bits, wrapping above the top octave (the wrap changes the weights by
     * under 2^-13). */
    unsigned k = MIN_OCTAVE + (unsigned)__builtin_ctzll((h & 0xFFFFFFFFull) | (1ull << 32))
                                  % (MAX_OCTAVE - MIN_OCTAVE + 1);
    size_t lo = (size_t)1 << k;
    return lo + (size_t)((h >> 32) % lo);
}

/* The 64-bit word j of object i's pattern. */
static uint64_t pattern_word(uint64_t seed, size_t j) {
    return seed ^ (j * 0x9E3779B97F4A7C15ull);
}

static void fill(unsigned char *p, size_t size, uint64_t i) {
    uint64_t seed = object_seed(i);
    size_t words = size / 8;
    for (size_t j = 0; j < words; j++) {
        uint64_t w = pattern_word(seed, j);
        memcpy(p + 8 * j, &w, 8);
    }
    uint64_t last = pattern_word(seed, words);
    memcpy(p + 8 * words, &last, size % 8);
}

/* Checks object i's pattern; returns a hash of it for the checksum, or
 * aborts on a mismatch. */
static uint64_t check(const unsigned char *p, size_t size, uint64_t i) {
    uint64_t seed = object_seed(i);
    size_t words = size / 8;
    for (size_t j = 0; j < words; j++) {
        uint64_t w;
        memcpy(&w, p + 8 * j, 8);
        if (w != pattern_word(seed, j)) {
            fprintf(stderr, "idle_return: object %llu (%zu B at %p) corrupt at byte %zu\n",
                    (unsigned long long)i, size, (const void *)p, 8 * j);
            abort();
        }
    }
    uint64_t last = pattern_word(seed, words);
    if (memcmp(p + 8 * words, &last, size % 8) != 0) {
        fprintf(stderr, "idle_return: object %llu (%zu B at %p) corrupt in its last bytes\n",
                (unsigned long long)i, size, (const void *)p);
        abort();
    }
    return splitmix64(seed + size);
}

static void **objects;
static uint64_t count;

struct half {
    uint64_t first; /* 0: the even indices, 1: the odd */
    uint64_t sum;   /* of check()'s hashes */
};

static void free_half(struct half *h) {
    uint64_t sum = 0;
    for (uint64_t i = h->first; i < count; i += 2) {
        sum += check(objects[i], object_size(i), i);
        free(objects[i]);
    }
    h->sum = sum;
}

static void *free_half_thread(void *arg) {
    free_half(arg);
    return NULL;
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* Reads a small /proc file into buf (NUL-terminated) without stdio;
 * returns its length, or -1. */
static long read_proc(const char *path, char *buf, size_t cap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    return (long)len;
}

/* The resident set in KiB: statm's second field, in pages. */
static unsigned long long rss_kib(void) {
    char buf[256];
    if (read_proc("/proc/self/statm", buf, sizeof buf) <= 0) return 0;
    char *p = buf;
    while (*p && *p != ' ') p++; /* skip the total size */
    unsigned long long pages = strtoull(p, NULL, 10);
    return pages * (unsigned long long)sysconf(_SC_PAGESIZE) / 1024;
}

/* VmHWM of /proc/self/status in KiB (0 if absent). */
static unsigned long long peak_kib(void) {
    char buf[8192];
    if (read_proc("/proc/self/status", buf, sizeof buf) <= 0) return 0;
    char *line = strstr(buf, "VmHWM:");
    return line ? strtoull(line + 6, NULL, 10) : 0;
}

static int parse_arg(const char *s, unsigned long long max, unsigned long long *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-' || v > max) return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv) {
    unsigned long long mib = 1200, idle_ms = 3000;
    if (argc > 3 || (argc > 1 && (parse_arg(argv[1], 1ull << 20, &mib) || mib == 0)) ||
        (argc > 2 && parse_arg(argv[2], 3600000, &idle_ms))) {
        fprintf(stderr, "usage: idle_return [MIB [IDLE_MS]]  (MIB 1..1048576, default 1200; "
                        "IDLE_MS default 3000)\n");
        return 2;
    }
    uint64_t target = (uint64_t)mib << 20;
    /* At most one object per 16 bytes; MAP_NORESERVE, so only the entries
     * used take memory. */
    size_t cap = (size_t)(target / (1u << MIN_OCTAVE) + 1);
    objects = mmap(NULL, cap * sizeof *objects, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (objects == MAP_FAILED) {
        perror("idle_return: mmap of the pointer array");
        return 1;
    }

    uint64_t start = now_ns();
    uint64_t bytes = 0;
    while (bytes < target) {
        size_t size = object_size(count);
        unsigned char *p = malloc(size);
        if (!p) {
            fprintf(stderr, "idle_return: malloc(%zu) failed after %llu objects\n", size,
                    (unsigned long long)count);
            abort();
        }
        fill(p, size, count);
        objects[count++] = p;
        bytes += size;
    }
    struct half odd = {1, 0}, even = {0, 0};
    pthread_t other;
    int rc = pthread_create(&other, NULL, free_half_thread, &odd);
    if (rc != 0) {
        fprintf(stderr, "idle_return: pthread_create: %s\n", strerror(rc));
        abort();
    }
    free_half(&even);
    pthread_join(other, NULL);
    uint64_t elapsed = now_ns() - start;
    munmap(objects, cap * sizeof *objects);

    unsigned long long freed = rss_kib();
    uint64_t idle_end = now_ns() + idle_ms * 1000000ull;
    for (uint64_t t = now_ns(); t < idle_end; t = now_ns()) {
        uint64_t left = idle_end - t;
        if (left > 100000000ull) left = 100000000ull;
        struct timespec step = {0, (long)left};
        nanosleep(&step, NULL);
    }
    unsigned long long idle = rss_kib();
    malloc_trim(0);
    unsigned long long trimmed = rss_kib();
    unsigned long long peak = peak_kib();

    uint64_t checksum = splitmix64(even.sum + odd.sum + splitmix64(count) + mib);
    printf("workload=idle-return threads=2 size=%llu ops=%llu elapsed_ns=%llu "
           "checksum=%016llx peak_rss_kib=%llu rss_freed_kib=%llu rss_idle_kib=%llu "
           "rss_trim_kib=%llu\n",
           mib, (unsigned long long)count, (unsigned long long)elapsed,
           (unsigned long long)checksum, peak, freed, idle, trimmed);
    return 0;
}
