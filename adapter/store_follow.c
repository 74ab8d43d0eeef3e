/*
 * Store functions for following Tasks and writing outcomes back. Kept apart from store.c
 * for readability; they share its SQLite handle through store_internal.h.
 *
 * Exactly-once write-back rests on two UNIQUE constraints: task_versions(service, task,
 * version) — a version is acted on once however often it is seen (polling and notification
 * overlap, restarts) — and outbox(dedupe_key) — the write-back row of a version, and the
 * closing of a ServiceRequest, are made once even if a crash interrupts between reading a
 * version and recording it.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spbridge/store.h"
#include "store_internal.h"

void spb_referral_row_clear(spb_referral_row *r)
{
    if (r == NULL)
        return;
    free(r->sr_payload);
    memset(r, 0, sizeof(*r));
}

static void col(sqlite3_stmt *st, int i, char *out, size_t size)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(out, size, "%s", t ? (const char *)t : "");
}

int spb_store_referral_get(spb_store *s, const char *key, int by_task, const char *service_id,
                           spb_referral_row *out, spb_err *err)
{
    sqlite3_stmt *st;
    int rc;

    memset(out, 0, sizeof(*out));
    st = spb__prep(s,
                   by_task ? "SELECT referral, practice, service_id, event_id, nhs_number, "
                             "birth_date, patient_id, practice_org_id, sr_id, task_id, "
                             "task_status, task_version, task_last_updated, closed, sr_payload, "
                             "task_business_status FROM referrals WHERE task_id = ?1 AND "
                             "service_id = ?2"
                           : "SELECT referral, practice, service_id, event_id, nhs_number, "
                             "birth_date, patient_id, practice_org_id, sr_id, task_id, "
                             "task_status, task_version, task_last_updated, closed, sr_payload, "
                             "task_business_status FROM referrals WHERE referral = ?1",
                   err);
    if (st == NULL)
        return SPB_ERR;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
    if (by_task)
        sqlite3_bind_text(st, 2, service_id, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        col(st, 0, out->referral, sizeof(out->referral));
        col(st, 1, out->practice, sizeof(out->practice));
        col(st, 2, out->service_id, sizeof(out->service_id));
        col(st, 3, out->event_id, sizeof(out->event_id));
        col(st, 4, out->nhs_number, sizeof(out->nhs_number));
        col(st, 5, out->birth_date, sizeof(out->birth_date));
        col(st, 6, out->patient_id, sizeof(out->patient_id));
        col(st, 7, out->practice_org_id, sizeof(out->practice_org_id));
        col(st, 8, out->sr_id, sizeof(out->sr_id));
        col(st, 9, out->task_id, sizeof(out->task_id));
        col(st, 10, out->task_status, sizeof(out->task_status));
        col(st, 11, out->task_version, sizeof(out->task_version));
        col(st, 12, out->task_last_updated, sizeof(out->task_last_updated));
        out->closed = sqlite3_column_int(st, 13);
        if (sqlite3_column_text(st, 14) != NULL)
            out->sr_payload = strdup((const char *)sqlite3_column_text(st, 14));
        col(st, 15, out->task_business_status, sizeof(out->task_business_status));
        rc = 1;
    } else if (rc == SQLITE_DONE) {
        rc = 0;
    } else {
        rc = spb__db_error(s, err, "referral");
    }
    sqlite3_finalize(st);
    return rc;
}

int spb_store_follow_targets(spb_store *s, const char *service_id, spb_follow_target *out, int max,
                             int *n, spb_err *err)
{
    sqlite3_stmt *st = spb__prep(s,
                                 "SELECT practice, MAX(practice_org_id) FROM referrals WHERE "
                                 "service_id = ? AND practice_org_id IS NOT NULL GROUP BY "
                                 "practice ORDER BY practice",
                                 err);
    *n = 0;
    if (st == NULL)
        return SPB_ERR;
    sqlite3_bind_text(st, 1, service_id, -1, SQLITE_TRANSIENT);
    while (*n < max && sqlite3_step(st) == SQLITE_ROW) {
        col(st, 0, out[*n].practice, sizeof(out[*n].practice));
        col(st, 1, out[*n].org_id, sizeof(out[*n].org_id));
        (*n)++;
    }
    sqlite3_finalize(st);
    return 0;
}

int spb_store_cursor_get(spb_store *s, const char *service_id, const char *practice, char *out,
                         size_t size, spb_err *err)
{
    sqlite3_stmt *st = spb__prep(
        s, "SELECT cursor FROM follow_cursors WHERE service_id = ? AND practice = ?", err);
    out[0] = '\0';
    if (st == NULL)
        return SPB_ERR;
    sqlite3_bind_text(st, 1, service_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, practice, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) == SQLITE_ROW)
        col(st, 0, out, size);
    sqlite3_finalize(st);
    return 0;
}

int spb_store_cursor_set(spb_store *s, const char *service_id, const char *practice,
                         const char *cursor, spb_err *err)
{
    sqlite3_stmt *st = spb__prep(s,
                                 "INSERT INTO follow_cursors(service_id, practice, cursor, "
                                 "updated_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(service_id, "
                                 "practice) DO UPDATE SET cursor = excluded.cursor, updated_at "
                                 "= excluded.updated_at WHERE excluded.cursor > cursor",
                                 err);
    int rc = 0;
    if (st == NULL)
        return SPB_ERR;
    sqlite3_bind_text(st, 1, service_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, practice, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, cursor, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, spb_now_ms());
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = spb__db_error(s, err, "cursor");
    sqlite3_finalize(st);
    return rc;
}

int spb_store_task_version_seen(spb_store *s, const char *service_id, const char *task_id,
                                const char *version_id, spb_err *err)
{
    sqlite3_stmt *st = spb__prep(s,
                                 "SELECT 1 FROM task_versions WHERE service_id = ? AND task_id "
                                 "= ? AND version_id = ?",
                                 err);
    int seen;
    if (st == NULL)
        return SPB_ERR;
    sqlite3_bind_text(st, 1, service_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, task_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, version_id, -1, SQLITE_TRANSIENT);
    seen = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return seen;
}

int spb_store_task_version(spb_store *s, const spb_task_version *tv, const spb_referral_row *ref,
                           const spb_outbox_new *rows, int nrows, spb_err *err)
{
    sqlite3_stmt *st = NULL;
    int64_t now = spb_now_ms();
    int rc = spb__exec(s, "BEGIN IMMEDIATE", err);

    if (rc < 0)
        return rc;
    st = spb__prep(s,
                   "INSERT OR IGNORE INTO task_versions(service_id, task_id, version_id, "
                   "referral, status, business_status, last_updated, received_at, flag, detail) "
                   "VALUES (?,?,?,?,?,?,?,?,?,?)",
                   err);
    if (st == NULL) {
        rc = SPB_ERR;
        goto out;
    }
    spb__bind_text(st, 1, tv->service_id);
    spb__bind_text(st, 2, tv->task_id);
    spb__bind_text(st, 3, tv->version_id);
    spb__bind_text(st, 4, tv->referral);
    spb__bind_text(st, 5, tv->status);
    spb__bind_text(st, 6, tv->business_status);
    spb__bind_text(st, 7, tv->last_updated);
    sqlite3_bind_int64(st, 8, now);
    spb__bind_text(st, 9, tv->flag);
    spb__bind_text(st, 10, tv->detail);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = spb__db_error(s, err, "task version");
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;
    if (sqlite3_changes(spb__db(s)) == 0) {
        rc = 1; /* seen before: nothing more */
        goto out;
    }
    if (tv->advance) {
        st = spb__prep(s,
                       "UPDATE referrals SET task_status = ?, task_version = ?, "
                       "task_last_updated = ?, updated_at = ?, task_business_status = ? WHERE "
                       "referral = ?",
                       err);
        if (st == NULL) {
            rc = SPB_ERR;
            goto out;
        }
        spb__bind_text(st, 1, tv->status);
        spb__bind_text(st, 2, tv->version_id);
        spb__bind_text(st, 3, tv->last_updated);
        sqlite3_bind_int64(st, 4, now);
        spb__bind_text(st, 5, tv->business_status);
        spb__bind_text(st, 6, tv->referral);
        if (sqlite3_step(st) != SQLITE_DONE) {
            rc = spb__db_error(s, err, "referral state");
            goto out;
        }
        sqlite3_finalize(st);
        st = NULL;
    }
    for (int i = 0; i < nrows; i++) {
        const spb_outbox_new *r = &rows[i];
        st = spb__prep(s,
                       "INSERT OR IGNORE INTO outbox(event_id, referral, practice, service_id, "
                       "kind, payload, state, next_attempt_at, created_at, updated_at, channel, "
                       "method, url_path, content_type, dedupe_key) "
                       "VALUES (?1,?2,?3,?4,?5,?6,'queued',?7,?7,?7,?8,?9,?10,?11,?12)",
                       err);
        if (st == NULL) {
            rc = SPB_ERR;
            goto out;
        }
        spb__bind_text(st, 1, ref->event_id);
        spb__bind_text(st, 2, ref->referral);
        spb__bind_text(st, 3, ref->practice);
        spb__bind_text(st, 4, ref->service_id);
        spb__bind_text(st, 5, r->kind);
        spb__bind_text(st, 6, r->payload);
        sqlite3_bind_int64(st, 7, now);
        spb__bind_text(st, 8, r->channel);
        spb__bind_text(st, 9, r->method);
        spb__bind_text(st, 10, r->url_path);
        spb__bind_text(st, 11, r->content_type);
        spb__bind_text(st, 12, r->dedupe_key);
        if (sqlite3_step(st) != SQLITE_DONE) {
            rc = spb__db_error(s, err, "outbox row");
            goto out;
        }
        sqlite3_finalize(st);
        st = NULL;
        if (strcmp(r->kind, "close") == 0) {
            st = spb__prep(s, "UPDATE referrals SET closed = 1 WHERE referral = ?", err);
            if (st == NULL) {
                rc = SPB_ERR;
                goto out;
            }
            spb__bind_text(st, 1, ref->referral);
            sqlite3_step(st);
            sqlite3_finalize(st);
            st = NULL;
        }
    }
    for (int i = 0; i < tv->noutput_keys; i++) {
        st = spb__prep(s,
                       "INSERT OR IGNORE INTO written_outputs(referral, output_key, written_at) "
                       "VALUES (?,?,?)",
                       err);
        if (st == NULL) {
            rc = SPB_ERR;
            goto out;
        }
        spb__bind_text(st, 1, tv->referral);
        spb__bind_text(st, 2, tv->output_keys[i]);
        sqlite3_bind_int64(st, 3, now);
        if (sqlite3_step(st) != SQLITE_DONE) {
            rc = spb__db_error(s, err, "written output");
            goto out;
        }
        sqlite3_finalize(st);
        st = NULL;
    }
    if (tv->flag != NULL && strcmp(tv->flag, "quarantined") == 0) {
        st = spb__prep(s,
                       "INSERT INTO quarantine(referral, service_id, task_id, version_id, reason, "
                       "created_at) VALUES (?,?,?,?,?,?)",
                       err);
        if (st == NULL) {
            rc = SPB_ERR;
            goto out;
        }
        spb__bind_text(st, 1, tv->referral);
        spb__bind_text(st, 2, tv->service_id);
        spb__bind_text(st, 3, tv->task_id);
        spb__bind_text(st, 4, tv->version_id);
        spb__bind_text(st, 5, tv->detail ? tv->detail : "patient mismatch");
        sqlite3_bind_int64(st, 6, now);
        if (sqlite3_step(st) != SQLITE_DONE) {
            rc = spb__db_error(s, err, "quarantine");
            goto out;
        }
        sqlite3_finalize(st);
        st = NULL;
    }
    {
        char detail[300];
        snprintf(detail, sizeof(detail), "Task %s version %s: %s%s%s%s%s", tv->task_id,
                 tv->version_id, tv->status ? tv->status : "?", tv->business_status ? " / " : "",
                 tv->business_status ? tv->business_status : "", tv->flag ? "; flagged " : "",
                 tv->flag ? tv->flag : "");
        rc = spb__audit(s, now, tv->service_id, ref->practice, ref->referral,
                        "task_change_received", tv->flag ? tv->flag : "ok", detail, NULL, err);
        for (int i = 0; rc == 0 && i < nrows; i++)
            rc = spb__audit(s, now, "spbridge", ref->practice, ref->referral,
                            strcmp(rows[i].kind, "writeback") == 0 ? "writeback_queued"
                                                                   : "close_queued",
                            "ok", rows[i].dedupe_key, NULL, err);
    }
    if (rc == 0)
        rc = spb__exec(s, "COMMIT", err);
out:
    sqlite3_finalize(st);
    if (rc != 0)
        spb__exec(s, "ROLLBACK", NULL);
    return rc;
}

int spb_store_output_written(spb_store *s, const char *referral, const char *key, spb_err *err)
{
    sqlite3_stmt *st =
        spb__prep(s, "SELECT 1 FROM written_outputs WHERE referral = ? AND output_key = ?", err);
    int found;
    if (st == NULL)
        return SPB_ERR;
    spb__bind_text(st, 1, referral);
    spb__bind_text(st, 2, key);
    found = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return found;
}

int spb_store_notify_add(spb_store *s, const char *service_id, const char *task_id, spb_err *err)
{
    sqlite3_stmt *st = spb__prep(s,
                                 "INSERT INTO notifications(service_id, task_id, received_at) "
                                 "VALUES (?,?,?)",
                                 err);
    int rc = 0;
    if (st == NULL)
        return SPB_ERR;
    spb__bind_text(st, 1, service_id);
    spb__bind_text(st, 2, task_id);
    sqlite3_bind_int64(st, 3, spb_now_ms());
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = spb__db_error(s, err, "notification");
    sqlite3_finalize(st);
    return rc;
}

int spb_store_notify_pending(spb_store *s, const char *service_id, spb_notification *out, int max,
                             int *n, spb_err *err)
{
    sqlite3_stmt *st = spb__prep(s,
                                 "SELECT id, service_id, task_id FROM notifications WHERE "
                                 "done_at IS NULL AND service_id = ? ORDER BY id LIMIT ?",
                                 err);
    *n = 0;
    if (st == NULL)
        return SPB_ERR;
    spb__bind_text(st, 1, service_id);
    sqlite3_bind_int(st, 2, max);
    while (sqlite3_step(st) == SQLITE_ROW) {
        out[*n].id = sqlite3_column_int64(st, 0);
        col(st, 1, out[*n].service_id, sizeof(out[*n].service_id));
        col(st, 2, out[*n].task_id, sizeof(out[*n].task_id));
        (*n)++;
    }
    sqlite3_finalize(st);
    return 0;
}

int spb_store_notify_done(spb_store *s, int64_t id, spb_err *err)
{
    sqlite3_stmt *st = spb__prep(s, "UPDATE notifications SET done_at = ? WHERE id = ?", err);
    int rc = 0;
    if (st == NULL)
        return SPB_ERR;
    sqlite3_bind_int64(st, 1, spb_now_ms());
    sqlite3_bind_int64(st, 2, id);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = spb__db_error(s, err, "notification");
    sqlite3_finalize(st);
    return rc;
}

static int query_into(spb_store *s, json_t *obj, const char *key, const char *sql, const char *id,
                      spb_err *err)
{
    sqlite3_stmt *st = spb__prep(s, sql, err);
    json_t *arr;
    int rc;
    if (st == NULL)
        return SPB_ERR;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    arr = json_array();
    rc = spb__rows_to_array(s, st, arr, err);
    sqlite3_finalize(st);
    json_object_set_new(obj, key, arr);
    return rc;
}

int spb_store_referral_life(spb_store *s, const char *id, json_t **out, spb_err *err)
{
    sqlite3_stmt *st;
    char referral[64] = "";
    json_t *life;
    int rc = 0;

    *out = NULL;
    /* accept the referral uuid or any tracking id of its events */
    st = spb__prep(s,
                   "SELECT referral FROM events WHERE id = ?1 OR referral = ?1 "
                   "UNION SELECT referral FROM referrals WHERE referral = ?1 LIMIT 1",
                   err);
    if (st == NULL)
        return SPB_ERR;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) == SQLITE_ROW)
        col(st, 0, referral, sizeof(referral));
    sqlite3_finalize(st);
    if (referral[0] == '\0') {
        spb_err_set(err, SPB_ENOTFOUND, SPB_ISSUE_NOT_FOUND, "no referral or tracking id %.40s",
                    id);
        return SPB_ENOTFOUND;
    }
    life = json_pack("{s:s}", "referral", referral);
    if (rc == 0)
        rc = query_into(s, life, "state",
                        "SELECT practice, service_id AS service, patient_id, sr_id, task_id, "
                        "task_status, task_version, task_last_updated, closed FROM referrals "
                        "WHERE referral = ?",
                        referral, err);
    if (rc == 0)
        rc = query_into(s, life, "events",
                        "SELECT id AS tracking_id, kind, practice, dialect, mapping_version, "
                        "channel, received_at FROM events WHERE referral = ? ORDER BY "
                        "received_at",
                        referral, err);
    if (rc == 0)
        rc = query_into(s, life, "deliveries",
                        "SELECT id, kind, channel, method, url_path, state, attempts, "
                        "last_status, last_error, server_ids, created_at, delivered_at, "
                        "replay_of FROM outbox WHERE referral = ? ORDER BY id",
                        referral, err);
    if (rc == 0)
        rc = query_into(s, life, "taskVersions",
                        "SELECT service_id AS service, task_id, version_id, status, "
                        "business_status, last_updated, received_at, flag, detail FROM "
                        "task_versions WHERE referral = ? ORDER BY id",
                        referral, err);
    if (rc == 0)
        rc = query_into(s, life, "quarantine",
                        "SELECT task_id, version_id, reason, created_at FROM quarantine "
                        "WHERE referral = ? ORDER BY id",
                        referral, err);
    if (rc < 0) {
        json_decref(life);
        return rc;
    }
    *out = life;
    return 0;
}
