/*
 * Activity reports (see report.h). Three passes over the store, each one SQL statement read
 * to the end: referrals with every Task version the service reported for them (merged by
 * referral id), declined and signposting events, and delivery attempts. Each fact is added
 * to its (practice, week) group, its week and the totals.
 *
 * Which week a figure falls in: referral outcomes (accepted, rejected, completed, declined
 * by the service, and both times) count in the week the referral was received, so a week's
 * row says what became of that week's referrals; events (declined, signposting) in the week
 * they were received; delivery failures, retries and dead letters in the week of the attempt.
 * Regions are those of the configuration serve last ran with (practice_regions).
 */
#include "spbridge/report.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "spbridge/buf.h"
#include "store_internal.h"

#define MAX_GROUPS    200000
#define MAX_DURATIONS 10000000

typedef struct durations {
    int64_t *v;
    size_t n, cap;
} durations;

typedef struct group {
    char practice[16];
    char region[32];
    char week[16];
    long sent, accepted, rejected, declined, completed, signposting;
    long failures, retries, dead;
    durations to_accept, to_complete;
} group;

typedef struct group_set {
    group *g;
    size_t n, cap;
} group_set;

typedef struct region_map {
    spb_audit_region *r;
    int n;
} region_map;

typedef struct report {
    const spb_audit_scope *scope;
    const spb_report_filter *f;
    region_map regions;
    group_set rows, weeks;
    group total;
    int oom;
} report;

/* ------------------------------------------------------------------ numbers */

void spb_report_iso_week(int64_t ms, char out[16])
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    int year, wday, week;

    if (gmtime_r(&secs, &tm) == NULL) {
        snprintf(out, 16, "1970-W01");
        return;
    }
    year = tm.tm_year + 1900;
    wday = tm.tm_wday == 0 ? 7 : tm.tm_wday; /* Monday 1 .. Sunday 7 */
    week = (tm.tm_yday + 1 - wday + 10) / 7;
    if (week < 1) {
        /* the last week of the previous year: 53 when that year had 53 */
        int py = year - 1;
        int p = (py + py / 4 - py / 100 + py / 400) % 7;
        int pp = ((py - 1) + (py - 1) / 4 - (py - 1) / 100 + (py - 1) / 400) % 7;
        week = (p == 4 || pp == 3) ? 53 : 52;
        year = py;
    } else if (week == 53) {
        int p = (year + year / 4 - year / 100 + year / 400) % 7;
        int pp = ((year - 1) + (year - 1) / 4 - (year - 1) / 100 + (year - 1) / 400) % 7;
        if (!(p == 4 || pp == 3)) {
            week = 1;
            year++;
        }
    }
    snprintf(out, 16, "%04d-W%02d", year, week);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

double spb_report_median(int64_t *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof(*v), cmp_i64);
    if (n % 2 == 1)
        return (double)v[n / 2];
    return ((double)v[n / 2 - 1] + (double)v[n / 2]) / 2.0;
}

int64_t spb_report_p90(int64_t *v, size_t n)
{
    size_t rank;
    if (n == 0)
        return 0;
    qsort(v, n, sizeof(*v), cmp_i64);
    rank = (9 * n + 9) / 10; /* ceil(0.9 n) */
    return v[rank - 1];
}

/* ------------------------------------------------------------------ groups */

static int durations_add(report *r, durations *d, int64_t ms)
{
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        int64_t *grown;
        if (cap > MAX_DURATIONS) {
            r->oom = 1;
            return -1;
        }
        grown = realloc(d->v, cap * sizeof(*grown));
        if (grown == NULL) {
            r->oom = 1;
            return -1;
        }
        d->v = grown;
        d->cap = cap;
    }
    d->v[d->n++] = ms < 0 ? 0 : ms; /* clocks disagree: never a negative time */
    return 0;
}

static int group_cmp(const group *g, const char *practice, const char *week)
{
    int c = strcmp(g->week, week);
    return c != 0 ? c : strcmp(g->practice, practice);
}

/* The group for (practice, week) in a set kept sorted by week then practice. */
static group *group_get(report *r, group_set *set, const char *practice, const char *region,
                        const char *week)
{
    size_t lo = 0, hi = set->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = group_cmp(&set->g[mid], practice, week);
        if (c == 0)
            return &set->g[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (set->n == set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 64;
        group *grown;
        if (cap > MAX_GROUPS) {
            r->oom = 1;
            return NULL;
        }
        grown = realloc(set->g, cap * sizeof(*grown));
        if (grown == NULL) {
            r->oom = 1;
            return NULL;
        }
        set->g = grown;
        set->cap = cap;
    }
    memmove(&set->g[lo + 1], &set->g[lo], (set->n - lo) * sizeof(group));
    memset(&set->g[lo], 0, sizeof(group));
    snprintf(set->g[lo].practice, sizeof(set->g[lo].practice), "%s", practice);
    snprintf(set->g[lo].region, sizeof(set->g[lo].region), "%s", region);
    snprintf(set->g[lo].week, sizeof(set->g[lo].week), "%s", week);
    set->n++;
    return &set->g[lo];
}

static void group_set_free(group_set *set)
{
    for (size_t i = 0; i < set->n; i++) {
        free(set->g[i].to_accept.v);
        free(set->g[i].to_complete.v);
    }
    free(set->g);
}

static const char *region_of(const report *r, const char *practice)
{
    for (int i = 0; i < r->regions.n; i++) {
        if (strcmp(r->regions.r[i].practice, practice) == 0)
            return r->regions.r[i].region;
    }
    return "";
}

/* Whether the viewer may see this practice, and it passes the filter. */
static int visible(const report *r, const char *practice, const char *region)
{
    const spb_audit_scope *sc = r->scope;
    switch (sc->role) {
    case SPB_ROLE_ADMIN:
        break;
    case SPB_ROLE_AUDITOR:
        if (sc->region[0] == '\0' || strcmp(region, sc->region) != 0)
            return 0;
        break;
    case SPB_ROLE_PRACTICE:
        if (sc->ods[0] == '\0' || strcmp(practice, sc->ods) != 0)
            return 0;
        break;
    default:
        return 0;
    }
    if (r->f->practice != NULL && *r->f->practice != '\0' && strcmp(practice, r->f->practice) != 0)
        return 0;
    if (r->f->region != NULL && *r->f->region != '\0' && strcmp(region, r->f->region) != 0)
        return 0;
    return 1;
}

static int in_time(const report *r, int64_t at)
{
    return (r->f->since_ms <= 0 || at >= r->f->since_ms) &&
           (r->f->until_ms <= 0 || at <= r->f->until_ms);
}

/* What one fact adds to a group. */
typedef struct fact {
    long sent, accepted, rejected, declined, completed, signposting, failures, retries, dead;
    int64_t to_accept, to_complete; /* ms, or -1 */
} fact;

static void apply(report *r, group *g, const fact *x)
{
    if (g == NULL)
        return;
    g->sent += x->sent;
    g->accepted += x->accepted;
    g->rejected += x->rejected;
    g->declined += x->declined;
    g->completed += x->completed;
    g->signposting += x->signposting;
    g->failures += x->failures;
    g->retries += x->retries;
    g->dead += x->dead;
    if (x->to_accept >= 0)
        durations_add(r, &g->to_accept, x->to_accept);
    if (x->to_complete >= 0)
        durations_add(r, &g->to_complete, x->to_complete);
}

static void add_fact(report *r, const char *practice, int64_t at, const fact *x)
{
    const char *region = region_of(r, practice);
    char week[16];
    if (!visible(r, practice, region) || !in_time(r, at))
        return;
    spb_report_iso_week(at, week);
    apply(r, group_get(r, &r->rows, practice, region, week), x);
    apply(r, group_get(r, &r->weeks, "", "", week), x);
    apply(r, &r->total, x);
}

/* ------------------------------------------------------------------ passes */

/* A Task version's time: the service's lastUpdated when it reads, else when spbridge saw it. */
static int64_t version_time(const char *last_updated, int64_t received_at)
{
    int64_t ms;
    if (last_updated != NULL && spb_audit_parse_time(last_updated, 0, &ms) == 0)
        return ms;
    return received_at;
}

static int taken_on(const char *status)
{
    return status != NULL &&
           (strcmp(status, "accepted") == 0 || strcmp(status, "in-progress") == 0 ||
            strcmp(status, "on-hold") == 0 || strcmp(status, "completed") == 0);
}

static int pass_referrals(spb_store *s, report *r, spb_err *err)
{
    /* every referral with its Task versions in order (none: one row of NULLs); a quarantined
     * version was for another patient and says nothing about this referral */
    sqlite3_stmt *st =
        spb__prep(s,
                  "WITH r AS (SELECT referral, MIN(practice) AS practice, MIN(received_at) AS "
                  "  sent_at FROM events WHERE kind = 'referral' GROUP BY referral) "
                  "SELECT r.referral, r.practice, r.sent_at, tv.status, tv.business_status, "
                  "  tv.last_updated, tv.received_at FROM r LEFT JOIN task_versions tv "
                  "  ON tv.referral = r.referral AND (tv.flag IS NULL OR tv.flag != "
                  "  'quarantined') ORDER BY r.referral, tv.id",
                  err);
    char current[64] = "", practice[16] = "";
    int64_t sent_at = 0, accepted_at = -1, completed_at = -1;
    int rejected = 0, declined = 0, have = 0, step;

    if (st == NULL)
        return SPB_ERR;
    for (;;) {
        const char *ref;
        step = sqlite3_step(st);
        ref = step == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
        if (have && (ref == NULL || strcmp(ref, current) != 0)) {
            fact x;
            memset(&x, 0, sizeof(x));
            x.sent = 1;
            x.accepted = accepted_at >= 0;
            x.completed = completed_at >= 0;
            x.rejected = rejected;
            x.declined = declined;
            x.to_accept = accepted_at >= 0 ? accepted_at - sent_at : -1;
            x.to_complete = completed_at >= 0 ? completed_at - sent_at : -1;
            add_fact(r, practice, sent_at, &x);
            have = 0;
        }
        if (step != SQLITE_ROW)
            break;
        if (!have) {
            have = 1;
            snprintf(current, sizeof(current), "%s", ref ? ref : "");
            snprintf(practice, sizeof(practice), "%s",
                     sqlite3_column_text(st, 1) ? (const char *)sqlite3_column_text(st, 1) : "");
            sent_at = sqlite3_column_int64(st, 2);
            accepted_at = completed_at = -1;
            rejected = declined = 0;
        }
        if (sqlite3_column_type(st, 3) != SQLITE_NULL) {
            const char *status = (const char *)sqlite3_column_text(st, 3);
            const char *business = (const char *)sqlite3_column_text(st, 4);
            int64_t t =
                version_time((const char *)sqlite3_column_text(st, 5), sqlite3_column_int64(st, 6));
            if (taken_on(status) && accepted_at < 0)
                accepted_at = t;
            if (strcmp(status, "completed") == 0 && completed_at < 0)
                completed_at = t;
            if (strcmp(status, "rejected") == 0)
                rejected = 1;
            if (business != NULL && strcmp(business, "declined") == 0)
                declined = 1;
        }
    }
    sqlite3_finalize(st);
    return step == SQLITE_DONE ? 0 : spb__db_error(s, err, "report");
}

static int pass_events(spb_store *s, report *r, spb_err *err)
{
    sqlite3_stmt *st = spb__prep(s,
                                 "SELECT practice, kind, received_at FROM events WHERE kind IN "
                                 "('declined', 'signposting')",
                                 err);
    int step;
    if (st == NULL)
        return SPB_ERR;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        fact x;
        memset(&x, 0, sizeof(x));
        x.to_accept = x.to_complete = -1;
        if (strcmp((const char *)sqlite3_column_text(st, 1), "declined") == 0)
            x.declined = 1;
        else
            x.signposting = 1;
        add_fact(r, (const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 2), &x);
    }
    sqlite3_finalize(st);
    return step == SQLITE_DONE ? 0 : spb__db_error(s, err, "report");
}

static int pass_attempts(spb_store *s, report *r, spb_err *err)
{
    sqlite3_stmt *st = spb__prep(s,
                                 "SELECT o.practice, a.started_at, a.outcome, a.attempt FROM "
                                 "attempts a JOIN outbox o ON o.id = a.outbox_id",
                                 err);
    int step;
    if (st == NULL)
        return SPB_ERR;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *outcome = (const char *)sqlite3_column_text(st, 2);
        fact x;
        memset(&x, 0, sizeof(x));
        x.to_accept = x.to_complete = -1;
        x.failures = strcmp(outcome, "delivered") != 0;
        x.dead = strcmp(outcome, "dead") == 0;
        x.retries = sqlite3_column_int(st, 3) > 1;
        add_fact(r, (const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 1), &x);
    }
    sqlite3_finalize(st);
    return step == SQLITE_DONE ? 0 : spb__db_error(s, err, "report");
}

static int load_regions(spb_store *s, report *r, spb_err *err)
{
    sqlite3_stmt *st =
        spb__prep(s, "SELECT practice, region FROM practice_regions ORDER BY practice", err);
    int cap = 0, step;
    if (st == NULL)
        return SPB_ERR;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (r->regions.n == cap) {
            int ncap = cap ? cap * 2 : 64;
            spb_audit_region *grown;
            if (ncap > 100000) {
                r->oom = 1;
                break;
            }
            grown = realloc(r->regions.r, (size_t)ncap * sizeof(*grown));
            if (grown == NULL) {
                r->oom = 1;
                break;
            }
            r->regions.r = grown;
            cap = ncap;
        }
        snprintf(r->regions.r[r->regions.n].practice, sizeof(r->regions.r[0].practice), "%s",
                 sqlite3_column_text(st, 0));
        snprintf(r->regions.r[r->regions.n].region, sizeof(r->regions.r[0].region), "%s",
                 sqlite3_column_text(st, 1));
        r->regions.n++;
    }
    sqlite3_finalize(st);
    return (step == SQLITE_DONE || step == SQLITE_ROW) ? 0 : spb__db_error(s, err, "report");
}

/* ------------------------------------------------------------------ JSON */

static json_t *timing(durations *d)
{
    json_t *o = json_pack("{s:I}", "n", (json_int_t)d->n);
    if (d->n > 0) {
        json_object_set_new(o, "medianSeconds", json_real(spb_report_median(d->v, d->n) / 1000.0));
        json_object_set_new(o, "p90Seconds",
                            json_real((double)spb_report_p90(d->v, d->n) / 1000.0));
    }
    return o;
}

static json_t *group_json(group *g, int with_keys)
{
    json_t *o = json_object();
    if (with_keys >= 1) {
        if (with_keys == 2) {
            json_object_set_new(o, "practice", json_string(g->practice));
            json_object_set_new(o, "region", json_string(g->region));
        }
        json_object_set_new(o, "week", json_string(g->week));
    }
    json_object_set_new(o, "referralsSent", json_integer(g->sent));
    json_object_set_new(o, "accepted", json_integer(g->accepted));
    json_object_set_new(o, "rejected", json_integer(g->rejected));
    json_object_set_new(o, "declined", json_integer(g->declined));
    json_object_set_new(o, "completed", json_integer(g->completed));
    json_object_set_new(o, "signposting", json_integer(g->signposting));
    json_object_set_new(o, "timeToAcceptance", timing(&g->to_accept));
    json_object_set_new(o, "timeToCompletion", timing(&g->to_complete));
    json_object_set_new(o, "deliveryFailures", json_integer(g->failures));
    json_object_set_new(o, "retries", json_integer(g->retries));
    json_object_set_new(o, "deadLetters", json_integer(g->dead));
    return o;
}

int spb_report_build(spb_store *s, const spb_audit_scope *scope, const spb_report_filter *f,
                     json_t **out, spb_err *err)
{
    report r;
    json_t *doc = NULL, *rows, *weeks;
    char now[32];
    int rc;

    *out = NULL;
    memset(&r, 0, sizeof(r));
    r.scope = scope;
    r.f = f;
    rc = load_regions(s, &r, err);
    if (rc == 0)
        rc = pass_referrals(s, &r, err);
    if (rc == 0)
        rc = pass_events(s, &r, err);
    if (rc == 0)
        rc = pass_attempts(s, &r, err);
    if (rc == 0 && r.oom)
        rc = spb_err_set(err, SPB_ETOOBIG, SPB_ISSUE_TOO_LONG,
                         "the report is too large to build in memory");
    if (rc < 0)
        goto out;
    spb_audit_format_time(spb_now_ms(), now);
    rows = json_array();
    weeks = json_array();
    for (size_t i = 0; i < r.rows.n; i++)
        json_array_append_new(rows, group_json(&r.rows.g[i], 2));
    for (size_t i = 0; i < r.weeks.n; i++)
        json_array_append_new(weeks, group_json(&r.weeks.g[i], 1));
    doc = json_pack("{s:s, s:s, s:o, s:o, s:o}", "generatedAt", now, "weeks", "ISO 8601, UTC",
                    "rows", rows, "byWeek", weeks, "totals", group_json(&r.total, 0));
    *out = doc;
out:
    group_set_free(&r.rows);
    group_set_free(&r.weeks);
    free(r.total.to_accept.v);
    free(r.total.to_complete.v);
    free(r.regions.r);
    return rc;
}

/* ------------------------------------------------------------------ CSV */

/* A region's year is ~1,000 practices x 52 weeks of ~150-byte rows: 8 MB. */
#define CSV_MAX_BYTES (64u << 20)

typedef spb_buf text;

static void put(text *t, const char *s)
{
    spb_buf_puts(t, s); /* a failure sticks: checked once at the end */
}

/* A CSV field: quoted when it holds a comma, quote or line break. */
static void put_field(text *t, const char *v, int last)
{
    if (v != NULL && strpbrk(v, ",\"\r\n") != NULL) {
        put(t, "\"");
        for (const char *p = v; *p; p++) {
            char c[3] = {*p, 0, 0};
            if (*p == '"')
                c[1] = '"';
            put(t, c);
        }
        put(t, "\"");
    } else {
        put(t, v ? v : "");
    }
    put(t, last ? "\r\n" : ",");
}

static void put_number(text *t, json_t *v, int last)
{
    char num[48] = "";
    if (json_is_integer(v))
        snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(num, sizeof(num), "%.3f", json_real_value(v));
    put_field(t, num, last);
}

char *spb_report_csv(const json_t *doc)
{
    static const char *const counts[] = {"referralsSent", "accepted",  "rejected",
                                         "declined",      "completed", "signposting"};
    text t;
    size_t i;
    json_t *row;

    spb_buf_init(&t, CSV_MAX_BYTES);
    put(&t, "practice,region,week,referrals_sent,accepted,rejected,declined,completed,"
            "signposting,median_to_acceptance_s,p90_to_acceptance_s,median_to_completion_s,"
            "p90_to_completion_s,delivery_failures,retries,dead_letters\r\n");
    json_array_foreach(json_object_get(doc, "rows"), i, row)
    {
        json_t *acc = json_object_get(row, "timeToAcceptance");
        json_t *comp = json_object_get(row, "timeToCompletion");
        put_field(&t, json_string_value(json_object_get(row, "practice")), 0);
        put_field(&t, json_string_value(json_object_get(row, "region")), 0);
        put_field(&t, json_string_value(json_object_get(row, "week")), 0);
        for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++)
            put_number(&t, json_object_get(row, counts[k]), 0);
        put_number(&t, json_object_get(acc, "medianSeconds"), 0);
        put_number(&t, json_object_get(acc, "p90Seconds"), 0);
        put_number(&t, json_object_get(comp, "medianSeconds"), 0);
        put_number(&t, json_object_get(comp, "p90Seconds"), 0);
        put_number(&t, json_object_get(row, "deliveryFailures"), 0);
        put_number(&t, json_object_get(row, "retries"), 0);
        put_number(&t, json_object_get(row, "deadLetters"), 1);
    }
    if (t.failed) {
        spb_buf_free(&t);
        return NULL;
    }
    return spb_buf_take(&t, NULL);
}
