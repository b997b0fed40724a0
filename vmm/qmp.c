/*
 * QMP and HMP monitors on json-glib (contract in vmm/qmp.h).
 */
#include "config.h"

#include "vmm/qmp.h"

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- replies ------------------------------------------------------------------------ */

typedef struct QmpError {
    const char *cls;        /* "GenericError", "CommandNotFound", ... */
    char *desc;
} QmpError;

static void G_GNUC_PRINTF(3, 4) qmp_error(QmpError *e, const char *cls, const char *fmt, ...)
{
    va_list ap;

    e->cls = cls;
    va_start(ap, fmt);
    e->desc = g_strdup_vprintf(fmt, ap);
    va_end(ap);
}

struct QmpSession {
    VmmMachine *m;
    QmpOutputFn *out;
    void *out_opaque;
    bool pretty;
    bool open;
    bool negotiated;

    /* framing (see qmp.h) */
    GString *buf;
    int depth;
    bool in_string, escape;
    bool skipping;          /* an over-long request: drop up to the next newline */
};

static void session_send(QmpSession *s, JsonNode *root)
{
    JsonGenerator *gen = json_generator_new();
    gchar *text;
    gsize len;
    GString *line;

    json_generator_set_root(gen, root);
    json_generator_set_pretty(gen, s->pretty);
    text = json_generator_to_data(gen, &len);
    line = g_string_new_len(text, (gssize)len);
    g_string_append(line, "\r\n");
    if (s->open) {
        s->out(s->out_opaque, line->str, line->len);
    }
    g_string_free(line, TRUE);
    g_free(text);
    g_object_unref(gen);
}

/* Sends {"return": ret} or {"error": ...}, echoing @id; takes @ret. */
static void session_reply(QmpSession *s, JsonNode *id, JsonNode *ret, QmpError *err)
{
    JsonBuilder *b = json_builder_new();
    JsonNode *root;

    json_builder_begin_object(b);
    if (err->cls) {
        json_builder_set_member_name(b, "error");
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "class");
        json_builder_add_string_value(b, err->cls);
        json_builder_set_member_name(b, "desc");
        json_builder_add_string_value(b, err->desc);
        json_builder_end_object(b);
        if (ret) {
            json_node_free(ret);
        }
    } else {
        json_builder_set_member_name(b, "return");
        if (ret) {
            json_builder_add_value(b, ret);
        } else {
            json_builder_begin_object(b);
            json_builder_end_object(b);
        }
    }
    if (id) {
        json_builder_set_member_name(b, "id");
        json_builder_add_value(b, json_node_copy(id));
    }
    json_builder_end_object(b);
    root = json_builder_get_root(b);
    session_send(s, root);
    json_node_free(root);
    g_object_unref(b);
    g_free(err->desc);
    err->desc = NULL;
    err->cls = NULL;
}

/* ---- commands ------------------------------------------------------------------------ */

typedef JsonNode *QmpCommandFn(QmpSession *s, JsonObject *args, QmpError *err);

/* Refuses arguments a command does not take (QEMU's wording); @allowed is a
 * NULL-terminated list. */
static bool check_args(JsonObject *args, const char *const *allowed, QmpError *err)
{
    GList *names = args ? json_object_get_members(args) : NULL;
    bool ok = true;

    for (GList *l = names; l && ok; l = l->next) {
        bool known = false;
        for (const char *const *a = allowed; a && *a; a++) {
            known |= !strcmp(*a, l->data);
        }
        if (!known) {
            qmp_error(err, "GenericError", "Parameter '%s' is unexpected", (char *)l->data);
            ok = false;
        }
    }
    g_list_free(names);
    return ok;
}

static const char *string_arg(JsonObject *args, const char *name, QmpError *err)
{
    JsonNode *n = args ? json_object_get_member(args, name) : NULL;

    if (!n || JSON_NODE_TYPE(n) != JSON_NODE_VALUE ||
        json_node_get_value_type(n) != G_TYPE_STRING) {
        if (err && !err->cls) {
            if (n) {
                qmp_error(err, "GenericError", "Invalid parameter type for '%s', expected: string",
                          name);
            } else {
                qmp_error(err, "GenericError", "Parameter '%s' is missing", name);
            }
        }
        return NULL;
    }
    return json_node_get_string(n);
}

static JsonNode *empty_object(void)
{
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);

    json_node_take_object(n, json_object_new());
    return n;
}

static JsonNode *finish(JsonBuilder *b)
{
    JsonNode *root = json_builder_get_root(b);

    g_object_unref(b);
    return root;
}

static void add_int(JsonBuilder *b, const char *name, int64_t v)
{
    json_builder_set_member_name(b, name);
    json_builder_add_int_value(b, v);
}

static void add_str(JsonBuilder *b, const char *name, const char *v)
{
    json_builder_set_member_name(b, name);
    json_builder_add_string_value(b, v);
}

static void add_bool(JsonBuilder *b, const char *name, bool v)
{
    json_builder_set_member_name(b, name);
    json_builder_add_boolean_value(b, v);
}

static JsonNode *cmd_qmp_capabilities(QmpSession *s, JsonObject *args, QmpError *err)
{
    static const char *const allowed[] = { "enable", NULL };
    JsonNode *enable = args ? json_object_get_member(args, "enable") : NULL;

    if (!check_args(args, allowed, err)) {
        return NULL;
    }
    if (enable && JSON_NODE_TYPE(enable) == JSON_NODE_ARRAY &&
        json_array_get_length(json_node_get_array(enable)) > 0) {
        JsonNode *cap = json_array_get_element(json_node_get_array(enable), 0);
        qmp_error(err, "GenericError", "Capability '%s' not available",
                  JSON_NODE_TYPE(cap) == JSON_NODE_VALUE &&
                  json_node_get_value_type(cap) == G_TYPE_STRING ?
                  json_node_get_string(cap) : "?");
        return NULL;
    }
    s->negotiated = true;
    return NULL;
}

static void version_numbers(int *major, int *minor, int *micro)
{
    *major = *minor = *micro = 0;
    sscanf(PACKAGE_VERSION, "%d.%d.%d", major, minor, micro);
}

static void build_version(JsonBuilder *b)
{
    int major, minor, micro;

    version_numbers(&major, &minor, &micro);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "qemu");
    json_builder_begin_object(b);
    add_int(b, "micro", micro);
    add_int(b, "minor", minor);
    add_int(b, "major", major);
    json_builder_end_object(b);
    add_str(b, "package", "keel-vmm " PACKAGE_VERSION);
    json_builder_end_object(b);
}

static JsonNode *cmd_query_version(QmpSession *s, JsonObject *args, QmpError *err)
{
    JsonBuilder *b;

    (void)s;
    if (!check_args(args, NULL, err)) {
        return NULL;
    }
    b = json_builder_new();
    build_version(b);
    return finish(b);
}

static JsonNode *cmd_query_status(QmpSession *s, JsonObject *args, QmpError *err)
{
    JsonBuilder *b;

    if (!check_args(args, NULL, err)) {
        return NULL;
    }
    b = json_builder_new();
    json_builder_begin_object(b);
    add_str(b, "status", vmm_run_state_name(vmm_machine_state(s->m)));
    add_bool(b, "singlestep", false);
    add_bool(b, "running", vmm_machine_running(s->m));
    json_builder_end_object(b);
    return finish(b);
}

static JsonNode *cmd_query_name(QmpSession *s, JsonObject *args, QmpError *err)
{
    JsonBuilder *b;

    if (!check_args(args, NULL, err)) {
        return NULL;
    }
    b = json_builder_new();
    json_builder_begin_object(b);
    if (vmm_machine_name(s->m)) {
        add_str(b, "name", vmm_machine_name(s->m));
    }
    json_builder_end_object(b);
    return finish(b);
}

static JsonNode *cmd_query_commands(QmpSession *s, JsonObject *args, QmpError *err);

static JsonNode *cmd_query_cpus_fast(QmpSession *s, JsonObject *args, QmpError *err)
{
    VmmCpuInfo cpus[VMM_MACHINE_MAX_INFO];
    int n = vmm_machine_query_cpus(s->m, cpus, VMM_MACHINE_MAX_INFO);
    JsonBuilder *b;

    if (!check_args(args, NULL, err)) {
        return NULL;
    }
    b = json_builder_new();
    json_builder_begin_array(b);
    for (int i = 0; i < n; i++) {
        char qom[64];
        snprintf(qom, sizeof(qom), "/machine/unattached/device[%d]", cpus[i].index);
        json_builder_begin_object(b);
        add_int(b, "thread-id", cpus[i].thread_id);
        json_builder_set_member_name(b, "props");
        json_builder_begin_object(b);
        add_int(b, "core-id", cpus[i].core_id);
        add_int(b, "thread-id", cpus[i].thread_in_core);
        add_int(b, "socket-id", cpus[i].socket_id);
        json_builder_end_object(b);
        add_str(b, "qom-path", qom);
        add_int(b, "cpu-index", cpus[i].index);
        add_str(b, "target", "x86_64");
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    return finish(b);
}

static JsonNode *cmd_query_iothreads(QmpSession *s, JsonObject *args, QmpError *err)
{
    VmmIOThreadInfo it[VMM_MACHINE_MAX_INFO];
    int n = vmm_machine_query_iothreads(s->m, it, VMM_MACHINE_MAX_INFO);
    JsonBuilder *b;

    if (!check_args(args, NULL, err)) {
        return NULL;
    }
    b = json_builder_new();
    json_builder_begin_array(b);
    for (int i = 0; i < n; i++) {
        json_builder_begin_object(b);
        add_str(b, "id", it[i].id);
        add_int(b, "thread-id", it[i].thread_id);
        add_int(b, "poll-max-ns", it[i].poll_max_ns);
        add_int(b, "poll-grow", it[i].poll_grow);
        add_int(b, "poll-shrink", it[i].poll_shrink);
        add_int(b, "aio-max-batch", 0);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    return finish(b);
}

static int query_block(QmpSession *s, VmmBlockInfo *info)
{
    void *opaque;
    const VmmMachineOps *ops = vmm_machine_ops(s->m, &opaque);

    return ops->query_block ? ops->query_block(opaque, info, VMM_MACHINE_MAX_INFO) : 0;
}

static JsonNode *cmd_query_block(QmpSession *s, JsonObject *args, QmpError *err)
{
    VmmBlockInfo info[VMM_MACHINE_MAX_INFO];
    int n;
    JsonBuilder *b;

    if (!check_args(args, NULL, err)) {
        return NULL;
    }
    n = query_block(s, info);
    b = json_builder_new();
    json_builder_begin_array(b);
    for (int i = 0; i < n; i++) {
        VmmBlockInfo *d = &info[i];
        bool direct = !strcmp(d->cache, "none") || !strcmp(d->cache, "directsync");

        json_builder_begin_object(b);
        add_str(b, "io-status", d->io_status);
        add_str(b, "device", d->device);
        add_bool(b, "locked", false);
        add_bool(b, "removable", false);
        add_str(b, "qdev", d->qdev);
        add_str(b, "type", "unknown");
        json_builder_set_member_name(b, "inserted");
        json_builder_begin_object(b);
        add_str(b, "file", d->file);
        add_str(b, "node-name", d->device);
        add_bool(b, "ro", d->readonly);
        add_str(b, "drv", "raw");
        add_bool(b, "encrypted", false);
        add_str(b, "detect_zeroes", "off");
        add_int(b, "backing_file_depth", 0);
        add_int(b, "write_threshold", 0);
        add_int(b, "bps", 0);
        add_int(b, "bps_rd", 0);
        add_int(b, "bps_wr", 0);
        add_int(b, "iops", 0);
        add_int(b, "iops_rd", 0);
        add_int(b, "iops_wr", 0);
        json_builder_set_member_name(b, "cache");
        json_builder_begin_object(b);
        add_bool(b, "no-flush", !strcmp(d->cache, "unsafe"));
        add_bool(b, "direct", direct);
        add_bool(b, "writeback", strcmp(d->cache, "directsync") != 0);
        json_builder_end_object(b);
        json_builder_set_member_name(b, "image");
        json_builder_begin_object(b);
        add_int(b, "virtual-size", (int64_t)d->size);
        add_str(b, "filename", d->file);
        add_str(b, "format", "raw");
        json_builder_end_object(b);
        json_builder_end_object(b);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    return finish(b);
}

static JsonNode *cmd_query_blockstats(QmpSession *s, JsonObject *args, QmpError *err)
{
    static const char *const allowed[] = { "query-nodes", NULL };
    VmmBlockInfo info[VMM_MACHINE_MAX_INFO];
    int n;
    JsonBuilder *b;

    if (!check_args(args, allowed, err)) {
        return NULL;
    }
    n = query_block(s, info);
    b = json_builder_new();
    json_builder_begin_array(b);
    for (int i = 0; i < n; i++) {
        VmmBlockInfo *d = &info[i];

        json_builder_begin_object(b);
        add_str(b, "device", d->device);
        add_str(b, "node-name", d->device);
        add_str(b, "qdev", d->qdev);
        json_builder_set_member_name(b, "stats");
        json_builder_begin_object(b);
        add_int(b, "rd_bytes", (int64_t)d->rd_bytes);
        add_int(b, "wr_bytes", (int64_t)d->wr_bytes);
        add_int(b, "rd_operations", (int64_t)d->rd_operations);
        add_int(b, "wr_operations", (int64_t)d->wr_operations);
        add_int(b, "flush_operations", (int64_t)d->flush_operations);
        add_int(b, "rd_total_time_ns", (int64_t)d->rd_total_time_ns);
        add_int(b, "wr_total_time_ns", (int64_t)d->wr_total_time_ns);
        add_int(b, "flush_total_time_ns", (int64_t)d->flush_total_time_ns);
        add_int(b, "failed_rd_operations", (int64_t)d->failed_rd_operations);
        add_int(b, "failed_wr_operations", (int64_t)d->failed_wr_operations);
        add_int(b, "failed_flush_operations", (int64_t)d->failed_flush_operations);
        add_bool(b, "account_invalid", false);
        add_bool(b, "account_failed", true);
        json_builder_set_member_name(b, "timed_stats");
        json_builder_begin_array(b);
        json_builder_end_array(b);
        json_builder_end_object(b);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    return finish(b);
}

static JsonNode *cmd_stop(QmpSession *s, JsonObject *args, QmpError *err)
{
    if (check_args(args, NULL, err)) {
        vmm_machine_stop(s->m, VMM_RUN_PAUSED);
    }
    return NULL;
}

static JsonNode *cmd_cont(QmpSession *s, JsonObject *args, QmpError *err)
{
    char msg[256];

    if (check_args(args, NULL, err) && vmm_machine_cont(s->m, msg, sizeof(msg)) < 0) {
        qmp_error(err, "GenericError", "%s", msg);
    }
    return NULL;
}

/* system_reset and quit, shared with HMP. */
static void machine_system_reset(VmmMachine *m)
{
    void *opaque;
    const VmmMachineOps *ops = vmm_machine_ops(m, &opaque);

    if (!ops->reset || ops->reset(opaque)) {
        vmm_machine_emit(m, "RESET", "{\"guest\": false, \"reason\": \"host-qmp-system-reset\"}");
    } else if (vmm_machine_shutdown(m, false, "host-qmp-system-reset")) {
        /* No reboot in keel-vmm (QEMU's -no-reboot): the reset ends it. */
        vmm_machine_request_quit(m, NULL);
    }
}

static void machine_quit(VmmMachine *m)
{
    vmm_machine_request_quit(m, "host-qmp-quit");
}

static JsonNode *cmd_system_reset(QmpSession *s, JsonObject *args, QmpError *err)
{
    if (check_args(args, NULL, err)) {
        machine_system_reset(s->m);
    }
    return NULL;
}

static JsonNode *cmd_quit(QmpSession *s, JsonObject *args, QmpError *err)
{
    if (check_args(args, NULL, err)) {
        machine_quit(s->m);
    }
    return NULL;
}

static JsonNode *cmd_block_resize(QmpSession *s, JsonObject *args, QmpError *err)
{
    static const char *const allowed[] = { "device", "node-name", "size", NULL };
    JsonNode *size = args ? json_object_get_member(args, "size") : NULL;
    const char *device = NULL;
    void *opaque;
    const VmmMachineOps *ops = vmm_machine_ops(s->m, &opaque);
    char msg[256];

    if (!check_args(args, allowed, err)) {
        return NULL;
    }
    if (args && json_object_has_member(args, "device")) {
        device = string_arg(args, "device", err);
    } else if (args && json_object_has_member(args, "node-name")) {
        device = string_arg(args, "node-name", err);
    } else {
        qmp_error(err, "GenericError", "Need exactly one of 'device' and 'node-name'");
    }
    if (err->cls) {
        return NULL;
    }
    if (!size) {
        qmp_error(err, "GenericError", "Parameter 'size' is missing");
        return NULL;
    }
    if (JSON_NODE_TYPE(size) != JSON_NODE_VALUE || json_node_get_value_type(size) != G_TYPE_INT64) {
        qmp_error(err, "GenericError", "Invalid parameter type for 'size', expected: integer");
        return NULL;
    }
    if (json_node_get_int(size) < 0) {
        qmp_error(err, "GenericError", "Parameter 'size' expects a >0 size");
        return NULL;
    }
    if (!ops->block_resize) {
        qmp_error(err, "GenericError", "Cannot find device='%s' nor node-name='%s'", device,
                  device);
        return NULL;
    }
    if (ops->block_resize(opaque, device, (uint64_t)json_node_get_int(size), msg,
                          sizeof(msg)) < 0) {
        qmp_error(err, "GenericError", "%s", msg);
    }
    return NULL;
}

static JsonNode *cmd_human_monitor_command(QmpSession *s, JsonObject *args, QmpError *err)
{
    static const char *const allowed[] = { "command-line", "cpu-index", NULL };
    const char *line;
    char *out;
    JsonNode *n;

    if (!check_args(args, allowed, err) || !(line = string_arg(args, "command-line", err))) {
        return NULL;
    }
    out = hmp_execute(s->m, line);
    n = json_node_new(JSON_NODE_VALUE);
    json_node_set_string(n, out);
    g_free(out);
    return n;
}

static const struct {
    const char *name;
    QmpCommandFn *fn;
} commands[] = {
    { "qmp_capabilities", cmd_qmp_capabilities },
    { "query-version", cmd_query_version },
    { "query-status", cmd_query_status },
    { "query-name", cmd_query_name },
    { "query-commands", cmd_query_commands },
    { "query-cpus-fast", cmd_query_cpus_fast },
    { "query-iothreads", cmd_query_iothreads },
    { "query-block", cmd_query_block },
    { "query-blockstats", cmd_query_blockstats },
    { "stop", cmd_stop },
    { "cont", cmd_cont },
    { "system_reset", cmd_system_reset },
    { "quit", cmd_quit },
    { "block_resize", cmd_block_resize },
    { "human-monitor-command", cmd_human_monitor_command },
};

static JsonNode *cmd_query_commands(QmpSession *s, JsonObject *args, QmpError *err)
{
    JsonBuilder *b;

    (void)s;
    if (!check_args(args, NULL, err)) {
        return NULL;
    }
    b = json_builder_new();
    json_builder_begin_array(b);
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
        json_builder_begin_object(b);
        add_str(b, "name", commands[i].name);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    return finish(b);
}

/* ---- one request --------------------------------------------------------------------- */

static void session_dispatch(QmpSession *s, JsonNode *root)
{
    QmpError err = { NULL, NULL };
    JsonObject *req;
    JsonNode *exec, *args = NULL, *id = NULL, *ret = NULL;
    GList *members;
    const char *name;
    QmpCommandFn *fn = NULL;

    if (JSON_NODE_TYPE(root) != JSON_NODE_OBJECT) {
        qmp_error(&err, "GenericError", "QMP input must be a JSON object");
        session_reply(s, NULL, NULL, &err);
        return;
    }
    req = json_node_get_object(root);
    id = json_object_get_member(req, "id");
    members = json_object_get_members(req);
    for (GList *l = members; l; l = l->next) {
        if (strcmp(l->data, "execute") && strcmp(l->data, "arguments") && strcmp(l->data, "id")) {
            qmp_error(&err, "GenericError", "QMP input member '%s' is unexpected",
                      (char *)l->data);
            break;
        }
    }
    g_list_free(members);
    if (err.cls) {
        session_reply(s, id, NULL, &err);
        return;
    }
    exec = json_object_get_member(req, "execute");
    if (!exec) {
        qmp_error(&err, "GenericError", "QMP input lacks member 'execute'");
        session_reply(s, id, NULL, &err);
        return;
    }
    if (JSON_NODE_TYPE(exec) != JSON_NODE_VALUE || json_node_get_value_type(exec) != G_TYPE_STRING) {
        qmp_error(&err, "GenericError", "QMP input member 'execute' must be a string");
        session_reply(s, id, NULL, &err);
        return;
    }
    args = json_object_get_member(req, "arguments");
    if (args && JSON_NODE_TYPE(args) != JSON_NODE_OBJECT) {
        qmp_error(&err, "GenericError", "QMP input member 'arguments' must be an object");
        session_reply(s, id, NULL, &err);
        return;
    }
    name = json_node_get_string(exec);
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
        if (!strcmp(commands[i].name, name)) {
            fn = commands[i].fn;
        }
    }
    if (!s->negotiated && fn != cmd_qmp_capabilities) {
        qmp_error(&err, "CommandNotFound",
                  "Expecting capabilities negotiation with 'qmp_capabilities'");
    } else if (s->negotiated && fn == cmd_qmp_capabilities) {
        qmp_error(&err, "CommandNotFound",
                  "Capabilities negotiation is already complete, command ignored");
    } else if (!fn) {
        qmp_error(&err, "CommandNotFound", "The command %s has not been found", name);
    } else {
        ret = fn(s, args ? json_node_get_object(args) : NULL, &err);
    }
    if (!err.cls && !ret) {
        ret = empty_object();
    }
    session_reply(s, id, ret, &err);
}

static void session_parse(QmpSession *s, const char *text, size_t len)
{
    JsonParser *parser = json_parser_new();
    GError *gerr = NULL;
    QmpError err = { NULL, NULL };

    if (!json_parser_load_from_data(parser, text, (gssize)len, &gerr)) {
        qmp_error(&err, "GenericError", "JSON parse error, %s", gerr->message);
        session_reply(s, NULL, NULL, &err);
        g_error_free(gerr);
    } else if (!json_parser_get_root(parser)) {
        /* only whitespace: nothing to answer */
    } else {
        session_dispatch(s, json_parser_get_root(parser));
    }
    g_object_unref(parser);
}

/* ---- framing ------------------------------------------------------------------------- */

static void framing_reset(QmpSession *s)
{
    g_string_truncate(s->buf, 0);
    s->depth = 0;
    s->in_string = s->escape = false;
    s->skipping = false;
}

void qmp_session_feed(QmpSession *s, const uint8_t *data, size_t len)
{
    for (size_t i = 0; i < len && s->open; i++) {
        char c = (char)data[i];

        if (s->skipping) {
            if (c == '\n') {
                framing_reset(s);
            }
            continue;
        }
        if (s->depth == 0) {
            /* Between requests: skip blanks; an object or array starts a
             * request; anything else is collected up to a newline and
             * answered with the parser's error. */
            if (c == '{' || c == '[') {
                if (s->buf->len) {
                    session_parse(s, s->buf->str, s->buf->len);
                    g_string_truncate(s->buf, 0);
                }
                s->depth = 1;
                g_string_append_c(s->buf, c);
            } else if (c == '\n') {
                if (s->buf->len) {
                    session_parse(s, s->buf->str, s->buf->len);
                    g_string_truncate(s->buf, 0);
                }
            } else if (c == ' ' || c == '\t' || c == '\r') {
                continue;
            } else {
                g_string_append_c(s->buf, c);
            }
        } else {
            g_string_append_c(s->buf, c);
            if (s->in_string) {
                if (s->escape) {
                    s->escape = false;
                } else if (c == '\\') {
                    s->escape = true;
                } else if (c == '"') {
                    s->in_string = false;
                }
            } else if (c == '"') {
                s->in_string = true;
            } else if (c == '{' || c == '[') {
                s->depth++;
            } else if (c == '}' || c == ']') {
                if (--s->depth == 0) {
                    GString *req = s->buf;
                    /* Dispatch may close the session (quit): keep the text. */
                    s->buf = g_string_new(NULL);
                    session_parse(s, req->str, req->len);
                    g_string_free(req, TRUE);
                    continue;
                }
            }
        }
        if (s->buf->len > QMP_MAX_REQUEST) {
            QmpError err = { NULL, NULL };
            qmp_error(&err, "GenericError",
                      "JSON parse error, request longer than %u bytes", QMP_MAX_REQUEST);
            session_reply(s, NULL, NULL, &err);
            framing_reset(s);
            s->skipping = c != '\n';
        }
    }
}

/* ---- sessions and events ------------------------------------------------------------- */

static void session_event(void *opaque, const char *name, const char *data_json)
{
    QmpSession *s = opaque;
    JsonParser *parser;
    JsonBuilder *b;
    JsonNode *root;
    gint64 now = g_get_real_time();

    if (!s->open || !s->negotiated) {
        return;     /* QEMU sends events only after negotiation */
    }
    b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "timestamp");
    json_builder_begin_object(b);
    add_int(b, "seconds", now / G_USEC_PER_SEC);
    add_int(b, "microseconds", now % G_USEC_PER_SEC);
    json_builder_end_object(b);
    add_str(b, "event", name);
    parser = json_parser_new();
    if (strcmp(data_json, "{}") != 0 &&
        json_parser_load_from_data(parser, data_json, -1, NULL) && json_parser_get_root(parser)) {
        json_builder_set_member_name(b, "data");
        json_builder_add_value(b, json_node_copy(json_parser_get_root(parser)));
    }
    g_object_unref(parser);
    json_builder_end_object(b);
    root = json_builder_get_root(b);
    session_send(s, root);
    json_node_free(root);
    g_object_unref(b);
}

QmpSession *qmp_session_new(VmmMachine *m, QmpOutputFn *out, void *opaque, bool pretty)
{
    QmpSession *s = g_new0(QmpSession, 1);

    s->m = m;
    s->out = out;
    s->out_opaque = opaque;
    s->pretty = pretty;
    s->buf = g_string_new(NULL);
    vmm_machine_add_listener(m, session_event, s);
    return s;
}

void qmp_session_free(QmpSession *s)
{
    if (!s) {
        return;
    }
    vmm_machine_remove_listener(s->m, session_event, s);
    g_string_free(s->buf, TRUE);
    g_free(s);
}

void qmp_session_open(QmpSession *s)
{
    JsonBuilder *b = json_builder_new();
    JsonNode *root;

    framing_reset(s);
    s->open = true;
    s->negotiated = false;
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "QMP");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "version");
    build_version(b);
    json_builder_set_member_name(b, "capabilities");
    json_builder_begin_array(b);
    json_builder_end_array(b);
    json_builder_end_object(b);
    json_builder_end_object(b);
    root = json_builder_get_root(b);
    session_send(s, root);
    json_node_free(root);
    g_object_unref(b);
}

void qmp_session_close(QmpSession *s)
{
    framing_reset(s);
    s->open = false;
    s->negotiated = false;
}

/* ---- HMP ----------------------------------------------------------------------------- */

char *hmp_execute(VmmMachine *m, const char *line)
{
    char *copy = g_strstrip(g_strdup(line));
    char **argv = g_strsplit_set(copy, " \t", -1);
    GString *out = g_string_new(NULL);
    const char *cmd, *arg;
    char msg[256];

    /* g_strsplit_set gives empty strings for repeated blanks: skip them. */
    int argc = 0;
    for (int i = 0; argv[i]; i++) {
        if (*argv[i]) {
            argv[argc++] = argv[i];
        } else {
            g_free(argv[i]);
        }
    }
    argv[argc] = NULL;
    cmd = argc ? argv[0] : "";
    arg = argc > 1 ? argv[1] : "";

    if (!*cmd) {
        /* an empty line does nothing */
    } else if (!strcmp(cmd, "info") && !strcmp(arg, "status")) {
        VmmRunState st = vmm_machine_state(m);
        if (st == VMM_RUN_RUNNING) {
            g_string_append(out, "VM status: running\r\n");
        } else if (st == VMM_RUN_PAUSED) {
            g_string_append(out, "VM status: paused\r\n");
        } else {
            g_string_append_printf(out, "VM status: paused (%s)\r\n", vmm_run_state_name(st));
        }
    } else if (!strcmp(cmd, "info") && !strcmp(arg, "name")) {
        if (vmm_machine_name(m)) {
            g_string_append_printf(out, "%s\r\n", vmm_machine_name(m));
        }
    } else if (!strcmp(cmd, "info") && !strcmp(arg, "version")) {
        g_string_append(out, PACKAGE_VERSION " (keel-vmm)\r\n");
    } else if (!strcmp(cmd, "stop")) {
        vmm_machine_stop(m, VMM_RUN_PAUSED);
    } else if (!strcmp(cmd, "cont") || !strcmp(cmd, "c")) {
        if (vmm_machine_cont(m, msg, sizeof(msg)) < 0) {
            g_string_append_printf(out, "Error: %s\r\n", msg);
        }
    } else if (!strcmp(cmd, "system_reset")) {
        machine_system_reset(m);
    } else if (!strcmp(cmd, "quit") || !strcmp(cmd, "q")) {
        machine_quit(m);
    } else if (!strcmp(cmd, "help") || !strcmp(cmd, "?")) {
        g_string_append(out,
                        "cont|c -- resume emulation\r\n"
                        "help|? -- show this help\r\n"
                        "info status -- show the current VM status\r\n"
                        "info name -- show the current VM name\r\n"
                        "info version -- show the version\r\n"
                        "quit|q -- quit keel-vmm\r\n"
                        "stop -- stop emulation\r\n"
                        "system_reset -- reset the system (keel-vmm: ends it, as -no-reboot)\r\n");
    } else if (!strcmp(cmd, "info")) {
        g_string_append(out, "info: expected status, name or version\r\n");
    } else {
        g_string_append_printf(out, "unknown command: '%s'\r\n", cmd);
    }
    g_free(copy);
    g_strfreev(argv);
    return g_string_free(out, FALSE);
}

/* ---- monitors on chardevs ------------------------------------------------------------ */

#define HMP_LINE_MAX 1024

struct QmpMonitor {
    VmmMachine *m;
    CharFe *fe;
    bool control;
    QmpSession *qmp;        /* control */
    GString *line;          /* HMP: the line being typed */
    bool open_pending;      /* OPENED came while chardev_attach ran */
};

static void monitor_output(void *opaque, const char *text, size_t len)
{
    QmpMonitor *mon = opaque;

    char_fe_write(mon->fe, text, len);
}

static void hmp_prompt(QmpMonitor *mon)
{
    char_fe_write(mon->fe, "(keel) ", 7);
}

static void hmp_receive(QmpMonitor *mon, const uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        uint8_t c = buf[i];

        if (c == '\r' || c == '\n') {
            char *out;
            char_fe_write(mon->fe, "\r\n", 2);
            out = hmp_execute(mon->m, mon->line->str);
            char_fe_write(mon->fe, out, strlen(out));
            g_free(out);
            g_string_truncate(mon->line, 0);
            hmp_prompt(mon);
        } else if (c == 0x7f || c == 0x08) {
            if (mon->line->len) {
                g_string_truncate(mon->line, mon->line->len - 1);
                char_fe_write(mon->fe, "\b \b", 3);
            }
        } else if (c >= 0x20 && c < 0x7f && mon->line->len < HMP_LINE_MAX) {
            g_string_append_c(mon->line, (char)c);
            char_fe_write(mon->fe, &c, 1);     /* echo: the terminal is raw */
        }
    }
}

static void monitor_receive(void *opaque, const uint8_t *buf, size_t len)
{
    QmpMonitor *mon = opaque;

    if (mon->control) {
        qmp_session_feed(mon->qmp, buf, len);
    } else {
        hmp_receive(mon, buf, len);
    }
}

static void monitor_event(void *opaque, ChardevEvent ev)
{
    QmpMonitor *mon = opaque;

    if (!mon->fe) {
        mon->open_pending = ev == CHR_EVENT_OPENED;   /* greet once attached */
        return;
    }
    switch (ev) {
    case CHR_EVENT_OPENED:
        if (mon->control) {
            qmp_session_open(mon->qmp);
        } else if (mon->line) {
            g_string_truncate(mon->line, 0);
        }
        break;
    case CHR_EVENT_CLOSED:
        if (mon->control) {
            qmp_session_close(mon->qmp);
        }
        break;
    case CHR_EVENT_FOCUS:
        if (!mon->control) {
            char_fe_printf(mon->fe, "\r\nkeel-vmm monitor - type 'help' for more information\r\n");
            hmp_prompt(mon);
        } else {
            qmp_session_open(mon->qmp);
        }
        break;
    }
}

static const ChardevFrontendOps monitor_ops = {
    .can_receive = NULL,
    .receive = monitor_receive,
    .event = monitor_event,
};

QmpMonitor *monitor_new(VmmMachine *m, Chardev *chr, bool control, bool pretty, char *err,
                        size_t errlen)
{
    QmpMonitor *mon = g_new0(QmpMonitor, 1);

    mon->m = m;
    mon->control = control;
    if (control) {
        mon->qmp = qmp_session_new(m, monitor_output, mon, pretty);
    } else {
        mon->line = g_string_new(NULL);
    }
    mon->fe = chardev_attach(chr, &monitor_ops, mon, err, errlen);
    if (!mon->fe) {
        monitor_free(mon);
        return NULL;
    }
    if (mon->open_pending) {
        monitor_event(mon, CHR_EVENT_OPENED);
    }
    return mon;
}

void monitor_free(QmpMonitor *mon)
{
    if (!mon) {
        return;
    }
    qmp_session_free(mon->qmp);
    if (mon->line) {
        g_string_free(mon->line, TRUE);
    }
    g_free(mon);
}
