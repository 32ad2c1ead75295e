// Heavy std::map<std::string, std::string> / std::vector<std::string> use
// across 4 threads, printing a deterministic checksum. Run by
// gomalloc/capi/tests/preload.rs with and without LD_PRELOAD; the outputs
// must be identical.
//
//   maps [rounds=3]
//
// Each round: 4 threads each build a map and a vector of strings (keys and
// values of many lengths, so both short-string-optimized and heap strings),
// update, erase and re-insert entries, sort, and checksum them. The
// containers are then handed to a different thread, which checks them,
// grows them some more and destroys them: most of their nodes and string
// buffers are freed by a thread other than the one that allocated them.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

constexpr int kThreads = 4;
constexpr int kEntries = 30000;

struct Rng {
    std::uint64_t s;
    std::uint64_t next() {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        return s * 0x2545F4914F6CDD1DULL;
    }
};

std::uint64_t fnv(std::uint64_t h, const std::string &s) {
    for (unsigned char c : s) {
        h ^= c;
        h *= 0x100000001b3ULL;
    }
    h ^= s.size();
    h *= 0x100000001b3ULL;
    return h;
}

std::string make_string(Rng &r, std::size_t min_len) {
    // mostly short (fits the small-string buffer), sometimes long
    std::size_t len = min_len + (r.next() % 8 == 0 ? r.next() % 400 : r.next() % 24);
    std::string s;
    for (std::size_t i = 0; i < len; i++) s.push_back(static_cast<char>('a' + r.next() % 26));
    return s;
}

struct Work {
    std::map<std::string, std::string> map;
    std::vector<std::string> vec;
    std::unordered_map<std::string, std::vector<std::string>> groups;
    std::uint64_t built = 0;
};

std::uint64_t checksum(const Work &w) {
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (const auto &kv : w.map) {
        h = fnv(h, kv.first);
        h = fnv(h, kv.second);
    }
    for (const auto &s : w.vec) h = fnv(h, s);
    // unordered_map iteration order is not portable; combine commutatively
    std::uint64_t g = 0;
    for (const auto &kv : w.groups) {
        std::uint64_t e = fnv(0xcbf29ce484222325ULL, kv.first);
        for (const auto &s : kv.second) e = fnv(e, s);
        g += e;
    }
    return h ^ g;
}

std::unique_ptr<Work> build(int round, int id) {
    Rng r{0x9E3779B97F4A7C15ULL * static_cast<std::uint64_t>(round * 100 + id + 1)};
    auto w = std::make_unique<Work>();
    for (int i = 0; i < kEntries; i++) {
        std::string k = make_string(r, 4);
        std::string v = make_string(r, 0);
        w->map[k] += v;  // update when the key repeats
        if (i % 3 == 0) w->vec.push_back(v + k);
        w->groups[k.substr(0, 2)].push_back(std::move(v));
    }
    // erase about a third, then re-insert different entries
    for (auto it = w->map.begin(); it != w->map.end();) {
        if (r.next() % 3 == 0)
            it = w->map.erase(it);
        else
            ++it;
    }
    for (int i = 0; i < kEntries / 3; i++) w->map.emplace(make_string(r, 6), make_string(r, 10));
    std::sort(w->vec.begin(), w->vec.end());
    w->vec.erase(std::unique(w->vec.begin(), w->vec.end()), w->vec.end());
    w->vec.shrink_to_fit();
    w->built = checksum(*w);
    return w;
}

// Runs on another thread than build(): checks, grows, and destroys.
std::uint64_t consume(std::unique_ptr<Work> w, int round, int id) {
    if (checksum(*w) != w->built) {
        std::fprintf(stderr, "maps FAIL: round %d: containers of thread %d changed in transit\n",
                     round, id);
        std::exit(1);
    }
    Rng r{static_cast<std::uint64_t>(round * 7919 + id * 31 + 1)};
    std::vector<std::string> moved;
    for (auto &kv : w->map) {
        if (r.next() % 2 == 0) kv.second.append(make_string(r, 30));
        moved.push_back(kv.first + "=" + kv.second);
    }
    w->map.clear();
    std::reverse(moved.begin(), moved.end());
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (const auto &s : moved) h = fnv(h, s);
    return h ^ w->built;  // w (and everything in it) is freed here
}

}  // namespace

int main(int argc, char **argv) {
    int rounds = argc > 1 ? std::atoi(argv[1]) : 3;
    std::uint64_t total = 0;
    for (int round = 0; round < rounds; round++) {
        std::vector<std::unique_ptr<Work>> built(kThreads);
        {
            std::vector<std::thread> ts;
            for (int id = 0; id < kThreads; id++)
                ts.emplace_back([&built, round, id] { built[id] = build(round, id); });
            for (auto &t : ts) t.join();
        }
        std::vector<std::uint64_t> sums(kThreads);
        {
            std::vector<std::thread> ts;
            for (int id = 0; id < kThreads; id++) {
                // thread id consumes what thread (id + 1) % kThreads built
                int from = (id + 1) % kThreads;
                std::unique_ptr<Work> w = std::move(built[from]);
                ts.emplace_back([&sums, round, from, w = std::move(w)]() mutable {
                    sums[from] = consume(std::move(w), round, from);
                });
            }
            for (auto &t : ts) t.join();
        }
        for (int id = 0; id < kThreads; id++) {
            std::printf("round %d thread %d: %016llx\n", round, id,
                        static_cast<unsigned long long>(sums[id]));
            total = total * 31 + sums[id];
        }
    }
    std::printf("maps total %016llx\n", static_cast<unsigned long long>(total));
    return 0;
}
