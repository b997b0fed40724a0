/*
 * keel-img: create raw images, describe them, and benchmark the block layer
 * with qemu-img bench's options (see keel-img(1)).
 *
 *   keel-img create [-q] [-f raw] FILE SIZE
 *   keel-img info [-f raw] [-U] [--output=json] [-t CACHE] [-i AIO] FILE
 *   keel-img check | resize | convert | compare | map  (qemu-img's raw behaviour
 *                  and exit codes; see the usage text)
 *   keel-img bench [-c COUNT] [-d DEPTH] [-f raw] [-s SIZE] [-w] [-t CACHE]
 *                  [-i AIO] [-n] [-o OFFSET] [-S STEP] [-r] [--pattern=N]
 *                  [--flush-interval=N] [--no-drain] [--inject=RULE] [-q] FILE
 *   keel-img --features | --help | --version
 *
 * Every error is one line on stderr (a lock conflict adds QEMU's hint line)
 * and exit status 1 (compare: 2, check on raw: 63, as qemu-img).
 */
#include "config.h"

#include "block/block-backend.h"
#include "block/features-all.h"
#include "block/image-lock.h"
#include "block/probe.h"
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
    "        create a sparse raw image of SIZE bytes (suffixes k, M, G, T; 1.5G)\n"
    "  info [-f raw] [-U] [--output=human|json] [-t CACHE] [-i AIO] FILE\n"
    "        format (probed: another format is named, never called raw), sizes,\n"
    "        and the engine a backend would use; JSON with qemu-img's keys\n"
    "  check [-f raw] [--output=human|json] FILE\n"
    "        qemu-img's answer for raw: nothing to check, exit 63\n"
    "  resize [-f raw] [-q] [--shrink] FILE [+|-]SIZE\n"
    "        set, grow or (with --shrink) shrink the image\n"
    "  convert [-f raw] [-O raw] [-S SIZE] [-t CACHE] [-T CACHE] [-W] [-m N] [-n]\n"
    "          [-p] [-U] SOURCE TARGET\n"
    "        copy the source's data, leaving holes and zero runs of SIZE\n"
    "        (default 4k; 0: allocate everything) sparse\n"
    "  compare [-f raw] [-F raw] [-s] [-p] [-q] FILE1 FILE2\n"
    "        exit 0 identical, 1 different (first differing offset), 2 error\n"
    "  map [-f raw] [--output=human|json] FILE\n"
    "        data and holes (SEEK_DATA/SEEK_HOLE), as qemu-img map\n"
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
    "  Numbers may be hexadecimal (--pattern=0xab).  Without -f the format is\n"
    "  probed; images in use by a writer (QEMU's or keel's image locks) are\n"
    "  refused for writing and for convert's source (-U shares anyway).\n"
    "  Exit status 1 on errors (compare: 2).\n"
    "\n"
    "  --features   print the features report (see keel-features)\n"
    "  --help       this text;  --version   the version\n"
    "See keel-img(1).\n";

/* qemu-img compare exits 2 on errors; every other command 1. */
static int die_status = 1;

static void G_GNUC_PRINTF(1, 2) G_GNUC_NORETURN die(const char *fmt, ...)
{
    va_list ap;

    fputs("keel-img: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(die_status);
}

/* qemu-img's size syntax: a number with an optional k/K, M, G, T, P or E
 * suffix (powers of 1024), or b/B for bytes; with a suffix the number may
 * have a fraction ("1.5G"), rounded down to whole bytes. */
static bool parse_size(const char *s, uint64_t *out)
{
    char *end;
    unsigned shift = 0;
    unsigned long long v;
    double frac = 0;

    if (!*s || *s == '-' || !g_ascii_isdigit(*s)) {
        return false;
    }
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s) {
        return false;
    }
    if (*end == '.') {
        char *fend;
        frac = g_ascii_strtod(end, &fend);     /* ".5" */
        if (fend == end + 1) {
            return false;
        }
        end = fend;
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
    if (frac != 0 && shift == 0) {
        return false;               /* a fraction of a byte */
    }
    if (shift && v >= (UINT64_MAX >> shift)) {
        return false;
    }
    *out = ((uint64_t)v << shift) + (uint64_t)(frac * (double)(1ull << shift));
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
    v = strtol(s, &end, 0);         /* 0xab, as qemu-img takes it */
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

/* ---- shared by the image commands ------------------------------------------------ */

/* -f FMT given (only raw), or NULL: probe. */
static const char *format_opt;

/* Looks at FILE without opening it as an image: refuses what is not a file
 * or block device (a FIFO is never waited on) and returns the probed
 * format (NULL: raw).  With -f raw given, raw.  Dies on errors. */
static const char *probe_or_die(const char *file, const char **hint)
{
    uint8_t buf[BLOCK_PROBE_BYTES];
    struct stat st;
    ssize_t n;
    int fd = KEEL_RETRY_EINTR(open(file, O_RDONLY | O_NONBLOCK | O_CLOEXEC));

    if (fd < 0) {
        die("%s: Could not open '%s': %s", current_cmd, file, g_strerror(errno));
    }
    if (fstat(fd, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
        close(fd);
        die("%s: Could not open '%s': %s", current_cmd, file,
            S_ISDIR(st.st_mode) ? "Is a directory"
                                : S_ISFIFO(st.st_mode) ? "is a FIFO, not an image"
                                                       : "not a regular file or block device");
    }
    if (format_opt) {
        close(fd);
        return NULL;
    }
    n = KEEL_RETRY_EINTR(pread(fd, buf, sizeof(buf), 0));
    close(fd);
    if (n < 0) {
        die("%s: Could not read '%s': %s", current_cmd, file, g_strerror(errno));
    }
    *hint = n < 104 ? " (truncated header)" : "";
    return block_probe_format(buf, (size_t)n);
}

/* Opens FILE as a raw image for the commands: refuses other formats
 * (naming them) unless -f raw was given. */
static KeelBlockBackend *open_image_or_die(const char *file, KeelBlkOptions *opts,
                                           KeelAioContext *ctx)
{
    const char *hint = "";
    const char *fmt = probe_or_die(file, &hint);
    KeelBlockBackend *blk;
    char *errmsg = NULL;

    if (fmt) {
        die("%s: '%s' is a %s image%s; keel-img works on raw images only "
            "(-f raw if you mean it)", current_cmd, file, fmt, hint);
    }
    g_free(opts->filename);
    opts->filename = g_strdup(file);
    blk = keel_blk_open(opts, ctx, &errmsg);
    if (!blk) {
        die("%s: Could not open '%s': %s", current_cmd, file, errmsg);
    }
    return blk;
}

/* Runs the request in @ctx's thread (ours) until it completes. */
typedef struct SyncReq {
    bool done;
    int ret;
} SyncReq;

static void sync_cb(void *opaque, int ret)
{
    SyncReq *r = opaque;

    r->ret = ret;
    r->done = true;
}

static int sync_read(KeelBlockBackend *blk, KeelAioContext *ctx, int64_t off, void *buf,
                     size_t len)
{
    struct iovec v = { buf, len };
    SyncReq r = { false, 0 };

    keel_blk_aio_preadv(blk, off, &v, 1, sync_cb, &r);
    while (!r.done) {
        keel_aio_poll(ctx, true);
    }
    return r.ret;
}

/* qemu-img's -p line: "    (45.00/100%)", redrawn in place. */
static void progress_print(bool on, double done, double total)
{
    if (on) {
        printf("    (%.2f/100%%)\r", total > 0 ? 100.0 * done / total : 100.0);
        fflush(stdout);
    }
}

static void progress_end(bool on)
{
    if (on) {
        printf("    (100.00/100%%)\n");
    }
}

static bool parse_output_or_die(const char *v)
{
    if (!strcmp(v, "json")) {
#ifndef HAVE_JSON_GLIB
        die("%s: --output=json needs json-glib, which this keel-img was built without",
            current_cmd);
#endif
        return true;
    }
    if (strcmp(v, "human") != 0) {
        die("%s: --output must be used with human or json as argument.", current_cmd);
    }
    return false;
}

#ifdef HAVE_JSON_GLIB
#include <json-glib/json-glib.h>

static void print_json(JsonNode *root)
{
    JsonGenerator *gen = json_generator_new();
    char *text;

    json_generator_set_pretty(gen, TRUE);
    json_generator_set_indent(gen, 4);
    json_generator_set_root(gen, root);
    text = json_generator_to_data(gen, NULL);
    printf("%s\n", text);
    g_free(text);
    g_object_unref(gen);
    json_node_unref(root);
}
#endif

/* The long options info, check and map share (qemu-img's). */
enum { OPT_OUTPUT = 256 };
static const struct option image_longopts[] = {
    { "help", no_argument, NULL, 'h' },
    { "output", required_argument, NULL, OPT_OUTPUT },
    { "force-share", no_argument, NULL, 'U' },
    { NULL, 0, NULL, 0 },
};

/* ---- info ------------------------------------------------------------------------ */

/* A qcow2 header's virtual size (big endian at 24), or -1. */
static int64_t qcow2_virtual_size(const char *file)
{
    uint8_t h[32];
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : pread(fd, h, sizeof(h), 0);
    uint64_t v = 0;

    if (fd >= 0) {
        close(fd);
    }
    if (n != (ssize_t)sizeof(h)) {
        return -1;
    }
    for (int i = 24; i < 32; i++) {
        v = v << 8 | h[i];
    }
    return v > INT64_MAX ? -1 : (int64_t)v;
}

static void info_print(const char *file, const char *fmt, int64_t vsize, uint64_t actual,
                       bool json)
{
#ifdef HAVE_JSON_GLIB
    if (json) {
        JsonBuilder *b = json_builder_new();
        JsonNode *root;

        json_builder_begin_object(b);
        if (vsize >= 0) {
            json_builder_set_member_name(b, "virtual-size");
            json_builder_add_int_value(b, vsize);
        }
        json_builder_set_member_name(b, "filename");
        json_builder_add_string_value(b, file);
        json_builder_set_member_name(b, "format");
        json_builder_add_string_value(b, fmt);
        json_builder_set_member_name(b, "actual-size");
        json_builder_add_int_value(b, (gint64)actual);
        json_builder_set_member_name(b, "dirty-flag");
        json_builder_add_boolean_value(b, FALSE);
        json_builder_end_object(b);
        root = json_builder_get_root(b);
        g_object_unref(b);
        print_json(root);
        return;
    }
#endif
    (void)json;
    printf("image: %s\n", file);
    printf("file format: %s\n", fmt);
    if (vsize >= 0) {
        char *vs = human_size((uint64_t)vsize);
        printf("virtual size: %s (%" PRId64 " bytes)\n", vs, vsize);
        g_free(vs);
    }
    {
        char *ds = human_size(actual);
        printf("disk size: %s\n", ds);
        g_free(ds);
    }
}

static int cmd_info(int argc, char **argv)
{
    KeelBlkOptions opts;
    KeelBlockBackend *blk;
    KeelAioContext *ctx;
    struct stat st;
    char *errmsg = NULL;
    const char *file, *note = "", *fmt, *hint = "";
    bool cache_given = false, json = false;
    int opt;

    keel_blk_options_init(&opts);
    opts.cache = KEEL_BLK_CACHE_NONE;
    while ((opt = getopt_long(argc, argv, ":t:i:f:hU", image_longopts, NULL)) != -1) {
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
        case 'f': check_format(optarg); format_opt = optarg; break;
        case 'U': break;        /* info shares everything anyway, as qemu-img info */
        case OPT_OUTPUT: json = parse_output_or_die(optarg); break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: bad_option("info", opt, argv);
        }
    }
    if (argc - optind != 1) {
        die("info: expected FILE (try --help)");
    }
    file = argv[optind];
    fmt = probe_or_die(file, &hint);
    if (stat(file, &st) < 0) {
        die("info: Could not open '%s': %s", file, g_strerror(errno));
    }
    if (fmt) {
        /* Name what it is; never call it raw. */
        info_print(file, fmt, strcmp(fmt, "qcow2") ? -1 : qcow2_virtual_size(file),
                   (uint64_t)st.st_blocks * 512, json);
        if (!json) {
            printf("keel: a %s image%s; keel serves raw images only\n", fmt, hint);
        }
        return 0;
    }
    ctx = keel_aio_context_new();
    opts.filename = g_strdup(file);
    opts.readonly = true;
    opts.force_share = true;    /* like qemu-img info: never in anyone's way */
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
        die("info: Could not open '%s': %s", file, errmsg);
    }
    info_print(file, "raw", keel_blk_getlength(blk), (uint64_t)st.st_blocks * 512, json);
    if (!json) {
        printf("engine: %s (aio=%s cache=%s%s)\n", keel_blk_engine_name(blk),
               keel_blk_aio_name(opts.aio), keel_blk_cache_name(opts.cache), note);
        printf("request alignment: %" PRIu32 "\n", keel_blk_get_request_alignment(blk));
    }
    keel_blk_close(blk);
    keel_blk_options_clear(&opts);
    keel_aio_context_unref(ctx);
    return 0;
}

/* ---- check ------------------------------------------------------------------------ */

/* qemu-img check on a raw image: nothing to check, exit 63. */
static int cmd_check(int argc, char **argv)
{
    const char *fmt, *hint = "";
    int opt;

    while ((opt = getopt_long(argc, argv, ":f:r:T:qUh", image_longopts, NULL)) != -1) {
        switch (opt) {
        case 'f': check_format(optarg); format_opt = optarg; break;
        case 'r':
            if (strcmp(optarg, "leaks") && strcmp(optarg, "all")) {
                die("check: Unknown option value for -r (expecting 'leaks' or 'all'): %s",
                    optarg);
            }
            break;
        case 'T': case 'q': case 'U': break;
        case OPT_OUTPUT: parse_output_or_die(optarg); break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: bad_option("check", opt, argv);
        }
    }
    if (argc - optind != 1) {
        die("check: expected FILE (try --help)");
    }
    fmt = probe_or_die(argv[optind], &hint);
    if (fmt) {
        die("check: '%s' is a %s image%s; keel-img checks nothing but raw (qemu-img check "
            "checks %s)", argv[optind], fmt, hint, fmt);
    }
    fprintf(stderr, "keel-img: This image format does not support checks\n");
    return 63;
}

/* ---- resize ----------------------------------------------------------------------- */

static int cmd_resize(int argc, char **argv)
{
    enum { OPT_SHRINK = 256 };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "shrink", no_argument, NULL, OPT_SHRINK },
        { NULL, 0, NULL, 0 },
    };
    bool shrink = false, quiet = false;
    const char *file, *size_arg;
    uint64_t amount;
    int64_t old_size, new_size;
    unsigned perm, shared;
    ImageLock lock;
    char *errmsg = NULL;
    int opt, fd, sign = 0;
    struct stat st;

    /* "-1M" is a size, not an option: stop option parsing at the size. */
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-' && g_ascii_isdigit(argv[i][1]) && i == argc - 1) {
            argv[i][0] = '\x01';    /* restored below */
        }
    }
    while ((opt = getopt_long(argc, argv, ":f:qh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'f': check_format(optarg); format_opt = optarg; break;
        case 'q': quiet = true; break;
        case OPT_SHRINK: shrink = true; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: bad_option("resize", opt, argv);
        }
    }
    if (argc - optind != 2) {
        die("resize: expected FILE [+|-]SIZE (try --help)");
    }
    file = argv[optind];
    size_arg = argv[optind + 1];
    if (size_arg[0] == '\x01' || size_arg[0] == '-') {
        sign = -1;
        size_arg++;
    } else if (size_arg[0] == '+') {
        sign = 1;
        size_arg++;
    }
    if (!parse_size(size_arg, &amount)) {
        die("resize: Invalid image size specified. You may use k, M, G, T, P or E suffixes "
            "for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
    }
    {
        const char *hint = "";
        const char *fmt = probe_or_die(file, &hint);
        if (fmt) {
            die("resize: '%s' is a %s image%s; keel-img resizes raw images only", file, fmt,
                hint);
        }
    }
    fd = KEEL_RETRY_EINTR(open(file, O_RDWR | O_CLOEXEC));
    if (fd < 0) {
        die("resize: Could not open '%s': %s", file, g_strerror(errno));
    }
    image_lock_perms(true, true, false, &perm, &shared);
    if (image_lock_acquire(&lock, fd, file, perm, shared, &errmsg) < 0) {
        die("resize: Could not open '%s': %s", file, errmsg);
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        die("resize: '%s': only regular files can be resized", file);
    }
    old_size = st.st_size;
    new_size = sign < 0 ? old_size - (int64_t)amount
                        : sign > 0 ? old_size + (int64_t)amount : (int64_t)amount;
    if (new_size < 0 || (sign < 0 && (int64_t)amount > old_size)) {
        die("resize: New image size must be positive");
    }
    if (new_size < old_size && !shrink) {
        fprintf(stderr, "keel-img: Use the --shrink option to perform a shrink operation.\n"
                "keel-img: warning: Shrinking an image will delete all data beyond the "
                "shrunken image's end. Before performing such an operation, make sure there "
                "is no important data there.\n");
        return 1;
    }
    if (KEEL_RETRY_EINTR(ftruncate(fd, (off_t)new_size)) < 0) {
        die("resize: Error resizing image: %s", g_strerror(errno));
    }
    image_lock_release(&lock);
    close(fd);
    if (!quiet) {
        printf("Image resized.\n");
    }
    return 0;
}

/* ---- map -------------------------------------------------------------------------- */

typedef struct Extent {
    int64_t start, length;
    bool data;
} Extent;

/* The file's data and holes (SEEK_DATA / SEEK_HOLE; all data where the
 * file system or a block device cannot tell), merged, up to @size. */
static GArray *extents_of(int fd, int64_t size)
{
    GArray *out = g_array_new(FALSE, FALSE, sizeof(Extent));
    int64_t pos = 0;

    while (pos < size) {
        off_t data = lseek(fd, pos, SEEK_DATA);
        off_t hole;
        Extent e;

        if (data < 0 && errno == ENXIO) {
            data = size;                    /* a hole to the end */
        } else if (data < 0) {
            data = pos;                     /* cannot tell: data */
            hole = size;
            goto have_hole;
        }
        if (data > pos) {
            e.start = pos;
            e.length = MIN((int64_t)data, size) - pos;
            e.data = false;
            g_array_append_val(out, e);
            pos += e.length;
            if (pos >= size) {
                break;
            }
        }
        hole = lseek(fd, data, SEEK_HOLE);
        if (hole < 0) {
            hole = size;
        }
have_hole:
        e.start = pos;
        e.length = MIN((int64_t)hole, size) - pos;
        e.data = true;
        if (e.length <= 0) {
            break;
        }
        g_array_append_val(out, e);
        pos += e.length;
    }
    return out;
}

static int cmd_map(int argc, char **argv)
{
    bool json = false;
    const char *file, *fmt, *hint = "";
    GArray *ext;
    int64_t size;
    int opt, fd;

    while ((opt = getopt_long(argc, argv, ":f:Uh", image_longopts, NULL)) != -1) {
        switch (opt) {
        case 'f': check_format(optarg); format_opt = optarg; break;
        case 'U': break;
        case OPT_OUTPUT: json = parse_output_or_die(optarg); break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: bad_option("map", opt, argv);
        }
    }
    if (argc - optind != 1) {
        die("map: expected FILE (try --help)");
    }
    file = argv[optind];
    fmt = probe_or_die(file, &hint);
    if (fmt) {
        die("map: '%s' is a %s image%s; keel-img maps raw images only", file, fmt, hint);
    }
    fd = KEEL_RETRY_EINTR(open(file, O_RDONLY | O_CLOEXEC));
    if (fd < 0) {
        die("map: Could not open '%s': %s", file, g_strerror(errno));
    }
    size = lseek(fd, 0, SEEK_END);
    ext = extents_of(fd, size < 0 ? 0 : size);
    close(fd);
#ifdef HAVE_JSON_GLIB
    if (json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_array(b);
        for (guint i = 0; i < ext->len; i++) {
            const Extent *e = &g_array_index(ext, Extent, i);
            json_builder_begin_object(b);
            json_builder_set_member_name(b, "start");
            json_builder_add_int_value(b, e->start);
            json_builder_set_member_name(b, "length");
            json_builder_add_int_value(b, e->length);
            json_builder_set_member_name(b, "depth");
            json_builder_add_int_value(b, 0);
            json_builder_set_member_name(b, "present");
            json_builder_add_boolean_value(b, TRUE);
            json_builder_set_member_name(b, "zero");
            json_builder_add_boolean_value(b, !e->data);
            json_builder_set_member_name(b, "data");
            json_builder_add_boolean_value(b, e->data);
            json_builder_set_member_name(b, "offset");
            json_builder_add_int_value(b, e->start);
            json_builder_end_object(b);
        }
        json_builder_end_array(b);
        print_json(json_builder_get_root(b));
        g_object_unref(b);
    }
#endif
    if (!json) {
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
        for (guint i = 0; i < ext->len; i++) {
            const Extent *e = &g_array_index(ext, Extent, i);
            if (e->data) {
                printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", e->start,
                       e->length, e->start, file);
            }
        }
    }
    g_array_free(ext, TRUE);
    return 0;
}

/* ---- compare ------------------------------------------------------------------------ */

#define COMPARE_CHUNK (1 << 20)

static bool all_zero(const uint8_t *p, size_t n)
{
    return n == 0 || (p[0] == 0 && !memcmp(p, p + 1, n - 1));
}

static int cmd_compare(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    bool strict = false, quiet = false, progress = false;
    KeelAioContext *ctx;

    die_status = 2;             /* qemu-img compare: 0 same, 1 different, 2 error */
    KeelBlockBackend *a, *b;
    KeelBlkOptions oa, ob;
    int64_t la, lb;
    uint8_t *ba, *bb;
    int opt, ret = 0;

    while ((opt = getopt_long(argc, argv, ":f:F:T:spqUh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'f': case 'F':
            if (strcmp(optarg, "raw")) {
                die("compare: unsupported format '%s' (only raw)", optarg);
            }
            format_opt = optarg;
            break;
        case 's': strict = true; break;
        case 'p': progress = true; break;
        case 'q': quiet = true; break;
        case 'T': case 'U': break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: bad_option("compare", opt, argv);
        }
    }
    if (argc - optind != 2) {
        die("compare: expected FILE1 FILE2 (try --help)");
    }
    ctx = keel_aio_context_new();
    keel_blk_options_init(&oa);
    oa.readonly = oa.force_share = true;      /* as qemu-img compare: shares all */
    ob = oa;
    a = open_image_or_die(argv[optind], &oa, ctx);
    b = open_image_or_die(argv[optind + 1], &ob, ctx);
    la = keel_blk_getlength(a);
    lb = keel_blk_getlength(b);
    ba = g_malloc(COMPARE_CHUNK);
    bb = g_malloc(COMPARE_CHUNK);
    if (la != lb) {
        if (strict) {
            if (!quiet) {
                printf("Strict mode: Image size mismatch!\n");
            }
            exit(1);
        }
        if (!quiet) {
            printf("Warning: Image size mismatch!\n");
        }
    }
    for (int64_t off = 0; off < MAX(la, lb) && ret == 0; off += COMPARE_CHUNK) {
        size_t n = (size_t)MIN((int64_t)COMPARE_CHUNK, MAX(la, lb) - off);
        size_t na = off < la ? (size_t)MIN((int64_t)n, la - off) : 0;
        size_t nb = off < lb ? (size_t)MIN((int64_t)n, lb - off) : 0;

        if ((na && sync_read(a, ctx, off, ba, na) < 0) ||
            (nb && sync_read(b, ctx, off, bb, nb) < 0)) {
            die("compare: error while reading at offset %" PRId64, off);
        }
        memset(ba + na, 0, n - na);     /* the shorter image reads as zeros past its end */
        memset(bb + nb, 0, n - nb);
        if (memcmp(ba, bb, n) != 0) {
            size_t i = 0;
            while (ba[i] == bb[i]) {
                i++;
            }
            /* qemu-img reports the first differing 512-byte sector. */
            if (!quiet) {
                printf("Content mismatch at offset %" PRId64 "!\n",
                       (off + (int64_t)i) / 512 * 512);
            }
            ret = 1;
        }
        progress_print(progress, (double)(off + (int64_t)n), (double)MAX(la, lb));
    }
    progress_end(progress && ret == 0);
    if (ret == 0 && !quiet) {
        printf("Images are identical.\n");
    }
    keel_blk_close(a);
    keel_blk_close(b);
    keel_blk_options_clear(&oa);
    keel_blk_options_clear(&ob);
    keel_aio_context_unref(ctx);
    g_free(ba);
    g_free(bb);
    return ret;
}

/* ---- convert ------------------------------------------------------------------------ */

/*
 * convert -f raw -O raw: the source's data extents (SEEK_DATA/HOLE) are
 * read in chunks of up to 2 MiB by N (-m, default 8) request slots at once
 * on the block engines; each chunk is written without its all-zero runs of
 * at least -S bytes (default 4k), so the target, created sparse, stays
 * sparse where the source reads as zeros.  With -n (target exists) holes
 * and zero runs are written as write-zeroes instead.
 */
#define CONVERT_CHUNK (2 << 20)

typedef struct Convert Convert;

typedef struct ConvertSlot {
    Convert *c;
    uint8_t *buf;
    int64_t off;
    size_t len;
    int writes;                 /* writes in flight for this chunk */
    struct iovec read_iov;
    /* Nonzero runs being written: at most one per two 512-byte granules. */
    struct iovec iov[CONVERT_CHUNK / 1024 + 2];
} ConvertSlot;

struct Convert {
    KeelBlockBackend *src, *dst;
    GArray *extents;
    guint next_extent;
    int64_t next_off;           /* inside the current extent */
    int64_t size;
    uint64_t min_sparse;        /* 0: write everything */
    bool no_create;             /* -n: zero what we skip */
    int in_flight;
    int error;
    int64_t done_bytes;
    bool progress;
    ConvertSlot *slots;
    int nslots;
};

static void convert_next(ConvertSlot *slot);

static void convert_write_cb(void *opaque, int ret)
{
    ConvertSlot *slot = opaque;
    Convert *c = slot->c;

    if (ret < 0 && !c->error) {
        c->error = ret;
    }
    if (--slot->writes == 0) {
        c->done_bytes += (int64_t)slot->len;
        progress_print(c->progress, (double)c->done_bytes, (double)c->size);
        convert_next(slot);
    }
}

/* Writes the runs of @slot's chunk that are not all zero. */
static void convert_write_chunk(ConvertSlot *slot)
{
    Convert *c = slot->c;
    size_t g = c->min_sparse ? (size_t)c->min_sparse : slot->len;
    size_t pos = 0;

    slot->writes = 1;               /* held until every write is issued */
    keel_blk_io_plug();
    while (pos < slot->len) {
        size_t start = pos, end;
        bool zero = c->min_sparse && all_zero(slot->buf + pos, MIN(g, slot->len - pos));

        /* Extend the run while granules keep the same kind. */
        end = MIN(pos + g, slot->len);
        while (end < slot->len &&
               (c->min_sparse && all_zero(slot->buf + end, MIN(g, slot->len - end))) == zero) {
            end = MIN(end + g, slot->len);
        }
        pos = end;
        if (zero && !c->no_create) {
            continue;               /* the new target reads zeros there already */
        }
        slot->writes++;
        if (zero) {
            keel_blk_aio_pwrite_zeroes(c->dst, slot->off + (int64_t)start,
                                       (int64_t)(end - start), convert_write_cb, slot);
        } else {
            struct iovec *v = &slot->iov[slot->writes - 2];
            v->iov_base = slot->buf + start;
            v->iov_len = end - start;
            keel_blk_aio_pwritev(c->dst, slot->off + (int64_t)start, v, 1, convert_write_cb,
                                 slot);
        }
    }
    keel_blk_io_unplug();
    convert_write_cb(slot, 0);      /* drop the hold */
}

static void convert_read_cb(void *opaque, int ret)
{
    ConvertSlot *slot = opaque;

    if (ret < 0) {
        if (!slot->c->error) {
            slot->c->error = ret;
        }
        convert_next(slot);
        return;
    }
    convert_write_chunk(slot);
}

/* Gives @slot the next chunk of data (zeroing holes with -n), or retires it. */
static void convert_next(ConvertSlot *slot)
{
    Convert *c = slot->c;

    while (!c->error && c->next_extent < c->extents->len) {
        const Extent *e = &g_array_index(c->extents, Extent, c->next_extent);
        int64_t left = e->start + e->length - c->next_off;

        if (left <= 0) {
            c->next_extent++;
            if (c->next_extent < c->extents->len) {
                c->next_off = g_array_index(c->extents, Extent, c->next_extent).start;
            }
            continue;
        }
        slot->off = c->next_off;
        if (!e->data) {
            c->next_off += left;
            if (!c->no_create) {
                c->done_bytes += left;
                continue;           /* a hole: nothing to copy */
            }
            slot->len = 0;
            slot->writes = 1;
            keel_blk_aio_pwrite_zeroes(c->dst, slot->off, left, convert_write_cb, slot);
            return;
        }
        slot->len = (size_t)MIN(left, (int64_t)CONVERT_CHUNK);
        c->next_off += (int64_t)slot->len;
        slot->read_iov.iov_base = slot->buf;
        slot->read_iov.iov_len = slot->len;
        keel_blk_aio_preadv(c->src, slot->off, &slot->read_iov, 1, convert_read_cb, slot);
        return;
    }
    c->in_flight--;
}

static int cmd_convert(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    Convert c = { .min_sparse = 4096 };
    KeelBlkOptions so, dopt;
    KeelAioContext *ctx;
    const char *src, *dst;
    int opt, nslots = 8, fd;
    char *errmsg = NULL;

    keel_blk_options_init(&so);
    keel_blk_options_init(&dopt);
    so.readonly = true;
    dopt.cache = KEEL_BLK_CACHE_UNSAFE;      /* qemu-img convert's default -t */
    while ((opt = getopt_long(argc, argv, ":f:O:S:t:T:Wm:pnqUh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'f': check_format(optarg); format_opt = optarg; break;
        case 'O': check_format(optarg); break;
        case 'S':
            c.min_sparse = parse_size_or_die("buffer size for sparse output", optarg);
            if (c.min_sparse % 512 || c.min_sparse > CONVERT_CHUNK) {
                die("convert: Invalid buffer size for sparse output specified. Valid sizes "
                    "are multiples of 512 up to %d. Select 0 to disable sparse detection "
                    "(fully allocates output).", CONVERT_CHUNK);
            }
            break;
        case 't': case 'T':
            if (keel_blk_cache_from_name(optarg, opt == 't' ? &dopt.cache : &so.cache) < 0) {
                die("convert: Invalid cache option: %s", optarg);
            }
            break;
        case 'W': break;            /* out-of-order writes: what we do anyway */
        case 'm': nslots = (int)parse_int_or_die("coroutines", optarg, 1, 16); break;
        case 'p': c.progress = true; break;
        case 'n': c.no_create = true; break;
        case 'q': break;
        case 'U': so.force_share = true; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: bad_option("convert", opt, argv);
        }
    }
    if (argc - optind != 2) {
        die("convert: expected SOURCE TARGET (try --help)");
    }
    src = argv[optind];
    dst = argv[optind + 1];
    ctx = keel_aio_context_new();
    c.src = open_image_or_die(src, &so, ctx);
    c.size = keel_blk_getlength(c.src);
    fd = KEEL_RETRY_EINTR(open(src, O_RDONLY | O_CLOEXEC));
    if (fd < 0) {
        die("convert: Could not open '%s': %s", src, g_strerror(errno));
    }
    c.extents = extents_of(fd, c.size);
    close(fd);
    if (c.min_sparse == 0) {
        /* -S 0: "fully allocates output", holes included, as qemu-img. */
        Extent all = { 0, c.size, true };
        g_array_set_size(c.extents, 0);
        g_array_append_val(c.extents, all);
    }
    if (!c.no_create) {
        fd = KEEL_RETRY_EINTR(open(dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
        if (fd < 0 || KEEL_RETRY_EINTR(ftruncate(fd, 0)) < 0 ||
            KEEL_RETRY_EINTR(ftruncate(fd, (off_t)c.size)) < 0) {
            die("convert: Could not create '%s': %s", dst, g_strerror(errno));
        }
        close(fd);
    }
    dopt.filename = g_strdup(dst);
    c.dst = keel_blk_open(&dopt, ctx, &errmsg);
    if (!c.dst) {
        die("convert: Could not open '%s': %s", dst, errmsg);
    }
    if (c.no_create && keel_blk_getlength(c.dst) < c.size) {
        die("convert: '%s' is smaller than the source (%" PRId64 " bytes)", dst, c.size);
    }
    c.next_off = c.extents->len ? g_array_index(c.extents, Extent, 0).start : 0;
    c.nslots = nslots;
    c.slots = g_new0(ConvertSlot, nslots);
    progress_print(c.progress, 0, (double)c.size);
    for (int i = 0; i < nslots; i++) {
        c.slots[i].c = &c;
        if (posix_memalign((void **)&c.slots[i].buf, 4096, CONVERT_CHUNK)) {
            die("convert: cannot allocate %d buffers of %d bytes", nslots, CONVERT_CHUNK);
        }
        c.in_flight++;
    }
    for (int i = 0; i < nslots; i++) {
        convert_next(&c.slots[i]);
    }
    while (c.in_flight) {
        keel_aio_poll(ctx, true);
    }
    if (!c.error) {
        SyncReq r = { false, 0 };
        keel_blk_aio_flush(c.dst, sync_cb, &r);
        while (!r.done) {
            keel_aio_poll(ctx, true);
        }
        c.error = r.ret;
    }
    if (c.error) {
        die("convert: error while converting: %s", g_strerror(-c.error));
    }
    progress_end(c.progress);
    for (int i = 0; i < nslots; i++) {
        free(c.slots[i].buf);
    }
    g_free(c.slots);
    g_array_free(c.extents, TRUE);
    keel_blk_close(c.src);
    keel_blk_close(c.dst);
    keel_blk_options_clear(&so);
    keel_blk_options_clear(&dopt);
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
            pattern = (int)parse_int_or_die("pattern", optarg, 0, 255);   /* 0xab too */
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
        die("no command given (create, info, check, resize, convert, compare, map, bench; "
            "try --help)");
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
    if (!strcmp(cmd, "check")) {
        return cmd_check(argc - 1, argv + 1);
    }
    if (!strcmp(cmd, "resize")) {
        return cmd_resize(argc - 1, argv + 1);
    }
    if (!strcmp(cmd, "convert")) {
        return cmd_convert(argc - 1, argv + 1);
    }
    if (!strcmp(cmd, "compare")) {
        return cmd_compare(argc - 1, argv + 1);
    }
    if (!strcmp(cmd, "map")) {
        return cmd_map(argc - 1, argv + 1);
    }
    die("unknown command '%s' (create, info, check, resize, convert, compare, map, bench; "
        "try --help)", cmd);
}
