/*
 * SQLite store. See store.h for the guarantees; the rules that make them hold:
 *  - WAL with synchronous=FULL, so a COMMIT is on disk before we answer anyone;
 *  - every multi-row change is one BEGIN IMMEDIATE ... COMMIT, rolled back on any error;
 *  - a delivery worker owns a row only while its lease lasts; recovery hands expired rows
 *    back, and Bundles are idempotent, so a second send is harmless;
 *  - per-referral order: a row is claimable only when no older row of the same referral is
 *    still pending.
 */
#include "spbridge/store.h"

#include <openssl/rand.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit_internal.h"
#include "spbridge/ident.h"
#include "store_internal.h"

#define SCHEMA_VERSION 1

struct spb_store {
    sqlite3 *db;
    char path[512];
};

static const char *schema_sql =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS events("
    "  id TEXT PRIMARY KEY,"             /* tracking id */
    "  source_key TEXT NOT NULL UNIQUE," /* practice|event uuid: one source event, once */
    "  practice TEXT NOT NULL,"
    "  event_uuid TEXT NOT NULL,"
    "  referral TEXT NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  dialect TEXT,"
    "  mapping_version TEXT,"
    "  trigger_code TEXT,"
    "  channel TEXT, identity TEXT, source_name TEXT,"
    "  received_at INTEGER NOT NULL,"
    "  nhs_number TEXT, birth_date TEXT);" /* the patient: checked by later events */
    "CREATE INDEX IF NOT EXISTS events_referral ON events(referral);"
    "CREATE TABLE IF NOT EXISTS outbox("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  event_id TEXT NOT NULL REFERENCES events(id),"
    "  referral TEXT NOT NULL,"
    "  practice TEXT NOT NULL,"
    "  service_id TEXT NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  payload TEXT NOT NULL,"
    "  state TEXT NOT NULL CHECK(state IN"
    "    ('queued','delivering','retrying','delivered','dead','recorded')),"
    "  channel TEXT NOT NULL DEFAULT 'fhir'," /* fhir | writeback */
    "  method TEXT NOT NULL DEFAULT 'POST',"
    "  url_path TEXT," /* appended to the endpoint */
    "  content_type TEXT NOT NULL DEFAULT 'application/fhir+json',"
    "  dedupe_key TEXT,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_attempt_at INTEGER NOT NULL,"
    "  lease_until INTEGER,"
    "  last_status INTEGER, last_error TEXT, response TEXT, server_ids TEXT,"
    "  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, delivered_at INTEGER,"
    "  replay_of INTEGER REFERENCES outbox(id));"
    "CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_at);"
    "CREATE INDEX IF NOT EXISTS outbox_referral ON outbox(referral, id);"
    "CREATE TABLE IF NOT EXISTS attempts("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  outbox_id INTEGER NOT NULL REFERENCES outbox(id),"
    "  attempt INTEGER NOT NULL,"
    "  started_at INTEGER NOT NULL, finished_at INTEGER NOT NULL,"
    "  http_status INTEGER, outcome TEXT NOT NULL, error TEXT);"
    "CREATE INDEX IF NOT EXISTS attempts_outbox ON attempts(outbox_id);"
    "CREATE TABLE IF NOT EXISTS parked("
    "  id TEXT PRIMARY KEY,"
    "  received_at INTEGER NOT NULL,"
    "  identity TEXT, practice TEXT, channel TEXT, source_name TEXT,"
    "  error_code TEXT NOT NULL, issue TEXT NOT NULL, message TEXT NOT NULL, hint TEXT,"
    "  line INTEGER, location TEXT,"
    "  body BLOB NOT NULL, replayed_at INTEGER, replay_result TEXT);"
    "CREATE TABLE IF NOT EXISTS referrals("
    "  referral TEXT PRIMARY KEY,"
    "  practice TEXT NOT NULL, service_id TEXT NOT NULL, event_id TEXT NOT NULL,"
    "  nhs_number TEXT, birth_date TEXT,"
    "  patient_id TEXT, practice_org_id TEXT, sr_id TEXT, task_id TEXT,"
    "  sr_payload TEXT,"
    "  task_status TEXT, task_version TEXT, task_last_updated TEXT, task_business_status TEXT,"
    "  closed INTEGER NOT NULL DEFAULT 0,"
    "  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS referrals_follow ON referrals(service_id, practice);"
    "CREATE TABLE IF NOT EXISTS task_versions("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  service_id TEXT NOT NULL, task_id TEXT NOT NULL, version_id TEXT NOT NULL,"
    "  referral TEXT, status TEXT, business_status TEXT, last_updated TEXT,"
    "  received_at INTEGER NOT NULL, flag TEXT, detail TEXT,"
    "  UNIQUE(service_id, task_id, version_id));"
    "CREATE TABLE IF NOT EXISTS follow_cursors("
    "  service_id TEXT NOT NULL, practice TEXT NOT NULL, cursor TEXT NOT NULL,"
    "  updated_at INTEGER NOT NULL, PRIMARY KEY(service_id, practice));"
    "CREATE TABLE IF NOT EXISTS notifications("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  service_id TEXT NOT NULL, task_id TEXT NOT NULL,"
    "  received_at INTEGER NOT NULL, done_at INTEGER);"
    "CREATE TABLE IF NOT EXISTS written_outputs("
    "  referral TEXT NOT NULL, output_key TEXT NOT NULL, written_at INTEGER NOT NULL,"
    "  PRIMARY KEY(referral, output_key));"
    "CREATE TABLE IF NOT EXISTS quarantine("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  referral TEXT, service_id TEXT, task_id TEXT, version_id TEXT,"
    "  reason TEXT NOT NULL, created_at INTEGER NOT NULL);"
    /* the audit trail, a hash chain (audit.h, docs/audit.md): prev_hash is the previous
     * record's hash, hash covers this record's fields and prev_hash */
    "CREATE TABLE IF NOT EXISTS audit("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  at INTEGER NOT NULL,"
    "  identity TEXT, practice TEXT, region TEXT, referral TEXT,"
    "  step TEXT NOT NULL, result TEXT NOT NULL, detail TEXT, mapping_version TEXT,"
    "  prev_hash TEXT, hash TEXT);"
    "CREATE TABLE IF NOT EXISTS audit_checkpoints("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  at INTEGER NOT NULL, kind TEXT NOT NULL,"
    "  last_id INTEGER NOT NULL, last_hash TEXT NOT NULL,"
    "  anchor_id INTEGER NOT NULL, anchor_hash TEXT NOT NULL, records INTEGER NOT NULL,"
    "  prev TEXT NOT NULL, signer TEXT NOT NULL, signature TEXT NOT NULL);"
    /* each practice's region, from the configuration serve runs with (audit records) */
    "CREATE TABLE IF NOT EXISTS practice_regions("
    "  practice TEXT PRIMARY KEY, region TEXT NOT NULL, updated_at INTEGER NOT NULL);";

int64_t spb_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int spb__db_error(spb_store *s, spb_err *err, const char *what)
{
    int code = sqlite3_errcode(s->db);
    int rc = (code == SQLITE_BUSY || code == SQLITE_LOCKED) ? SPB_ERETRY : SPB_ERR;
    spb_err_set(err, rc, SPB_ISSUE_EXCEPTION, "store: %s: %s", what, sqlite3_errmsg(s->db));
    return rc;
}

int spb__exec(spb_store *s, const char *sql, spb_err *err)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int code = sqlite3_errcode(s->db);
        spb_err_set(err, code == SQLITE_BUSY ? SPB_ERETRY : SPB_ERR, SPB_ISSUE_EXCEPTION,
                    "store: %s", msg ? msg : "error");
        sqlite3_free(msg);
        return code == SQLITE_BUSY ? SPB_ERETRY : SPB_ERR;
    }
    return 0;
}

static void rollback(spb_store *s)
{
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

static int has_column(spb_store *s, const char *table, const char *column)
{
    char sql[128];
    sqlite3_stmt *st = NULL;
    int found = 0;
    snprintf(sql, sizeof(sql), "PRAGMA table_info(%s)", table);
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
        return 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (strcmp((const char *)sqlite3_column_text(st, 1), column) == 0)
            found = 1;
    }
    sqlite3_finalize(st);
    return found;
}

/* Stores from before the audit chain: add its columns and chain the records already there,
 * in one transaction (checked again inside it: several threads open the store at start). */
static int migrate_audit(spb_store *s, spb_err *err)
{
    int rc = 0;
    if (!has_column(s, "audit", "hash")) {
        rc = spb__exec(s, "BEGIN IMMEDIATE", err);
        if (rc == 0 && !has_column(s, "audit", "hash")) {
            rc = spb__exec(s,
                           "ALTER TABLE audit ADD COLUMN region TEXT;"
                           "ALTER TABLE audit ADD COLUMN prev_hash TEXT;"
                           "ALTER TABLE audit ADD COLUMN hash TEXT;",
                           err);
            if (rc == 0)
                rc = spb__audit_chain_legacy(s, err);
        }
        if (rc == 0)
            rc = spb__exec(s, "COMMIT", err);
        else
            rollback(s);
    }
    if (rc == 0)
        rc = spb__exec(s,
                       "CREATE INDEX IF NOT EXISTS audit_practice ON audit(practice, id);"
                       "CREATE INDEX IF NOT EXISTS audit_region ON audit(region, id);"
                       "CREATE INDEX IF NOT EXISTS audit_referral ON audit(referral);",
                       err);
    return rc;
}

/* Version 1 stores (before write-back) lack the outbox's channel columns. */
static int migrate(spb_store *s, spb_err *err)
{
    int audit_rc = migrate_audit(s, err);
    if (audit_rc < 0)
        return audit_rc;
    if (!has_column(s, "parked", "replayed_at")) {
        int rc = spb__exec(s,
                           "ALTER TABLE parked ADD COLUMN replayed_at INTEGER;"
                           "ALTER TABLE parked ADD COLUMN replay_result TEXT;",
                           err);
        if (rc < 0)
            return rc;
    }
    if (!has_column(s, "events", "nhs_number")) {
        /* stores from before the patient check; inside a transaction and checked again,
         * since several threads open the store at start */
        int rc = spb__exec(s, "BEGIN IMMEDIATE", err);
        if (rc == 0 && !has_column(s, "events", "nhs_number"))
            rc = spb__exec(s,
                           "ALTER TABLE events ADD COLUMN nhs_number TEXT;"
                           "ALTER TABLE events ADD COLUMN birth_date TEXT;",
                           err);
        if (rc == 0)
            rc = spb__exec(s, "COMMIT", err);
        else
            rollback(s);
        if (rc < 0)
            return rc;
    }
    if (!has_column(s, "referrals", "task_business_status")) {
        int rc = spb__exec(s, "ALTER TABLE referrals ADD COLUMN task_business_status TEXT", err);
        if (rc < 0)
            return rc;
    }
    if (has_column(s, "outbox", "channel"))
        return spb__exec(s,
                         "CREATE UNIQUE INDEX IF NOT EXISTS outbox_dedupe ON outbox(dedupe_key) "
                         "  WHERE dedupe_key IS NOT NULL;",
                         err);
    return spb__exec(s,
                     "BEGIN IMMEDIATE;"
                     "ALTER TABLE outbox ADD COLUMN channel TEXT NOT NULL DEFAULT 'fhir';"
                     "ALTER TABLE outbox ADD COLUMN method TEXT NOT NULL DEFAULT 'POST';"
                     "ALTER TABLE outbox ADD COLUMN url_path TEXT;"
                     "ALTER TABLE outbox ADD COLUMN content_type TEXT NOT NULL DEFAULT "
                     "  'application/fhir+json';"
                     "ALTER TABLE outbox ADD COLUMN dedupe_key TEXT;"
                     "CREATE UNIQUE INDEX IF NOT EXISTS outbox_dedupe ON outbox(dedupe_key) "
                     "  WHERE dedupe_key IS NOT NULL;"
                     "COMMIT;",
                     err);
}

int spb_store_open_existing(spb_store **out, const char *path, spb_err *err)
{
    if (access(path, F_OK) != 0) {
        *out = NULL;
        spb_err_set(err, SPB_ENOTFOUND, SPB_ISSUE_NOT_FOUND, "there is no store at %s", path);
        spb_err_hint(err, "pass --config with the configuration spbridge serve uses "
                          "(its store_path)");
        return SPB_ENOTFOUND;
    }
    return spb_store_open(out, path, err);
}

int spb_store_open(spb_store **out, const char *path, spb_err *err)
{
    spb_store *s = calloc(1, sizeof(*s));
    int rc = SPB_ERR;

    *out = NULL;
    if (s == NULL)
        return spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
    snprintf(s->path, sizeof(s->path), "%s", path);
    if (sqlite3_open_v2(path, &s->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        spb_err_set(err, SPB_ECONFIG, SPB_ISSUE_EXCEPTION, "cannot open the store %s: %s", path,
                    s->db ? sqlite3_errmsg(s->db) : "out of memory");
        spb_err_hint(err, "check store_path in the configuration and the folder's permissions");
        goto out;
    }
    sqlite3_busy_timeout(s->db, 10000);
    rc = spb__exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
                   err);
    if (rc == 0)
        rc = spb__exec(s, schema_sql, err);
    if (rc == 0)
        rc = migrate(s, err);
    if (rc == 0)
        rc = spb__exec(s, "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', '2')",
                       err);
out:
    if (rc < 0) {
        spb_store_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

sqlite3 *spb__db(spb_store *s)
{
    return s->db;
}

void spb_store_close(spb_store *s)
{
    if (s == NULL)
        return;
    sqlite3_close_v2(s->db);
    free(s);
}

/* ---- small statement helpers ---- */

sqlite3_stmt *spb__prep(spb_store *s, const char *sql, spb_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        spb__db_error(s, err, "prepare");
        return NULL;
    }
    return st;
}

void spb__bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v == NULL || *v == '\0')
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
}

/* Every audit record goes through here, inside the caller's transaction: the record joins
 * the hash chain (audit.c), with the practice's region looked up in practice_regions. */
int spb__audit(spb_store *s, int64_t at, const char *identity, const char *practice,
               const char *referral, const char *step, const char *result, const char *detail,
               const char *mapping_version, spb_err *err)
{
    spb_audit_record r;
    memset(&r, 0, sizeof(r));
    r.at = at;
    r.identity = identity;
    r.practice = practice;
    r.referral = referral;
    r.step = step;
    r.result = result;
    r.detail = detail;
    r.mapping_version = mapping_version;
    return spb__audit_append(s, &r, err);
}

int spb_store_audit(spb_store *s, const char *identity, const char *practice, const char *referral,
                    const char *step, const char *result, const char *detail, spb_err *err)
{
    return spb__audit(s, spb_now_ms(), identity, practice, referral, step, result, detail, NULL,
                      err);
}

static void tracking_id_for(char out[SPB_UUID_LEN + 1], const char *practice,
                            const char *event_uuid)
{
    char name[128];
    snprintf(name, sizeof(name), "tracking|%s|%s", practice, event_uuid);
    spb_uuid_v5(out, name);
}

int spb_store_intake(spb_store *s, const spb_translation *tr, const spb_intake_meta *meta,
                     spb_intake_item *items, size_t max, size_t *n, spb_err *err)
{
    sqlite3_stmt *find = NULL, *ins_event = NULL, *ins_outbox = NULL;
    int64_t now = spb_now_ms();
    int rc;

    *n = 0;
    rc = spb__exec(s, "BEGIN IMMEDIATE", err);
    if (rc < 0)
        return rc;
    find = spb__prep(s, "SELECT id FROM events WHERE source_key = ?", err);
    ins_event =
        spb__prep(s,
                  "INSERT INTO events(id, source_key, practice, event_uuid, referral, kind, "
                  "dialect, mapping_version, trigger_code, channel, identity, source_name, "
                  "received_at, nhs_number, birth_date) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                  err);
    ins_outbox = spb__prep(s,
                           "INSERT INTO outbox(event_id, referral, practice, service_id, kind, "
                           "payload, state, next_attempt_at, created_at, updated_at) "
                           "VALUES (?,?,?,?,?,?,?,?,?,?)",
                           err);
    if (find == NULL || ins_event == NULL || ins_outbox == NULL) {
        rc = SPB_ERR;
        goto out;
    }
    for (size_t i = 0; i < tr->n && *n < max; i++) {
        const spb_translated *t = &tr->items[i];
        spb_intake_item *it = &items[(*n)++];
        char key[80];
        const char *kind = spb_event_kind_name(t->kind);
        int send = t->kind == SPB_KIND_REFERRAL || t->kind == SPB_KIND_CANCELLATION;
        char *payload = NULL;

        memset(it, 0, sizeof(*it));
        it->kind = t->kind;
        snprintf(it->referral, sizeof(it->referral), "%s", t->source_uuid);
        snprintf(key, sizeof(key), "%s|%s", t->practice_ods, t->event_uuid);
        sqlite3_reset(find);
        sqlite3_bind_text(find, 1, key, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(find) == SQLITE_ROW) {
            snprintf(it->tracking_id, sizeof(it->tracking_id), "%s",
                     (const char *)sqlite3_column_text(find, 0));
            it->duplicate = 1;
            rc = spb__audit(s, now, meta->identity, t->practice_ods, t->source_uuid, "received",
                            "duplicate", "the same source event was received before",
                            tr->mapping_version, err);
            if (rc < 0)
                goto out;
            continue;
        }
        tracking_id_for(it->tracking_id, t->practice_ods, t->event_uuid);
        sqlite3_reset(ins_event);
        spb__bind_text(ins_event, 1, it->tracking_id);
        spb__bind_text(ins_event, 2, key);
        spb__bind_text(ins_event, 3, t->practice_ods);
        spb__bind_text(ins_event, 4, t->event_uuid);
        spb__bind_text(ins_event, 5, t->source_uuid);
        spb__bind_text(ins_event, 6, kind);
        spb__bind_text(ins_event, 7, tr->dialect);
        spb__bind_text(ins_event, 8, tr->mapping_version);
        spb__bind_text(ins_event, 9, t->trigger_code);
        spb__bind_text(ins_event, 10, meta->channel);
        spb__bind_text(ins_event, 11, meta->identity);
        spb__bind_text(ins_event, 12, meta->source_name);
        sqlite3_bind_int64(ins_event, 13, now);
        spb__bind_text(ins_event, 14, t->nhs_number);
        spb__bind_text(ins_event, 15, t->birth_date[0] ? t->birth_date : NULL);
        if (sqlite3_step(ins_event) != SQLITE_DONE) {
            rc = spb__db_error(s, err, "insert event");
            goto out;
        }
        payload = json_dumps(t->resource, JSON_COMPACT);
        if (payload == NULL) {
            rc = spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
            goto out;
        }
        sqlite3_reset(ins_outbox);
        spb__bind_text(ins_outbox, 1, it->tracking_id);
        spb__bind_text(ins_outbox, 2, t->source_uuid);
        spb__bind_text(ins_outbox, 3, t->practice_ods);
        spb__bind_text(ins_outbox, 4, t->service_id);
        spb__bind_text(ins_outbox, 5, kind);
        sqlite3_bind_text(ins_outbox, 6, payload, -1, free);
        spb__bind_text(ins_outbox, 7, send ? "queued" : "recorded");
        sqlite3_bind_int64(ins_outbox, 8, now);
        sqlite3_bind_int64(ins_outbox, 9, now);
        sqlite3_bind_int64(ins_outbox, 10, now);
        if (sqlite3_step(ins_outbox) != SQLITE_DONE) {
            rc = spb__db_error(s, err, "insert outbox");
            goto out;
        }
        it->outbox_id = send ? sqlite3_last_insert_rowid(s->db) : 0;
        rc = spb__audit(s, now, meta->identity, t->practice_ods, t->source_uuid, "received", "ok",
                        meta->channel, tr->mapping_version, err);
        if (rc == 0)
            rc = spb__audit(s, now, meta->identity, t->practice_ods, t->source_uuid, "translated",
                            "ok", kind, tr->mapping_version, err);
        if (rc == 0)
            rc = spb__audit(s, now, meta->identity, t->practice_ods, t->source_uuid,
                            send ? "queued" : "recorded", "ok", t->service_id, tr->mapping_version,
                            err);
        if (rc < 0)
            goto out;
    }
    rc = spb__exec(s, "COMMIT", err);
out:
    sqlite3_finalize(find);
    sqlite3_finalize(ins_event);
    sqlite3_finalize(ins_outbox);
    if (rc < 0) {
        rollback(s);
        *n = 0;
    }
    return rc;
}

/* The patient an earlier event was for: 1 found (practice, nhs, birth filled), 0 not. */
typedef struct linked_event {
    char practice[16];
    char nhs_number[16];
    char birth_date[16];
} linked_event;

static int read_linked(sqlite3_stmt *st, linked_event *out)
{
    const unsigned char *v;
    memset(out, 0, sizeof(*out));
    if (sqlite3_step(st) != SQLITE_ROW)
        return 0;
    v = sqlite3_column_text(st, 0);
    snprintf(out->practice, sizeof(out->practice), "%s", v ? (const char *)v : "");
    v = sqlite3_column_text(st, 1);
    snprintf(out->nhs_number, sizeof(out->nhs_number), "%s", v ? (const char *)v : "");
    v = sqlite3_column_text(st, 2);
    snprintf(out->birth_date, sizeof(out->birth_date), "%s", v ? (const char *)v : "");
    return 1;
}

/* The referral `referral` as received: from the store, else earlier in this document. */
static int find_referral(sqlite3_stmt *st, const spb_translation *tr, size_t before,
                         const char *referral, linked_event *out)
{
    sqlite3_reset(st);
    spb__bind_text(st, 1, referral);
    if (read_linked(st, out))
        return 1;
    for (size_t k = 0; k < before; k++) {
        const spb_translated *e = &tr->items[k];
        if (e->kind == SPB_KIND_REFERRAL && strcmp(e->source_uuid, referral) == 0) {
            snprintf(out->practice, sizeof(out->practice), "%s", e->practice_ods);
            snprintf(out->nhs_number, sizeof(out->nhs_number), "%s", e->nhs_number);
            snprintf(out->birth_date, sizeof(out->birth_date), "%s", e->birth_date);
            return 1;
        }
    }
    return 0;
}

/* 0 if `t` is for the patient `was` was for, else SPB_EINVALID with err set. */
static int same_patient(const spb_translated *t, const linked_event *was, const char *what,
                        spb_err *err)
{
    const char *differs = NULL;
    if (was->nhs_number[0] != '\0' && strcmp(was->nhs_number, t->nhs_number) != 0)
        differs = "NHS number";
    else if (was->birth_date[0] != '\0' && t->birth_date[0] != '\0' &&
             strcmp(was->birth_date, t->birth_date) != 0)
        differs = "birth date";
    if (differs == NULL)
        return 0;
    spb_err_set(err, SPB_EINVALID, SPB_ISSUE_INVARIANT,
                "the %s event is for another patient than %s %s (the %s differs); nothing was "
                "stored or sent",
                spb_event_kind_name(t->kind), what, t->source_uuid, differs);
    spb_err_hint(err, "check the patient in the GP record: an event about a referral must carry "
                      "the referral's patient");
    return SPB_EINVALID;
}

static int check_link(sqlite3_stmt *by_source, sqlite3_stmt *by_referral, const spb_translation *tr,
                      size_t i, spb_err *err)
{
    const spb_translated *t = &tr->items[i];
    linked_event was;
    char key[80];

    snprintf(key, sizeof(key), "%s|%s", t->practice_ods, t->event_uuid);
    sqlite3_reset(by_source);
    spb__bind_text(by_source, 1, key);
    if (read_linked(by_source, &was) && same_patient(t, &was, "its first copy, referral", err) < 0)
        return SPB_EINVALID;
    if (strcmp(t->source_uuid, t->event_uuid) == 0)
        return 0; /* refers to no earlier referral */
    if (!find_referral(by_referral, tr, i, t->source_uuid, &was)) {
        spb_err_set(err, SPB_EINVALID, SPB_ISSUE_NOT_FOUND,
                    "the %s names referral %s, which spbridge has not received; nothing was "
                    "stored or sent",
                    spb_event_kind_name(t->kind), t->source_uuid);
        spb_err_hint(err, "send the referral first (this input is kept and can be replayed), "
                          "or correct the referral id the event names");
        return SPB_EINVALID;
    }
    if (strcmp(was.practice, t->practice_ods) != 0) {
        spb_err_set(err, SPB_EAUTH, SPB_ISSUE_SECURITY,
                    "the %s names referral %s, which practice %s sent, not %s",
                    spb_event_kind_name(t->kind), t->source_uuid, was.practice, t->practice_ods);
        spb_err_hint(err, "a practice may act only on its own referrals");
        return SPB_EAUTH;
    }
    return same_patient(t, &was, "referral", err);
}

int spb_store_check_links(spb_store *s, const spb_translation *tr, size_t *bad, spb_err *err)
{
    sqlite3_stmt *by_source = NULL, *by_referral = NULL;
    int rc = 0;

    *bad = 0;
    by_source = spb__prep(s,
                          "SELECT practice, nhs_number, birth_date FROM events "
                          "WHERE source_key = ?",
                          err);
    by_referral = spb__prep(s,
                            "SELECT practice, nhs_number, birth_date FROM events "
                            "WHERE referral = ? AND kind = 'referral' "
                            "ORDER BY received_at LIMIT 1",
                            err);
    if (by_source == NULL || by_referral == NULL) {
        rc = SPB_ERR;
        goto out;
    }
    for (size_t i = 0; i < tr->n && rc == 0; i++) {
        rc = check_link(by_source, by_referral, tr, i, err);
        if (rc < 0)
            *bad = i;
    }
out:
    sqlite3_finalize(by_source);
    sqlite3_finalize(by_referral);
    return rc;
}

static void random_uuid(char out[SPB_UUID_LEN + 1])
{
    unsigned char b[16];
    RAND_bytes(b, sizeof(b));
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, SPB_UUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

int spb_store_park(spb_store *s, const spb_intake_meta *meta, const char *body, size_t len,
                   const spb_err *reason, char id_out[SPB_UUID_LEN + 1], spb_err *err)
{
    sqlite3_stmt *st = NULL;
    int64_t now = spb_now_ms();
    int rc = spb__exec(s, "BEGIN IMMEDIATE", err);

    if (rc < 0)
        return rc;
    random_uuid(id_out);
    st = spb__prep(s,
                   "INSERT INTO parked(id, received_at, identity, practice, channel, source_name, "
                   "error_code, issue, message, hint, line, location, body) "
                   "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   err);
    if (st == NULL) {
        rc = SPB_ERR;
        goto out;
    }
    spb__bind_text(st, 1, id_out);
    sqlite3_bind_int64(st, 2, now);
    spb__bind_text(st, 3, meta->identity);
    spb__bind_text(st, 4, meta->identity_ods);
    spb__bind_text(st, 5, meta->channel);
    spb__bind_text(st, 6, meta->source_name);
    spb__bind_text(st, 7, spb_code_name(reason->code));
    spb__bind_text(st, 8, spb_issue_name(reason->issue));
    spb__bind_text(st, 9, reason->message);
    spb__bind_text(st, 10, reason->hint);
    sqlite3_bind_int(st, 11, reason->line);
    spb__bind_text(st, 12, reason->path);
    sqlite3_bind_blob(st, 13, body, (int)len, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = spb__db_error(s, err, "park");
        goto out;
    }
    rc = spb__audit(s, now, meta->identity, meta->identity_ods, NULL, "refused",
                    spb_code_name(reason->code), reason->message, NULL, err);
    if (rc == 0)
        rc = spb__exec(s, "COMMIT", err);
out:
    sqlite3_finalize(st);
    if (rc < 0)
        rollback(s);
    return rc;
}

/* ---- delivery ---- */

int spb_store_claim(spb_store *s, int64_t now_ms, int64_t lease_ms, spb_outbox_job *job,
                    spb_err *err)
{
    /* The first due row whose referral has no older row still pending, and, for rows sent to
     * a FHIR server, no row of the same practice at the same service in flight: Bundles of
     * one practice share conditional creates (its Organization, often its patients), which
     * servers do not all serialise, so they are sent one at a time. Practices still go in
     * parallel. */
    static const char *sql =
        "UPDATE outbox SET state = 'delivering', attempts = attempts + 1, lease_until = ?1, "
        "  updated_at = ?2 "
        "WHERE id = (SELECT o.id FROM outbox o WHERE o.state IN ('queued','retrying') "
        "  AND o.next_attempt_at <= ?2 AND NOT EXISTS (SELECT 1 FROM outbox p "
        "    WHERE p.referral = o.referral AND p.id < o.id "
        "    AND p.state IN ('queued','retrying','delivering')) "
        "  AND (o.channel != 'fhir' OR NOT EXISTS (SELECT 1 FROM outbox q "
        "    WHERE q.state = 'delivering' AND q.channel = 'fhir' AND q.practice = o.practice "
        "    AND q.service_id = o.service_id)) "
        "  ORDER BY o.next_attempt_at, o.id LIMIT 1) "
        "RETURNING id, event_id, referral, practice, service_id, payload, attempts, created_at, "
        "  channel, method, url_path, content_type, kind";
    sqlite3_stmt *st = NULL;
    int rc = spb__exec(s, "BEGIN IMMEDIATE", err);
    int found = 0;

    memset(job, 0, sizeof(*job));
    if (rc < 0)
        return rc;
    st = spb__prep(s, sql, err);
    if (st == NULL) {
        rc = SPB_ERR;
        goto out;
    }
    sqlite3_bind_int64(st, 1, now_ms + lease_ms);
    sqlite3_bind_int64(st, 2, now_ms);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        job->id = sqlite3_column_int64(st, 0);
        snprintf(job->event_id, sizeof(job->event_id), "%s", sqlite3_column_text(st, 1));
        snprintf(job->referral, sizeof(job->referral), "%s", sqlite3_column_text(st, 2));
        snprintf(job->practice, sizeof(job->practice), "%s", sqlite3_column_text(st, 3));
        snprintf(job->service_id, sizeof(job->service_id), "%s", sqlite3_column_text(st, 4));
        job->payload = strdup((const char *)sqlite3_column_text(st, 5));
        job->attempts = sqlite3_column_int(st, 6);
        job->created_at = sqlite3_column_int64(st, 7);
        snprintf(job->channel, sizeof(job->channel), "%s", sqlite3_column_text(st, 8));
        snprintf(job->method, sizeof(job->method), "%s", sqlite3_column_text(st, 9));
        snprintf(job->url_path, sizeof(job->url_path), "%s",
                 sqlite3_column_text(st, 10) ? (const char *)sqlite3_column_text(st, 10) : "");
        snprintf(job->content_type, sizeof(job->content_type), "%s", sqlite3_column_text(st, 11));
        snprintf(job->kind, sizeof(job->kind), "%s", sqlite3_column_text(st, 12));
        found = job->payload != NULL;
        rc = sqlite3_step(st);
    }
    if (rc != SQLITE_DONE) {
        rc = spb__db_error(s, err, "claim");
        free(job->payload);
        job->payload = NULL;
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;
    rc = spb__exec(s, "COMMIT", err);
out:
    sqlite3_finalize(st);
    if (rc < 0) {
        rollback(s);
        free(job->payload);
        job->payload = NULL;
        return rc;
    }
    return found;
}

int64_t spb_store_next_due(spb_store *s)
{
    sqlite3_stmt *st = NULL;
    int64_t when = -1;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT MIN(next_attempt_at) FROM outbox WHERE state IN "
                           "('queued','retrying')",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        when = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return when;
}

/*
 * After a referral's Bundle is delivered, keep what following its Task needs: the patient
 * it was for (NHS number, birth date: the right-patient check), the server's ids for the
 * Patient, practice Organization, ServiceRequest and Task (from the transaction-response,
 * entry by entry), and the ServiceRequest as sent (to close it later).
 */
static int remember_referral(spb_store *s, const spb_outbox_job *job, const char *server_ids,
                             int64_t now, spb_err *err)
{
    json_t *bundle = json_loads(job->payload, 0, NULL);
    json_t *ids = server_ids ? json_loads(server_ids, 0, NULL) : NULL;
    json_t *entries = json_object_get(bundle, "entry");
    const char *nhs = NULL, *birth = NULL;
    const char *patient_id = NULL, *org_id = NULL, *sr_id = NULL, *task_id = NULL;
    char *sr_payload = NULL;
    sqlite3_stmt *st = NULL;
    int rc = 0;

    for (size_t i = 0; i < json_array_size(entries); i++) {
        json_t *res = json_object_get(json_array_get(entries, i), "resource");
        const char *type = json_string_value(json_object_get(res, "resourceType"));
        const char *sid = json_string_value(json_object_get(json_array_get(ids, i), "id"));
        if (type == NULL)
            continue;
        if (strcmp(type, "Patient") == 0) {
            json_t *ident = json_array_get(json_object_get(res, "identifier"), 0);
            nhs = json_string_value(json_object_get(ident, "value"));
            birth = json_string_value(json_object_get(res, "birthDate"));
            patient_id = sid;
        } else if (strcmp(type, "Organization") == 0 && org_id == NULL) {
            org_id = sid; /* the first Organization is the practice */
        } else if (strcmp(type, "ServiceRequest") == 0) {
            sr_id = sid;
            sr_payload = json_dumps(res, JSON_COMPACT);
        } else if (strcmp(type, "Task") == 0) {
            task_id = sid;
        }
    }
    st = spb__prep(s,
                   "INSERT INTO referrals(referral, practice, service_id, event_id, nhs_number, "
                   "birth_date, patient_id, practice_org_id, sr_id, task_id, sr_payload, "
                   "task_status, created_at, updated_at) "
                   "VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,'requested',?12,?12) "
                   "ON CONFLICT(referral) DO UPDATE SET patient_id = excluded.patient_id, "
                   "practice_org_id = excluded.practice_org_id, sr_id = excluded.sr_id, "
                   "task_id = excluded.task_id, updated_at = excluded.updated_at",
                   err);
    if (st == NULL) {
        rc = SPB_ERR;
        goto out;
    }
    spb__bind_text(st, 1, job->referral);
    spb__bind_text(st, 2, job->practice);
    spb__bind_text(st, 3, job->service_id);
    spb__bind_text(st, 4, job->event_id);
    spb__bind_text(st, 5, nhs);
    spb__bind_text(st, 6, birth);
    spb__bind_text(st, 7, patient_id);
    spb__bind_text(st, 8, org_id);
    spb__bind_text(st, 9, sr_id);
    spb__bind_text(st, 10, task_id);
    spb__bind_text(st, 11, sr_payload);
    sqlite3_bind_int64(st, 12, now);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = spb__db_error(s, err, "referral");
out:
    sqlite3_finalize(st);
    free(sr_payload);
    json_decref(bundle);
    json_decref(ids);
    return rc;
}

int spb_store_finish(spb_store *s, const spb_outbox_job *job, const spb_attempt_result *r,
                     spb_err *err)
{
    static const char *outcome_names[] = {"delivered", "retry", "dead"};
    sqlite3_stmt *att = NULL, *upd = NULL;
    const char *state = r->outcome == SPB_DELIVERED ? "delivered"
                        : r->outcome == SPB_RETRY   ? "retrying"
                                                    : "dead";
    int64_t now = spb_now_ms();
    int rc = spb__exec(s, "BEGIN IMMEDIATE", err);

    if (rc < 0)
        return rc;
    att =
        spb__prep(s,
                  "INSERT INTO attempts(outbox_id, attempt, started_at, finished_at, http_status, "
                  "outcome, error) VALUES (?,?,?,?,?,?,?)",
                  err);
    upd = spb__prep(
        s,
        "UPDATE outbox SET state = ?, lease_until = NULL, last_status = ?, last_error = ?, "
        "response = COALESCE(?, response), server_ids = COALESCE(?, server_ids), "
        "next_attempt_at = ?, updated_at = ?, "
        "delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END "
        "WHERE id = ? AND state = 'delivering'",
        err);
    if (att == NULL || upd == NULL) {
        rc = SPB_ERR;
        goto out;
    }
    sqlite3_bind_int64(att, 1, job->id);
    sqlite3_bind_int(att, 2, job->attempts);
    sqlite3_bind_int64(att, 3, r->started_at);
    sqlite3_bind_int64(att, 4, r->finished_at);
    if (r->http_status > 0)
        sqlite3_bind_int(att, 5, r->http_status);
    spb__bind_text(att, 6, outcome_names[r->outcome]);
    spb__bind_text(att, 7, r->error);
    if (sqlite3_step(att) != SQLITE_DONE) {
        rc = spb__db_error(s, err, "attempt");
        goto out;
    }
    spb__bind_text(upd, 1, state);
    if (r->http_status > 0)
        sqlite3_bind_int(upd, 2, r->http_status);
    spb__bind_text(upd, 3, r->outcome == SPB_DELIVERED ? NULL : r->error);
    /* a success answer carries the server's copy of patient data: keep only failures
     * (OperationOutcomes), the ids are kept separately */
    spb__bind_text(upd, 4, r->outcome == SPB_DELIVERED ? NULL : r->response);
    spb__bind_text(upd, 5, r->server_ids);
    sqlite3_bind_int64(upd, 6, r->outcome == SPB_RETRY ? r->next_attempt_at : now);
    sqlite3_bind_int64(upd, 7, now);
    spb__bind_text(upd, 8, state);
    sqlite3_bind_int64(upd, 9, now);
    sqlite3_bind_int64(upd, 10, job->id);
    if (sqlite3_step(upd) != SQLITE_DONE) {
        rc = spb__db_error(s, err, "finish");
        goto out;
    }
    if (r->outcome == SPB_DELIVERED && strcmp(job->kind, "referral") == 0) {
        rc = remember_referral(s, job, r->server_ids, now, err);
        if (rc < 0)
            goto out;
    }
    {
        char detail[300];
        snprintf(detail, sizeof(detail), "attempt %d, HTTP %d%s%s", job->attempts, r->http_status,
                 r->error ? ": " : "", r->error ? r->error : "");
        rc = spb__audit(s, now, "spbridge", job->practice, job->referral, "delivery_attempt",
                        outcome_names[r->outcome], detail, NULL, err);
        if (rc == 0 && r->outcome != SPB_RETRY)
            rc = spb__audit(s, now, "spbridge", job->practice, job->referral,
                            r->outcome == SPB_DELIVERED ? "delivered" : "dead_lettered",
                            r->outcome == SPB_DELIVERED ? "ok" : "failed", detail, NULL, err);
    }
    if (rc == 0)
        rc = spb__exec(s, "COMMIT", err);
out:
    sqlite3_finalize(att);
    sqlite3_finalize(upd);
    if (rc < 0)
        rollback(s);
    return rc;
}

int spb_store_recover(spb_store *s, int64_t now_ms, int all, int *n, spb_err *err)
{
    sqlite3_stmt *st = spb__prep(s,
                                 "UPDATE outbox SET state = 'retrying', lease_until = NULL, "
                                 "next_attempt_at = ?1, updated_at = ?1, "
                                 "last_error = 'the previous attempt did not finish (process "
                                 "stopped); re-sending is safe, the Bundle is idempotent' "
                                 "WHERE state = 'delivering' AND (?2 OR lease_until < ?1)",
                                 err);
    int rc = 0;
    *n = 0;
    if (st == NULL)
        return SPB_ERR;
    sqlite3_bind_int64(st, 1, now_ms);
    sqlite3_bind_int(st, 2, all);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = spb__db_error(s, err, "recover");
    else
        *n = sqlite3_changes(s->db);
    sqlite3_finalize(st);
    return rc;
}

/* ---- views ---- */

int spb_store_counts_get(spb_store *s, spb_store_counts *c, spb_err *err)
{
    sqlite3_stmt *st = spb__prep(s, "SELECT state, COUNT(*) FROM outbox GROUP BY state", err);
    memset(c, 0, sizeof(*c));
    if (st == NULL)
        return SPB_ERR;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *state = (const char *)sqlite3_column_text(st, 0);
        long v = sqlite3_column_int64(st, 1);
        if (strcmp(state, "queued") == 0)
            c->queued = v;
        else if (strcmp(state, "delivering") == 0)
            c->delivering = v;
        else if (strcmp(state, "retrying") == 0)
            c->retrying = v;
        else if (strcmp(state, "delivered") == 0)
            c->delivered = v;
        else if (strcmp(state, "dead") == 0)
            c->dead = v;
        else if (strcmp(state, "recorded") == 0)
            c->recorded = v;
    }
    sqlite3_finalize(st);
    st = spb__prep(s,
                   "SELECT (SELECT COUNT(*) FROM parked), (SELECT COUNT(*) FROM attempts), "
                   "(SELECT COUNT(*) FROM attempts WHERE outcome != 'delivered')",
                   err);
    if (st == NULL)
        return SPB_ERR;
    if (sqlite3_step(st) == SQLITE_ROW) {
        c->parked = sqlite3_column_int64(st, 0);
        c->attempts = sqlite3_column_int64(st, 1);
        c->failed_attempts = sqlite3_column_int64(st, 2);
    }
    sqlite3_finalize(st);
    return 0;
}

/* Turns the current row into a JSON object with the given column names. */
static json_t *row_object(sqlite3_stmt *st)
{
    json_t *o = json_object();
    int n = sqlite3_column_count(st);
    for (int i = 0; i < n; i++) {
        const char *name = sqlite3_column_name(st, i);
        switch (sqlite3_column_type(st, i)) {
        case SQLITE_INTEGER:
            json_object_set_new(o, name, json_integer(sqlite3_column_int64(st, i)));
            break;
        case SQLITE_TEXT: {
            const char *text = (const char *)sqlite3_column_text(st, i);
            /* columns holding JSON documents are embedded as JSON */
            if (strcmp(name, "server_ids") == 0 || strcmp(name, "payload") == 0 ||
                strcmp(name, "response_json") == 0) {
                json_t *j = json_loads(text, 0, NULL);
                json_object_set_new(o, name, j ? j : json_string(text));
            } else {
                json_object_set_new(o, name, json_string(text));
            }
            break;
        }
        default:
            break; /* NULL: omitted */
        }
    }
    return o;
}

int spb__query_array(spb_store *s, sqlite3_stmt *st, json_t **out, spb_err *err)
{
    json_t *arr = json_array();
    int rc = spb__rows_to_array(s, st, arr, err);
    sqlite3_finalize(st);
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

int spb__rows_to_array(spb_store *s, sqlite3_stmt *st, json_t *arr, spb_err *err)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(arr, row_object(st));
    if (rc != SQLITE_DONE)
        return spb__db_error(s, err, "query");
    return 0;
}

#define OUTBOX_COLUMNS                                                                             \
    "id, event_id AS tracking_id, referral, practice, service_id AS service, kind, channel, "      \
    "method, url_path, state, attempts, next_attempt_at, last_status, last_error, server_ids, "    \
    "created_at, updated_at, delivered_at, replay_of"

int spb_store_event_status(spb_store *s, const char *tracking_id, json_t **out, char practice[16],
                           spb_err *err)
{
    sqlite3_stmt *st = NULL;
    json_t *ev = NULL, *rows = NULL;
    int rc = 0;

    *out = NULL;
    st = spb__prep(
        s,
        "SELECT id AS tracking_id, practice, referral, event_uuid AS event, kind, dialect, "
        "mapping_version, channel, received_at FROM events WHERE id = ?",
        err);
    if (st == NULL)
        return SPB_ERR;
    spb__bind_text(st, 1, tracking_id);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        spb_err_set(err, SPB_ENOTFOUND, SPB_ISSUE_NOT_FOUND, "no event with tracking id %.40s",
                    tracking_id);
        return SPB_ENOTFOUND;
    }
    ev = row_object(st);
    snprintf(practice, 16, "%s", (const char *)sqlite3_column_text(st, 1));
    sqlite3_finalize(st);
    st = spb__prep(s,
                   "SELECT " OUTBOX_COLUMNS ", response AS response_json FROM outbox WHERE "
                   "event_id = ? ORDER BY id",
                   err);
    if (st == NULL) {
        rc = SPB_ERR;
        goto out;
    }
    spb__bind_text(st, 1, tracking_id);
    rows = json_array();
    rc = spb__rows_to_array(s, st, rows, err);
    if (rc < 0)
        goto out;
    /* the event's state is that of its newest delivery row */
    if (json_array_size(rows) > 0) {
        json_t *last = json_array_get(rows, json_array_size(rows) - 1);
        json_object_set(ev, "state", json_object_get(last, "state"));
    }
    json_object_set_new(ev, "deliveries", rows);
    rows = NULL;
    *out = ev;
    ev = NULL;
out:
    sqlite3_finalize(st);
    json_decref(ev);
    json_decref(rows);
    return rc;
}

int spb_store_outbox_list(spb_store *s, const char *state, int limit, json_t **out, spb_err *err)
{
    sqlite3_stmt *st =
        spb__prep(s,
                  "SELECT " OUTBOX_COLUMNS " FROM outbox WHERE (?1 IS NULL OR state = "
                  "?1) ORDER BY id DESC LIMIT ?2",
                  err);
    *out = NULL;
    if (st == NULL)
        return SPB_ERR;
    spb__bind_text(st, 1, state);
    sqlite3_bind_int(st, 2, limit);
    return spb__query_array(s, st, out, err);
}

int spb_store_outbox_show(spb_store *s, int64_t id, json_t **out, spb_err *err)
{
    sqlite3_stmt *st =
        spb__prep(s,
                  "SELECT " OUTBOX_COLUMNS ", response AS response_json, payload FROM "
                  "outbox WHERE id = ?",
                  err);
    json_t *row, *atts;
    int rc;
    *out = NULL;
    if (st == NULL)
        return SPB_ERR;
    sqlite3_bind_int64(st, 1, id);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        spb_err_set(err, SPB_ENOTFOUND, SPB_ISSUE_NOT_FOUND, "no outbox row %lld", (long long)id);
        return SPB_ENOTFOUND;
    }
    row = row_object(st);
    sqlite3_finalize(st);
    st = spb__prep(s,
                   "SELECT attempt, started_at, finished_at, http_status, outcome, error FROM "
                   "attempts WHERE outbox_id = ? ORDER BY id",
                   err);
    if (st == NULL) {
        json_decref(row);
        return SPB_ERR;
    }
    sqlite3_bind_int64(st, 1, id);
    atts = json_array();
    rc = spb__rows_to_array(s, st, atts, err);
    sqlite3_finalize(st);
    json_object_set_new(row, "attempt_log", atts);
    if (rc < 0) {
        json_decref(row);
        return rc;
    }
    *out = row;
    return 0;
}

int spb_store_replay(spb_store *s, int64_t id, const char *who, int64_t *new_id, spb_err *err)
{
    sqlite3_stmt *st = NULL;
    int64_t now = spb_now_ms();
    int rc = spb__exec(s, "BEGIN IMMEDIATE", err);
    char practice[16] = "", referral[SPB_UUID_LEN + 1] = "";

    if (rc < 0)
        return rc;
    st = spb__prep(
        s,
        "INSERT INTO outbox(event_id, referral, practice, service_id, kind, payload, "
        "state, next_attempt_at, created_at, updated_at, replay_of, channel, method, url_path, "
        "content_type) "
        "SELECT event_id, referral, practice, service_id, kind, payload, 'queued', ?1, ?1, "
        "?1, id, channel, method, url_path, content_type FROM outbox WHERE id = ?2 AND state "
        "IN ('dead','delivered') "
        "RETURNING id, practice, referral",
        err);
    if (st == NULL) {
        rc = SPB_ERR;
        goto out;
    }
    sqlite3_bind_int64(st, 1, now);
    sqlite3_bind_int64(st, 2, id);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        st = NULL;
        rc = spb_err_set(err, SPB_ENOTFOUND, SPB_ISSUE_NOT_FOUND,
                         "outbox row %lld does not exist or is still pending (only dead or "
                         "delivered rows can be replayed)",
                         (long long)id);
        goto out;
    }
    *new_id = sqlite3_column_int64(st, 0);
    snprintf(practice, sizeof(practice), "%s", sqlite3_column_text(st, 1));
    snprintf(referral, sizeof(referral), "%s", sqlite3_column_text(st, 2));
    sqlite3_step(st);
    sqlite3_finalize(st);
    st = NULL;
    {
        char detail[64];
        snprintf(detail, sizeof(detail), "replay of outbox row %lld as %lld", (long long)id,
                 (long long)*new_id);
        rc = spb__audit(s, now, who, practice, referral, "replayed", "ok", detail, NULL, err);
    }
    if (rc == 0)
        rc = spb__exec(s, "COMMIT", err);
out:
    sqlite3_finalize(st);
    if (rc < 0)
        rollback(s);
    return rc;
}

int spb_store_replay_dead(spb_store *s, const char *who, int *n, spb_err *err)
{
    sqlite3_stmt *st = spb__prep(s,
                                 "SELECT id FROM outbox o WHERE state = 'dead' AND NOT EXISTS "
                                 "(SELECT 1 FROM outbox r WHERE r.replay_of = o.id) ORDER BY id",
                                 err);
    int64_t ids[1024];
    int count = 0, rc = 0;

    *n = 0;
    if (st == NULL)
        return SPB_ERR;
    while (count < 1024 && sqlite3_step(st) == SQLITE_ROW)
        ids[count++] = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    for (int i = 0; i < count; i++) {
        int64_t new_id;
        rc = spb_store_replay(s, ids[i], who, &new_id, err);
        if (rc < 0)
            return rc;
        (*n)++;
    }
    return 0;
}

int spb_store_parked_list(spb_store *s, int limit, json_t **out, spb_err *err)
{
    sqlite3_stmt *st =
        spb__prep(s,
                  "SELECT id, received_at, identity, practice, channel, source_name, "
                  "error_code, issue, message, hint, line, location, replayed_at, "
                  "replay_result FROM parked ORDER BY received_at DESC LIMIT ?",
                  err);
    *out = NULL;
    if (st == NULL)
        return SPB_ERR;
    sqlite3_bind_int(st, 1, limit);
    return spb__query_array(s, st, out, err);
}

int spb_store_parked_get(spb_store *s, const char *id, spb_parked *out, spb_err *err)
{
    sqlite3_stmt *st = spb__prep(s,
                                 "SELECT identity, practice, channel, source_name, body, "
                                 "replayed_at FROM parked WHERE id = ?",
                                 err);
    int rc = 0;
    memset(out, 0, sizeof(*out));
    if (st == NULL)
        return SPB_ERR;
    spb__bind_text(st, 1, id);
    if (sqlite3_step(st) != SQLITE_ROW) {
        rc = spb_err_set(err, SPB_ENOTFOUND, SPB_ISSUE_NOT_FOUND, "no parked input %.40s", id);
        goto out;
    }
    snprintf(out->identity, sizeof(out->identity), "%s",
             sqlite3_column_text(st, 0) ? (const char *)sqlite3_column_text(st, 0) : "");
    snprintf(out->practice, sizeof(out->practice), "%s",
             sqlite3_column_text(st, 1) ? (const char *)sqlite3_column_text(st, 1) : "");
    snprintf(out->channel, sizeof(out->channel), "%s",
             sqlite3_column_text(st, 2) ? (const char *)sqlite3_column_text(st, 2) : "");
    snprintf(out->source_name, sizeof(out->source_name), "%s",
             sqlite3_column_text(st, 3) ? (const char *)sqlite3_column_text(st, 3) : "");
    out->len = (size_t)sqlite3_column_bytes(st, 4);
    out->body = malloc(out->len + 1);
    if (out->body == NULL) {
        rc = spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
        goto out;
    }
    memcpy(out->body, sqlite3_column_blob(st, 4), out->len);
    out->body[out->len] = '\0';
    out->replayed = sqlite3_column_type(st, 5) != SQLITE_NULL;
out:
    sqlite3_finalize(st);
    return rc;
}

int spb_store_parked_mark(spb_store *s, const char *id, const char *result, spb_err *err)
{
    sqlite3_stmt *st =
        spb__prep(s, "UPDATE parked SET replayed_at = ?, replay_result = ? WHERE id = ?", err);
    int rc = 0;
    if (st == NULL)
        return SPB_ERR;
    sqlite3_bind_int64(st, 1, spb_now_ms());
    spb__bind_text(st, 2, result);
    spb__bind_text(st, 3, id);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = spb__db_error(s, err, "parked");
    sqlite3_finalize(st);
    if (rc == 0)
        rc = spb__audit(s, spb_now_ms(), "cli", NULL, NULL, "replayed", "ok", result, NULL, err);
    return rc;
}
