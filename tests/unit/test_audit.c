/*
 * Unit tests for the audit trail: the canonical record hash; a chain and its signed
 * checkpoints verify; an edited, deleted, re-ordered or truncated record (at either end) is
 * found and named; a changed, deleted or foreign checkpoint is found; pruning in batches
 * leaves a chain that still verifies, and refuses to prune a broken one; stores from before
 * the chain are migrated; concurrent writers keep one chain; queries are scoped by region
 * and practice; the FHIR AuditEvent shape; times and ISO weeks; the report's figures.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <sqlite3.h>

#include "../../adapter/store_internal.h"
#include "spbridge/audit.h"
#include "spbridge/report.h"
#include "spbridge/store.h"
#include "support.h"

static char key_path[512], cert_path[512], other_key[512], other_cert[512];
static int db_counter;

/* ------------------------------------------------------------------ fixtures */

static void make_keypair(const char *name, char *kpath, char *cpath)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *n;
    FILE *f;

    assert_non_null(key);
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 30);
    X509_set_pubkey(x, key);
    n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)name, -1, -1, 0);
    X509_set_issuer_name(x, n);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    snprintf(kpath, 512, "%s/%s.key", tmpdir, name);
    snprintf(cpath, 512, "%s/%s.pem", tmpdir, name);
    f = fopen(kpath, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    f = fopen(cpath, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509(f, x), 1);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(key);
}

static int group_setup(void **state)
{
    (void)state;
    if (support_make_tmpdir("audit") < 0)
        return -1;
    make_keypair("signer", key_path, cert_path);
    make_keypair("stranger", other_key, other_cert);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    support_remove_tmpdir();
    return 0;
}

typedef struct fixture {
    char path[512];
    spb_store *store;
    spb_audit_signer *signer;
    spb_audit_trust *trust;
} fixture;

static void fixture_open(fixture *fx)
{
    spb_err err;
    const char *paths[1];
    spb_err_clear(&err);
    memset(fx, 0, sizeof(*fx));
    snprintf(fx->path, sizeof(fx->path), "%s/store-%d.db", tmpdir, ++db_counter);
    assert_int_equal(spb_store_open(&fx->store, fx->path, &err), 0);
    assert_int_equal(spb_audit_signer_open(&fx->signer, key_path, cert_path, &err), 0);
    paths[0] = cert_path;
    assert_int_equal(spb_audit_trust_load(&fx->trust, paths, 1, &err), 0);
}

static void fixture_close(fixture *fx)
{
    spb_store_close(fx->store);
    spb_audit_signer_free(fx->signer);
    spb_audit_trust_free(fx->trust);
}

static void add(fixture *fx, int n, const char *practice)
{
    spb_err err;
    spb_err_clear(&err);
    for (int i = 0; i < n; i++) {
        char detail[32];
        snprintf(detail, sizeof(detail), "step %d", i);
        assert_int_equal(spb_store_audit(fx->store, "tester", practice,
                                         "5f0c2b1e-7a43-4d0b-"
                                         "9a36-2f1d8c7e9b10",
                                         "received", "ok", detail, &err),
                         0);
    }
}

static void add_at(fixture *fx, int n, int64_t at)
{
    spb_err err;
    spb_err_clear(&err);
    for (int i = 0; i < n; i++)
        assert_int_equal(spb__audit(fx->store, at + i, "tester", "B83002", NULL, "queued", "ok",
                                    "wharfedale", "set@1 sha256:00", &err),
                         0);
}

static void checkpoint(fixture *fx)
{
    spb_err err;
    spb_err_clear(&err);
    assert_int_equal(spb_audit_checkpoint(fx->store, fx->signer, "manual", NULL, &err), 0);
}

/* Runs SQL on the store file from outside, as someone tampering with it would. */
static void tamper(fixture *fx, const char *sql)
{
    sqlite3 *db = NULL;
    char *msg = NULL;
    assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("tamper: %s", msg ? msg : "?");
    sqlite3_close(db);
}

static spb_audit_verify_result verify(fixture *fx)
{
    spb_audit_verify_result res;
    spb_err err;
    spb_err_clear(&err);
    assert_int_equal(spb_audit_verify(fx->store, fx->trust, &res, &err), 0);
    return res;
}

static int mentions(const spb_audit_verify_result *res, const char *text)
{
    for (int i = 0; i < res->nproblems; i++) {
        if (strstr(res->problems[i], text) != NULL)
            return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ the hash */

static void test_record_hash(void **state)
{
    spb_audit_record a, b;
    char h1[65], h2[65];
    (void)state;
    memset(&a, 0, sizeof(a));
    a.id = 7;
    a.at = 1700000000000;
    a.identity = "b83002";
    a.practice = "B83002";
    a.step = "received";
    a.result = "ok";
    a.prev_hash = SPB_AUDIT_GENESIS;
    assert_int_equal(spb_audit_record_hash(&a, h1), 0);
    assert_int_equal(strlen(h1), 64);
    b = a;
    assert_int_equal(spb_audit_record_hash(&b, h2), 0);
    assert_string_equal(h1, h2);
    b.detail = ""; /* empty and NULL are the same: the store keeps NULL */
    assert_int_equal(spb_audit_record_hash(&b, h2), 0);
    assert_string_equal(h1, h2);
    b.id = 8; /* the position is part of the hash */
    assert_int_equal(spb_audit_record_hash(&b, h2), 0);
    assert_string_not_equal(h1, h2);
    b = a;
    b.practice = "B8300";
    b.region = "2"; /* moving bytes between fields changes the hash */
    assert_int_equal(spb_audit_record_hash(&b, h2), 0);
    assert_string_not_equal(h1, h2);
    b = a;
    b.prev_hash = "1111111111111111111111111111111111111111111111111111111111111111";
    assert_int_equal(spb_audit_record_hash(&b, h2), 0);
    assert_string_not_equal(h1, h2);
}

/* ------------------------------------------------------------------ verify */

static void test_chain_verifies(void **state)
{
    fixture fx;
    spb_audit_verify_result res;
    (void)state;
    fixture_open(&fx);
    res = verify(&fx); /* empty */
    assert_true(res.ok);
    add(&fx, 10, "B83002");
    checkpoint(&fx);
    add(&fx, 3, NULL);
    res = verify(&fx);
    assert_true(res.ok);
    assert_int_equal(res.records, 13);
    assert_int_equal(res.first_id, 1);
    assert_int_equal(res.last_id, 13);
    assert_int_equal(res.checkpoints, 1);
    assert_int_equal(res.covered_to, 10);
    assert_int_equal(res.first_bad, 0);
    fixture_close(&fx);
}

static void test_edit_is_named(void **state)
{
    fixture fx;
    spb_audit_verify_result res;
    (void)state;
    fixture_open(&fx);
    add(&fx, 10, "B83002");
    checkpoint(&fx);
    tamper(&fx, "UPDATE audit SET detail = 'nothing to see' WHERE id = 5");
    res = verify(&fx);
    assert_false(res.ok);
    assert_int_equal(res.first_bad, 5);
    assert_true(mentions(&res, "record 5 does not match its hash"));
    fixture_close(&fx);

    /* a field the chain covers but the detail does not: the practice (a region leak) */
    fixture_open(&fx);
    add(&fx, 4, "B83002");
    tamper(&fx, "UPDATE audit SET practice = 'Y01234' WHERE id = 2");
    res = verify(&fx);
    assert_false(res.ok);
    assert_int_equal(res.first_bad, 2);
    fixture_close(&fx);
}

static void test_edit_with_rehash_is_caught_by_checkpoint(void **state)
{
    fixture fx;
    spb_audit_verify_result res;
    sqlite3 *db;
    sqlite3_stmt *st;
    char prev[65] = SPB_AUDIT_GENESIS;
    (void)state;
    fixture_open(&fx);
    add(&fx, 8, "B83002");
    checkpoint(&fx);
    /* someone edits record 3 and recomputes every hash after it: the chain itself is then
     * consistent, but the checkpoint signed record 8's old hash */
    tamper(&fx, "UPDATE audit SET result = 'refused' WHERE id = 3");
    assert_int_equal(sqlite3_open(fx.path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT id, at, identity, practice, region, referral, "
                                        "step, result, detail, mapping_version FROM audit "
                                        "ORDER BY id",
                                        -1, &st, NULL),
                     SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        spb_audit_record r;
        char hash[65], sql[300];
        memset(&r, 0, sizeof(r));
        r.id = sqlite3_column_int64(st, 0);
        r.at = sqlite3_column_int64(st, 1);
        r.identity = (const char *)sqlite3_column_text(st, 2);
        r.practice = (const char *)sqlite3_column_text(st, 3);
        r.region = (const char *)sqlite3_column_text(st, 4);
        r.referral = (const char *)sqlite3_column_text(st, 5);
        r.step = (const char *)sqlite3_column_text(st, 6);
        r.result = (const char *)sqlite3_column_text(st, 7);
        r.detail = (const char *)sqlite3_column_text(st, 8);
        r.mapping_version = (const char *)sqlite3_column_text(st, 9);
        r.prev_hash = prev;
        spb_audit_record_hash(&r, hash);
        snprintf(sql, sizeof(sql), "UPDATE audit SET prev_hash = '%s', hash = '%s' WHERE id = %lld",
                 prev, hash, (long long)r.id);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        snprintf(prev, sizeof(prev), "%s", hash);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    res = verify(&fx);
    assert_false(res.ok);
    assert_int_equal(res.first_bad, 8);
    assert_true(mentions(&res, "signed in checkpoint"));
    fixture_close(&fx);
}

static void test_delete_is_named(void **state)
{
    fixture fx;
    spb_audit_verify_result res;
    (void)state;
    fixture_open(&fx);
    add(&fx, 10, "B83002");
    checkpoint(&fx);
    tamper(&fx, "DELETE FROM audit WHERE id = 7");
    res = verify(&fx);
    assert_false(res.ok);
    assert_int_equal(res.first_bad, 7);
    assert_true(mentions(&res, "record 7 is missing"));
    fixture_close(&fx);

    /* deleted, and the ids after it renumbered to hide the gap */
    fixture_open(&fx);
    add(&fx, 6, "B83002");
    tamper(&fx, "DELETE FROM audit WHERE id = 3; UPDATE audit SET id = id - 1 WHERE id > 3;");
    res = verify(&fx);
    assert_false(res.ok);
    assert_int_equal(res.first_bad, 3);
    fixture_close(&fx);
}

static void test_reorder_is_named(void **state)
{
    fixture fx;
    spb_audit_verify_result res;
    (void)state;
    /* two records swap places (whole rows, hashes included) */
    fixture_open(&fx);
    add(&fx, 6, "B83002");
    tamper(&fx, "UPDATE audit SET id = -3 WHERE id = 3; UPDATE audit SET id = 3 WHERE id = 4;"
                "UPDATE audit SET id = 4 WHERE id = -3;");
    res = verify(&fx);
    assert_false(res.ok);
    assert_int_equal(res.first_bad, 3);
    fixture_close(&fx);

    /* the contents move but the hashes stay where they were */
    fixture_open(&fx);
    add(&fx, 6, "B83002");
    tamper(&fx, "UPDATE audit SET detail = CASE id WHEN 2 THEN 'step 2' WHEN 3 THEN 'step 1' END "
                "WHERE id IN (2, 3)");
    res = verify(&fx);
    assert_false(res.ok);
    assert_int_equal(res.first_bad, 2);
    fixture_close(&fx);
}

static void test_truncation_is_named(void **state)
{
    fixture fx;
    spb_audit_verify_result res;
    (void)state;
    /* the end cut off, behind a checkpoint */
    fixture_open(&fx);
    add(&fx, 10, "B83002");
    checkpoint(&fx);
    tamper(&fx, "DELETE FROM audit WHERE id >= 8");
    res = verify(&fx);
    assert_false(res.ok);
    assert_int_equal(res.first_bad, 8);
    assert_true(mentions(&res, "truncation"));
    fixture_close(&fx);

    /* the end cut off after the last checkpoint: the table's sequence remembers */
    fixture_open(&fx);
    add(&fx, 10, "B83002");
    checkpoint(&fx);
    add(&fx, 3, "B83002");
    tamper(&fx, "DELETE FROM audit WHERE id >= 12");
    res = verify(&fx);
    assert_false(res.ok);
    assert_int_equal(res.first_bad, 12);
    fixture_close(&fx);

    /* the beginning cut off without a prune */
    fixture_open(&fx);
    add(&fx, 10, "B83002");
    checkpoint(&fx);
    tamper(&fx, "DELETE FROM audit WHERE id <= 3");
    res = verify(&fx);
    assert_false(res.ok);
    assert_int_equal(res.first_bad, 1);
    fixture_close(&fx);

    /* everything deleted */
    fixture_open(&fx);
    add(&fx, 5, "B83002");
    checkpoint(&fx);
    tamper(&fx, "DELETE FROM audit");
    res = verify(&fx);
    assert_false(res.ok);
    assert_int_equal(res.first_bad, 1);
    fixture_close(&fx);
}

static void test_checkpoints_are_checked(void **state)
{
    fixture fx;
    spb_audit_verify_result res;
    spb_audit_trust *stranger;
    const char *paths[1] = {other_cert};
    spb_err err;
    (void)state;
    spb_err_clear(&err);

    /* a checkpoint's content changed (to cover a shorter table) */
    fixture_open(&fx);
    add(&fx, 5, "B83002");
    checkpoint(&fx);
    tamper(&fx, "UPDATE audit_checkpoints SET last_id = 4");
    res = verify(&fx);
    assert_false(res.ok);
    assert_true(mentions(&res, "signature does not match"));
    fixture_close(&fx);

    /* the first of two checkpoints deleted */
    fixture_open(&fx);
    add(&fx, 5, "B83002");
    checkpoint(&fx);
    add(&fx, 5, "B83002");
    checkpoint(&fx);
    tamper(&fx, "DELETE FROM audit_checkpoints WHERE id = 1");
    res = verify(&fx);
    assert_false(res.ok);
    assert_true(mentions(&res, "does not follow the checkpoint before it"));
    fixture_close(&fx);

    /* the newest checkpoint deleted */
    fixture_open(&fx);
    add(&fx, 5, "B83002");
    checkpoint(&fx);
    checkpoint(&fx);
    tamper(&fx, "DELETE FROM audit_checkpoints WHERE id = 2");
    res = verify(&fx);
    assert_false(res.ok);
    assert_true(mentions(&res, "were deleted"));
    fixture_close(&fx);

    /* signed by a key verify does not trust */
    fixture_open(&fx);
    add(&fx, 5, "B83002");
    checkpoint(&fx);
    assert_int_equal(spb_audit_trust_load(&stranger, paths, 1, &err), 0);
    assert_int_equal(spb_audit_verify(fx.store, stranger, &res, &err), 0);
    assert_false(res.ok);
    assert_true(mentions(&res, "not trusted"));
    spb_audit_trust_free(stranger);
    fixture_close(&fx);

    /* a key that does not belong to the certificate is refused */
    {
        spb_audit_signer *sg = NULL;
        assert_int_equal(spb_audit_signer_open(&sg, other_key, cert_path, &err), SPB_ECONFIG);
        assert_null(sg);
    }
}

/* ------------------------------------------------------------------ prune */

static void test_prune_keeps_verify(void **state)
{
    fixture fx;
    spb_audit_verify_result res;
    spb_err err;
    int64_t pruned = 0, now = spb_now_ms();
    sqlite3 *db;
    sqlite3_stmt *st;
    int prunes = 0;
    (void)state;
    spb_err_clear(&err);
    fixture_open(&fx);
    add_at(&fx, 10, now - 40LL * 86400000);
    checkpoint(&fx);
    add_at(&fx, 5, now);
    assert_int_equal(spb_audit_prune(fx.store, fx.signer, now - 30LL * 86400000, 3, &pruned, &err),
                     0);
    assert_int_equal(pruned, 10);
    res = verify(&fx);
    assert_true(res.ok);
    assert_int_equal(res.records, 5);
    assert_int_equal(res.first_id, 11);
    /* bounded batches: 3 + 3 + 3 + 1, each with its own signed checkpoint */
    assert_int_equal(sqlite3_open(fx.path, &db), SQLITE_OK);
    sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM audit_checkpoints WHERE kind = 'prune'", -1, &st,
                       NULL);
    if (sqlite3_step(st) == SQLITE_ROW)
        prunes = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    assert_int_equal(prunes, 4);
    /* pruning again finds nothing; new records follow on */
    assert_int_equal(spb_audit_prune(fx.store, fx.signer, now - 30LL * 86400000, 3, &pruned, &err),
                     0);
    assert_int_equal(pruned, 0);
    add(&fx, 2, "B83002");
    res = verify(&fx);
    assert_true(res.ok);
    /* the first record after the anchor deleted: found */
    tamper(&fx, "DELETE FROM audit WHERE id = 11");
    res = verify(&fx);
    assert_false(res.ok);
    assert_int_equal(res.first_bad, 11);
    fixture_close(&fx);

    /* everything pruned: an empty table verifies, and the chain goes on from the anchor */
    fixture_open(&fx);
    add_at(&fx, 6, now - 10000);
    assert_int_equal(spb_audit_prune(fx.store, fx.signer, now + 1, 100, &pruned, &err), 0);
    assert_int_equal(pruned, 6);
    res = verify(&fx);
    assert_true(res.ok);
    assert_int_equal(res.records, 0);
    assert_int_equal(res.covered_to, 0); /* nothing left to cover */
    {
        /* the prune checkpoint names the last record pruned as the chain's head */
        assert_int_equal(sqlite3_open(fx.path, &db), SQLITE_OK);
        sqlite3_prepare_v2(db,
                           "SELECT last_id, anchor_id FROM audit_checkpoints ORDER BY id DESC "
                           "LIMIT 1",
                           -1, &st, NULL);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int64(st, 0), 6);
        assert_int_equal(sqlite3_column_int64(st, 1), 6);
        sqlite3_finalize(st);
        sqlite3_close(db);
    }
    add(&fx, 3, "B83002");
    res = verify(&fx);
    assert_true(res.ok);
    assert_int_equal(res.first_id, 7);
    fixture_close(&fx);
}

static void test_prune_refuses_a_broken_chain(void **state)
{
    fixture fx;
    spb_audit_verify_result res;
    spb_err err;
    int64_t pruned = 0, now = spb_now_ms();
    (void)state;
    spb_err_clear(&err);
    fixture_open(&fx);
    add_at(&fx, 6, now - 40LL * 86400000);
    tamper(&fx, "UPDATE audit SET detail = 'rewritten' WHERE id = 4");
    assert_int_equal(spb_audit_prune(fx.store, fx.signer, now, 2, &pruned, &err), SPB_EINVALID);
    assert_non_null(strstr(err.message, "record 4"));
    /* the batch before the bad record went; the evidence stayed */
    res = verify(&fx);
    assert_false(res.ok);
    assert_int_equal(res.first_bad, 4);
    fixture_close(&fx);
}

/* ------------------------------------------------------------------ migration, writers */

static void test_legacy_store_is_chained(void **state)
{
    char path[512];
    sqlite3 *db;
    spb_store *s = NULL;
    spb_audit_trust *trust = NULL;
    spb_audit_verify_result res;
    const char *paths[1] = {cert_path};
    spb_err err;
    (void)state;
    spb_err_clear(&err);
    snprintf(path, sizeof(path), "%s/legacy.db", tmpdir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "CREATE TABLE audit(id INTEGER PRIMARY KEY AUTOINCREMENT, at "
                                  "INTEGER NOT NULL, identity TEXT, practice TEXT, referral TEXT, "
                                  "step TEXT NOT NULL, result TEXT NOT NULL, detail TEXT, "
                                  "mapping_version TEXT);"
                                  "INSERT INTO audit(at, identity, practice, step, result) VALUES "
                                  "(1, 'a', 'B83002', 'received', 'ok'), (2, 'a', 'B83002', "
                                  "'queued', 'ok'), (3, 'spbridge', NULL, 'reload', 'ok');",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(spb_store_open(&s, path, &err), 0);
    assert_int_equal(spb_store_audit(s, "b", "B83002", NULL, "received", "ok", NULL, &err), 0);
    assert_int_equal(spb_audit_trust_load(&trust, paths, 1, &err), 0);
    assert_int_equal(spb_audit_verify(s, trust, &res, &err), 0);
    assert_true(res.ok);
    assert_int_equal(res.records, 4);
    spb_audit_trust_free(trust);
    spb_store_close(s);
}

static void *writer(void *arg)
{
    const char *path = arg;
    spb_store *s = NULL;
    spb_err err;
    spb_err_clear(&err);
    if (spb_store_open(&s, path, &err) < 0)
        return (void *)1;
    for (int i = 0; i < 40; i++) {
        /* half inside a caller's transaction, half on their own */
        if (i % 2 == 0) {
            if (spb__exec(s, "BEGIN IMMEDIATE", &err) < 0 ||
                spb__audit(s, spb_now_ms(), "w", "B83002", NULL, "queued", "ok", NULL, NULL, &err) <
                    0 ||
                spb__exec(s, "COMMIT", &err) < 0) {
                spb_store_close(s);
                return (void *)1;
            }
        } else if (spb_store_audit(s, "w", "B83002", NULL, "received", "ok", NULL, &err) < 0) {
            spb_store_close(s);
            return (void *)1;
        }
    }
    spb_store_close(s);
    return NULL;
}

static void test_concurrent_writers_keep_one_chain(void **state)
{
    fixture fx;
    spb_audit_verify_result res;
    pthread_t t[4];
    (void)state;
    fixture_open(&fx);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, writer, fx.path), 0);
    for (int i = 0; i < 4; i++) {
        void *rv = NULL;
        pthread_join(t[i], &rv);
        assert_null(rv);
    }
    res = verify(&fx);
    assert_true(res.ok);
    assert_int_equal(res.records, 160);
    fixture_close(&fx);
}

/* ------------------------------------------------------------------ queries */

static void sync_regions(fixture *fx)
{
    spb_audit_region r[2];
    spb_err err;
    spb_err_clear(&err);
    memset(r, 0, sizeof(r));
    snprintf(r[0].practice, sizeof(r[0].practice), "B83002");
    snprintf(r[0].region, sizeof(r[0].region), "Y63");
    snprintf(r[1].practice, sizeof(r[1].practice), "Y01234");
    snprintf(r[1].region, sizeof(r[1].region), "Y62");
    assert_int_equal(spb_audit_sync_regions(fx->store, r, 2, &err), 0);
}

static size_t query_n(fixture *fx, spb_client_role role, const char *ods, const char *region,
                      const spb_audit_filter *f, const char *must_practice)
{
    spb_audit_scope scope;
    json_t *rows = NULL, *row;
    int more = 0;
    size_t i, n;
    int64_t count = -1;
    spb_err err;
    spb_err_clear(&err);
    memset(&scope, 0, sizeof(scope));
    scope.role = role;
    snprintf(scope.ods, sizeof(scope.ods), "%s", ods);
    snprintf(scope.region, sizeof(scope.region), "%s", region);
    assert_int_equal(spb_audit_query(fx->store, &scope, f, &rows, &more, &err), 0);
    assert_int_equal(spb_audit_count(fx->store, &scope, f, &count, &err), 0);
    json_array_foreach(rows, i, row)
    {
        if (must_practice != NULL)
            assert_string_equal(json_string_value(json_object_get(row, "practice")), must_practice);
    }
    n = json_array_size(rows);
    if (!more)
        assert_int_equal(count, (int64_t)n);
    json_decref(rows);
    return n;
}

static void test_queries_are_scoped(void **state)
{
    fixture fx;
    spb_audit_filter f;
    spb_audit_scope admin;
    json_t *rows = NULL;
    int more = 0;
    spb_err err;
    (void)state;
    spb_err_clear(&err);
    fixture_open(&fx);
    sync_regions(&fx);
    add(&fx, 4, "B83002");
    add(&fx, 3, "Y01234");
    add(&fx, 2, NULL);
    memset(&f, 0, sizeof(f));
    f.limit = 100;
    assert_int_equal(query_n(&fx, SPB_ROLE_ADMIN, "", "", &f, NULL), 9);
    assert_int_equal(query_n(&fx, SPB_ROLE_AUDITOR, "", "Y63", &f, "B83002"), 4);
    assert_int_equal(query_n(&fx, SPB_ROLE_AUDITOR, "", "Y62", &f, "Y01234"), 3);
    assert_int_equal(query_n(&fx, SPB_ROLE_AUDITOR, "", "", &f, NULL), 0);
    assert_int_equal(query_n(&fx, SPB_ROLE_PRACTICE, "Y01234", "", &f, "Y01234"), 3);
    assert_int_equal(query_n(&fx, SPB_ROLE_PRACTICE, "", "", &f, NULL), 0);
    assert_int_equal(query_n(&fx, SPB_ROLE_SERVICE, "X26SP1", "Y63", &f, NULL), 0);
    /* a filter cannot widen the scope */
    f.region = "Y62";
    assert_int_equal(query_n(&fx, SPB_ROLE_AUDITOR, "", "Y63", &f, NULL), 0);
    f.region = NULL;
    f.practice = "Y01234";
    assert_int_equal(query_n(&fx, SPB_ROLE_AUDITOR, "", "Y63", &f, NULL), 0);
    assert_int_equal(query_n(&fx, SPB_ROLE_ADMIN, "", "", &f, "Y01234"), 3);
    f.practice = NULL;
    f.step = "received";
    f.referral = "5f0c2b1e-7a43-4d0b-9a36-2f1d8c7e9b10";
    assert_int_equal(query_n(&fx, SPB_ROLE_ADMIN, "", "", &f, NULL), 9);
    f.step = "queued";
    assert_int_equal(query_n(&fx, SPB_ROLE_ADMIN, "", "", &f, NULL), 0);
    /* paging */
    memset(&f, 0, sizeof(f));
    f.limit = 4;
    memset(&admin, 0, sizeof(admin));
    admin.role = SPB_ROLE_ADMIN;
    assert_int_equal(spb_audit_query(fx.store, &admin, &f, &rows, &more, &err), 0);
    assert_int_equal(json_array_size(rows), 4);
    assert_true(more);
    json_decref(rows);
    f.after_id = 8;
    assert_int_equal(spb_audit_query(fx.store, &admin, &f, &rows, &more, &err), 0);
    assert_int_equal(json_array_size(rows), 1);
    assert_false(more);
    json_decref(rows);
    f.newest_first = 1;
    f.limit = 2;
    assert_int_equal(spb_audit_query(fx.store, &admin, &f, &rows, &more, &err), 0);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(rows, 0), "id")), 9);
    json_decref(rows);
    /* the region is on the record: it stays if the practice moves later */
    {
        spb_audit_region r;
        memset(&r, 0, sizeof(r));
        snprintf(r.practice, sizeof(r.practice), "B83002");
        snprintf(r.region, sizeof(r.region), "Y60");
        assert_int_equal(spb_audit_sync_regions(fx.store, &r, 1, &err), 0);
        memset(&f, 0, sizeof(f));
        f.limit = 100;
        assert_int_equal(query_n(&fx, SPB_ROLE_AUDITOR, "", "Y63", &f, "B83002"), 4);
        add(&fx, 1, "B83002");
        assert_int_equal(query_n(&fx, SPB_ROLE_AUDITOR, "", "Y60", &f, "B83002"), 1);
    }
    fixture_close(&fx);
}

static void test_auditevent_shape(void **state)
{
    json_t *row = json_pack(
        "{s:I, s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id", (json_int_t)42, "at",
        (json_int_t)1700000000000, "time", "2023-11-14T22:13:20.000Z", "identity", "b83002",
        "practice", "B83002", "region", "Y63", "referral", "5f0c2b1e-7a43-4d0b-9a36-2f1d8c7e9b10",
        "step", "dead_lettered", "result", "failed", "detail", "attempt 1, HTTP 422", "prev_hash",
        SPB_AUDIT_GENESIS, "hash", SPB_AUDIT_GENESIS);
    json_t *ev = spb_audit_to_fhir(row);
    json_t *entity;
    (void)state;
    assert_non_null(ev);
    assert_string_equal(json_string_value(json_object_get(ev, "resourceType")), "AuditEvent");
    assert_string_equal(json_string_value(json_object_get(ev, "id")), "42");
    assert_string_equal(json_string_value(json_object_get(ev, "recorded")),
                        "2023-11-14T22:13:20.000Z");
    assert_string_equal(json_string_value(json_object_get(ev, "outcome")), "8");
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(ev, "subtype"), 0), "code")),
                        "dead_lettered");
    assert_true(json_is_true(
        json_object_get(json_array_get(json_object_get(ev, "agent"), 0), "requestor")));
    entity = json_array_get(json_object_get(ev, "entity"), 0);
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(json_object_get(entity, "what"), "identifier"), "value")),
        "B83002");
    assert_int_equal(json_array_size(json_object_get(ev, "entity")), 3);
    json_decref(ev);
    json_decref(row);
}

/* ------------------------------------------------------------------ times */

static void test_times_and_weeks(void **state)
{
    int64_t ms;
    char out[32], week[16];
    (void)state;
    assert_int_equal(spb_audit_parse_time("2026-11-21", 0, &ms), 0);
    spb_audit_format_time(ms, out);
    assert_string_equal(out, "2026-11-21T00:00:00.000Z");
    assert_int_equal(spb_audit_parse_time("2026-11-21", 1, &ms), 0);
    spb_audit_format_time(ms, out);
    assert_string_equal(out, "2026-11-21T23:59:59.999Z");
    assert_int_equal(spb_audit_parse_time("2026-11-21T11:38:11.949Z", 0, &ms), 0);
    spb_audit_format_time(ms, out);
    assert_string_equal(out, "2026-11-21T11:38:11.949Z");
    assert_int_equal(spb_audit_parse_time("2026-07-02T14:30:00+01:00", 0, &ms), 0);
    spb_audit_format_time(ms, out);
    assert_string_equal(out, "2026-07-02T13:30:00.000Z");
    assert_int_equal(spb_audit_parse_time("2026-11-21T11:38", 0, &ms), 0);
    assert_int_equal(spb_audit_parse_time("21/11/2026", 0, &ms), -1);
    assert_int_equal(spb_audit_parse_time("2026-13-01", 0, &ms), -1);
    assert_int_equal(spb_audit_parse_time("2026-11-21Tnoon", 0, &ms), -1);
    assert_int_equal(spb_audit_parse_time("2026-11-21x", 0, &ms), -1);

    static const char *const cases[][2] = {
        {"2026-11-21", "2026-W47"}, {"2021-01-01", "2020-W53"}, {"2024-12-30", "2025-W01"},
        {"2027-01-01", "2026-W53"}, {"2026-01-01", "2026-W01"}, {"2023-01-01", "2022-W52"},
        {"2020-12-31", "2020-W53"}, {"2026-11-16", "2026-W47"}, {"2026-11-15", "2026-W46"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(spb_audit_parse_time(cases[i][0], 0, &ms), 0);
        spb_report_iso_week(ms + 43200000, week);
        assert_string_equal(week, cases[i][1]);
    }
}

/* ------------------------------------------------------------------ report */

static void test_percentiles(void **state)
{
    int64_t a[] = {4, 1, 3, 2};
    int64_t b[] = {5};
    int64_t c[] = {10, 9, 8, 7, 6, 5, 4, 3, 2, 1};
    (void)state;
    assert_true(spb_report_median(a, 4) == 2.5);
    assert_int_equal(spb_report_p90(a, 4), 4);
    assert_true(spb_report_median(b, 1) == 5.0);
    assert_int_equal(spb_report_p90(b, 1), 5);
    assert_true(spb_report_median(c, 10) == 5.5);
    assert_int_equal(spb_report_p90(c, 10), 9);
    assert_true(spb_report_median(NULL, 0) == 0.0);
}

static json_t *row_for(json_t *report, const char *practice)
{
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(report, "rows"), i, r)
    {
        if (strcmp(json_string_value(json_object_get(r, "practice")), practice) == 0)
            return r;
    }
    return NULL;
}

static void test_report_figures(void **state)
{
    fixture fx;
    spb_audit_scope scope;
    spb_report_filter f;
    json_t *report = NULL, *b, *acc;
    char sql[4096], *csv;
    spb_err err;
    /* Monday 2026-11-16 09:00 UTC, all in ISO week 2026-W47 */
    const long long t0 = 1794819600000LL;
    (void)state;
    spb_err_clear(&err);
    fixture_open(&fx);
    sync_regions(&fx);
    snprintf(sql, sizeof(sql),
             "INSERT INTO events(id, source_key, practice, event_uuid, referral, kind, "
             "received_at) VALUES "
             "('t1','B83002|r1','B83002','r1','r1','referral',%lld),"
             "('t2','B83002|r2','B83002','r2','r2','referral',%lld),"
             "('t3','B83002|r3','B83002','r3','r3','referral',%lld),"
             "('t4','Y01234|r4','Y01234','r4','r4','referral',%lld),"
             "('t5','B83002|d1','B83002','d1','d1','declined',%lld),"
             "('t6','B83002|s1','B83002','s1','s1','signposting',%lld),"
             "('t7','B83002|c1','B83002','c1','r3','cancellation',%lld);"
             "INSERT INTO task_versions(service_id, task_id, version_id, referral, status, "
             "business_status, last_updated, received_at, flag) VALUES "
             "('w','T1','1','r1','requested',NULL,'2026-11-16T09:00:00Z',%lld,NULL),"
             "('w','T1','2','r1','accepted',NULL,'2026-11-16T11:00:00Z',%lld,NULL),"
             "('w','T1','3','r1','completed',NULL,'2026-11-18T09:00:00Z',%lld,NULL),"
             "('w','T2','1','r2','accepted',NULL,'2026-11-16T13:00:00Z',%lld,NULL),"
             "('w','T2','2','r2','rejected','declined','2026-11-17T09:00:00Z',%lld,NULL),"
             "('w','T3','1','r3','accepted',NULL,'2026-11-16T09:30:00Z',%lld,'quarantined');"
             "INSERT INTO outbox(id, event_id, referral, practice, service_id, kind, payload, "
             "state, next_attempt_at, created_at, updated_at) VALUES "
             "(1,'t1','r1','B83002','w','referral','{}','delivered',0,0,0),"
             "(2,'t2','r2','B83002','w','referral','{}','dead',0,0,0),"
             "(3,'t4','r4','Y01234','w','referral','{}','delivered',0,0,0);"
             "INSERT INTO attempts(outbox_id, attempt, started_at, finished_at, http_status, "
             "outcome) VALUES (1,1,%lld,%lld,500,'retry'),(1,2,%lld,%lld,200,'delivered'),"
             "(2,1,%lld,%lld,422,'dead'),(3,1,%lld,%lld,200,'delivered');",
             t0, t0, t0 + 1000, t0, t0 + 2000, t0 + 3000, t0 + 4000, t0, t0, t0, t0, t0, t0, t0, t0,
             t0, t0, t0, t0, t0, t0);
    tamper(&fx, sql);
    memset(&scope, 0, sizeof(scope));
    memset(&f, 0, sizeof(f));
    scope.role = SPB_ROLE_ADMIN;
    assert_int_equal(spb_report_build(fx.store, &scope, &f, &report, &err), 0);
    b = row_for(report, "B83002");
    assert_non_null(b);
    assert_string_equal(json_string_value(json_object_get(b, "week")), "2026-W47");
    assert_string_equal(json_string_value(json_object_get(b, "region")), "Y63");
    assert_int_equal(json_integer_value(json_object_get(b, "referralsSent")), 3);
    assert_int_equal(json_integer_value(json_object_get(b, "accepted")),
                     2); /* not the quarantined */
    assert_int_equal(json_integer_value(json_object_get(b, "rejected")), 1);
    assert_int_equal(json_integer_value(json_object_get(b, "completed")), 1);
    assert_int_equal(json_integer_value(json_object_get(b, "declined")), 2); /* event + Task */
    assert_int_equal(json_integer_value(json_object_get(b, "signposting")), 1);
    assert_int_equal(json_integer_value(json_object_get(b, "deliveryFailures")), 2);
    assert_int_equal(json_integer_value(json_object_get(b, "retries")), 1);
    assert_int_equal(json_integer_value(json_object_get(b, "deadLetters")), 1);
    acc = json_object_get(b, "timeToAcceptance");
    assert_int_equal(json_integer_value(json_object_get(acc, "n")), 2);
    /* r1 2 h, r2 4 h: median 3 h, p90 4 h */
    assert_true(json_real_value(json_object_get(acc, "medianSeconds")) == 3 * 3600.0);
    assert_true(json_real_value(json_object_get(acc, "p90Seconds")) == 4 * 3600.0);
    assert_true(json_real_value(json_object_get(json_object_get(b, "timeToCompletion"),
                                                "medianSeconds")) == 48 * 3600.0);
    assert_int_equal(
        json_integer_value(json_object_get(row_for(report, "Y01234"), "referralsSent")), 1);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(report, "totals"), "referralsSent")), 4);
    csv = spb_report_csv(report);
    assert_non_null(csv);
    assert_non_null(strstr(csv, "practice,region,week,referrals_sent,"));
    assert_non_null(strstr(csv, "B83002,Y63,2026-W47,3,2,1,2,1,1,10800.000,14400.000,"
                                "172800.000,172800.000,2,1,1\r\n"));
    free(csv);
    json_decref(report);

    /* an auditor sees its region only; a practice its own rows */
    scope.role = SPB_ROLE_AUDITOR;
    snprintf(scope.region, sizeof(scope.region), "Y62");
    assert_int_equal(spb_report_build(fx.store, &scope, &f, &report, &err), 0);
    assert_int_equal(json_array_size(json_object_get(report, "rows")), 1);
    assert_null(row_for(report, "B83002"));
    json_decref(report);
    scope.role = SPB_ROLE_PRACTICE;
    snprintf(scope.ods, sizeof(scope.ods), "B83002");
    assert_int_equal(spb_report_build(fx.store, &scope, &f, &report, &err), 0);
    assert_int_equal(json_array_size(json_object_get(report, "rows")), 1);
    assert_non_null(row_for(report, "B83002"));
    json_decref(report);
    /* a time window outside the flows: nothing */
    scope.role = SPB_ROLE_ADMIN;
    f.since_ms = t0 + 86400000LL * 30;
    assert_int_equal(spb_report_build(fx.store, &scope, &f, &report, &err), 0);
    assert_int_equal(json_array_size(json_object_get(report, "rows")), 0);
    json_decref(report);
    fixture_close(&fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_hash),
        cmocka_unit_test(test_chain_verifies),
        cmocka_unit_test(test_edit_is_named),
        cmocka_unit_test(test_edit_with_rehash_is_caught_by_checkpoint),
        cmocka_unit_test(test_delete_is_named),
        cmocka_unit_test(test_reorder_is_named),
        cmocka_unit_test(test_truncation_is_named),
        cmocka_unit_test(test_checkpoints_are_checked),
        cmocka_unit_test(test_prune_keeps_verify),
        cmocka_unit_test(test_prune_refuses_a_broken_chain),
        cmocka_unit_test(test_legacy_store_is_chained),
        cmocka_unit_test(test_concurrent_writers_keep_one_chain),
        cmocka_unit_test(test_queries_are_scoped),
        cmocka_unit_test(test_auditevent_shape),
        cmocka_unit_test(test_times_and_weeks),
        cmocka_unit_test(test_percentiles),
        cmocka_unit_test(test_report_figures),
    };
    return cmocka_run_group_tests_name("audit", tests, group_setup, group_teardown);
}
