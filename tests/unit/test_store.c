/*
 * Unit tests for the storage interface (include/spbridge/store.h): the promises the rest of
 * spbridge builds on, tested through the interface only so the same cases can run against
 * every backend. An accepted event is stored once however often it is sent; rows of one
 * referral go out in order; a practice's rows for one service go out one at a time while
 * other practices' do not wait; a lease that runs out gives the row back; a dead row can be
 * replayed; an event that refers to another patient's or practice's referral is caught
 * before anything is written; every step leaves an audit record.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "support.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "spbridge/audit.h"
#include "spbridge/error.h"
#include "spbridge/store.h"

static int setup_group(void **state)
{
    (void)state;
    return support_make_tmpdir("store");
}

static int teardown_group(void **state)
{
    (void)state;
    support_remove_tmpdir();
    return 0;
}

static spb_store *fresh_store(const char *name)
{
    char path[512];
    spb_store *s = NULL;
    spb_err err;
    spb_err_clear(&err);
    snprintf(path, sizeof(path), "%s/%s.db", tmpdir, name);
    assert_int_equal(spb_store_open(&s, path, &err), 0);
    return s;
}

/* One translated event, as spb_translate would give it (the resource is a stand-in). */
static void event_at(spb_translated *t, spb_event_kind kind, const char *practice, int n,
                     int referral_n, const char *nhs, const char *birth)
{
    memset(t, 0, sizeof(*t));
    t->kind = kind;
    snprintf(t->event_uuid, sizeof(t->event_uuid), "%08x-0000-4000-8000-000000000000", n);
    snprintf(t->source_uuid, sizeof(t->source_uuid), "%08x-0000-4000-8000-000000000000",
             referral_n);
    snprintf(t->practice_ods, sizeof(t->practice_ods), "%s", practice);
    snprintf(t->nhs_number, sizeof(t->nhs_number), "%s", nhs);
    snprintf(t->birth_date, sizeof(t->birth_date), "%s", birth);
    snprintf(t->service_id, sizeof(t->service_id), "svc");
    snprintf(t->trigger_code, sizeof(t->trigger_code), "871731000000106");
    t->resource = json_pack("{s:s, s:s}", "resourceType", "Bundle", "type", "transaction");
}

/* Stores one document of `n` events; returns the store's answer, items in `items`. */
static int store_doc(spb_store *s, spb_translated *events, size_t n, spb_intake_item *items,
                     size_t *nitems)
{
    spb_translation tr;
    spb_intake_meta meta = {"b83002", "B83002", "https", "unit"};
    spb_err err;
    spb_err_clear(&err);
    memset(&tr, 0, sizeof(tr));
    tr.items = events;
    tr.n = n;
    snprintf(tr.dialect, sizeof(tr.dialect), "native");
    snprintf(tr.mapping_version, sizeof(tr.mapping_version), "unit@1");
    return spb_store_intake(s, &tr, &meta, items, 8, nitems, &err);
}

static void free_events(spb_translated *events, size_t n)
{
    for (size_t i = 0; i < n; i++)
        json_decref(events[i].resource);
}

static int claim(spb_store *s, int64_t now, spb_outbox_job *job)
{
    spb_err err;
    spb_err_clear(&err);
    memset(job, 0, sizeof(*job));
    return spb_store_claim(s, now, 60000, job, &err);
}

static void finish(spb_store *s, spb_outbox_job *job, spb_delivery_outcome outcome, int64_t now)
{
    spb_attempt_result r;
    spb_err err;
    spb_err_clear(&err);
    memset(&r, 0, sizeof(r));
    r.outcome = outcome;
    r.http_status = outcome == SPB_DELIVERED ? 200 : 422;
    r.error = outcome == SPB_DELIVERED ? NULL : "refused";
    r.server_ids = outcome == SPB_DELIVERED ? "[]" : NULL;
    r.next_attempt_at = now;
    r.started_at = r.finished_at = now;
    assert_int_equal(spb_store_finish(s, job, &r, &err), 0);
    free(job->payload);
    job->payload = NULL;
}

static void test_duplicate_intake_stored_once(void **state)
{
    spb_store *s = fresh_store("dup");
    spb_translated ev[1];
    spb_intake_item items[8];
    size_t n = 0;
    spb_store_counts c;
    spb_err err;
    (void)state;
    spb_err_clear(&err);
    event_at(&ev[0], SPB_KIND_REFERRAL, "B83002", 1, 1, "9434765919", "");
    assert_int_equal(store_doc(s, ev, 1, items, &n), 0);
    assert_int_equal(n, 1);
    assert_false(items[0].duplicate);
    assert_true(items[0].outbox_id > 0);
    assert_int_equal(store_doc(s, ev, 1, items, &n), 0);
    assert_true(items[0].duplicate);
    assert_int_equal(spb_store_counts_get(s, &c, &err), 0);
    assert_int_equal(c.queued, 1);
    free_events(ev, 1);
    spb_store_close(s);
}

static void test_order_within_a_referral(void **state)
{
    spb_store *s = fresh_store("order");
    spb_translated ev[2];
    spb_intake_item items[8];
    spb_outbox_job job, second;
    size_t n = 0;
    int64_t now;
    (void)state;
    event_at(&ev[0], SPB_KIND_REFERRAL, "B83002", 1, 1, "9434765919", "");
    event_at(&ev[1], SPB_KIND_CANCELLATION, "B83002", 2, 1, "9434765919", "");
    assert_int_equal(store_doc(s, ev, 2, items, &n), 0);
    now = spb_now_ms() + 1000; /* rows are due from when they were stored */
    assert_int_equal(claim(s, now, &job), 1);
    assert_string_equal(job.kind, "referral");
    /* the cancellation waits while its referral is in flight */
    assert_int_equal(claim(s, now, &second), 0);
    finish(s, &job, SPB_DELIVERED, now);
    assert_int_equal(claim(s, now, &second), 1);
    assert_string_equal(second.kind, "cancellation");
    free(second.payload);
    free_events(ev, 2);
    spb_store_close(s);
}

static void test_practices_do_not_wait_for_each_other(void **state)
{
    spb_store *s = fresh_store("practices");
    spb_translated a[2], b[1];
    spb_intake_item items[8];
    spb_outbox_job j1, j2, j3;
    size_t n = 0;
    int64_t now;
    (void)state;
    event_at(&a[0], SPB_KIND_REFERRAL, "B83002", 1, 1, "9434765919", "");
    event_at(&a[1], SPB_KIND_REFERRAL, "B83002", 2, 2, "9990000018", "");
    event_at(&b[0], SPB_KIND_REFERRAL, "Y01234", 3, 3, "9990000026", "");
    assert_int_equal(store_doc(s, a, 2, items, &n), 0);
    assert_int_equal(store_doc(s, b, 1, items, &n), 0);
    now = spb_now_ms() + 1000;
    assert_int_equal(claim(s, now, &j1), 1);
    assert_int_equal(claim(s, now, &j2), 1);
    /* one practice's rows for one service go one at a time; the other practice's does not
     * wait for them */
    assert_string_not_equal(j1.practice, j2.practice);
    assert_int_equal(claim(s, now, &j3), 0);
    finish(s, &j1, SPB_DELIVERED, now);
    finish(s, &j2, SPB_DELIVERED, now);
    assert_int_equal(claim(s, now, &j3), 1);
    assert_string_equal(j3.practice, "B83002");
    free(j3.payload);
    free_events(a, 2);
    free_events(b, 1);
    spb_store_close(s);
}

static void test_expired_lease_gives_the_row_back(void **state)
{
    spb_store *s = fresh_store("lease");
    spb_translated ev[1];
    spb_intake_item items[8];
    spb_outbox_job job, again;
    size_t n = 0;
    int recovered = -1;
    int64_t now;
    spb_err err;
    (void)state;
    spb_err_clear(&err);
    event_at(&ev[0], SPB_KIND_REFERRAL, "B83002", 1, 1, "9434765919", "");
    assert_int_equal(store_doc(s, ev, 1, items, &n), 0);
    now = spb_now_ms() + 1000;
    assert_int_equal(claim(s, now, &job), 1);
    assert_int_equal(job.attempts, 1);
    free(job.payload);
    /* the worker dies: while its lease runs the row stays taken */
    assert_int_equal(spb_store_recover(s, now + 1000, 0, &recovered, &err), 0);
    assert_int_equal(recovered, 0);
    assert_int_equal(claim(s, now + 1000, &again), 0);
    /* after the lease, it is given back and claimed again */
    assert_int_equal(spb_store_recover(s, now + 61000, 0, &recovered, &err), 0);
    assert_int_equal(recovered, 1);
    assert_int_equal(claim(s, now + 61000, &again), 1);
    assert_int_equal(again.id, job.id);
    assert_int_equal(again.attempts, 2);
    free(again.payload);
    free_events(ev, 1);
    spb_store_close(s);
}

static void test_dead_row_replayed(void **state)
{
    spb_store *s = fresh_store("replay");
    spb_translated ev[1];
    spb_intake_item items[8];
    spb_outbox_job job, again;
    size_t n = 0;
    int64_t now, new_id = 0;
    spb_store_counts c;
    spb_err err;
    (void)state;
    spb_err_clear(&err);
    event_at(&ev[0], SPB_KIND_REFERRAL, "B83002", 1, 1, "9434765919", "");
    assert_int_equal(store_doc(s, ev, 1, items, &n), 0);
    now = spb_now_ms() + 1000;
    assert_int_equal(claim(s, now, &job), 1);
    finish(s, &job, SPB_DEAD, now);
    assert_int_equal(claim(s, now, &again), 0);
    assert_int_equal(spb_store_counts_get(s, &c, &err), 0);
    assert_int_equal(c.dead, 1);
    assert_int_equal(spb_store_replay(s, job.id, "unit", &new_id, &err), 0);
    assert_true(new_id > job.id);
    assert_int_equal(claim(s, spb_now_ms() + 1000, &again), 1); /* due from the replay on */
    assert_int_equal(again.id, new_id);
    free(again.payload);
    free_events(ev, 1);
    spb_store_close(s);
}

/* spb_store_check_links on a document of `n` events: the answer, the bad index. */
static int links(spb_store *s, spb_translated *events, size_t n, size_t *bad)
{
    spb_translation tr;
    spb_err err;
    spb_err_clear(&err);
    memset(&tr, 0, sizeof(tr));
    tr.items = events;
    tr.n = n;
    return spb_store_check_links(s, &tr, bad, &err);
}

static void test_links_to_another_patient_or_practice(void **state)
{
    spb_store *s = fresh_store("links");
    spb_translated ref[1], c[2];
    spb_intake_item items[8];
    size_t n = 0, bad = 99;
    (void)state;
    event_at(&ref[0], SPB_KIND_REFERRAL, "B83002", 1, 1, "9434765919", "1951-03-14");
    assert_int_equal(store_doc(s, ref, 1, items, &n), 0);

    event_at(&c[0], SPB_KIND_CANCELLATION, "B83002", 2, 1, "9434765919", "1951-03-14");
    assert_int_equal(links(s, c, 1, &bad), 0); /* the right patient */
    json_decref(c[0].resource);
    event_at(&c[0], SPB_KIND_CANCELLATION, "B83002", 2, 1, "9434765919", "");
    assert_int_equal(links(s, c, 1, &bad), 0); /* no birth date to compare */
    json_decref(c[0].resource);
    event_at(&c[0], SPB_KIND_CANCELLATION, "B83002", 2, 1, "9990000018", "");
    assert_int_equal(links(s, c, 1, &bad), SPB_EINVALID); /* another NHS number */
    json_decref(c[0].resource);
    event_at(&c[0], SPB_KIND_CANCELLATION, "B83002", 2, 1, "9434765919", "1960-01-01");
    assert_int_equal(links(s, c, 1, &bad), SPB_EINVALID); /* another birth date */
    json_decref(c[0].resource);
    event_at(&c[0], SPB_KIND_CANCELLATION, "Y01234", 2, 1, "9434765919", "");
    assert_int_equal(links(s, c, 1, &bad), SPB_EAUTH); /* another practice */
    json_decref(c[0].resource);
    event_at(&c[0], SPB_KIND_CANCELLATION, "B83002", 2, 77, "9434765919", "");
    assert_int_equal(links(s, c, 1, &bad), SPB_EINVALID); /* a referral never received */
    json_decref(c[0].resource);

    /* a referral and its cancellation in one document; the second event is the bad one */
    event_at(&c[0], SPB_KIND_REFERRAL, "B83002", 5, 5, "9990000026", "");
    event_at(&c[1], SPB_KIND_CANCELLATION, "B83002", 6, 5, "9990000026", "");
    assert_int_equal(links(s, c, 2, &bad), 0);
    json_decref(c[1].resource);
    event_at(&c[1], SPB_KIND_CANCELLATION, "B83002", 6, 5, "9434765919", "");
    assert_int_equal(links(s, c, 2, &bad), SPB_EINVALID);
    assert_int_equal(bad, 1);
    free_events(c, 2);

    /* the same event again, for another patient */
    event_at(&c[0], SPB_KIND_REFERRAL, "B83002", 1, 1, "9990000018", "");
    assert_int_equal(links(s, c, 1, &bad), SPB_EINVALID);
    free_events(c, 1);
    free_events(ref, 1);
    spb_store_close(s);
}

static int64_t audit_records(spb_store *s)
{
    spb_audit_status st;
    spb_err err;
    spb_err_clear(&err);
    assert_int_equal(spb_audit_status_get(s, &st, &err), 0);
    return st.records;
}

static void test_every_step_audited(void **state)
{
    spb_store *s = fresh_store("audited");
    spb_translated ev[1];
    spb_intake_item items[8];
    spb_outbox_job job;
    size_t n = 0;
    int64_t after_intake;
    spb_err err;
    (void)state;
    spb_err_clear(&err);
    event_at(&ev[0], SPB_KIND_REFERRAL, "B83002", 1, 1, "9434765919", "");
    assert_int_equal(store_doc(s, ev, 1, items, &n), 0);
    after_intake = audit_records(s);
    assert_int_equal(after_intake, 3); /* received, translated, queued: in the same commit */
    assert_int_equal(store_doc(s, ev, 1, items, &n), 0);
    assert_int_equal(audit_records(s), after_intake + 1); /* the duplicate */
    assert_int_equal(claim(s, spb_now_ms() + 1000, &job), 1);
    finish(s, &job, SPB_DELIVERED, spb_now_ms());
    assert_true(audit_records(s) > after_intake + 1); /* the delivery */
    after_intake = audit_records(s);
    assert_int_equal(
        spb_store_audit(s, "unit", "B83002", ev[0].source_uuid, "checked", "ok", NULL, &err), 0);
    assert_int_equal(audit_records(s), after_intake + 1);
    free_events(ev, 1);
    spb_store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duplicate_intake_stored_once),
        cmocka_unit_test(test_order_within_a_referral),
        cmocka_unit_test(test_practices_do_not_wait_for_each_other),
        cmocka_unit_test(test_expired_lease_gives_the_row_back),
        cmocka_unit_test(test_dead_row_replayed),
        cmocka_unit_test(test_links_to_another_patient_or_practice),
        cmocka_unit_test(test_every_step_audited),
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
