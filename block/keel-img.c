/*
 * keel-img: create raw images, describe them, and benchmark the block layer
 * with qemu-img bench's options (see keel-img(1)).
 *
 *   keel-img create [-q] [-f raw] FILE SIZE
 *   keel-img info [-t CACHE] [-i AIO] FILE
 *   keel-img bench [-c COUNT] [-d DEPTH] [-f raw] [-s SIZE] [-w] [-t CACHE]
 *                  [-i AIO] [-n] [-o OFFSET] [-S STEP] [-r] [--pattern=N]
 *                  [--flush-interval=N] [--no-drain] [--inject=RULE] [-q] FILE
 *   keel-img --features | --help | --version
 *
 * Every error is one line on stderr and exit status 1.
 */
#include "config.h"

#include "block/block-backend.h"
#include "block/features-all.h"
#include "compat/avoid.h"
#include "compat/features.h"
#include "compat/osdep.h"
#include "loop/aio.h"
#include "loop/timer.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <glib.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: keel-img COMMAND [options] ...\n"
    "\n"
    "  create [-q] [-f raw] FILE SIZE\n"
    "        create a sparse raw image of SIZE bytes (suffixes k, M, G, T)\n"
    "  info [-t CACHE] [-i AIO] FILE\n"
    "        size, allocation, and the engine a backend would use\n"
    "  bench [-c COUNT] [-d DEPTH] [-f raw] [-s SIZE] [-w] [-t CACHE] [-i AIO] [-n]\n"
    "        [-o OFFSET] [-S STEP] [-r] [--pattern=N] [--flush-interval=N]\n"
    "        [--no-drain] [--inject=RULE] [-q] FILE\n"
    "        run COUNT requests (default 75000) of SIZE bytes (default 4096),\n"
    "        DEPTH in flight (default 64), reads (or writes with -w), from\n"
    "        OFFSET (default 0) by STEP (default SIZE), or at random offsets\n"
    "        with -r; prints IOPS and MiB/s\n"
    "\n"
    "  CACHE: none, writeback (default), writethrough, directsync, unsafe\n"
    "  AIO:   io_uring (default), native, threads\n"
    "\n"
    "  --features   print the features report (see keel-features)\n"
    "  --help       this text;  --version   the version\n"
    "See keel-img(1).\n";

static void G_GNUC_PRINTF(1, 2) G_GNUC_NORETURN die(const char *fmt, ...)
{
    va_list ap;

    fputs("keel-img: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* qemu-img's size syntax: a number with an optional k/K, M, G, T, P or E
 * suffix (powers of 1024), or b/B for bytes. */
static bool parse_size(const char *s, uint64_t *out)
{
    char *end;
    unsigned shift = 0;
    unsigned long long v;

    if (!*s || *s == '-' || !g_ascii_isdigit(*s)) {
        return false;
    }
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s) {
        return false;
    }
    if (*end) {
        switch (*end) {
        case 'b': case 'B': shift = 0; break;
        case 'k': case 'K': shift = 10; break;
        case 'm': case 'M': shift = 20; break;
        case 'g': case 'G': shift = 30; break;
        case 't': case 'T': shift = 40; break;
        case 'p': case 'P': shift = 50; break;
        case 'e': case 'E': shift = 60; break;
        default: return false;
        }
        if (end[1]) {
            return false;
        }
    }
    if (shift && v > (UINT64_MAX >> shift)) {
        return false;
    }
    *out = (uint64_t)v << shift;
    return *out <= INT64_MAX;
}

/* The subcommand running, for messages from the shared parsers. */
static const char *current_cmd = "keel-img";

static uint64_t parse_size_or_die(const char *what, const char *s)
{
    uint64_t v;

    if (!parse_size(s, &v)) {
        die("%s: invalid %s '%s' (a byte count with an optional k/M/G/T suffix)",
            current_cmd, what, s);
    }
    return v;
}

static long parse_int_or_die(const char *what, const char *s, long min, long max)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        die("%s: invalid %s '%s' (an integer from %ld to %ld)", current_cmd, what, s, min, max);
    }
    return v;
}

static void check_format(const char *fmt)
{
    if (strcmp(fmt, "raw")) {
        die("%s: unsupported format '%s' (only raw)", current_cmd, fmt);
    }
}

static char *human_size(uint64_t v)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
    double d = (double)v;
    int u = 0;

    while (d >= 1024 && u < 6) {
        d /= 1024;
        u++;
    }
    return u ? g_strdup_printf("%.3g %s", d, units[u]) : g_strdup_printf("%" PRIu64 " B", v);
}

/* getopt with our own one-line messages. */
static void G_GNUC_NORETURN bad_option(const char *cmd, int opt, char **argv)
{
    char name[8];
    const char *shown = argv[optind - 1];

    /* A short option is named by optopt; a long one only by its argv word. */
    if (optopt > 0 && optopt < 128 && g_ascii_isalnum(optopt)) {
        snprintf(name, sizeof(name), "-%c", optopt);
        shown = name;
    }
    if (opt == ':') {
        die("%s: option '%s' needs a value (try --help)", cmd, shown);
    }
    die("%s: unknown option '%s' (try --help)", cmd, shown);
}

/* ---- create ------------------------------------------------------------------ */

static int cmd_create(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    bool quiet = false;
    uint64_t size;
    int opt, fd;

    while ((opt = getopt_long(argc, argv, ":qf:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'q': quiet = true; break;
        case 'f': check_format(optarg); break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: bad_option("create", opt, argv);
        }
    }
    if (argc - optind != 2) {
        die("create: expected FILE SIZE (try --help)");
    }
    size = parse_size_or_die("size", argv[optind + 1]);
    fd = KEEL_RETRY_EINTR(open(argv[optind], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (fd < 0) {
        die("create: cannot create '%s': %s", argv[optind], g_strerror(errno));
    }
    /* ftruncate leaves the file sparse: nothing is allocated. */
    if (KEEL_RETRY_EINTR(ftruncate(fd, (off_t)size)) < 0) {
        int err = errno;
        close(fd);
        die("create: cannot set the size of '%s': %s", argv[optind], g_strerror(err));
    }
    if (close(fd) < 0) {
        die("create: '%s': %s", argv[optind], g_strerror(errno));
    }
    if (!quiet) {
        printf("Formatting '%s', fmt=raw size=%" PRIu64 "\n", argv[optind], size);
    }
    return 0;
}

/* ---- info ------------------------------------------------------------------------ */

static int cmd_info(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    KeelBlkOptions opts;
    KeelBlockBackend *blk;
    KeelAioContext *ctx;
    struct stat st;
    char *errmsg = NULL, *vs, *ds;
    const char *file, *note = "";
    bool cache_given = false;
    int opt;

    keel_blk_options_init(&opts);
    opts.cache = KEEL_BLK_CACHE_NONE;
    while ((opt = getopt_long(argc, argv, ":t:i:f:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 't':
            if (keel_blk_cache_from_name(optarg, &opts.cache) < 0) {
                die("info: invalid cache mode '%s' (none, writeback, writethrough, "
                    "directsync, unsafe)", optarg);
            }
            cache_given = true;
            break;
        case 'i':
            if (keel_blk_aio_from_name(optarg, &opts.aio) < 0) {
                die("info: invalid aio mode '%s' (io_uring, native, threads)", optarg);
            }
            break;
        case 'f': check_format(optarg); break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: bad_option("info", opt, argv);
        }
    }
    if (argc - optind != 1) {
        die("info: expected FILE (try --help)");
    }
    file = argv[optind];
    if (stat(file, &st) < 0) {
        die("info: cannot open '%s': %s", file, g_strerror(errno));
    }
    ctx = keel_aio_context_new();
    opts.filename = g_strdup(file);
    opts.readonly = true;
    blk = keel_blk_open(&opts, ctx, &errmsg);
    if (!blk && !cache_given) {
        /* The default asks for O_DIRECT; say what happens without it. */
        g_free(errmsg);
        errmsg = NULL;
        opts.cache = KEEL_BLK_CACHE_WRITEBACK;
        if (opts.aio == KEEL_BLK_AIO_NATIVE) {
            opts.aio = KEEL_BLK_AIO_THREADS;
        }
        note = "; cache=none refused here";
        blk = keel_blk_open(&opts, ctx, &errmsg);
    }
    if (!blk) {
        die("info: %s", errmsg);
    }
    vs = human_size((uint64_t)keel_blk_getlength(blk));
    ds = human_size((uint64_t)st.st_blocks * 512);
    printf("image: %s\n", file);
    printf("file format: raw\n");
    printf("virtual size: %s (%" PRId64 " bytes)\n", vs, keel_blk_getlength(blk));
    printf("disk size: %s (%" PRIu64 " bytes allocated)\n", ds, (uint64_t)st.st_blocks * 512);
    printf("engine: %s (aio=%s cache=%s%s)\n", keel_blk_engine_name(blk),
           keel_blk_aio_name(opts.aio), keel_blk_cache_name(opts.cache), note);
    printf("request alignment: %" PRIu32 "\n", keel_blk_get_request_alignment(blk));
    g_free(vs);
    g_free(ds);
    keel_blk_close(blk);
    keel_blk_options_clear(&opts);
    keel_aio_context_unref(ctx);
    return 0;
}

/* ---- bench ------------------------------------------------------------------------ */

typedef struct Bench Bench;

typedef struct BenchSlot {
    Bench *b;
    struct iovec iov;
} BenchSlot;

struct Bench {
    KeelBlockBackend *blk;
    KeelAioContext *ctx;
    int64_t image_size;
    size_t bufsize;
    int depth;
    uint64_t count;             /* requests to run */
    uint64_t started, done;
    int in_flight;
    int64_t offset;             /* next sequential offset */
    int64_t step;
    bool write;
    bool random;
    uint64_t rng;               /* xorshift64 state */
    uint64_t random_align;
    uint64_t flush_interval;
    bool drain_for_flush;
    bool flush_wanted, flush_in_flight;
    BenchSlot *slots;
    BenchSlot **free_slots;
    int n_free;
    int error;                  /* first error, -errno */
    bool finished;
    int64_t start_ns;
    KeelTimer *progress;
    bool progress_shown;
    bool quiet;
};

static uint64_t bench_next_random(Bench *b)
{
    b->rng ^= b->rng << 13;
    b->rng ^= b->rng >> 7;
    b->rng ^= b->rng << 17;
    return b->rng;
}

static int64_t bench_next_offset(Bench *b)
{
    int64_t off;

    if (b->random) {
        uint64_t slots = (uint64_t)(b->image_size - (int64_t)b->bufsize) / b->random_align + 1;
        return (int64_t)((bench_next_random(b) % slots) * b->random_align);
    }
    off = b->offset;
    b->offset += b->step;
    if (b->image_size <= (int64_t)b->bufsize) {
        b->offset = 0;
    } else {
        b->offset %= b->image_size - (int64_t)b->bufsize;
    }
    return off;
}

static void bench_fill(Bench *b);

static void bench_check_done(Bench *b)
{
    if (b->in_flight == 0 && !b->flush_in_flight &&
        (b->done == b->count || b->error)) {
        b->finished = true;
    }
}

static void bench_flush_cb(void *opaque, int ret)
{
    Bench *b = opaque;

    b->flush_in_flight = false;
    if (ret < 0 && !b->error) {
        b->error = ret;
    }
    bench_fill(b);
    bench_check_done(b);
}

static void bench_rw_cb(void *opaque, int ret)
{
    BenchSlot *slot = opaque;
    Bench *b = slot->b;

    b->in_flight--;
    b->done++;
    b->free_slots[b->n_free++] = slot;
    if (ret < 0 && !b->error) {
        b->error = ret;
    }
    if (b->flush_interval && b->write && b->done % b->flush_interval == 0) {
        b->flush_wanted = true;
    }
    bench_fill(b);
    bench_check_done(b);
}

static void bench_fill(Bench *b)
{
    keel_blk_io_plug();
    if (b->flush_wanted && !b->flush_in_flight && !b->error &&
        (!b->drain_for_flush || b->in_flight == 0)) {
        b->flush_wanted = false;
        b->flush_in_flight = true;
        keel_blk_aio_flush(b->blk, bench_flush_cb, b);
    }
    while (!b->error && b->in_flight < b->depth && b->started < b->count &&
           !(b->drain_for_flush && (b->flush_wanted || b->flush_in_flight))) {
        BenchSlot *slot = b->free_slots[--b->n_free];
        int64_t off = bench_next_offset(b);

        b->started++;
        b->in_flight++;
        if (b->write) {
            keel_blk_aio_pwritev(b->blk, off, &slot->iov, 1, bench_rw_cb, slot);
        } else {
            keel_blk_aio_preadv(b->blk, off, &slot->iov, 1, bench_rw_cb, slot);
        }
    }
    keel_blk_io_unplug();
}

static void bench_progress(void *opaque)
{
    Bench *b = opaque;
    double secs = (double)(keel_monotonic_ns() - b->start_ns) / 1e9;
    bool tty = isatty(STDERR_FILENO);

    fprintf(stderr, "%sbench: %5.1f%% (%" PRIu64 "/%" PRIu64 " requests), %.0f IOPS%s",
            tty ? "\r" : "", 100.0 * (double)b->done / (double)b->count, b->done, b->count,
            (double)b->done / secs, tty ? "" : "\n");
    fflush(stderr);
    b->progress_shown = true;
    keel_timer_mod_ns(b->progress, keel_clock_get_ns(KEEL_CLOCK_REALTIME) + 1000000000LL);
}

static int cmd_bench(int argc, char **argv)
{
    enum { OPT_PATTERN = 256, OPT_FLUSH_INTERVAL, OPT_NO_DRAIN, OPT_INJECT };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "pattern", required_argument, NULL, OPT_PATTERN },
        { "flush-interval", required_argument, NULL, OPT_FLUSH_INTERVAL },
        { "no-drain", no_argument, NULL, OPT_NO_DRAIN },
        { "inject", required_argument, NULL, OPT_INJECT },
        { NULL, 0, NULL, 0 },
    };
    Bench b = { .count = 75000, .depth = 64, .bufsize = 4096, .drain_for_flush = true,
                .rng = 0x9e3779b97f4a7c15ULL };
    KeelBlkOptions opts;
    char *errmsg = NULL;
    bool step_given = false, drain_given = false;
    int pattern = 0, opt;
    uint64_t offset = 0;
    double secs;
    char *buffers;

    keel_blk_options_init(&opts);
    while ((opt = getopt_long(argc, argv, ":c:d:f:s:wt:i:no:S:rqU", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            b.count = (uint64_t)parse_int_or_die("count", optarg, 1, INT32_MAX);
            break;
        case 'd':
            b.depth = (int)parse_int_or_die("depth", optarg, 1, 65536);
            break;
        case 'f':
            check_format(optarg);
            break;
        case 's':
            b.bufsize = (size_t)parse_size_or_die("buffer size", optarg);
            if (b.bufsize == 0 || b.bufsize > (1u << 30)) {
                die("bench: invalid buffer size '%s' (1 byte to 1 GiB)", optarg);
            }
            break;
        case 'w':
            b.write = true;
            break;
        case 't':
            if (keel_blk_cache_from_name(optarg, &opts.cache) < 0) {
                die("bench: invalid cache mode '%s' (none, writeback, writethrough, "
                    "directsync, unsafe)", optarg);
            }
            break;
        case 'i':
            if (keel_blk_aio_from_name(optarg, &opts.aio) < 0) {
                die("bench: invalid aio mode '%s' (io_uring, native, threads)", optarg);
            }
            break;
        case 'n':
            opts.aio = KEEL_BLK_AIO_NATIVE;
            break;
        case 'o':
            offset = parse_size_or_die("offset", optarg);
            break;
        case 'S':
            b.step = (int64_t)parse_size_or_die("step size", optarg);
            step_given = true;
            break;
        case 'r':
            b.random = true;
            break;
        case 'q':
            b.quiet = true;
            break;
        case 'U':
            break;      /* qemu-img's "force share": we take no locks */
        case OPT_PATTERN:
            pattern = (int)parse_int_or_die("pattern", optarg, 0, 255);
            break;
        case OPT_FLUSH_INTERVAL:
            b.flush_interval = (uint64_t)parse_int_or_die("flush interval", optarg, 0, INT32_MAX);
            break;
        case OPT_NO_DRAIN:
            b.drain_for_flush = false;
            drain_given = true;
            break;
        case OPT_INJECT: {
            char *joined = opts.inject ? g_strconcat(opts.inject, ";", optarg, NULL)
                                       : g_strdup(optarg);
            g_free(opts.inject);
            opts.inject = joined;
            break;
        }
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            bad_option("bench", opt, argv);
        }
    }
    if (argc - optind != 1) {
        die("bench: expected FILE (try --help)");
    }
    if (b.flush_interval && !b.write) {
        die("bench: --flush-interval is only available in write tests");
    }
    if (drain_given && !b.flush_interval) {
        die("bench: --no-drain only makes sense with --flush-interval");
    }
    if (b.random && step_given) {
        die("bench: -r and -S cannot be combined");
    }
    if (!step_given) {
        b.step = (int64_t)b.bufsize;
    }

    b.ctx = keel_aio_context_new();
    opts.filename = g_strdup(argv[optind]);
    opts.readonly = !b.write;
    b.blk = keel_blk_open(&opts, b.ctx, &errmsg);
    if (!b.blk) {
        die("bench: %s", errmsg);
    }
    b.image_size = keel_blk_getlength(b.blk);
    if (b.image_size < (int64_t)b.bufsize) {
        die("bench: the image (%" PRId64 " bytes) is smaller than one request (%zu bytes)",
            b.image_size, b.bufsize);
    }
    if ((int64_t)offset > b.image_size - (int64_t)b.bufsize) {
        die("bench: offset %" PRIu64 " leaves no room for a %zu-byte request", offset,
            b.bufsize);
    }
    b.offset = (int64_t)offset;
    b.random_align = b.bufsize % 4096 ? 512 : 4096;
    if (b.random_align > b.bufsize) {
        b.random_align = 1;
    }

    /* One buffer per request slot, page-aligned so O_DIRECT takes them as
     * they are. */
    buffers = NULL;
    if (posix_memalign((void **)&buffers, 4096, b.bufsize * (size_t)b.depth)) {
        die("bench: cannot allocate %d buffers of %zu bytes", b.depth, b.bufsize);
    }
    memset(buffers, pattern, b.bufsize * (size_t)b.depth);
    b.slots = g_new0(BenchSlot, b.depth);
    b.free_slots = g_new(BenchSlot *, b.depth);
    for (int i = 0; i < b.depth; i++) {
        b.slots[i].b = &b;
        b.slots[i].iov.iov_base = buffers + (size_t)i * b.bufsize;
        b.slots[i].iov.iov_len = b.bufsize;
        b.free_slots[b.n_free++] = &b.slots[i];
    }

    if (!b.quiet) {
        printf("Sending %" PRIu64 " %s requests, %zu bytes each, %d in parallel "
               "(starting at offset %" PRIu64 ", step size %" PRId64 "%s)\n",
               b.count, b.write ? "write" : "read", b.bufsize, b.depth, offset,
               b.random ? (int64_t)b.random_align : b.step,
               b.random ? ", random offsets" : "");
        fflush(stdout);
    }
    b.progress = keel_aio_timer_new_ns(b.ctx, KEEL_CLOCK_REALTIME, bench_progress, &b);
    if (!b.quiet) {
        keel_timer_mod_ns(b.progress, keel_clock_get_ns(KEEL_CLOCK_REALTIME) + 1000000000LL);
    }
    b.start_ns = keel_monotonic_ns();
    bench_fill(&b);
    while (!b.finished) {
        keel_aio_poll(b.ctx, true);
    }
    secs = (double)(keel_monotonic_ns() - b.start_ns) / 1e9;
    keel_timer_free(b.progress);
    if (b.progress_shown && isatty(STDERR_FILENO)) {
        fputc('\n', stderr);
    }
    if (b.error) {
        die("bench: request failed: %s", g_strerror(-b.error));
    }
    printf("Run completed in %3.3f seconds.\n", secs);
    printf("IOPS: %.0f, throughput: %.2f MiB/s, engine: %s\n", (double)b.count / secs,
           (double)b.count * (double)b.bufsize / secs / (1024.0 * 1024.0),
           keel_blk_engine_name(b.blk));
    keel_blk_close(b.blk);
    keel_aio_context_unref(b.ctx);
    keel_blk_options_clear(&opts);
    free(buffers);
    g_free(b.slots);
    g_free(b.free_slots);
    return 0;
}

int main(int argc, char **argv)
{
    const char *error;
    const char *cmd;

    if (keel_avoid_init(&error) < 0) {
        die("%s", error);
    }
    if (argc < 2) {
        die("no command given (create, info, bench; try --help)");
    }
    cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
        printf("keel-img %s\n", PACKAGE_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "--features")) {
        if (argc > 2) {
            die("--features takes no arguments");
        }
        keel_all_features_register();
        printf("keel %s\n", PACKAGE_VERSION);
        keel_features_print(stdout);
        return 0;
    }
    /* Subcommand options start after the command name. */
    opterr = 0;
    current_cmd = cmd;
    if (!strcmp(cmd, "create")) {
        return cmd_create(argc - 1, argv + 1);
    }
    if (!strcmp(cmd, "info")) {
        return cmd_info(argc - 1, argv + 1);
    }
    if (!strcmp(cmd, "bench")) {
        return cmd_bench(argc - 1, argv + 1);
    }
    die("unknown command '%s' (create, info, bench; try --help)", cmd);
}
