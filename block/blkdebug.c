/*
 * Error injection rules (syntax: block/blkdebug.h).
 */
#include "config.h"

#include "block/blkdebug.h"
#include "compat/osdep.h"

#include <ctype.h>
#include <errno.h>
#include <glib.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef enum BlkdebugEvent {
    EV_READ,
    EV_WRITE,
    EV_FLUSH,
    EV_DISCARD,
    EV_ZEROES,
    EV_ANY,
} BlkdebugEvent;

typedef struct BlkdebugRule {
    BlkdebugEvent event;
    int err;                    /* positive errno, 0 = none */
    int64_t delay_ns;
    bool has_range;
    int64_t start, end;         /* [start, end) */
    uint64_t req;               /* 0 = any request */
    bool once;
    bool spent;
} BlkdebugRule;

/* Requests of several threads check the rules at once (multiqueue), and
 * keel_blk_inject adds rules while they do: the array and the rules'
 * "spent" flags are only touched under @lock.  @nrules mirrors the array's
 * length so that a backend without rules checks nothing and takes no lock. */
struct Blkdebug {
    pthread_mutex_t lock;
    GPtrArray *rules;           /* BlkdebugRule *, under lock */
    unsigned nrules;            /* atomic: written under lock, read without */
};

static const struct {
    const char *name;
    int value;
} errno_names[] = {
    { "EIO", EIO }, { "ENOSPC", ENOSPC }, { "EROFS", EROFS }, { "EPERM", EPERM },
    { "EACCES", EACCES }, { "EINVAL", EINVAL }, { "ENOMEM", ENOMEM },
    { "EDQUOT", EDQUOT }, { "EFBIG", EFBIG }, { "ENOTSUP", ENOTSUP },
    { "EOPNOTSUPP", EOPNOTSUPP }, { "ENXIO", ENXIO }, { "ENODEV", ENODEV },
    { "ETIMEDOUT", ETIMEDOUT }, { "ECANCELED", ECANCELED }, { "EAGAIN", EAGAIN },
    { "EBUSY", EBUSY }, { "EINTR", EINTR }, { "EBADF", EBADF }, { "ENOMEDIUM", ENOMEDIUM },
    { "EMEDIUMTYPE", EMEDIUMTYPE }, { "ESTALE", ESTALE }, { "EREMOTEIO", EREMOTEIO },
};

static bool parse_u64(const char *s, uint64_t *out, bool suffixes)
{
    char *end;
    uint64_t mult = 1;

    if (!isdigit((unsigned char)*s)) {
        return false;
    }
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s) {
        return false;
    }
    if (suffixes && *end) {
        switch (tolower((unsigned char)*end)) {
        case 'k': mult = 1ULL << 10; break;
        case 'm': mult = 1ULL << 20; break;
        case 'g': mult = 1ULL << 30; break;
        case 't': mult = 1ULL << 40; break;
        default: return false;
        }
        end++;
    }
    if (*end || (mult > 1 && v > UINT64_MAX / mult)) {
        return false;
    }
    *out = v * mult;
    return true;
}

static bool parse_errno(const char *s, int *err)
{
    uint64_t v;

    for (size_t i = 0; i < G_N_ELEMENTS(errno_names); i++) {
        if (!g_ascii_strcasecmp(s, errno_names[i].name)) {
            *err = errno_names[i].value;
            return true;
        }
    }
    if (parse_u64(s, &v, false) && v > 0 && v < 4096) {
        *err = (int)v;
        return true;
    }
    return false;
}

static bool parse_event(const char *s, BlkdebugEvent *ev)
{
    static const char *const names[] = {
        [EV_READ] = "read", [EV_WRITE] = "write", [EV_FLUSH] = "flush",
        [EV_DISCARD] = "discard", [EV_ZEROES] = "zeroes", [EV_ANY] = "any",
    };
    for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
        if (!strcmp(s, names[i])) {
            *ev = (BlkdebugEvent)i;
            return true;
        }
    }
    return false;
}

static int parse_rule(const char *text, BlkdebugRule *rule, char **errmsg)
{
    gchar **items = g_strsplit(text, ":", -1);
    int ret = -1;
    bool have_event = false, have_delay = false;

    memset(rule, 0, sizeof(*rule));
    for (int i = 0; items[i]; i++) {
        char *item = g_strstrip(items[i]);
        char *value = strchr(item, '=');
        uint64_t v;

        if (value) {
            *value++ = '\0';
        }
        if (!*item) {
            *errmsg = g_strdup_printf("inject rule '%s': empty item", text);
            goto out;
        }
        if (!have_event) {
            const char *ev = item;
            if (value && !strcmp(item, "event")) {
                ev = value;
            } else if (value) {
                ev = "";
            }
            if (!parse_event(ev, &rule->event)) {
                *errmsg = g_strdup_printf("inject rule '%s': must start with read, write, "
                                          "flush, discard, zeroes or any", text);
                goto out;
            }
            have_event = true;
            continue;
        }
        if (!value) {
            if (!strcmp(item, "once")) {
                rule->once = true;
            } else if (parse_errno(item, &rule->err)) {
                /* done */
            } else {
                *errmsg = g_strdup_printf("inject rule '%s': unknown item '%s' "
                                          "(an errno like EIO, delay=MS, offset=A-B, "
                                          "sector=N, req=N or once)", text, item);
                goto out;
            }
        } else if (!strcmp(item, "errno")) {
            if (!parse_errno(value, &rule->err)) {
                *errmsg = g_strdup_printf("inject rule '%s': unknown errno '%s'", text, value);
                goto out;
            }
        } else if (!strcmp(item, "delay") || !strcmp(item, "delay_ms")) {
            if (!parse_u64(value, &v, false) || v > 3600 * 1000) {
                *errmsg = g_strdup_printf("inject rule '%s': bad delay '%s' (milliseconds)",
                                          text, value);
                goto out;
            }
            rule->delay_ns = (int64_t)v * 1000000;
            have_delay = true;
        } else if (!strcmp(item, "offset")) {
            char *dash = strchr(value, '-');
            uint64_t start, end;
            if (dash) {
                *dash = '\0';
            }
            if (!parse_u64(value, &start, true) || start > INT64_MAX ||
                (dash && (!parse_u64(dash + 1, &end, true) || end > INT64_MAX || end <= start))) {
                *errmsg = g_strdup_printf("inject rule '%s': bad offset range "
                                          "(START or START-END, END > START)", text);
                goto out;
            }
            rule->has_range = true;
            rule->start = (int64_t)start;
            rule->end = dash ? (int64_t)end : (int64_t)start + 1;
        } else if (!strcmp(item, "sector")) {
            if (!parse_u64(value, &v, false) || v > (uint64_t)INT64_MAX / 512 - 1) {
                *errmsg = g_strdup_printf("inject rule '%s': bad sector '%s'", text, value);
                goto out;
            }
            rule->has_range = true;
            rule->start = (int64_t)v * 512;
            rule->end = rule->start + 512;
        } else if (!strcmp(item, "req")) {
            if (!parse_u64(value, &v, false) || v == 0) {
                *errmsg = g_strdup_printf("inject rule '%s': bad req '%s' (1-based)", text, value);
                goto out;
            }
            rule->req = v;
        } else if (!strcmp(item, "once")) {
            if (strcmp(value, "on") && strcmp(value, "off")) {
                *errmsg = g_strdup_printf("inject rule '%s': once=on or once=off", text);
                goto out;
            }
            rule->once = !strcmp(value, "on");
        } else {
            *errmsg = g_strdup_printf("inject rule '%s': unknown key '%s'", text, item);
            goto out;
        }
    }
    if (!have_event) {
        *errmsg = g_strdup_printf("inject rule '%s' is empty", text);
        goto out;
    }
    if (!rule->err && !have_delay) {
        *errmsg = g_strdup_printf("inject rule '%s' has neither an errno nor a delay", text);
        goto out;
    }
    ret = 0;
out:
    g_strfreev(items);
    return ret;
}

int blkdebug_add_rules(Blkdebug **dbg, const char *rules, char **errmsg)
{
    gchar **parts = g_strsplit(rules, ";", -1);
    GPtrArray *parsed = g_ptr_array_new_with_free_func(g_free);
    int ret = 0;

    for (int i = 0; parts[i]; i++) {
        BlkdebugRule rule;
        if (!*g_strstrip(parts[i])) {
            continue;
        }
        if (parse_rule(parts[i], &rule, errmsg) < 0) {
            ret = -1;
            break;
        }
        BlkdebugRule *copy = g_new(BlkdebugRule, 1);
        *copy = rule;
        g_ptr_array_add(parsed, copy);
    }
    g_strfreev(parts);
    if (ret == 0 && parsed->len) {
        if (!*dbg) {
            *dbg = blkdebug_new();
        }
        pthread_mutex_lock(&(*dbg)->lock);
        for (guint i = 0; i < parsed->len; i++) {
            g_ptr_array_add((*dbg)->rules, parsed->pdata[i]);
            parsed->pdata[i] = NULL;
        }
        /* Release: a request that sees the new count and takes the lock
         * finds the rules (the lock orders that anyway; the count only
         * decides whether to look). */
        keel_atomic_store_release(&(*dbg)->nrules, (*dbg)->rules->len);
        pthread_mutex_unlock(&(*dbg)->lock);
    }
    g_ptr_array_free(parsed, TRUE);
    return ret;
}

Blkdebug *blkdebug_new(void)
{
    Blkdebug *dbg = g_new0(Blkdebug, 1);

    pthread_mutex_init(&dbg->lock, NULL);
    dbg->rules = g_ptr_array_new_with_free_func(g_free);
    return dbg;
}

void blkdebug_free(Blkdebug *dbg)
{
    if (dbg) {
        g_ptr_array_free(dbg->rules, TRUE);
        pthread_mutex_destroy(&dbg->lock);
        g_free(dbg);
    }
}

static bool rule_matches(const BlkdebugRule *r, BlockOp op, int64_t offset, int64_t bytes,
                         uint64_t req_no)
{
    static const BlkdebugEvent op_event[] = {
        [BLOCK_OP_READ] = EV_READ, [BLOCK_OP_WRITE] = EV_WRITE, [BLOCK_OP_FLUSH] = EV_FLUSH,
        [BLOCK_OP_DISCARD] = EV_DISCARD, [BLOCK_OP_WRITE_ZEROES] = EV_ZEROES,
    };

    if (r->spent || (r->event != EV_ANY && r->event != op_event[op])) {
        return false;
    }
    if (r->req && r->req != req_no) {
        return false;
    }
    if (r->has_range) {
        int64_t end = offset + (bytes ? bytes : 1);
        if (op == BLOCK_OP_FLUSH || end <= r->start || offset >= r->end) {
            return false;
        }
    }
    return true;
}

int blkdebug_co_check(Blkdebug *dbg, BlockOp op, int64_t offset, int64_t bytes,
                      uint64_t req_no)
{
    int64_t delay_ns = 0;
    int err = 0;

    if (!dbg || !keel_atomic_load_acquire(&dbg->nrules)) {
        return 0;
    }
    /* Decide under the lock (a "once" rule is spent by exactly one
     * request), sleep after dropping it: the delays of the matching rules
     * up to the first errno add up, as if applied one after another. */
    pthread_mutex_lock(&dbg->lock);
    for (guint i = 0; i < dbg->rules->len && !err; i++) {
        BlkdebugRule *r = dbg->rules->pdata[i];

        if (!rule_matches(r, op, offset, bytes, req_no)) {
            continue;
        }
        if (r->once) {
            r->spent = true;
        }
        delay_ns += r->delay_ns;
        err = r->err;
    }
    pthread_mutex_unlock(&dbg->lock);
    if (delay_ns) {
        keel_co_sleep_ns(KEEL_CLOCK_REALTIME, delay_ns);
    }
    return -err;
}
