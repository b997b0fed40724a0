/*
 * keel-vmm's command-line parser.  QEMU's spelling is kept on purpose (one
 * or two leading dashes, "key=value,key=value" sub-options with ",," for a
 * literal comma) so that a QEMU command line for the same guest mostly works
 * unchanged; options that only make sense for QEMU's defaults (-enable-kvm,
 * -nodefaults, -no-reboot, -display none) are accepted and ignored.
 */
#include "config.h"

#include "vmm/options.h"
#include "vmm/pci.h"

#include <glib.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Writes the message for the caller to print; always returns -1. */
int vmm_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

const char *vmm_drive_aio_name(VmmDriveAio aio)
{
    switch (aio) {
    case VMM_AIO_THREADS: return "threads";
    case VMM_AIO_NATIVE: return "native";
    case VMM_AIO_IO_URING: return "io_uring";
    }
    return "?";
}

const char *vmm_drive_cache_name(VmmDriveCache cache)
{
    switch (cache) {
    case VMM_CACHE_WRITEBACK: return "writeback";
    case VMM_CACHE_NONE: return "none";
    case VMM_CACHE_DIRECTSYNC: return "directsync";
    case VMM_CACHE_UNSAFE: return "unsafe";
    case VMM_CACHE_WRITETHROUGH: return "writethrough";
    }
    return "?";
}

int vmm_parse_size_mib(const char *s, uint64_t *bytes)
{
    char *end;
    unsigned long long n;
    unsigned shift = 20;

    if (!s || !*s || *s == '-' || *s == '+') {
        return -1;
    }
    errno = 0;
    n = strtoull(s, &end, 10);
    if (errno || end == s) {
        return -1;
    }
    switch (*end) {
    case '\0': break;
    case 'b': case 'B': shift = 0; end++; break;
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    default: return -1;
    }
    if (*end == 'i' || *end == 'B') {  /* "512MiB", "2GB" */
        end += *end == 'i' ? 1 : 0;
        if (*end == 'B') {
            end++;
        }
    }
    if (*end || n > (UINT64_MAX >> shift)) {
        return -1;
    }
    *bytes = (uint64_t)n << shift;
    return 0;
}

/*
 * Splits QEMU sub-options: "a=1,b=x,,y,c" → (a,1) (b,"x,y") (c,NULL).  When
 * @implied_key is set, a first element without '=' is its value (the
 * "driver" of -device, the type of -object, the size of -m).  Returns a
 * NULL-terminated array of alternating keys and values (values may be NULL).
 */
static char **split_suboptions(const char *arg, const char *implied_key)
{
    GPtrArray *out = g_ptr_array_new();
    GString *cur = g_string_new(NULL);
    const char *p = arg;
    bool first = true;

    for (;;) {
        if (*p == ',' && p[1] == ',') {
            g_string_append_c(cur, ',');
            p += 2;
            continue;
        }
        if (*p && *p != ',') {
            g_string_append_c(cur, *p++);
            continue;
        }
        /* End of one element. */
        char *eq = strchr(cur->str, '=');
        if (eq) {
            g_ptr_array_add(out, g_strndup(cur->str, eq - cur->str));
            g_ptr_array_add(out, g_strdup(eq + 1));
        } else if (first && implied_key) {
            g_ptr_array_add(out, g_strdup(implied_key));
            g_ptr_array_add(out, g_strdup(cur->str));
        } else {
            g_ptr_array_add(out, g_strdup(cur->str));
            g_ptr_array_add(out, NULL);
        }
        first = false;
        g_string_truncate(cur, 0);
        if (!*p) {
            break;
        }
        p++;
    }
    g_string_free(cur, TRUE);
    /* Terminator: a NULL key.  Values may be NULL, so walk in pairs. */
    g_ptr_array_add(out, NULL);
    g_ptr_array_add(out, NULL);
    return (char **)g_ptr_array_free(out, FALSE);
}

static void free_suboptions(char **kv)
{
    for (int i = 0; kv[i] || kv[i + 1]; i += 2) {
        g_free(kv[i]);
        g_free(kv[i + 1]);
    }
    g_free(kv);
}

static int parse_bool(const char *v, bool *out)
{
    if (!v || !strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "true")) {
        *out = true;    /* a bare "readonly" means on, as in QEMU */
        return 0;
    }
    if (!strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "false")) {
        *out = false;
        return 0;
    }
    return -1;
}

/* A QEMU id: a letter, then letters, digits, '-', '.', '_'. */
static bool valid_id(const char *id)
{
    if (!id || !g_ascii_isalpha(id[0])) {
        return false;
    }
    for (const char *p = id; *p; p++) {
        if (!g_ascii_isalnum(*p) && *p != '-' && *p != '.' && *p != '_') {
            return false;
        }
    }
    return strlen(id) < 64;
}

/*
 * The parse in progress.  Every problem is collected, one line each, and the
 * parse goes on: a user fixing a long (libvirt-style) command line sees all
 * its refusals in one run, not one per run.  An option with a problem is not
 * applied, so later whole-line checks may name follow-on problems only where
 * they are independent (see the end of options_parse).
 */
typedef struct OptParse {
    VmmOptions *opts;
    GPtrArray *problems;        /* char *, one line each, in command-line order */
    bool kernel_named;          /* -kernel given, even without a usable argument */
    bool mem_backend_refused;   /* an -object memory-backend-* had a problem */
    bool serial_given;          /* -serial on the command line */
    bool nographic;             /* -nographic: the default serial is mon:stdio */
    int implicit_chardevs;      /* numbering of the legacy spellings' chardevs */
} OptParse;

static void G_GNUC_PRINTF(2, 3) problem(OptParse *p, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    g_ptr_array_add(p->problems, g_strdup_vprintf(fmt, ap));
    va_end(ap);
}

static void drive_clear(VmmDrive *d)
{
    g_free(d->file);
    g_free(d->id);
    g_free(d->node_name);
    g_free(d->dev_id);
    g_free(d->iothread);
    g_free(d->serial);
    g_free(d->inject);
    for (int i = 0; i < d->nr_vq_map; i++) {
        g_free(d->vq_map[i].iothread);
    }
    g_free(d->vq_map);
    memset(d, 0, sizeof(*d));
}

/* werror=/rerror= (kept apart from parse_drive's own keys).  Returns
 * whether @k was one of them. */
static bool parse_drive_error_policy(OptParse *p, VmmDrive *d, const char *k, const char *v)
{
    static const char *const names[] = {
        [VMM_ERROR_REPORT] = "report", [VMM_ERROR_IGNORE] = "ignore",
        [VMM_ERROR_STOP] = "stop", [VMM_ERROR_ENOSPC] = "enospc",
    };
    VmmErrorPolicy *out;

    if (!strcmp(k, "werror")) {
        out = &d->werror;
    } else if (!strcmp(k, "rerror")) {
        out = &d->rerror;
    } else {
        return false;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
        if (!strcmp(v, names[i])) {
            *out = (VmmErrorPolicy)i;
            return true;
        }
    }
    problem(p, "-drive: %s=%s: expected stop, report, ignore or enospc", k, v);
    return true;
}

const char *vmm_error_policy_name(VmmErrorPolicy policy)
{
    switch (policy) {
    case VMM_ERROR_REPORT: return "report";
    case VMM_ERROR_IGNORE: return "ignore";
    case VMM_ERROR_STOP: return "stop";
    case VMM_ERROR_ENOSPC: return "enospc";
    }
    return "?";
}

/* A fresh drive entry with QEMU's defaults. */
static VmmDrive *drive_new(OptParse *p, const char *opt, const char *arg)
{
    VmmOptions *opts = p->opts;
    VmmDrive *d;

    if (opts->nr_drives == VMM_MAX_DRIVES) {
        problem(p, "%s %s: at most %d drives are supported", opt, arg, VMM_MAX_DRIVES);
        return NULL;
    }
    d = &opts->drives[opts->nr_drives];
    memset(d, 0, sizeof(*d));
    d->aio = VMM_AIO_THREADS;
    d->cache = VMM_CACHE_WRITEBACK;
    d->werror = VMM_ERROR_ENOSPC;   /* QEMU's defaults */
    d->rerror = VMM_ERROR_REPORT;
    d->pci_slot = -1;
    return d;
}

/* cache.direct= / cache.no-flush= on top of the cache mode so far. */
static void apply_cache_flag(VmmDrive *d, bool direct_key, bool on)
{
    if (direct_key) {
        switch (d->cache) {
        case VMM_CACHE_WRITEBACK:
            if (on) {
                d->cache = VMM_CACHE_NONE;
            }
            break;
        case VMM_CACHE_WRITETHROUGH:
            if (on) {
                d->cache = VMM_CACHE_DIRECTSYNC;
            }
            break;
        case VMM_CACHE_UNSAFE:
            if (on) {
                d->cache = VMM_CACHE_NONE;
                d->no_flush = true;
            }
            break;
        case VMM_CACHE_NONE:
            if (!on) {
                d->cache = d->no_flush ? VMM_CACHE_UNSAFE : VMM_CACHE_WRITEBACK;
            }
            break;
        case VMM_CACHE_DIRECTSYNC:
            if (!on) {
                d->cache = VMM_CACHE_WRITETHROUGH;
            }
            break;
        }
        return;
    }
    d->no_flush = on;
    if (on && d->cache == VMM_CACHE_WRITEBACK) {
        d->cache = VMM_CACHE_UNSAFE;
    } else if (!on && d->cache == VMM_CACHE_UNSAFE) {
        d->cache = VMM_CACHE_WRITEBACK;
    }
}

/*
 * The block-layer keys -drive and -blockdev share, QEMU's names and values.
 * Returns true when @k is one of them (a bad value is a problem).
 */
static bool parse_block_key(OptParse *p, const char *opt, VmmDrive *d, const char *k,
                            const char *v)
{
    bool on;

    if (!strcmp(k, "aio")) {
        if (!strcmp(v, "threads")) {
            d->aio = VMM_AIO_THREADS;
        } else if (!strcmp(v, "native")) {
            d->aio = VMM_AIO_NATIVE;
        } else if (!strcmp(v, "io_uring")) {
            d->aio = VMM_AIO_IO_URING;
        } else {
            problem(p, "%s: aio=%s: expected threads, native or io_uring", opt, v);
        }
    } else if (!strcmp(k, "cache.direct") || !strcmp(k, "cache.no-flush")) {
        if (parse_bool(v, &on) < 0) {
            problem(p, "%s: %s=%s: expected on or off", opt, k, v);
        } else {
            apply_cache_flag(d, !strcmp(k, "cache.direct"), on);
        }
    } else if (!strcmp(k, "readonly") || !strcmp(k, "read-only")) {
        if (parse_bool(v, &d->readonly) < 0) {
            problem(p, "%s: %s=%s: expected on or off", opt, k, v);
        }
    } else if (!strcmp(k, "auto-read-only")) {
        if (parse_bool(v, &d->auto_read_only) < 0) {
            problem(p, "%s: auto-read-only=%s: expected on or off", opt, v);
        }
    } else if (!strcmp(k, "discard")) {
        if (!strcmp(v, "unmap") || !strcmp(v, "on")) {
            d->discard_unmap = true;
        } else if (!strcmp(v, "ignore") || !strcmp(v, "off")) {
            d->discard_unmap = false;
        } else {
            problem(p, "%s: discard=%s: expected ignore or unmap", opt, v);
        }
    } else if (!strcmp(k, "detect-zeroes")) {
        if (keel_blk_detect_zeroes_from_name(v, &d->detect_zeroes) < 0) {
            problem(p, "%s: detect-zeroes=%s: expected off, on or unmap", opt, v);
        }
    } else if (!strcmp(k, "locking") || !strcmp(k, "file.locking")) {
        if (keel_blk_locking_from_name(v, &d->locking) < 0) {
            problem(p, "%s: %s=%s: expected on, off or auto", opt, k, v);
        }
    } else {
        return false;
    }
    return true;
}

static void parse_drive(OptParse *p, const char *arg)
{
    VmmOptions *opts = p->opts;
    unsigned problems_before = p->problems->len;
    VmmDrive *d = drive_new(p, "-drive", arg);
    char **kv;

    if (!d) {
        return;
    }
    d->probe_format = true;         /* until format= says raw */
    kv = split_suboptions(arg, NULL);
    for (int i = 0; kv[i] || kv[i + 1]; i += 2) {
        const char *k = kv[i], *v = kv[i + 1];

        if (!k || !*k) {
            problem(p, "-drive: empty parameter in '%s'", arg);
            continue;
        }
        if (!v && strcmp(k, "readonly") != 0) {
            problem(p, "-drive: parameter '%s' needs a value (%s=...)", k, k);
            continue;
        }
        if (parse_block_key(p, "-drive", d, k, v)) {
            continue;
        } else if (!strcmp(k, "file")) {
            if (!*v) {
                problem(p, "-drive: file= is empty");
                continue;
            }
            g_free(d->file);
            d->file = g_strdup(v);
        } else if (!strcmp(k, "format")) {
            if (strcmp(v, "raw") != 0) {
                problem(p, "-drive: format=%s: only format=raw is supported", v);
            }
            d->probe_format = false;
        } else if (!strcmp(k, "if")) {
            if (!strcmp(v, "virtio")) {
                d->if_none = false;
            } else if (!strcmp(v, "none")) {
                d->if_none = true;
            } else {
                problem(p, "-drive: if=%s: expected virtio or none", v);
            }
        } else if (!strcmp(k, "cache")) {
            if (!strcmp(v, "writeback")) {
                d->cache = VMM_CACHE_WRITEBACK;
            } else if (!strcmp(v, "none")) {
                d->cache = VMM_CACHE_NONE;
            } else if (!strcmp(v, "directsync")) {
                d->cache = VMM_CACHE_DIRECTSYNC;
            } else if (!strcmp(v, "unsafe")) {
                d->cache = VMM_CACHE_UNSAFE;
            } else if (!strcmp(v, "writethrough")) {
                d->cache = VMM_CACHE_WRITETHROUGH;
            } else {
                problem(p, "-drive: cache=%s: expected none, writeback, writethrough, "
                        "directsync or unsafe", v);
            }
        } else if (!strcmp(k, "media")) {
            if (strcmp(v, "disk") != 0) {
                problem(p, "-drive: media=%s: virtio-blk is a disk (media=disk)", v);
            }
        } else if (!strcmp(k, "index")) {
            /* QEMU's unit number for if=virtio; keel-vmm orders drives as
             * given, so it only has to be a number. */
            char *end;
            long n = strtol(v, &end, 10);
            if (!*v || *end || n < 0 || n > 255) {
                problem(p, "-drive: index=%s: expected a number from 0 to 255", v);
            }
        } else if (!strcmp(k, "iothread")) {
            if (!valid_id(v)) {
                problem(p, "-drive: iothread=%s: not a valid id", v);
                continue;
            }
            g_free(d->iothread);
            d->iothread = g_strdup(v);
        } else if (!strcmp(k, "serial")) {
            /* virtio-blk's GET_ID answer is 20 bytes, not NUL-terminated. */
            if (strlen(v) > 20) {
                problem(p, "-drive: serial=%s: longer than 20 characters", v);
                continue;
            }
            g_free(d->serial);
            d->serial = g_strdup(v);
        } else if (!strcmp(k, "inject")) {
            /* virtio-blk: block/blkdebug.h rules, checked when the drive
             * opens; repeatable, joined with ';' (the block layer's form). */
            char *joined = d->inject ? g_strconcat(d->inject, ";", v, NULL) : g_strdup(v);
            g_free(d->inject);
            d->inject = joined;
        } else if (!strcmp(k, "id")) {
            if (!valid_id(v)) {
                problem(p, "-drive: id=%s: not a valid id", v);
                continue;
            }
            g_free(d->id);
            d->id = g_strdup(v);
        } else if (parse_drive_error_policy(p, d, k, v)) {
            continue;
        } else {
            problem(p, "-drive: unknown parameter '%s'", k);
        }
    }
    free_suboptions(kv);
    if (!d->file) {
        problem(p, "-drive %s: file= is required", arg);
    }
    if (d->aio == VMM_AIO_NATIVE &&
        d->cache != VMM_CACHE_NONE && d->cache != VMM_CACHE_DIRECTSYNC) {
        /* Same rule as QEMU: io_submit only runs asynchronously on O_DIRECT. */
        problem(p, "-drive %s: aio=native needs cache=none or cache=directsync", arg);
    }
    if (d->if_none && !d->id) {
        problem(p, "-drive %s: if=none needs id= (for -device virtio-blk-pci,drive=ID)", arg);
    }
    if (d->id) {
        for (int j = 0; j < opts->nr_drives; j++) {
            if (opts->drives[j].id && !strcmp(opts->drives[j].id, d->id)) {
                problem(p, "-drive: id=%s: duplicate id", d->id);
                break;
            }
        }
    }
    if (p->problems->len != problems_before) {
        drive_clear(d);
        return;
    }
    d->attached = !d->if_none;
    opts->nr_drives++;
}

/* ---- -blockdev ---------------------------------------------------------------
 * QEMU's node graph, as far as a raw disk goes: a protocol node
 * (driver=file|host_device) and optionally a raw format node over it
 * (driver=raw,file=NODE or an inline file.driver=...).  Each protocol node
 * becomes a VmmDrive (if=none, id = node-name); a raw node takes its file
 * node's entry over (id = the raw node's name), so -device drive= names
 * either.  The JSON form ({"driver":"file",...}) is flattened to the same
 * keys ("cache": {"direct": true} → cache.direct=on).
 */

static VmmDrive *find_drive_by_id(VmmOptions *opts, const char *id);

static bool node_name_taken(VmmOptions *opts, const char *name)
{
    for (int i = 0; i < opts->nr_drives; i++) {
        const VmmDrive *d = &opts->drives[i];
        if ((d->id && !strcmp(d->id, name)) || (d->node_name && !strcmp(d->node_name, name))) {
            return true;
        }
    }
    return false;
}

#ifdef HAVE_JSON_GLIB
#include <json-glib/json-glib.h>

static void json_flatten_node(OptParse *p, const char *what, JsonNode *node, char *key,
                              GPtrArray *out);

/* Appends @obj's members as "prefix.key", value pairs to @out. */
static void json_flatten(OptParse *p, const char *what, JsonObject *obj, const char *prefix,
                         GPtrArray *out)
{
    GList *members = json_object_get_members(obj);

    for (GList *l = members; l; l = l->next) {
        const char *name = l->data;

        json_flatten_node(p, what, json_object_get_member(obj, name),
                          prefix ? g_strconcat(prefix, ".", name, NULL) : g_strdup(name), out);
    }
    g_list_free(members);
}

/* Appends @node under @key (taken): objects as "key.member", arrays as
 * "key.N" (QEMU's keyval spelling of lists), scalars as their text. */
static void json_flatten_node(OptParse *p, const char *what, JsonNode *node, char *key,
                              GPtrArray *out)
{
    if (JSON_NODE_HOLDS_OBJECT(node)) {
        json_flatten(p, what, json_node_get_object(node), key, out);
        g_free(key);
        return;
    }
    if (JSON_NODE_HOLDS_ARRAY(node)) {
        JsonArray *arr = json_node_get_array(node);

        for (guint i = 0; i < json_array_get_length(arr); i++) {
            json_flatten_node(p, what, json_array_get_element(arr, i),
                              g_strdup_printf("%s.%u", key, i), out);
        }
        g_free(key);
        return;
    }
    if (!JSON_NODE_HOLDS_VALUE(node)) {
        problem(p, "%s: \"%s\": expected a string, number, boolean, object or list", what, key);
        g_free(key);
        return;
    }
    g_ptr_array_add(out, key);
    switch (json_node_get_value_type(node) == G_TYPE_BOOLEAN ? 'b' :
            json_node_get_value_type(node) == G_TYPE_INT64 ? 'i' :
            json_node_get_value_type(node) == G_TYPE_DOUBLE ? 'd' : 's') {
    case 'b':
        g_ptr_array_add(out, g_strdup(json_node_get_boolean(node) ? "on" : "off"));
        break;
    case 'i':
        g_ptr_array_add(out, g_strdup_printf("%" G_GINT64_FORMAT, json_node_get_int(node)));
        break;
    case 'd':
        g_ptr_array_add(out, g_strdup_printf("%.17g", json_node_get_double(node)));
        break;
    default:
        g_ptr_array_add(out, g_strdup(json_node_get_string(node)));
        break;
    }
}
#endif

/* The JSON form of -blockdev or -device (@what) as split_suboptions'
 * key/value array, or NULL (a problem was reported). */
static char **json_to_kv(OptParse *p, const char *what, const char *arg)
{
#ifdef HAVE_JSON_GLIB
    JsonParser *parser = json_parser_new();
    GError *error = NULL;
    GPtrArray *out;
    JsonNode *root;

    if (!json_parser_load_from_data(parser, arg, -1, &error)) {
        problem(p, "%s %s: not valid JSON: %s", what, arg, error->message);
        g_error_free(error);
        g_object_unref(parser);
        return NULL;
    }
    root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        problem(p, "%s %s: expected a JSON object", what, arg);
        g_object_unref(parser);
        return NULL;
    }
    out = g_ptr_array_new();
    json_flatten(p, what, json_node_get_object(root), NULL, out);
    g_ptr_array_add(out, NULL);
    g_ptr_array_add(out, NULL);
    g_object_unref(parser);
    return (char **)g_ptr_array_free(out, FALSE);
#else
    problem(p, "%s %s: this keel-vmm was built without json-glib; use the key=value form",
            what, arg);
    return NULL;
#endif
}

/* One protocol node (driver=file|host_device) from @kv, keys under @prefix
 * ("" or "file.").  Returns the new entry (not yet counted), or NULL. */
static VmmDrive *blockdev_protocol_node(OptParse *p, const char *arg, char **kv,
                                        const char *prefix, const char *default_name)
{
    VmmDrive *d = drive_new(p, "-blockdev", arg);
    size_t plen = strlen(prefix);
    const char *driver = NULL, *name = default_name;

    if (!d) {
        return NULL;
    }
    for (int i = 0; kv[i] || kv[i + 1]; i += 2) {
        const char *k = kv[i] ? kv[i] : "", *v = kv[i + 1];

        if (strncmp(k, prefix, plen) != 0) {
            continue;
        }
        k += plen;
        if (!v) {
            problem(p, "-blockdev: parameter '%s%s' needs a value", prefix, k);
        } else if (!strcmp(k, "driver")) {
            driver = v;
        } else if (!strcmp(k, "node-name")) {
            name = v;
        } else if (!strcmp(k, "filename")) {
            g_free(d->file);
            d->file = g_strdup(v);
        } else if (!parse_block_key(p, "-blockdev", d, k, v)) {
            problem(p, "-blockdev: unknown parameter '%s%s' for a protocol node", prefix, k);
        }
    }
    if (!driver || (strcmp(driver, "file") != 0 && strcmp(driver, "host_device") != 0)) {
        problem(p, "-blockdev: %sdriver=%s: keel-vmm has file, host_device and raw", prefix,
                driver ? driver : "(missing)");
    }
    d->host_device = driver && !strcmp(driver, "host_device");
    if (!d->file) {
        problem(p, "-blockdev %s: %sfilename= is required", arg, prefix);
    }
    if (!name || !valid_id(name)) {
        problem(p, "-blockdev %s: needs a valid node-name= (got '%s')", arg, name ? name : "");
    } else if (node_name_taken(p->opts, name)) {
        problem(p, "-blockdev: node-name=%s: duplicate node name", name);
    }
    d->id = g_strdup(name);
    d->if_none = true;
    d->from_blockdev = true;
    return d;
}

static void parse_blockdev(OptParse *p, const char *arg)
{
    VmmOptions *opts = p->opts;
    unsigned problems_before = p->problems->len;
    char **kv = arg[0] == '{' ? json_to_kv(p, "-blockdev", arg) : split_suboptions(arg, NULL);
    const char *driver = NULL, *name = NULL, *file_ref = NULL;
    bool inline_file = false;
    VmmDrive *d = NULL;

    if (!kv) {
        return;
    }
    for (int i = 0; kv[i] || kv[i + 1]; i += 2) {
        const char *k = kv[i] ? kv[i] : "";
        if (!strcmp(k, "driver")) {
            driver = kv[i + 1];
        } else if (!strcmp(k, "node-name")) {
            name = kv[i + 1];
        } else if (!strcmp(k, "file")) {
            file_ref = kv[i + 1];
        } else if (!strncmp(k, "file.", 5) && strcmp(k, "file.locking") != 0) {
            inline_file = true;
        }
    }
    if (!driver || strcmp(driver, "raw") != 0) {
        /* A protocol node by itself. */
        d = blockdev_protocol_node(p, arg, kv, "", NULL);
    } else {
        /* driver=raw over a named file node or an inline one. */
        if (!name || !valid_id(name)) {
            problem(p, "-blockdev %s: needs a valid node-name= (got '%s')", arg, name ? name : "");
        } else if (node_name_taken(opts, name)) {
            problem(p, "-blockdev: node-name=%s: duplicate node name", name);
        }
        if (inline_file) {
            char *child = g_strconcat(name ? name : "raw", "-file", NULL);
            d = blockdev_protocol_node(p, arg, kv, "file.", child);
            g_free(child);
        } else if (!file_ref) {
            problem(p, "-blockdev %s: driver=raw needs file=NODE (a driver=file node)", arg);
        } else {
            VmmDrive *f = find_drive_by_id(opts, file_ref);
            if (!f || !f->from_blockdev || f->raw_node) {
                problem(p, "-blockdev: file=%s: no -blockdev driver=file node %s before it%s",
                        file_ref, file_ref, f && f->raw_node ? " (it is a raw node)" : "");
            } else if (f->attached) {
                problem(p, "-blockdev: file=%s: already attached to a device", file_ref);
            } else {
                d = f;
            }
        }
        for (int i = 0; d && (kv[i] || kv[i + 1]); i += 2) {
            const char *k = kv[i] ? kv[i] : "", *v = kv[i + 1] ? kv[i + 1] : "";
            if (!strcmp(k, "driver") || !strcmp(k, "node-name") || !strcmp(k, "file") ||
                (!strncmp(k, "file.", 5) && strcmp(k, "file.locking") != 0)) {
                continue;
            } else if (!strcmp(k, "offset") || !strcmp(k, "size")) {
                uint64_t bytes = 0;
                char *end;
                errno = 0;
                bytes = strtoull(v, &end, 0);
                if (!*v || *end || errno || bytes > INT64_MAX) {
                    problem(p, "-blockdev: %s=%s: expected a number of bytes", k, v);
                } else if (k[0] == 'o') {
                    d->offset = (int64_t)bytes;
                } else {
                    d->size = (int64_t)bytes;
                }
            } else if (!parse_block_key(p, "-blockdev", d, k, v)) {
                problem(p, "-blockdev: unknown parameter '%s' for driver=raw", k);
            }
        }
    }
    if (!d) {
        goto out;
    }
    if (d->aio == VMM_AIO_NATIVE && d->cache != VMM_CACHE_NONE &&
        d->cache != VMM_CACHE_DIRECTSYNC) {
        problem(p, "-blockdev %s: aio=native needs cache.direct=on", arg);
    }
    if (p->problems->len != problems_before) {
        if (d == &opts->drives[opts->nr_drives]) {
            drive_clear(d);         /* a new entry: drop it */
        }
        goto out;
    }
    if (driver && !strcmp(driver, "raw")) {
        if (d == &opts->drives[opts->nr_drives]) {
            opts->nr_drives++;      /* an inline file node: a new entry */
        }
        d->node_name = d->id;       /* the file node keeps its name */
        d->id = g_strdup(name);
        d->raw_node = true;
    } else {
        opts->nr_drives++;
    }
out:
    free_suboptions(kv);        /* driver and name point into it */
}

/* -object memory-backend-ram|memory-backend-memfd,id=ID[,size=S][,share=..]
 * [,hugetlb=off]: what backs guest RAM, chosen by -machine memory-backend=ID.
 * One such object; share= must match what keel-vmm maps (memfd: shared,
 * ram: private). */
static void parse_memory_backend(OptParse *p, const char *type, char **kv)
{
    VmmOptions *opts = p->opts;
    unsigned problems_before = p->problems->len;
    bool memfd = !strcmp(type, "memory-backend-memfd");
    const char *id = NULL;
    uint64_t size = 0;

    for (int i = 0; kv[i] || kv[i + 1]; i += 2) {
        const char *k = kv[i] ? kv[i] : "", *v = kv[i + 1];
        bool on;

        if (!strcmp(k, "qom-type")) {
            continue;
        } else if (!strcmp(k, "id")) {
            id = v;
        } else if (!strcmp(k, "size")) {
            uint64_t bytes = 0;
            int r = -1;

            if (v && *v && strspn(v, "0123456789") == strlen(v)) {
                /* As in QEMU, a bare number is bytes here (unlike -m). */
                errno = 0;
                bytes = strtoull(v, NULL, 10);
                r = errno ? -1 : 0;
            } else if (v) {
                r = vmm_parse_size_mib(v, &bytes);
            }
            if (r < 0) {
                problem(p, "-object %s: size=%s: not a size (e.g. 512M, 2G)", type, v ? v : "");
                continue;
            }
            size = bytes;
        } else if (!strcmp(k, "share") && parse_bool(v, &on) == 0) {
            if (on != memfd) {
                problem(p, "-object %s: share=%s: keel-vmm maps %s", type, v ? v : "on",
                        memfd ? "memfd RAM shared (share=on)"
                              : "anonymous RAM private (share=off)");
            }
        } else if (memfd && !strcmp(k, "hugetlb") && parse_bool(v, &on) == 0) {
            if (on) {
                problem(p, "-object %s: hugetlb=on is not supported "
                        "(guest RAM asks for transparent huge pages instead)", type);
            }
        } else {
            problem(p, "-object %s: unknown parameter '%s'", type, k);
        }
    }
    if (!id || !valid_id(id)) {
        problem(p, "-object %s: needs a valid id= (got '%s')", type, id ? id : "");
    } else if (opts->mem_backend_id) {
        problem(p, "-object %s,id=%s: only one memory backend (already %s)", type, id,
                opts->mem_backend_id);
    }
    if (p->problems->len != problems_before) {
        p->mem_backend_refused = true;
        return;
    }
    opts->mem_backend_id = g_strdup(id);
    opts->mem_backend_size = size;
    opts->ram_backing = memfd ? VM_RAM_MEMFD : VM_RAM_ANONYMOUS;
}

static void parse_object(OptParse *p, const char *arg)
{
    VmmOptions *opts = p->opts;
    unsigned problems_before = p->problems->len;
    char **kv = split_suboptions(arg, "qom-type");
    const char *type = NULL, *id = NULL;
    /* poll-max-ns, poll-grow, poll-shrink, in that order */
    static const char *const poll_knobs[] = { "poll-max-ns", "poll-grow", "poll-shrink" };
    int64_t poll[3] = { -1, -1, -1 };

    for (int i = 0; kv[i] || kv[i + 1]; i += 2) {
        if (kv[i] && !strcmp(kv[i], "qom-type")) {
            type = kv[i + 1] ? kv[i + 1] : "";
        }
    }
    if (type && (!strcmp(type, "memory-backend-ram") || !strcmp(type, "memory-backend-memfd"))) {
        parse_memory_backend(p, type, kv);
        goto out;
    }
    if (!type || strcmp(type, "iothread") != 0) {
        problem(p, "-object %s: unknown object type (keel-vmm has iothread, "
                "memory-backend-ram and memory-backend-memfd)", type ? type : "");
        goto out;
    }
    for (int i = 0; kv[i] || kv[i + 1]; i += 2) {
        int knob = -1;

        for (int k = 0; kv[i] && k < 3; k++) {
            if (!strcmp(kv[i], poll_knobs[k])) {
                knob = k;
            }
        }
        if (kv[i] && !strcmp(kv[i], "qom-type")) {
            continue;
        } else if (kv[i] && !strcmp(kv[i], "id")) {
            id = kv[i + 1];
        } else if (knob >= 0) {
            char *end = NULL;
            long long v = kv[i + 1] && g_ascii_isdigit(kv[i + 1][0])
                              ? strtoll(kv[i + 1], &end, 10) : -1;
            /* QEMU takes these as unsigned integers; keep them sane. */
            if (v < 0 || !end || *end || v > 1000000000LL) {
                problem(p, "-object iothread: %s=%s: want an integer from 0 to 1000000000",
                        kv[i], kv[i + 1] ? kv[i + 1] : "");
                continue;
            }
            poll[knob] = v;
        } else {
            problem(p, "-object iothread: unknown parameter '%s'", kv[i] ? kv[i] : "");
        }
    }
    if (!id || !valid_id(id)) {
        problem(p, "-object iothread: needs a valid id= (got '%s')", id ? id : "");
        goto out;
    }
    for (int j = 0; j < opts->nr_iothreads; j++) {
        if (!strcmp(opts->iothreads[j].id, id)) {
            problem(p, "-object iothread: id=%s: duplicate id", id);
            goto out;
        }
    }
    if (opts->nr_iothreads == VMM_MAX_IOTHREADS) {
        problem(p, "-object iothread: at most %d iothreads", VMM_MAX_IOTHREADS);
        goto out;
    }
    if (p->problems->len != problems_before) {
        goto out;
    }
    opts->iothreads[opts->nr_iothreads].id = g_strdup(id);
    opts->iothreads[opts->nr_iothreads].poll_max_ns = poll[0];
    opts->iothreads[opts->nr_iothreads].poll_grow = poll[1];
    opts->iothreads[opts->nr_iothreads].poll_shrink = poll[2];
    opts->nr_iothreads++;
out:
    free_suboptions(kv);
}

static bool iothread_exists(const VmmOptions *opts, const char *id)
{
    for (int j = 0; j < opts->nr_iothreads; j++) {
        if (!strcmp(opts->iothreads[j].id, id)) {
            return true;
        }
    }
    return false;
}

/* After every option: the default num-queues (one per vCPU, as QEMU's
 * virtio-blk-pci, at most VMM_MAX_QUEUES) and the queue → iothread map. */
static void check_drive_queues(OptParse *p, VmmDrive *d)
{
    const char *who = d->id ? d->id : d->file;
    bool assigned[VMM_MAX_QUEUES] = { false };

    if (!d->num_queues) {
        d->num_queues = (int)MIN(p->opts->smp.cpus, (unsigned)VMM_MAX_QUEUES);
        if (d->num_queues < 1) {
            d->num_queues = 1;
        }
    }
    for (int q = 0; q < VMM_MAX_QUEUES; q++) {
        d->queue_map[q] = -1;
    }
    for (int i = 0; i < d->nr_vq_map; i++) {
        const VmmVqMapping *m = &d->vq_map[i];

        if (!iothread_exists(p->opts, m->iothread)) {
            problem(p, "-device virtio-blk-pci,drive=%s: iothread-vq-mapping: iothread %s: "
                    "no -object iothread,id=%s", who, m->iothread, m->iothread);
        }
        for (int j = 0; j < m->nr_vqs; j++) {
            int vq = m->vqs[j];
            if (vq >= d->num_queues) {
                problem(p, "-device virtio-blk-pci,drive=%s: iothread-vq-mapping: vq index %d "
                        "for iothread %s must be less than num_queues %d", who, vq,
                        m->iothread, d->num_queues);
            } else if (assigned[vq]) {
                problem(p, "-device virtio-blk-pci,drive=%s: iothread-vq-mapping: cannot "
                        "assign vq %d to iothread %s because it is already assigned", who, vq,
                        m->iothread);
            } else {
                assigned[vq] = true;
                d->queue_map[vq] = i;
            }
        }
    }
    if (!d->nr_vq_map) {
        return;
    }
    for (int q = 0; q < d->num_queues; q++) {
        if (d->vq_map[0].nr_vqs == 0) {
            d->queue_map[q] = q % d->nr_vq_map;     /* round-robin, as QEMU */
        } else if (!assigned[q]) {
            problem(p, "-device virtio-blk-pci,drive=%s: iothread-vq-mapping: missing "
                    "iothread for vq %d", who, q);
        }
    }
}

static VmmDrive *find_drive_by_id(VmmOptions *opts, const char *id)
{
    for (int i = 0; i < opts->nr_drives; i++) {
        if (opts->drives[i].id && !strcmp(opts->drives[i].id, id)) {
            return &opts->drives[i];
        }
    }
    return NULL;
}

/* A virtio-blk block size property: a power of two from 512 to 32 KiB. */
static bool parse_block_size(OptParse *p, const char *k, const char *v, uint32_t *out)
{
    char *end;
    unsigned long n = v ? strtoul(v, &end, 0) : 0;

    if (!v || !*v || *end || n < 512 || n > 32768 || (n & (n - 1))) {
        problem(p, "-device virtio-blk-pci: %s=%s: expected a power of two from 512 to 32768",
                k, v ? v : "");
        return false;
    }
    *out = (uint32_t)n;
    return true;
}

/*
 * -device virtio-blk-pci,drive=ID|NODE: attaches an if=none -drive or a
 * -blockdev node.  QEMU's usual properties are taken: id=, serial=,
 * iothread=, bus=pci.0, addr=SLOT[.0] (honoured), logical_block_size= and
 * physical_block_size= (honoured, in the config space), num-queues=N
 * (1..VMM_MAX_QUEUES), iothread-vq-mapping (QEMU 9's list of
 * {"iothread": ID[, "vqs": [N, ...]]}, from JSON -device or the keyval
 * spelling iothread-vq-mapping.0.iothread=ID,iothread-vq-mapping.0.vqs.0=N),
 * bootindex= and scsi=off (accepted: keel-vmm has no firmware to boot from
 * and virtio-blk no SCSI passthrough).  What needs -smp or the iothreads
 * (the default num-queues, the mapping's queues) is checked at the end.
 */
/* One "iothread-vq-mapping.N.KEY" key into @map (@nr: entries so far,
 * the highest N + 1). */
static void parse_vq_mapping_key(OptParse *p, const char *k, const char *v, VmmVqMapping *map,
                                 int *nr)
{
    const char *what = "-device virtio-blk-pci: iothread-vq-mapping";
    char *end;
    unsigned long n = strtoul(k, &end, 10), m;

    if (end == k || *end != '.' || n >= VMM_MAX_IOTHREADS) {
        problem(p, "%s.%s: expected at most %d entries {\"iothread\": ID, \"vqs\": [...]}",
                what, k, VMM_MAX_IOTHREADS);
        return;
    }
    if ((int)n + 1 > *nr) {
        *nr = (int)n + 1;
    }
    k = end + 1;
    if (!strcmp(k, "iothread")) {
        if (!valid_id(v)) {
            problem(p, "%s.%lu.iothread=%s: not a valid id", what, n, v);
            return;
        }
        g_free(map[n].iothread);
        map[n].iothread = g_strdup(v);
        return;
    }
    if (strncmp(k, "vqs.", 4) != 0) {
        problem(p, "%s.%lu: unknown member '%s' (iothread, vqs)", what, n, k);
        return;
    }
    m = strtoul(k + 4, &end, 10);
    if (end == k + 4 || *end || m >= VMM_MAX_QUEUES) {
        problem(p, "%s.%lu.%s: at most %d queues in a list", what, n, k, VMM_MAX_QUEUES);
        return;
    }
    if ((int)m != map[n].nr_vqs) {
        problem(p, "%s.%lu.%s: list elements out of order", what, n, k);
        return;
    }
    map[n].vqs[m] = (int)strtol(v, &end, 10);
    if (!*v || *end || map[n].vqs[m] < 0) {
        problem(p, "%s.%lu.vqs: %s: expected a queue number", what, n, v);
        return;
    }
    map[n].nr_vqs++;
}

static void parse_virtio_blk_device(OptParse *p, char **kv)
{
    VmmOptions *opts = p->opts;
    unsigned problems_before = p->problems->len;
    VmmDrive *d = NULL;
    const char *iothread = NULL, *serial = NULL, *dev_id = NULL;
    uint32_t lbs = 0, pbs = 0;
    int slot = -1, num_queues = 0, nr_map = 0;
    VmmVqMapping map[VMM_MAX_IOTHREADS];
    static const char vq_key[] = "iothread-vq-mapping.";
    bool mixed_vqs = false;

    memset(map, 0, sizeof(map));

    for (int i = 0; kv[i] || kv[i + 1]; i += 2) {
        const char *k = kv[i] ? kv[i] : "", *v = kv[i + 1];
        char *end;

        if (!strcmp(k, "driver")) {
            continue;
        }
        if (!v) {
            problem(p, "-device virtio-blk-pci: parameter '%s' needs a value", k);
        } else if (!strcmp(k, "drive")) {
            d = find_drive_by_id(opts, v);
            if (!d) {
                for (int j = 0; j < opts->nr_drives; j++) {
                    if (opts->drives[j].node_name && !strcmp(opts->drives[j].node_name, v)) {
                        problem(p, "-device virtio-blk-pci: drive=%s: node %s is used by raw "
                                "node %s (attach drive=%s)", v, v, opts->drives[j].id,
                                opts->drives[j].id);
                        break;
                    }
                }
                if (p->problems->len == problems_before) {
                    problem(p, "-device virtio-blk-pci: drive=%s: no -drive if=none,id=%s "
                            "or -blockdev node-name=%s before it", v, v, v);
                }
            } else if (!d->if_none) {
                problem(p, "-device virtio-blk-pci: drive=%s: the drive is if=virtio "
                        "(already a device; use if=none)", v);
                d = NULL;
            } else if (d->attached) {
                problem(p, "-device virtio-blk-pci: drive=%s: already attached", v);
                d = NULL;
            }
        } else if (!strcmp(k, "iothread") && valid_id(v)) {
            iothread = v;
        } else if (!strcmp(k, "id") && valid_id(v)) {
            dev_id = v;
        } else if (!strcmp(k, "serial")) {
            if (strlen(v) > 20) {
                problem(p, "-device virtio-blk-pci: serial=%s: longer than 20 characters", v);
            }
            serial = v;
        } else if (!strcmp(k, "num-queues")) {
            long n = strtol(v, &end, 10);
            if (!*v || *end || n < 1 || n > VMM_MAX_QUEUES) {
                problem(p, "-device virtio-blk-pci: num-queues=%s: expected 1 to %d", v,
                        VMM_MAX_QUEUES);
            } else {
                num_queues = (int)n;
            }
        } else if (!strncmp(k, vq_key, sizeof(vq_key) - 1)) {
            parse_vq_mapping_key(p, k + sizeof(vq_key) - 1, v, map, &nr_map);
        } else if (!strcmp(k, "bus")) {
            if (strcmp(v, "pci.0") != 0 && strcmp(v, "pcie.0") != 0) {
                problem(p, "-device virtio-blk-pci: bus=%s: keel-vmm has one PCI bus, pci.0", v);
            }
        } else if (!strcmp(k, "addr")) {
            /* SLOT or SLOT.FUNCTION, hexadecimal as in QEMU (0x4, 04, 4.0). */
            unsigned long n = strtoul(v, &end, 16);
            if (!*v || (*end && strcmp(end, ".0") != 0) || n < 1 || n >= PCI_MAX_DEVICES) {
                problem(p, "-device virtio-blk-pci: addr=%s: expected a slot from 0x1 to 0x%x "
                        "(function 0)", v, PCI_MAX_DEVICES - 1);
            } else {
                slot = (int)n;
            }
        } else if (!strcmp(k, "bootindex")) {
            strtol(v, &end, 10);
            if (!*v || *end) {
                problem(p, "-device virtio-blk-pci: bootindex=%s: expected a number", v);
            }
        } else if (!strcmp(k, "scsi")) {
            bool on;
            if (parse_bool(v, &on) < 0 || on) {
                problem(p, "-device virtio-blk-pci: scsi=%s: SCSI passthrough is not "
                        "supported (scsi=off)", v);
            }
        } else if (!strcmp(k, "logical_block_size")) {
            parse_block_size(p, k, v, &lbs);
        } else if (!strcmp(k, "physical_block_size")) {
            parse_block_size(p, k, v, &pbs);
        } else {
            problem(p, "-device virtio-blk-pci: unknown parameter '%s'", k);
        }
    }
    if (lbs && pbs && pbs < lbs) {
        problem(p, "-device virtio-blk-pci: physical_block_size=%u is smaller than "
                "logical_block_size=%u", pbs, lbs);
    }
    /* QEMU's iothread_vq_mapping rules that need neither -smp nor the
     * iothreads (those are checked with them, at the end). */
    if (nr_map && iothread) {
        problem(p, "-device virtio-blk-pci: iothread and iothread-vq-mapping properties "
                "cannot be set at the same time");
    }
    for (int i = 0; i < nr_map; i++) {
        if (!map[i].iothread) {
            problem(p, "-device virtio-blk-pci: iothread-vq-mapping.%d: \"iothread\" is "
                    "required", i);
            continue;
        }
        if ((map[i].nr_vqs > 0) != (map[0].nr_vqs > 0) && !mixed_vqs) {
            mixed_vqs = true;
            problem(p, "-device virtio-blk-pci: iothread-vq-mapping: either all or none of "
                    "the entries must have \"vqs\"");
        }
        for (int j = 0; j < i; j++) {
            if (map[j].iothread && !strcmp(map[j].iothread, map[i].iothread)) {
                problem(p, "-device virtio-blk-pci: iothread-vq-mapping: duplicate iothread "
                        "name %s", map[i].iothread);
            }
        }
    }
    if (!d && p->problems->len == problems_before) {
        problem(p, "-device virtio-blk-pci: drive= is required");
    }
    if (p->problems->len != problems_before) {
        for (int i = 0; i < nr_map; i++) {
            g_free(map[i].iothread);
        }
        if (d) {
            d->attached = true;   /* named: don't also report it as unused */
        }
        return;
    }
    d->attached = true;
    d->num_queues = num_queues;
    if (nr_map) {
        d->vq_map = g_new(VmmVqMapping, nr_map);
        memcpy(d->vq_map, map, nr_map * sizeof(map[0]));
        d->nr_vq_map = nr_map;
    }
    if (iothread) {
        g_free(d->iothread);
        d->iothread = g_strdup(iothread);
    }
    if (serial) {
        g_free(d->serial);
        d->serial = g_strdup(serial);
    }
    if (dev_id) {
        d->dev_id = g_strdup(dev_id);
    }
    d->logical_block_size = lbs;
    d->physical_block_size = pbs;
    d->pci_slot = slot;
}

/*
 * -device: the two devices keel-vmm has.  isa-debug-exit is always present
 * at 0xf4 (so QEMU's usual spelling is accepted when it matches);
 * virtio-blk-pci,drive=ID attaches an if=none drive or a -blockdev node.
 */
static void parse_device(OptParse *p, const char *arg)
{
    char **kv = arg[0] == '{' ? json_to_kv(p, "-device", arg) : split_suboptions(arg, "driver");
    const char *driver = NULL;

    if (!kv) {
        return;                 /* bad JSON: reported */
    }
    for (int i = 0; kv[i] || kv[i + 1]; i += 2) {
        if (kv[i] && !strcmp(kv[i], "driver")) {
            driver = kv[i + 1];
            break;
        }
    }
    if (!driver) {
        problem(p, "-device %s: missing device name", arg);
    } else if (!strcmp(driver, "isa-debug-exit")) {
        for (int i = 0; kv[i] || kv[i + 1]; i += 2) {
            const char *k = kv[i], *v = kv[i + 1];
            if (!strcmp(k, "driver")) {
                continue;
            } else if (!strcmp(k, "iobase") && v && strtoul(v, NULL, 0) == 0xf4) {
                continue;
            } else if (!strcmp(k, "iosize") && v &&
                       (strtoul(v, NULL, 0) == 1 || strtoul(v, NULL, 0) == 2 ||
                        strtoul(v, NULL, 0) == 4)) {
                continue;
            }
            problem(p, "-device isa-debug-exit: %s%s%s: keel-vmm's debug-exit port is "
                    "built in at iobase=0xf4", k, v ? "=" : "", v ? v : "");
        }
    } else if (!strcmp(driver, "virtio-blk-pci") || !strcmp(driver, "virtio-blk")) {
        parse_virtio_blk_device(p, kv);
    } else {
        problem(p, "-device %s: unknown device (keel-vmm has virtio-blk-pci and "
                "isa-debug-exit)", driver);
    }
    free_suboptions(kv);
}

static void parse_memory(OptParse *p, const char *arg)
{
    VmmOptions *opts = p->opts;
    char **kv = split_suboptions(arg, "size");
    const char *size = NULL;
    uint64_t bytes;

    for (int i = 0; kv[i] || kv[i + 1]; i += 2) {
        if (kv[i] && !strcmp(kv[i], "size")) {
            size = kv[i + 1];
        } else {
            problem(p, "-m: unknown parameter '%s'", kv[i] ? kv[i] : "");
        }
    }
    if (vmm_parse_size_mib(size, &bytes) < 0) {
        problem(p, "-m %s: not a size (e.g. 512, 512M, 2G)", arg);
    } else if (bytes < VMM_MIN_RAM_SIZE || bytes > VMM_MAX_RAM_SIZE) {
        problem(p, "-m %s: guest RAM must be between %llu MiB and %llu GiB", arg,
                VMM_MIN_RAM_SIZE >> 20, VMM_MAX_RAM_SIZE >> 30);
    } else if (bytes & 0xfff) {
        problem(p, "-m %s: not a multiple of 4 KiB", arg);
    } else {
        opts->ram_size = bytes;
        opts->ram_size_given = true;
    }
    free_suboptions(kv);
}

/* A -smp count: a decimal number ≥ 0 (0 is refused later, by name). */
static bool parse_cpu_count(const char *v, unsigned *out)
{
    char *end;
    unsigned long n;

    if (!v || !g_ascii_isdigit(v[0])) {
        return false;
    }
    errno = 0;
    n = strtoul(v, &end, 10);
    if (errno || *end || n > 1000000) {
        return false;
    }
    *out = (unsigned)n;
    return true;
}

/*
 * -smp [cpus=]N[,maxcpus=M][,sockets=S][,cores=C][,threads=T], with
 * QEMU's (6.2 and later, "prefer cores") rules for what is not given:
 *   - neither cpus nor maxcpus: missing sockets/cores/threads are 1, and
 *     maxcpus = cpus = their product;
 *   - otherwise maxcpus defaults to cpus; then cores (if missing) is
 *     maxcpus / (sockets * threads) with those defaulting to 1, or sockets
 *     (if missing) maxcpus / (cores * threads); threads, if still missing,
 *     maxcpus / (sockets * cores);
 *   - the product must equal maxcpus, and maxcpus ≥ cpus.
 * dies=, clusters=, books= and drawers= are accepted as 1 (x86 here has no
 * such level).  A later -smp replaces an earlier one.
 */
static void parse_smp(OptParse *p, const char *arg)
{
    char **kv = split_suboptions(arg, "cpus");
    unsigned problems_before = p->problems->len;
    unsigned cpus = 0, maxcpus = 0, sockets = 0, cores = 0, threads = 0;
    bool given_zero = false;

    for (int i = 0; kv[i] || kv[i + 1]; i += 2) {
        const char *k = kv[i] ? kv[i] : "", *v = kv[i + 1];
        unsigned n, *slot = NULL;

        if (!strcmp(k, "cpus")) {
            slot = &cpus;
        } else if (!strcmp(k, "maxcpus")) {
            slot = &maxcpus;
        } else if (!strcmp(k, "sockets")) {
            slot = &sockets;
        } else if (!strcmp(k, "cores")) {
            slot = &cores;
        } else if (!strcmp(k, "threads")) {
            slot = &threads;
        } else if (strcmp(k, "dies") && strcmp(k, "clusters") && strcmp(k, "books") &&
                   strcmp(k, "drawers")) {
            problem(p, "-smp %s: unknown parameter '%s'", arg, k);
            continue;
        }
        if (!parse_cpu_count(v, &n)) {
            problem(p, "-smp %s: %s=%s is not a number", arg, k, v ? v : "");
            continue;
        }
        if (n == 0) {
            given_zero = true;
        } else if (!slot && n != 1) {
            problem(p, "-smp %s: %s=%u: keel-vmm's x86 machine has no %s level (only 1)",
                    arg, k, n, k);
        } else if (slot) {
            *slot = n;
        }
    }
    free_suboptions(kv);
    if (given_zero) {
        problem(p, "-smp %s: Invalid CPU topology: CPU topology parameters must be "
                "greater than zero", arg);
    }
    if (p->problems->len != problems_before) {
        return;
    }

    if (!cpus && !maxcpus) {
        sockets = sockets ? sockets : 1;
        cores = cores ? cores : 1;
        threads = threads ? threads : 1;
    } else {
        maxcpus = maxcpus ? maxcpus : cpus;
        if (!cores) {
            sockets = sockets ? sockets : 1;
            threads = threads ? threads : 1;
            cores = maxcpus / (sockets * threads);
        } else if (!sockets) {
            threads = threads ? threads : 1;
            sockets = maxcpus / (cores * threads);
        }
        if (!threads) {
            threads = maxcpus / (sockets * cores);
        }
    }
    {
        uint64_t total = (uint64_t)sockets * cores * threads;

        maxcpus = maxcpus ? maxcpus : (unsigned)MIN(total, 1000000);
        cpus = cpus ? cpus : maxcpus;
        if (total != maxcpus) {
            problem(p, "-smp %s: Invalid CPU topology: product of the hierarchy must match "
                    "maxcpus: sockets (%u) * cores (%u) * threads (%u) != maxcpus (%u)",
                    arg, sockets, cores, threads, maxcpus);
            return;
        }
        if (maxcpus < cpus) {
            problem(p, "-smp %s: Invalid CPU topology: maxcpus must be equal to or greater "
                    "than smp: sockets (%u) * cores (%u) * threads (%u) == maxcpus (%u) < "
                    "smp_cpus (%u)", arg, sockets, cores, threads, maxcpus, cpus);
            return;
        }
    }
    if (maxcpus > VMM_MAX_CPUS) {
        problem(p, "-smp %s: Invalid SMP CPUs %u. The max CPUs supported by keel-vmm is %u",
                arg, maxcpus, VMM_MAX_CPUS);
        return;
    }
    {
        CpuTopology t = { cpus, maxcpus, sockets, cores, threads };

        /* Sparse APIC IDs (non-power-of-two cores or threads) can overflow
         * the 8-bit xAPIC ID even below VMM_MAX_CPUS. */
        if (topo_max_apic_id(&t) > VMM_MAX_APIC_ID) {
            problem(p, "-smp %s: this topology needs APIC ID %u, above the xAPIC limit %u",
                    arg, topo_max_apic_id(&t), VMM_MAX_APIC_ID);
            return;
        }
        p->opts->smp = t;
    }
}

/* -cpu host / -cpu max: keel-vmm gives the guest what KVM_GET_SUPPORTED_CPUID
 * offers (the host's virtualisable features), with topology leaves matching
 * -smp; that is what both names mean under QEMU with KVM.  Named models
 * (qemu64, EPYC, ...) and +feature/-feature edits are refused. */
static void parse_cpu(OptParse *p, const char *arg)
{
    char **kv = split_suboptions(arg, "model");
    const char *model = NULL;
    unsigned problems_before = p->problems->len;

    for (int i = 0; kv[i] || kv[i + 1]; i += 2) {
        const char *k = kv[i] ? kv[i] : "";

        if (!strcmp(k, "model")) {
            model = kv[i + 1];
        } else {
            problem(p, "-cpu %s: '%s': keel-vmm cannot change CPU features (it passes "
                    "KVM's supported CPUID through)", arg, k);
        }
    }
    if (!model || (strcmp(model, "host") && strcmp(model, "max"))) {
        problem(p, "-cpu %s: unsupported CPU model '%s' (keel-vmm has host and max, which "
                "both pass the host CPU through)", arg, model ? model : "");
    }
    if (p->problems->len == problems_before) {
        g_free(p->opts->cpu_model);
        p->opts->cpu_model = g_strdup(model);
    }
    free_suboptions(kv);
}

/* An accelerator name from -accel NAME or -machine accel=A[:B...] (QEMU
 * tries a ':' list in order; keel-vmm takes it when KVM comes first).
 * Returns whether it is acceptable; names the problem otherwise. */
static bool check_accel(OptParse *p, const char *opt, const char *value)
{
    size_t first = strcspn(value, ":");

    if (first == 3 && !strncmp(value, "kvm", 3)) {
        return true;
    }
    if (first == 3 && !strncmp(value, "tcg", 3)) {
        problem(p, "%s: keel-vmm has no TCG (QEMU's CPU emulator): it runs guests only "
                "with KVM (-accel kvm)", opt);
    } else {
        problem(p, "%s: unknown accelerator '%.*s' (keel-vmm has only kvm)", opt,
                (int)first, value);
    }
    return false;
}

/* -accel kvm[,kernel-irqchip=on][,thread=single|multi]: only KVM with the
 * in-kernel irqchip, which is what keel-vmm always uses. */
static void parse_accel(OptParse *p, const char *arg)
{
    char **kv = split_suboptions(arg, "accel");
    char *opt = g_strdup_printf("-accel %s", arg);

    for (int i = 0; kv[i] || kv[i + 1]; i += 2) {
        const char *k = kv[i] ? kv[i] : "", *v = kv[i + 1] ? kv[i + 1] : "";
        bool on;

        if (!strcmp(k, "accel")) {
            check_accel(p, opt, v);
        } else if (!strcmp(k, "kernel-irqchip") && parse_bool(kv[i + 1], &on) == 0 && on) {
            continue;
        } else if (!strcmp(k, "kernel-irqchip")) {
            problem(p, "%s: kernel-irqchip=%s: keel-vmm always uses KVM's in-kernel "
                    "irqchip (on)", opt, v);
        } else {
            problem(p, "%s: unsupported accelerator property '%s'", opt, k);
        }
    }
    g_free(opt);
    free_suboptions(kv);
}

static const char *file_type_name(mode_t mode)
{
    return S_ISFIFO(mode) ? "a FIFO" : S_ISSOCK(mode) ? "a socket" :
           S_ISCHR(mode) ? "a character device" : S_ISBLK(mode) ? "a block device" :
           "not a regular file";
}

int vmm_check_file_type(const char *what, const char *path, const struct stat *st,
                        bool block_ok, char *err, size_t errlen)
{
    size_t wl = what ? strlen(what) : 0;
    const char *sep = wl && what[wl - 1] != '=' ? " " : "";   /* "-kernel f", "file=f" */

    if (S_ISREG(st->st_mode) || (block_ok && S_ISBLK(st->st_mode))) {
        return 0;
    }
    if (S_ISDIR(st->st_mode)) {
        return vmm_fail(err, errlen, "%s%s%s: is a directory", what ? what : "", sep, path);
    }
    return vmm_fail(err, errlen, "%s%s%s: is %s; keel-vmm needs a regular file%s", what ? what : "",
                    sep, path, file_type_name(st->st_mode), block_ok ? " or a block device" : "");
}

int vmm_check_user_file(const char *what, const char *path, bool block_ok,
                        char *err, size_t errlen)
{
    struct stat st;

    /* stat() never blocks on a FIFO, unlike open() without O_NONBLOCK. */
    if (stat(path, &st) < 0) {
        return vmm_fail(err, errlen, "%s %s: %s", what, path, strerror(errno));
    }
    return vmm_check_file_type(what, path, &st, block_ok, err, errlen);
}

/* -kernel and -initrd: a regular file (a FIFO would block keel-vmm). */
static bool check_file(OptParse *p, const char *opt, const char *path)
{
    char msg[512];

    if (vmm_check_user_file(opt, path, false, msg, sizeof(msg)) < 0) {
        problem(p, "%s", msg);
        return false;
    }
    return true;
}


/* ---- chardevs, monitors and the lifecycle options ----------------------------- */

VmmChardevSpec *vmm_options_find_chardev(VmmOptions *opts, const char *id)
{
    for (int i = 0; id && i < opts->nr_chardevs; i++) {
        if (!strcmp(opts->chardevs[i].id, id)) {
            return &opts->chardevs[i];
        }
    }
    return NULL;
}

/* Reserves a chardev slot with @id; NULL (after a problem) when full or taken. */
static VmmChardevSpec *chardev_add(OptParse *p, const char *opt, const char *id)
{
    VmmOptions *opts = p->opts;
    VmmChardevSpec *c;

    if (vmm_options_find_chardev(opts, id)) {
        problem(p, "%s: chardev id '%s' is already in use", opt, id);
        return NULL;
    }
    if (opts->nr_chardevs == VMM_MAX_CHARDEVS) {
        problem(p, "%s: at most %d chardevs", opt, VMM_MAX_CHARDEVS);
        return NULL;
    }
    c = &opts->chardevs[opts->nr_chardevs++];
    memset(c, 0, sizeof(*c));
    c->id = g_strdup(id);
    c->signal = true;
    c->server = false;
    c->wait = true;     /* QEMU's default for a server socket */
    return c;
}

static void chardev_spec_clear(VmmChardevSpec *c)
{
    g_free(c->id);
    g_free(c->path);
    memset(c, 0, sizeof(*c));
}

/* Drops the chardev last added (it had a problem, so it is not applied). */
static void chardev_drop_last(OptParse *p)
{
    chardev_spec_clear(&p->opts->chardevs[--p->opts->nr_chardevs]);
}

/* The socket keys shared by -chardev socket and the legacy unix: spelling:
 * server=on|off, wait=on|off, and QEMU's old bare "server" and "nowait".
 * Returns whether @k was one of them. */
static bool parse_socket_key(OptParse *p, const char *opt, VmmChardevSpec *c,
                             const char *k, const char *v)
{
    bool b;

    if (!strcmp(k, "nowait") && !v) {
        c->wait = false;
        return true;
    }
    if (strcmp(k, "server") != 0 && strcmp(k, "wait") != 0) {
        return false;
    }
    if (parse_bool(v, &b) < 0) {
        problem(p, "%s: %s=%s: expected on or off", opt, k, v);
    } else if (!strcmp(k, "server")) {
        c->server = b;
    } else {
        c->wait = b;
    }
    return true;
}

/* -chardev BACKEND,id=ID[,path=P][,server=on|off][,wait=on|off][,mux=on]
 *          [,signal=on|off][,append=on] */
static void parse_chardev(OptParse *p, const char *arg)
{
    unsigned problems_before = p->problems->len;
    char **kv = split_suboptions(arg, "backend");
    const char *backend = NULL, *id = NULL;
    bool tcp_named = false;
    VmmChardevSpec *c;

    for (int i = 0; kv[i] || kv[i + 1]; i += 2) {
        if (kv[i] && !strcmp(kv[i], "backend")) {
            backend = kv[i + 1];
        } else if (kv[i] && !strcmp(kv[i], "id")) {
            id = kv[i + 1];
        }
    }
    if (!id || !valid_id(id)) {
        problem(p, "-chardev %s: needs a valid id= (got '%s')", arg, id ? id : "");
        free_suboptions(kv);
        return;
    }
    c = chardev_add(p, "-chardev", id);
    if (!c) {
        free_suboptions(kv);
        return;
    }
    if (!backend) {
        problem(p, "-chardev %s: no backend (stdio, file, pipe, socket or null)", arg);
    } else if (!strcmp(backend, "stdio")) {
        c->backend = VMM_CHR_STDIO;
    } else if (!strcmp(backend, "file")) {
        c->backend = VMM_CHR_FILE;
    } else if (!strcmp(backend, "pipe")) {
        c->backend = VMM_CHR_PIPE;
    } else if (!strcmp(backend, "socket")) {
        c->backend = VMM_CHR_SOCKET;
    } else if (!strcmp(backend, "null")) {
        c->backend = VMM_CHR_NULL;
    } else {
        problem(p, "-chardev %s: backend '%s' is not supported (stdio, file, pipe, "
                "socket or null)", id, backend);
    }
    for (int i = 0; kv[i] || kv[i + 1]; i += 2) {
        const char *k = kv[i] ? kv[i] : "", *v = kv[i + 1];
        bool b;

        if (!strcmp(k, "backend") || !strcmp(k, "id")) {
            continue;
        }
        if (c->backend == VMM_CHR_SOCKET && parse_socket_key(p, "-chardev", c, k, v)) {
            continue;
        }
        if (!strcmp(k, "path") && v && *v &&
            (c->backend == VMM_CHR_FILE || c->backend == VMM_CHR_PIPE ||
             c->backend == VMM_CHR_SOCKET)) {
            g_free(c->path);
            c->path = g_strdup(v);
        } else if (!strcmp(k, "mux") || (!strcmp(k, "signal") && c->backend == VMM_CHR_STDIO) ||
                   (!strcmp(k, "append") && c->backend == VMM_CHR_FILE)) {
            if (parse_bool(v, &b) < 0) {
                problem(p, "-chardev %s: %s=%s: expected on or off", id, k, v);
            } else if (!strcmp(k, "mux")) {
                c->mux = b;
            } else if (!strcmp(k, "signal")) {
                c->signal = b;
            } else {
                c->append = b;
            }
        } else if (!strcmp(k, "host") || !strcmp(k, "port")) {
            if (!tcp_named) {
                problem(p, "-chardev %s: TCP sockets are not supported (use path= for a "
                        "unix socket)", id);
            }
            tcp_named = true;
        } else {
            problem(p, "-chardev %s: unknown parameter '%s'", id, k);
        }
    }
    if (p->problems->len == problems_before &&
        (c->backend == VMM_CHR_FILE || c->backend == VMM_CHR_PIPE ||
         c->backend == VMM_CHR_SOCKET) && !c->path) {
        problem(p, "-chardev %s: path= is required", id);
    }
    if (p->problems->len != problems_before) {
        chardev_drop_last(p);
    }
    free_suboptions(kv);
}

/*
 * The legacy chardev spellings of -serial, -qmp and -monitor: stdio,
 * mon:stdio, null, file:PATH, pipe:PATH, unix:PATH[,server=on][,wait=off]
 * and chardev:ID.  Returns the chardev id (owned by the options) or NULL
 * after a problem.  @mux_monitor is set for "mon:" (the caller adds the
 * monitor sharing the chardev).
 */
static const char *parse_legacy_chardev(OptParse *p, const char *opt, const char *arg,
                                        const char *prefix, bool *mux_monitor)
{
    unsigned problems_before = p->problems->len;
    VmmChardevSpec *c;
    char id[32];
    const char *spec = arg;

    *mux_monitor = false;
    if (!strncmp(arg, "chardev:", 8)) {
        c = vmm_options_find_chardev(p->opts, arg + 8);
        if (!c) {
            problem(p, "%s %s: no -chardev with id '%s' (define it before use)", opt, arg,
                    arg + 8);
            return NULL;
        }
        return c->id;
    }
    if (!strncmp(arg, "mon:", 4)) {
        *mux_monitor = true;
        spec = arg + 4;
    }
    snprintf(id, sizeof(id), "%s%d", prefix, p->implicit_chardevs++);
    c = chardev_add(p, opt, id);
    if (!c) {
        return NULL;
    }
    c->mux = *mux_monitor;
    if (!strcmp(spec, "stdio")) {
        c->backend = VMM_CHR_STDIO;
        c->signal = !*mux_monitor;      /* mon:stdio: ^C goes to the guest */
    } else if (!strcmp(spec, "null")) {
        c->backend = VMM_CHR_NULL;
    } else if (!strncmp(spec, "file:", 5) && spec[5]) {
        c->backend = VMM_CHR_FILE;
        c->path = g_strdup(spec + 5);
    } else if (!strncmp(spec, "pipe:", 5) && spec[5]) {
        c->backend = VMM_CHR_PIPE;
        c->path = g_strdup(spec + 5);
    } else if (!strncmp(spec, "unix:", 5) && spec[5]) {
        char **kv = split_suboptions(spec + 5, "path");

        c->backend = VMM_CHR_SOCKET;
        for (int i = 0; kv[i] || kv[i + 1]; i += 2) {
            const char *k = kv[i] ? kv[i] : "";
            if (!strcmp(k, "path") && kv[i + 1] && *kv[i + 1]) {
                c->path = g_strdup(kv[i + 1]);
            } else if (!parse_socket_key(p, opt, c, k, kv[i + 1])) {
                problem(p, "%s %s: unknown parameter '%s'", opt, arg, k);
            }
        }
        free_suboptions(kv);
        if (!c->path) {
            problem(p, "%s %s: unix: needs a path", opt, arg);
        }
    } else if (!strncmp(spec, "tcp:", 4) || !strncmp(spec, "telnet:", 7)) {
        problem(p, "%s %s: TCP is not supported (use unix:PATH,server=on,wait=off)", opt, arg);
    } else {
        problem(p, "%s %s: expected stdio, mon:stdio, null, file:PATH, pipe:PATH, "
                "unix:PATH[,server=on,wait=off] or chardev:ID", opt, arg);
    }
    if (p->problems->len != problems_before) {
        chardev_drop_last(p);
        return NULL;
    }
    return c->id;
}

static void monitor_add(OptParse *p, const char *opt, const char *chardev, bool control,
                        bool pretty)
{
    VmmOptions *opts = p->opts;
    VmmMonitorSpec *m;

    if (opts->nr_monitors == VMM_MAX_MONITORS) {
        problem(p, "%s: at most %d monitors", opt, VMM_MAX_MONITORS);
        return;
    }
    m = &opts->monitors[opts->nr_monitors++];
    m->chardev = g_strdup(chardev);
    m->control = control;
    m->pretty = pretty;
}

static void parse_serial(OptParse *p, const char *arg)
{
    VmmOptions *opts = p->opts;
    const char *id;
    bool mon;

    if (p->serial_given) {
        problem(p, "-serial %s: keel-vmm has one serial port (COM1); -serial is given twice",
                arg);
        return;
    }
    p->serial_given = true;
    if (!strcmp(arg, "none")) {
        return;
    }
    id = parse_legacy_chardev(p, "-serial", arg, "serial", &mon);
    if (!id) {
        return;
    }
    opts->serial_chardev = g_strdup(id);
    if (mon) {
        monitor_add(p, "-serial", id, false, false);   /* mon:stdio: HMP behind Ctrl-A c */
    }
}

/* -qmp SPEC and -monitor SPEC (HMP); "none" adds nothing. */
static void parse_monitor_legacy(OptParse *p, const char *opt, const char *arg, bool control)
{
    const char *id;
    bool mon;

    if (!strcmp(arg, "none")) {
        return;
    }
    id = parse_legacy_chardev(p, opt, arg, control ? "qmp" : "compat_monitor", &mon);
    if (id) {
        monitor_add(p, opt, id, control, false);
    }
}

/* -mon chardev=ID[,mode=control|readline][,pretty=on|off] */
static void parse_mon(OptParse *p, const char *arg)
{
    char **kv = split_suboptions(arg, "chardev");
    const char *chardev = NULL;
    bool control = false, pretty = false, ok = true;

    for (int i = 0; kv[i] || kv[i + 1]; i += 2) {
        const char *k = kv[i] ? kv[i] : "", *v = kv[i + 1];

        if (!strcmp(k, "chardev")) {
            chardev = v;
        } else if (!strcmp(k, "mode") && v && !strcmp(v, "control")) {
            control = true;
        } else if (!strcmp(k, "mode") && v && !strcmp(v, "readline")) {
            control = false;
        } else if (!strcmp(k, "mode")) {
            problem(p, "-mon %s: mode=%s: expected control or readline", arg, v ? v : "");
            ok = false;
        } else if (!strcmp(k, "id") && v && valid_id(v)) {
            continue;       /* libvirt names its monitor; nothing refers to it */
        } else if (!strcmp(k, "pretty") || !strcmp(k, "default")) {
            bool b = false;
            if (parse_bool(v, &b) < 0) {
                problem(p, "-mon %s: %s=%s: expected on or off", arg, k, v);
                ok = false;
            } else if (!strcmp(k, "pretty")) {
                pretty = b;
            }
        } else {
            problem(p, "-mon %s: unknown parameter '%s'", arg, k);
            ok = false;
        }
    }
    if (!chardev || !vmm_options_find_chardev(p->opts, chardev)) {
        problem(p, "-mon %s: chardev=%s: no such -chardev (define it before use)", arg,
                chardev ? chardev : "");
        ok = false;
    }
    if (ok) {
        monitor_add(p, "-mon", chardev, control, pretty);
    }
    free_suboptions(kv);
}

/* -name NAME[,debug-threads=on|off] (also guest=NAME, process=NAME). */
static void parse_name(OptParse *p, const char *arg)
{
    char **kv = split_suboptions(arg, "guest");

    for (int i = 0; kv[i] || kv[i + 1]; i += 2) {
        const char *k = kv[i] ? kv[i] : "", *v = kv[i + 1];

        if (!strcmp(k, "guest") && v) {
            g_free(p->opts->name);
            p->opts->name = g_strdup(v);
        } else if (!strcmp(k, "debug-threads")) {
            if (parse_bool(v, &p->opts->debug_threads) < 0) {
                problem(p, "-name %s: debug-threads=%s: expected on or off", arg, v);
            }
        } else if (!strcmp(k, "process") && v) {
            continue;       /* the process title: not changed (documented) */
        } else {
            problem(p, "-name %s: unknown parameter '%s'", arg, k);
        }
    }
    free_suboptions(kv);
}

/* -display none|...; -vga none|...: keel-vmm has no display and no VGA. */
static void parse_display(OptParse *p, const char *opt, const char *arg)
{
    if (strcmp(arg, "none") != 0 && strncmp(arg, "none,", 5) != 0) {
        problem(p, "%s %s: keel-vmm has no display (use %s none, or -nographic)", opt, arg,
                opt);
    }
}

/* Whole-line checks of the chardevs and their front ends. */
static void check_chardevs(OptParse *p)
{
    VmmOptions *opts = p->opts;
    int stdio_users = 0;

    /* The default serial port: QEMU's -nographic default is mon:stdio;
     * without it keel-vmm (which has no display) uses stdio, unless stdio
     * is taken by a monitor or -daemonize leaves no terminal. */
    if (!p->serial_given && !opts->daemonize) {
        bool stdio_taken = false;
        for (int i = 0; i < opts->nr_chardevs; i++) {
            stdio_taken |= opts->chardevs[i].backend == VMM_CHR_STDIO;
        }
        if (!stdio_taken) {
            parse_serial(p, p->nographic ? "mon:stdio" : "stdio");
        }
    }
    if (opts->serial_chardev) {
        vmm_options_find_chardev(opts, opts->serial_chardev)->users++;
    }
    for (int i = 0; i < opts->nr_monitors; i++) {
        VmmChardevSpec *c = vmm_options_find_chardev(opts, opts->monitors[i].chardev);
        c->users++;
    }
    for (int i = 0; i < opts->nr_chardevs; i++) {
        VmmChardevSpec *c = &opts->chardevs[i];

        if (c->backend == VMM_CHR_STDIO) {
            stdio_users++;
            if (opts->daemonize) {
                problem(p, "-daemonize: chardev '%s' uses stdio, which a daemon does not have",
                        c->id);
            }
        }
        if (c->users > 1 && !c->mux) {
            problem(p, "chardev '%s' is used by %d front ends (add mux=on, or use mon:)",
                    c->id, c->users);
        }
        if (c->users > 2) {
            problem(p, "chardev '%s': at most two front ends (serial and monitor) share one",
                    c->id);
        }
        if (c->backend == VMM_CHR_SOCKET && !c->server && c->wait == false) {
            /* wait= only means something for a server; QEMU refuses it too */
            problem(p, "chardev '%s': wait=off needs server=on", c->id);
        }
    }
    if (stdio_users > 1) {
        problem(p, "stdio is used by %d chardevs (share one with mon:stdio or mux=on)",
                stdio_users);
    }
}

/* The table of options: name, whether it takes an argument. */
typedef enum {
    OPT_M, OPT_SMP, OPT_KERNEL, OPT_INITRD, OPT_APPEND, OPT_DRIVE, OPT_OBJECT,
    OPT_DEVICE, OPT_SERIAL, OPT_NOGRAPHIC, OPT_DISPLAY, OPT_IGNORED, OPT_MACHINE,
    OPT_HELP, OPT_VERSION, OPT_FEATURES, OPT_BLOCKDEV,
    OPT_CHARDEV, OPT_QMP, OPT_QMP_PRETTY, OPT_MON, OPT_MONITOR, OPT_NAME, OPT_PIDFILE,
    OPT_DAEMONIZE, OPT_START_PAUSED, OPT_NO_SHUTDOWN, OPT_VGA, OPT_CHECK_ARGS, OPT_CPU,
    OPT_ACCEL,
} OptId;

static const struct {
    const char *name;
    OptId id;
    bool has_arg;
} option_table[] = {
    { "m", OPT_M, true },
    { "smp", OPT_SMP, true },
    { "cpu", OPT_CPU, true },
    { "accel", OPT_ACCEL, true },
    { "kernel", OPT_KERNEL, true },
    { "initrd", OPT_INITRD, true },
    { "append", OPT_APPEND, true },
    { "drive", OPT_DRIVE, true },
    { "blockdev", OPT_BLOCKDEV, true },
    { "object", OPT_OBJECT, true },
    { "device", OPT_DEVICE, true },
    { "serial", OPT_SERIAL, true },
    { "nographic", OPT_NOGRAPHIC, false },
    { "display", OPT_DISPLAY, true },
    { "machine", OPT_MACHINE, true },
    { "M", OPT_MACHINE, true },
    { "enable-kvm", OPT_IGNORED, false },
    { "nodefaults", OPT_IGNORED, false },
    { "no-reboot", OPT_IGNORED, false },   /* keel-vmm never reboots: a reset ends it */
    { "no-user-config", OPT_IGNORED, false },
    { "no-hpet", OPT_IGNORED, false },
    { "chardev", OPT_CHARDEV, true },
    { "qmp", OPT_QMP, true },
    { "qmp-pretty", OPT_QMP_PRETTY, true },
    { "mon", OPT_MON, true },
    { "monitor", OPT_MONITOR, true },
    { "name", OPT_NAME, true },
    { "pidfile", OPT_PIDFILE, true },
    { "daemonize", OPT_DAEMONIZE, false },
    { "S", OPT_START_PAUSED, false },
    { "no-shutdown", OPT_NO_SHUTDOWN, false },
    { "vga", OPT_VGA, true },
    { "check-args", OPT_CHECK_ARGS, false },
    { "help", OPT_HELP, false },
    { "h", OPT_HELP, false },
    { "version", OPT_VERSION, false },
    { "features", OPT_FEATURES, false },
};

static void options_parse(OptParse *p, int argc, char **argv);

int vmm_options_parse(VmmOptions *opts, int argc, char **argv, char *err, size_t errlen)
{
    OptParse p = { .opts = opts, .problems = g_ptr_array_new_with_free_func(g_free) };
    int ret = 0;

    if (errlen) {
        err[0] = '\0';
    }
    options_parse(&p, argc, argv);
    if (p.problems->len) {
        /* One line per problem; when they do not all fit, say how many
         * were left out rather than cut a line in half. */
        GString *all = g_string_new(NULL);
        unsigned shown = 0;

        for (; shown < p.problems->len; shown++) {
            const char *line = g_ptr_array_index(p.problems, shown);
            size_t need = all->len + (shown ? 1 : 0) + strlen(line) + 48;

            if (need >= errlen && shown) {
                break;
            }
            g_string_append_printf(all, "%s%s", shown ? "\n" : "", line);
        }
        if (shown < p.problems->len) {
            g_string_append_printf(all, "\n(%u more problems not shown)", p.problems->len - shown);
        }
        if (errlen) {
            g_strlcpy(err, all->str, errlen);
        }
        g_string_free(all, TRUE);
        vmm_options_free(opts);     /* nothing left for the caller to free */
        ret = -1;
    }
    g_ptr_array_free(p.problems, TRUE);
    return ret;
}

static void options_parse(OptParse *p, int argc, char **argv)
{
    VmmOptions *opts = p->opts;

    memset(opts, 0, sizeof(*opts));
    opts->ram_size = VMM_DEFAULT_RAM_SIZE;
    opts->smp = (CpuTopology) { 1, 1, 1, 1, 1 };
    opts->serial_stdio = true;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *name, *arg = NULL;
        int found = -1;

        if (a[0] != '-' || a[1] == '\0') {
            problem(p, "%s: unexpected argument (options start with '-')", a);
            continue;
        }
        name = a + 1 + (a[1] == '-');   /* QEMU takes -opt and --opt alike */
        for (size_t t = 0; t < G_N_ELEMENTS(option_table); t++) {
            if (!strcmp(name, option_table[t].name)) {
                found = (int)t;
                break;
            }
        }
        if (found < 0) {
            /* Its argument, if it takes one, is reported as unexpected:
             * we cannot know whether it does. */
            problem(p, "%s: unknown option (see --help)", a);
            continue;
        }
        if (option_table[found].id == OPT_KERNEL) {
            p->kernel_named = true;
        }
        if (option_table[found].has_arg) {
            if (i + 1 >= argc) {
                problem(p, "%s: requires an argument", a);
                break;
            }
            arg = argv[++i];
        }

        switch (option_table[found].id) {
        case OPT_M:
            parse_memory(p, arg);
            break;
        case OPT_SMP:
            parse_smp(p, arg);
            break;
        case OPT_CPU:
            parse_cpu(p, arg);
            break;
        case OPT_ACCEL:
            parse_accel(p, arg);
            break;
        case OPT_KERNEL:
            g_free(opts->kernel);
            opts->kernel = g_strdup(arg);   /* kept even if refused: no "required" too */
            check_file(p, "-kernel", arg);
            break;
        case OPT_INITRD:
            g_free(opts->initrd);
            opts->initrd = g_strdup(arg);
            check_file(p, "-initrd", arg);
            break;
        case OPT_APPEND:
            g_free(opts->append);
            opts->append = g_strdup(arg);
            break;
        case OPT_DRIVE:
            parse_drive(p, arg);
            break;
        case OPT_BLOCKDEV:
            parse_blockdev(p, arg);
            break;
        case OPT_OBJECT:
            parse_object(p, arg);
            break;
        case OPT_DEVICE:
            parse_device(p, arg);
            break;
        case OPT_SERIAL:
            parse_serial(p, arg);
            break;
        case OPT_DISPLAY:
        case OPT_VGA:
            parse_display(p, a, arg);
            break;
        case OPT_CHARDEV:
            parse_chardev(p, arg);
            break;
        case OPT_QMP:
        case OPT_QMP_PRETTY:
            parse_monitor_legacy(p, a, arg, true);
            if (option_table[found].id == OPT_QMP_PRETTY && opts->nr_monitors) {
                opts->monitors[opts->nr_monitors - 1].pretty = true;
            }
            break;
        case OPT_MONITOR:
            parse_monitor_legacy(p, a, arg, false);
            break;
        case OPT_MON:
            parse_mon(p, arg);
            break;
        case OPT_NAME:
            parse_name(p, arg);
            break;
        case OPT_PIDFILE:
            g_free(opts->pidfile);
            opts->pidfile = g_strdup(arg);
            break;
        case OPT_DAEMONIZE:
            opts->daemonize = true;
            break;
        case OPT_START_PAUSED:
            opts->start_paused = true;
            break;
        case OPT_NO_SHUTDOWN:
            opts->no_shutdown = true;
            break;
        case OPT_CHECK_ARGS:
            opts->check_args = true;
            break;
        case OPT_MACHINE: {
            /* accel=kvm (tcg refused), memory-backend=, and the machine
             * types whose PC shape keel-vmm gives. */
            char **kv = split_suboptions(arg, "type");
            for (int k = 0; kv[k] || kv[k + 1]; k += 2) {
                const char *v = kv[k + 1] ? kv[k + 1] : "";
                if (!strcmp(kv[k], "accel")) {
                    char *opt = g_strdup_printf("%s %s", a, arg);
                    check_accel(p, opt, v);
                    g_free(opt);
                    continue;
                }
                if (!strcmp(kv[k], "memory-backend") && valid_id(v)) {
                    g_free(opts->machine_mem_backend);
                    opts->machine_mem_backend = g_strdup(v);
                    continue;
                }
                if (!strcmp(kv[k], "type") && (!strcmp(v, "pc") || !strcmp(v, "q35") ||
                                              !strncmp(v, "pc-", 3))) {
                    continue;
                }
                if (!strcmp(kv[k], "type") && !strcmp(v, "none")) {
                    opts->machine_none = true;  /* QEMU's -M none: no guest */
                    continue;
                }
                problem(p, "%s %s: unsupported machine property '%s'", a, arg, kv[k]);
            }
            free_suboptions(kv);
            break;
        }
        case OPT_NOGRAPHIC:
            p->nographic = true;
            break;
        case OPT_IGNORED:
            break;
        case OPT_HELP:
            opts->want_help = true;
            break;
        case OPT_VERSION:
            opts->want_version = true;
            break;
        case OPT_FEATURES:
            opts->want_features = true;
            break;
        }
    }

    /* Whole-command-line checks: each looks only at options that were
     * accepted, so a refused option does not also yield a derived problem. */
    check_chardevs(p);
    if (opts->serial_chardev) {
        opts->serial_stdio =
            vmm_options_find_chardev(opts, opts->serial_chardev)->backend == VMM_CHR_STDIO;
    }
    if (opts->machine_none && opts->nr_drives) {
        problem(p, "-machine none: has no devices, so -drive %s cannot be attached",
                opts->drives[0].file ? opts->drives[0].file : "");
    }
    for (int i = 0; i < opts->nr_drives; i++) {
        VmmDrive *d = &opts->drives[i];

        if (d->iothread && !iothread_exists(opts, d->iothread)) {
            problem(p, "-drive file=%s: iothread=%s: no -object iothread,id=%s",
                    d->file, d->iothread, d->iothread);
        }
        check_drive_queues(p, d);
        if (!d->attached) {
            problem(p, "%s file=%s: %s %s is not used by any -device virtio-blk-pci,drive=%s",
                    d->from_blockdev ? "-blockdev" : "-drive", d->file,
                    d->from_blockdev ? "node" : "if=none drive", d->id, d->id);
        }
        for (int j = 0; j < i && d->pci_slot >= 0; j++) {
            if (opts->drives[j].pci_slot == d->pci_slot) {
                problem(p, "-device virtio-blk-pci,drive=%s: addr=0x%x: slot already used by "
                        "drive=%s", d->id, d->pci_slot, opts->drives[j].id);
            }
        }
    }
    if (opts->mem_backend_id &&
        (!opts->machine_mem_backend || strcmp(opts->machine_mem_backend, opts->mem_backend_id))) {
        problem(p, "-object %s,id=%s: not used (add -machine memory-backend=%s)",
                opts->ram_backing == VM_RAM_MEMFD ? "memory-backend-memfd" : "memory-backend-ram",
                opts->mem_backend_id, opts->mem_backend_id);
    }
    if (opts->machine_mem_backend && !opts->mem_backend_id && !p->mem_backend_refused) {
        problem(p, "-machine memory-backend=%s: no -object memory-backend-ram "
                "or memory-backend-memfd with id=%s", opts->machine_mem_backend,
                opts->machine_mem_backend);
    }
    if (opts->mem_backend_size) {
        /* QEMU wants -m and the backend to agree; without -m the backend
         * gives the size. */
        if (opts->ram_size_given && opts->mem_backend_size != opts->ram_size) {
            problem(p, "-object memory-backend: size=%llu MiB does not match -m %llu MiB",
                    (unsigned long long)(opts->mem_backend_size >> 20),
                    (unsigned long long)(opts->ram_size >> 20));
        } else if (opts->mem_backend_size < VMM_MIN_RAM_SIZE ||
                   opts->mem_backend_size > VMM_MAX_RAM_SIZE || (opts->mem_backend_size & 0xfff)) {
            problem(p, "-object memory-backend: size= must be a multiple of "
                    "4 KiB between %llu MiB and %llu GiB", VMM_MIN_RAM_SIZE >> 20,
                    VMM_MAX_RAM_SIZE >> 30);
        } else {
            opts->ram_size = opts->mem_backend_size;
        }
    }
    if (opts->want_help || opts->want_version || opts->want_features) {
        return;
    }
    if (!p->kernel_named && !opts->machine_none) {
        problem(p, "-kernel: required (a multiboot ELF, bzImage or PVH vmlinux)");
    }
}

void vmm_options_free(VmmOptions *opts)
{
    g_free(opts->kernel);
    g_free(opts->cpu_model);
    g_free(opts->mem_backend_id);
    g_free(opts->machine_mem_backend);
    g_free(opts->initrd);
    g_free(opts->append);
    for (int i = 0; i < opts->nr_drives; i++) {
        drive_clear(&opts->drives[i]);
    }
    for (int i = 0; i < opts->nr_iothreads; i++) {
        g_free(opts->iothreads[i].id);
    }
    for (int i = 0; i < opts->nr_chardevs; i++) {
        chardev_spec_clear(&opts->chardevs[i]);
    }
    for (int i = 0; i < opts->nr_monitors; i++) {
        g_free(opts->monitors[i].chardev);
    }
    g_free(opts->serial_chardev);
    g_free(opts->name);
    g_free(opts->pidfile);
    memset(opts, 0, sizeof(*opts));
}

void vmm_options_print_help(FILE *out)
{
    fputs(
"Usage: keel-vmm [options] -kernel FILE\n"
"A small KVM virtual machine monitor (QEMU's option vocabulary).\n"
"\n"
"  -kernel FILE        multiboot v1 ELF, Linux bzImage, or vmlinux with a PVH entry\n"
"  -initrd FILE        initramfs (Linux) or first module (multiboot)\n"
"  -append STRING      kernel command line\n"
"  -m SIZE             guest RAM (default 128M; 512, 512M, 2G)\n"
"  -smp [cpus=]N[,maxcpus=M][,sockets=S][,cores=C][,threads=T]\n"
"                      vCPUs (one thread each, up to 128), QEMU's rules for\n"
"                      missing values; CPUID, ACPI and the MP table match\n"
"  -cpu host|max       the host CPU as KVM can virtualise it (the default)\n"
"  -accel kvm, -machine accel=kvm\n"
"                      KVM is the only accelerator (tcg is refused)\n"
"  -drive file=F[,format=raw][,if=virtio|none][,id=ID][,aio=threads|native|io_uring]\n"
"         [,cache=none|writeback|writethrough|directsync|unsafe][,readonly=on|off]\n"
"         [,discard=ignore|unmap][,detect-zeroes=off|on|unmap][,file.locking=on|off|auto]\n"
"         [,media=disk][,index=N][,iothread=ID][,serial=STR][,inject=RULE]...\n"
"         [,werror=stop|report|ignore|enospc][,rerror=...]\n"
"                      a virtio-blk disk; without format= the image is probed\n"
"                      (other formats refused); inject= fails/delays chosen\n"
"                      requests (e.g. inject=write:EIO:once; see block/blkdebug.h)\n"
"  -blockdev driver=file|host_device,node-name=N,filename=F[,aio=..][,cache.direct=..]\n"
"         [,cache.no-flush=..][,discard=..][,detect-zeroes=..][,read-only=..]\n"
"         [,auto-read-only=..][,locking=..]\n"
"  -blockdev driver=raw,node-name=N,file=NODE[,offset=B][,size=B]\n"
"                      QEMU's block nodes, key=value or JSON ({\"driver\":...})\n"
"  -device virtio-blk-pci,drive=ID|NODE[,id=ID][,serial=S][,iothread=ID][,bus=pci.0]\n"
"         [,addr=SLOT][,logical_block_size=B][,physical_block_size=B][,num-queues=N]\n"
"         [,bootindex=N][,scsi=off]\n"
"                      attach an if=none drive or a node (addr= is the PCI slot;\n"
"                      num-queues 1..16, default one per vCPU; bootindex and\n"
"                      scsi=off have no effect)\n"
"  -device '{\"driver\":\"virtio-blk-pci\",\"drive\":\"ID\",\"num-queues\":N,\n"
"            \"iothread-vq-mapping\":[{\"iothread\":\"ID\"[,\"vqs\":[Q,...]]},...]}'\n"
"                      JSON -device; the queues spread over iothreads (round-robin\n"
"                      without \"vqs\"), as QEMU 9\n"
"  -object memory-backend-ram|memory-backend-memfd,id=ID[,size=S]\n"
"  -machine memory-backend=ID\n"
"                      what backs guest RAM: anonymous memory, or a memfd that\n"
"                      another process could share; default: a memfd unless only\n"
"                      anonymous memory gets transparent huge pages here\n"
"  -object iothread,id=ID[,poll-max-ns=N][,poll-grow=N][,poll-shrink=N]\n"
"                      an I/O thread that drives can be bound to; it busy-polls\n"
"                      up to poll-max-ns (default 32768, 0 = never) before sleeping\n"
"  -serial stdio|mon:stdio|none|null|file:PATH|pipe:PATH|chardev:ID\n"
"         |unix:PATH,server=on,wait=off\n"
"                      COM1 (0x3f8, IRQ 4); default stdio (mon:stdio with\n"
"                      -nographic; none with -daemonize).  mon:stdio: Ctrl-A h\n"
"                      lists the keys, Ctrl-A x quits, Ctrl-A c switches to the\n"
"                      monitor, Ctrl-C goes to the guest\n"
"  -chardev stdio|file|pipe|socket|null,id=ID[,path=P][,server=on|off]\n"
"         [,wait=on|off][,mux=on][,signal=off][,append=on]\n"
"  -qmp SPEC           a QMP monitor (SPEC as for -serial, e.g.\n"
"                      unix:/run/vm.qmp,server=on,wait=off, or stdio)\n"
"  -mon chardev=ID[,mode=control|readline][,pretty=on]\n"
"  -monitor SPEC|none  a human monitor (info status, stop, cont, quit)\n"
"  -name NAME[,debug-threads=on]\n"
"                      query-name; debug-threads=on names the threads as QEMU does\n"
"  -S                  start paused (QMP cont starts the guest)\n"
"  -no-shutdown        stay (status shutdown) after the guest shuts down\n"
"  -pidfile PATH       write the pid under a lock; removed at exit\n"
"  -daemonize          detach once set-up succeeded (errors still reach the caller)\n"
"  -machine none       no guest: only the monitors run (like QEMU's -M none)\n"
"  --check-args        check the command line, report every problem, and exit\n"
"  -cpu host|max       the host's CPU model (what KVM offers; the only choice)\n"
"  -accel kvm          accepted (KVM is the only accelerator)\n"
"  -nographic, -enable-kvm, -nodefaults, -no-user-config, -no-reboot, -no-hpet,\n"
"  -display none, -vga none, -monitor none\n"
"                      accepted for QEMU compatibility (no effect: keel-vmm has no\n"
"                      display, VGA or default devices, and never reboots)\n"
"  -device isa-debug-exit,iobase=0xf4\n"
"                      always present: a guest write of V to port 0xf4 ends\n"
"                      keel-vmm with exit status (V << 1) | 1\n"
"  --features          print the portability seams and KVM capabilities in use\n"
"  --version           print the version\n"
"  --help              print this help\n"
"\n"
"Environment: KEEL_AVOID=ioeventfd,irqfd,signal-msi,... forces fallback paths.\n"
"Exit status: 0 guest reset or signal, 1 bad usage or set-up failure,\n"
"             2 guest crash (triple fault, KVM internal error), (V<<1)|1 debug-exit.\n",
        out);
}
