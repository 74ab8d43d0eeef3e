/*
 * The audit trail (see audit.h): the hash chain, signed checkpoints, verification, pruning,
 * region-scoped queries and their FHIR AuditEvent form.
 *
 * What holds it together:
 *  - a record's hash covers every field, its id and the previous record's hash, so editing
 *    a record, moving it to another id or unlinking it from its neighbour all show;
 *  - records are appended only under BEGIN IMMEDIATE (the callers' transactions, or ours),
 *    so the head read here is the head the new record follows;
 *  - a checkpoint signs (newest record id, its hash, the chain's anchor, the previous
 *    checkpoint) with the service's key, so rewriting the whole chain, or cutting its end,
 *    disagrees with a signature nobody without the key can make again;
 *  - pruning deletes a prefix of the chain and signs the new anchor in the same transaction.
 */
#include "spbridge/audit.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit_internal.h"
#include "spbridge/log.h"
#include "store_internal.h"

#define MAX_TRUSTED 32
#define SIG_B64_MAX 1400 /* an RSA-8192 signature in base64, with room */
#define CP_TEXT_MAX 1024

struct spb_audit_signer {
    EVP_PKEY *key;
    X509 *cert;
    char fingerprint[100];
};

struct spb_audit_trust {
    X509 *certs[MAX_TRUSTED];
    char fingerprints[MAX_TRUSTED][100];
    int n;
};

/* A checkpoint row. */
typedef struct checkpoint {
    int64_t id, at, last_id, anchor_id, records;
    char kind[16];
    char last_hash[SPB_AUDIT_HASH_HEX + 1], anchor_hash[SPB_AUDIT_HASH_HEX + 1];
    char prev[SPB_AUDIT_HASH_HEX + 1];
    char signer[100];
    char signature[SIG_B64_MAX];
} checkpoint;

/* ------------------------------------------------------------------ small helpers */

static void hex_of(const unsigned char *md, unsigned int n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (unsigned int i = 0; i < n; i++) {
        out[2 * i] = digits[md[i] >> 4];
        out[2 * i + 1] = digits[md[i] & 15];
    }
    out[2 * n] = '\0';
}

static int sha256_hex(const void *data, size_t len, char out[SPB_AUDIT_HASH_HEX + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) != 1 || n != 32)
        return SPB_ERR;
    hex_of(md, n, out);
    return 0;
}

static void col_copy(sqlite3_stmt *st, int i, char *out, size_t size)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(out, size, "%s", t ? (const char *)t : "");
}

static const char *col_str(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

static void fingerprint_of(X509 *cert, char out[100])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    size_t used = 0;
    out[0] = '\0';
    if (X509_digest(cert, EVP_sha256(), md, &n) != 1)
        return;
    for (unsigned int i = 0; i < n && used + 4 < 100; i++)
        used += (size_t)snprintf(out + used, 100 - used, "%s%02X", i ? ":" : "", md[i]);
}

/* ------------------------------------------------------------------ the record hash */

static void put_field(EVP_MD_CTX *md, const char *name, const char *value)
{
    char head[64];
    int n;
    if (value == NULL || *value == '\0') {
        n = snprintf(head, sizeof(head), "%s=-\n", name);
        EVP_DigestUpdate(md, head, (size_t)n);
        return;
    }
    n = snprintf(head, sizeof(head), "%s=%zu:", name, strlen(value));
    EVP_DigestUpdate(md, head, (size_t)n);
    EVP_DigestUpdate(md, value, strlen(value));
    EVP_DigestUpdate(md, "\n", 1);
}

/* The canonical serialisation: a version line, then `name=LENGTH:VALUE\n` for each field in
 * a fixed order (`name=-\n` when empty), integers in decimal. Lengths make it unambiguous
 * whatever bytes a value holds. */
int spb_audit_record_hash(const spb_audit_record *r, char out[SPB_AUDIT_HASH_HEX + 1])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    char num[32];
    int rc = SPB_ERR;

    out[0] = '\0';
    if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
        goto out;
    EVP_DigestUpdate(md, "spbridge-audit-v1\n", 18);
    snprintf(num, sizeof(num), "%lld", (long long)r->id);
    put_field(md, "id", num);
    snprintf(num, sizeof(num), "%lld", (long long)r->at);
    put_field(md, "at", num);
    put_field(md, "identity", r->identity);
    put_field(md, "practice", r->practice);
    put_field(md, "region", r->region);
    put_field(md, "referral", r->referral);
    put_field(md, "step", r->step);
    put_field(md, "result", r->result);
    put_field(md, "detail", r->detail);
    put_field(md, "mapping_version", r->mapping_version);
    put_field(md, "prev_hash", r->prev_hash);
    if (EVP_DigestFinal_ex(md, digest, &n) != 1 || n != 32)
        goto out;
    hex_of(digest, n, out);
    rc = 0;
out:
    EVP_MD_CTX_free(md);
    return rc;
}

/* ------------------------------------------------------------------ the chain's ends */

static int chain_anchor(spb_store *s, int64_t *id, char hash[SPB_AUDIT_HASH_HEX + 1], spb_err *err);

/* The newest record (id, hash); when the table is empty, the chain's anchor: the last record
 * pruned, or the genesis value when nothing ever was. */
static int chain_head(spb_store *s, int64_t *id, char hash[SPB_AUDIT_HASH_HEX + 1], spb_err *err)
{
    sqlite3_stmt *st = spb__prep(s, "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1", err);
    int rc;
    if (st == NULL)
        return SPB_ERR;
    *id = 0;
    snprintf(hash, SPB_AUDIT_HASH_HEX + 1, "%s", SPB_AUDIT_GENESIS);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        col_copy(st, 1, hash, SPB_AUDIT_HASH_HEX + 1);
        sqlite3_finalize(st);
        return 0;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return spb__db_error(s, err, "audit head");
    return chain_anchor(s, id, hash, err);
}

/* Where the chain starts: the anchor of the newest prune checkpoint, else (0, genesis). */
static int chain_anchor(spb_store *s, int64_t *id, char hash[SPB_AUDIT_HASH_HEX + 1], spb_err *err)
{
    sqlite3_stmt *st = spb__prep(s,
                                 "SELECT anchor_id, anchor_hash FROM audit_checkpoints WHERE "
                                 "kind = 'prune' ORDER BY id DESC LIMIT 1",
                                 err);
    if (st == NULL)
        return SPB_ERR;
    *id = 0;
    snprintf(hash, SPB_AUDIT_HASH_HEX + 1, "%s", SPB_AUDIT_GENESIS);
    if (sqlite3_step(st) == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        col_copy(st, 1, hash, SPB_AUDIT_HASH_HEX + 1);
    }
    sqlite3_finalize(st);
    return 0;
}

/* Copies `in` into `out` (size SPB_AUDIT_DETAIL_MAX + 1), cut at a UTF-8 boundary. */
static const char *bounded_detail(const char *in, char *out)
{
    size_t n;
    if (in == NULL)
        return NULL;
    n = strlen(in);
    if (n <= SPB_AUDIT_DETAIL_MAX)
        return in;
    n = SPB_AUDIT_DETAIL_MAX;
    while (n > 0 && ((unsigned char)in[n] & 0xC0) == 0x80)
        n--;
    memcpy(out, in, n);
    out[n] = '\0';
    return out;
}

int spb__audit_append(spb_store *s, const spb_audit_record *in, spb_err *err)
{
    sqlite3 *db = spb__db(s);
    int own = sqlite3_get_autocommit(db) != 0;
    spb_audit_record r = *in;
    char prev[SPB_AUDIT_HASH_HEX + 1], hash[SPB_AUDIT_HASH_HEX + 1];
    char region[32] = "";
    char *detail = NULL;
    sqlite3_stmt *st = NULL;
    int64_t head_id;
    int rc = 0;

    if (own) {
        rc = spb__exec(s, "BEGIN IMMEDIATE", err);
        if (rc < 0)
            return rc;
    }
    rc = chain_head(s, &head_id, prev, err);
    if (rc < 0)
        goto out;
    if (r.practice != NULL && *r.practice != '\0') {
        st = spb__prep(s, "SELECT region FROM practice_regions WHERE practice = ?", err);
        if (st == NULL) {
            rc = SPB_ERR;
            goto out;
        }
        spb__bind_text(st, 1, r.practice);
        if (sqlite3_step(st) == SQLITE_ROW)
            col_copy(st, 0, region, sizeof(region));
        sqlite3_finalize(st);
        st = NULL;
    }
    if (r.detail != NULL && strlen(r.detail) > SPB_AUDIT_DETAIL_MAX) {
        detail = malloc(SPB_AUDIT_DETAIL_MAX + 1);
        if (detail == NULL) {
            rc = spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
            goto out;
        }
        r.detail = bounded_detail(r.detail, detail);
    }
    r.region = region;
    r.prev_hash = prev;
    st = spb__prep(s,
                   "INSERT INTO audit(at, identity, practice, region, referral, step, result, "
                   "detail, mapping_version, prev_hash) VALUES (?,?,?,?,?,?,?,?,?,?)",
                   err);
    if (st == NULL) {
        rc = SPB_ERR;
        goto out;
    }
    sqlite3_bind_int64(st, 1, r.at);
    spb__bind_text(st, 2, r.identity);
    spb__bind_text(st, 3, r.practice);
    spb__bind_text(st, 4, r.region);
    spb__bind_text(st, 5, r.referral);
    spb__bind_text(st, 6, r.step);
    spb__bind_text(st, 7, r.result);
    spb__bind_text(st, 8, r.detail);
    spb__bind_text(st, 9, r.mapping_version);
    spb__bind_text(st, 10, r.prev_hash);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = spb__db_error(s, err, "audit");
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;
    r.id = sqlite3_last_insert_rowid(db);
    if (spb_audit_record_hash(&r, hash) < 0) {
        rc = spb_err_set(err, SPB_ERR, SPB_ISSUE_EXCEPTION, "audit: cannot compute SHA-256");
        goto out;
    }
    st = spb__prep(s, "UPDATE audit SET hash = ? WHERE id = ?", err);
    if (st == NULL) {
        rc = SPB_ERR;
        goto out;
    }
    spb__bind_text(st, 1, hash);
    sqlite3_bind_int64(st, 2, r.id);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = spb__db_error(s, err, "audit hash");
        goto out;
    }
    if (own)
        rc = spb__exec(s, "COMMIT", err);
out:
    sqlite3_finalize(st);
    free(detail);
    if (rc < 0 && own)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* Reads a full record from a row of AUDIT_COLUMNS. Strings are borrowed from `st`. */
#define AUDIT_COLUMNS                                                                              \
    "id, at, identity, practice, region, referral, step, result, detail, mapping_version, "        \
    "prev_hash, hash"

static void record_of(sqlite3_stmt *st, spb_audit_record *r)
{
    r->id = sqlite3_column_int64(st, 0);
    r->at = sqlite3_column_int64(st, 1);
    r->identity = col_str(st, 2);
    r->practice = col_str(st, 3);
    r->region = col_str(st, 4);
    r->referral = col_str(st, 5);
    r->step = col_str(st, 6);
    r->result = col_str(st, 7);
    r->detail = col_str(st, 8);
    r->mapping_version = col_str(st, 9);
    r->prev_hash = col_str(st, 10);
}

int spb__audit_chain_legacy(spb_store *s, spb_err *err)
{
    sqlite3_stmt *sel = NULL, *upd = NULL;
    char prev[SPB_AUDIT_HASH_HEX + 1] = SPB_AUDIT_GENESIS;
    int rc = 0, step;

    sel = spb__prep(s, "SELECT " AUDIT_COLUMNS " FROM audit ORDER BY id", err);
    upd = spb__prep(s, "UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?", err);
    if (sel == NULL || upd == NULL) {
        rc = SPB_ERR;
        goto out;
    }
    while ((step = sqlite3_step(sel)) == SQLITE_ROW) {
        spb_audit_record r;
        char hash[SPB_AUDIT_HASH_HEX + 1];
        const char *have = col_str(sel, 11);
        record_of(sel, &r);
        if (have != NULL && *have != '\0') {
            snprintf(prev, sizeof(prev), "%s", have); /* already chained */
            continue;
        }
        r.prev_hash = prev;
        if (spb_audit_record_hash(&r, hash) < 0) {
            rc = spb_err_set(err, SPB_ERR, SPB_ISSUE_EXCEPTION, "audit: cannot compute SHA-256");
            goto out;
        }
        sqlite3_reset(upd);
        spb__bind_text(upd, 1, prev);
        spb__bind_text(upd, 2, hash);
        sqlite3_bind_int64(upd, 3, r.id);
        if (sqlite3_step(upd) != SQLITE_DONE) {
            rc = spb__db_error(s, err, "audit migration");
            goto out;
        }
        snprintf(prev, sizeof(prev), "%s", hash);
    }
    if (step != SQLITE_DONE)
        rc = spb__db_error(s, err, "audit migration");
out:
    sqlite3_finalize(sel);
    sqlite3_finalize(upd);
    return rc;
}

/* ------------------------------------------------------------------ keys and certificates */

static X509 *read_cert(const char *path)
{
    FILE *f = fopen(path, "r");
    X509 *x;
    if (f == NULL)
        return NULL;
    x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    return x;
}

int spb_audit_signer_open(spb_audit_signer **out, const char *key_path, const char *cert_path,
                          spb_err *err)
{
    spb_audit_signer *sg = calloc(1, sizeof(*sg));
    FILE *f = NULL;
    int rc = SPB_ECONFIG;

    *out = NULL;
    if (sg == NULL)
        return spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
    if (key_path == NULL || *key_path == '\0' || cert_path == NULL || *cert_path == '\0') {
        spb_err_set(err, SPB_ECONFIG, SPB_ISSUE_PROCESSING,
                    "audit checkpoints need a signing key and certificate");
        spb_err_hint(err, "set [audit] signing_key and signing_cert (default: [server] tls_key "
                          "and tls_cert)");
        goto out;
    }
    f = fopen(key_path, "r");
    if (f != NULL)
        sg->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    if (sg->key == NULL) {
        spb_err_set(err, SPB_ECONFIG, SPB_ISSUE_PROCESSING,
                    "cannot read the audit signing key %s (an unencrypted PEM private key)",
                    key_path);
        spb_err_hint(err, "set [audit] signing_key (default: [server] tls_key)");
        goto out;
    }
    sg->cert = read_cert(cert_path);
    if (sg->cert == NULL) {
        spb_err_set(err, SPB_ECONFIG, SPB_ISSUE_PROCESSING,
                    "cannot read the audit signing certificate %s", cert_path);
        spb_err_hint(err, "set [audit] signing_cert (default: [server] tls_cert)");
        goto out;
    }
    if (X509_check_private_key(sg->cert, sg->key) != 1) {
        spb_err_set(err, SPB_ECONFIG, SPB_ISSUE_PROCESSING,
                    "the audit signing key %s does not belong to the certificate %s", key_path,
                    cert_path);
        goto out;
    }
    fingerprint_of(sg->cert, sg->fingerprint);
    rc = 0;
out:
    if (f != NULL)
        fclose(f);
    if (rc < 0) {
        spb_audit_signer_free(sg);
        return rc;
    }
    *out = sg;
    return 0;
}

void spb_audit_signer_free(spb_audit_signer *sg)
{
    if (sg == NULL)
        return;
    EVP_PKEY_free(sg->key);
    X509_free(sg->cert);
    free(sg);
}

int spb_audit_signer_from_config(spb_audit_signer **out, const spb_config *cfg, spb_err *err)
{
    return spb_audit_signer_open(
        out, cfg->audit_signing_key[0] ? cfg->audit_signing_key : cfg->tls_key,
        cfg->audit_signing_cert[0] ? cfg->audit_signing_cert : cfg->tls_cert, err);
}

int spb_audit_trust_load(spb_audit_trust **out, const char *const *paths, int npaths, spb_err *err)
{
    spb_audit_trust *t = calloc(1, sizeof(*t));
    int rc = 0;

    *out = NULL;
    if (t == NULL)
        return spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
    for (int i = 0; i < npaths && rc == 0; i++) {
        FILE *f;
        X509 *x;
        int got = 0;
        if (paths[i] == NULL || *paths[i] == '\0')
            continue;
        f = fopen(paths[i], "r");
        if (f == NULL) {
            rc = spb_err_set(err, SPB_ECONFIG, SPB_ISSUE_PROCESSING,
                             "cannot read the certificate file %s", paths[i]);
            break;
        }
        while (t->n < MAX_TRUSTED && (x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
            t->certs[t->n] = x;
            fingerprint_of(x, t->fingerprints[t->n]);
            t->n++;
            got++;
        }
        fclose(f);
        if (got == 0)
            rc = spb_err_set(err, SPB_ECONFIG, SPB_ISSUE_PROCESSING, "no PEM certificate in %s",
                             paths[i]);
    }
    if (rc < 0) {
        spb_audit_trust_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int spb_audit_trust_from_config(spb_audit_trust **out, const spb_config *cfg, spb_err *err)
{
    const char *paths[2];
    paths[0] = cfg->audit_signing_cert[0] ? cfg->audit_signing_cert : cfg->tls_cert;
    paths[1] = cfg->audit_trusted_certs;
    if (paths[0][0] == '\0' && paths[1][0] == '\0') {
        *out = NULL;
        spb_err_set(err, SPB_ECONFIG, SPB_ISSUE_PROCESSING,
                    "no certificate to check audit checkpoint signatures with");
        spb_err_hint(err, "pass --config with the configuration spbridge serve uses ([audit] "
                          "signing_cert, or [server] tls_cert)");
        return SPB_ECONFIG;
    }
    return spb_audit_trust_load(out, paths, 2, err);
}

void spb_audit_trust_free(spb_audit_trust *t)
{
    if (t == NULL)
        return;
    for (int i = 0; i < t->n; i++)
        X509_free(t->certs[i]);
    free(t);
}

/* ------------------------------------------------------------------ checkpoints */

static int checkpoint_text(const checkpoint *c, char *buf, size_t size)
{
    int n = snprintf(buf, size,
                     "spbridge-audit-checkpoint-v1\nid=%lld\nat=%lld\nkind=%s\nlast_id=%lld\n"
                     "last_hash=%s\nanchor_id=%lld\nanchor_hash=%s\nrecords=%lld\nprev=%s\n"
                     "signer=%s\n",
                     (long long)c->id, (long long)c->at, c->kind, (long long)c->last_id,
                     c->last_hash, (long long)c->anchor_id, c->anchor_hash, (long long)c->records,
                     c->prev, c->signer);
    return (n < 0 || (size_t)n >= size) ? -1 : n;
}

static int sign_text(spb_audit_signer *sg, const char *text, size_t len, char *b64, size_t size)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char sig[1100];
    size_t siglen = sizeof(sig);
    int rc = -1;
    if (md == NULL)
        return -1;
    if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, sg->key) == 1 &&
        EVP_DigestSign(md, sig, &siglen, (const unsigned char *)text, len) == 1 &&
        (siglen + 2) / 3 * 4 + 1 <= size) {
        EVP_EncodeBlock((unsigned char *)b64, sig, (int)siglen);
        rc = 0;
    }
    EVP_MD_CTX_free(md);
    return rc;
}

/* 1 valid, 0 not. */
static int verify_text(X509 *cert, const char *text, size_t len, const char *b64)
{
    unsigned char sig[1100];
    size_t b64len = strlen(b64);
    int siglen, ok = 0;
    EVP_MD_CTX *md;
    if (b64len == 0 || b64len % 4 != 0 || b64len / 4 * 3 > sizeof(sig))
        return 0;
    siglen = EVP_DecodeBlock(sig, (const unsigned char *)b64, (int)b64len);
    if (siglen < 0)
        return 0;
    if (b64len >= 1 && b64[b64len - 1] == '=')
        siglen--;
    if (b64len >= 2 && b64[b64len - 2] == '=')
        siglen--;
    md = EVP_MD_CTX_new();
    if (md == NULL)
        return 0;
    if (EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, X509_get0_pubkey(cert)) == 1 &&
        EVP_DigestVerify(md, sig, (size_t)siglen, (const unsigned char *)text, len) == 1)
        ok = 1;
    EVP_MD_CTX_free(md);
    return ok;
}

static int load_checkpoint(sqlite3_stmt *st, checkpoint *c)
{
    memset(c, 0, sizeof(*c));
    c->id = sqlite3_column_int64(st, 0);
    c->at = sqlite3_column_int64(st, 1);
    col_copy(st, 2, c->kind, sizeof(c->kind));
    c->last_id = sqlite3_column_int64(st, 3);
    col_copy(st, 4, c->last_hash, sizeof(c->last_hash));
    c->anchor_id = sqlite3_column_int64(st, 5);
    col_copy(st, 6, c->anchor_hash, sizeof(c->anchor_hash));
    c->records = sqlite3_column_int64(st, 7);
    col_copy(st, 8, c->prev, sizeof(c->prev));
    col_copy(st, 9, c->signer, sizeof(c->signer));
    col_copy(st, 10, c->signature, sizeof(c->signature));
    return 0;
}

#define CHECKPOINT_COLUMNS                                                                         \
    "id, at, kind, last_id, last_hash, anchor_id, anchor_hash, records, prev, signer, signature"

/* The hash of the newest checkpoint's signed text (what the next one links to). */
static int last_checkpoint_link(spb_store *s, char out[SPB_AUDIT_HASH_HEX + 1], spb_err *err)
{
    sqlite3_stmt *st = spb__prep(
        s, "SELECT " CHECKPOINT_COLUMNS " FROM audit_checkpoints ORDER BY id DESC LIMIT 1", err);
    snprintf(out, SPB_AUDIT_HASH_HEX + 1, "%s", SPB_AUDIT_GENESIS);
    if (st == NULL)
        return SPB_ERR;
    if (sqlite3_step(st) == SQLITE_ROW) {
        checkpoint c;
        char text[CP_TEXT_MAX];
        int n;
        load_checkpoint(st, &c);
        n = checkpoint_text(&c, text, sizeof(text));
        if (n < 0 || sha256_hex(text, (size_t)n, out) < 0) {
            sqlite3_finalize(st);
            return spb_err_set(err, SPB_ERR, SPB_ISSUE_EXCEPTION, "audit: bad checkpoint %lld",
                               (long long)c.id);
        }
    }
    sqlite3_finalize(st);
    return 0;
}

/* Inside the caller's transaction: signs and stores a checkpoint covering the chain's head,
 * anchored at (anchor_id, anchor_hash). */
static int write_checkpoint(spb_store *s, spb_audit_signer *sg, const char *kind, int64_t anchor_id,
                            const char *anchor_hash, int64_t *id_out, spb_err *err)
{
    checkpoint c;
    char text[CP_TEXT_MAX];
    sqlite3_stmt *st = NULL;
    int n, rc;

    memset(&c, 0, sizeof(c));
    c.at = spb_now_ms();
    snprintf(c.kind, sizeof(c.kind), "%s", kind);
    c.anchor_id = anchor_id;
    snprintf(c.anchor_hash, sizeof(c.anchor_hash), "%s", anchor_hash);
    snprintf(c.signer, sizeof(c.signer), "%s", sg->fingerprint);
    rc = chain_head(s, &c.last_id, c.last_hash, err);
    if (rc == 0)
        rc = last_checkpoint_link(s, c.prev, err);
    if (rc < 0)
        return rc;
    if (c.last_id < anchor_id) {
        /* a prune emptied the table: its last record is the head */
        c.last_id = anchor_id;
        snprintf(c.last_hash, sizeof(c.last_hash), "%s", anchor_hash);
    }
    st = spb__prep(s, "SELECT COUNT(*) FROM audit", err);
    if (st == NULL)
        return SPB_ERR;
    if (sqlite3_step(st) == SQLITE_ROW)
        c.records = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    st = spb__prep(s,
                   "INSERT INTO audit_checkpoints(at, kind, last_id, last_hash, anchor_id, "
                   "anchor_hash, records, prev, signer, signature) VALUES (?,?,?,?,?,?,?,?,?,'')",
                   err);
    if (st == NULL)
        return SPB_ERR;
    sqlite3_bind_int64(st, 1, c.at);
    spb__bind_text(st, 2, c.kind);
    sqlite3_bind_int64(st, 3, c.last_id);
    spb__bind_text(st, 4, c.last_hash);
    sqlite3_bind_int64(st, 5, c.anchor_id);
    spb__bind_text(st, 6, c.anchor_hash);
    sqlite3_bind_int64(st, 7, c.records);
    spb__bind_text(st, 8, c.prev);
    spb__bind_text(st, 9, c.signer);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = spb__db_error(s, err, "checkpoint");
        sqlite3_finalize(st);
        return rc;
    }
    sqlite3_finalize(st);
    c.id = sqlite3_last_insert_rowid(spb__db(s));
    n = checkpoint_text(&c, text, sizeof(text));
    if (n < 0 || sign_text(sg, text, (size_t)n, c.signature, sizeof(c.signature)) < 0)
        return spb_err_set(err, SPB_ERR, SPB_ISSUE_EXCEPTION,
                           "audit: cannot sign the checkpoint with the signing key");
    st = spb__prep(s, "UPDATE audit_checkpoints SET signature = ? WHERE id = ?", err);
    if (st == NULL)
        return SPB_ERR;
    spb__bind_text(st, 1, c.signature);
    sqlite3_bind_int64(st, 2, c.id);
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : spb__db_error(s, err, "checkpoint");
    sqlite3_finalize(st);
    if (rc == 0 && id_out != NULL)
        *id_out = c.id;
    return rc;
}

int spb_audit_checkpoint(spb_store *s, spb_audit_signer *sg, const char *kind, int64_t *id_out,
                         spb_err *err)
{
    char anchor_hash[SPB_AUDIT_HASH_HEX + 1];
    int64_t anchor_id;
    int rc = spb__exec(s, "BEGIN IMMEDIATE", err);
    if (rc < 0)
        return rc;
    rc = chain_anchor(s, &anchor_id, anchor_hash, err);
    if (rc == 0)
        rc = write_checkpoint(s, sg, kind, anchor_id, anchor_hash, id_out, err);
    if (rc == 0)
        rc = spb__exec(s, "COMMIT", err);
    if (rc < 0)
        sqlite3_exec(spb__db(s), "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

void spb_audit_settings_of(const spb_config *cfg, spb_audit_settings *out)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->signing_key, sizeof(out->signing_key), "%s",
             cfg->audit_signing_key[0] ? cfg->audit_signing_key : cfg->tls_key);
    snprintf(out->signing_cert, sizeof(out->signing_cert), "%s",
             cfg->audit_signing_cert[0] ? cfg->audit_signing_cert : cfg->tls_cert);
    out->checkpoint_every = cfg->audit_checkpoint_every;
    out->checkpoint_interval_s = cfg->audit_checkpoint_interval_s;
}

int spb_audit_checkpoint_due(spb_store *s, const spb_audit_settings *as, const char *kind,
                             int64_t now_ms, spb_err *err)
{
    sqlite3_stmt *st = spb__prep(s,
                                 "SELECT (SELECT MAX(id) FROM audit), (SELECT last_id FROM "
                                 "audit_checkpoints ORDER BY id DESC LIMIT 1), (SELECT at FROM "
                                 "audit_checkpoints ORDER BY id DESC LIMIT 1)",
                                 err);
    spb_audit_signer *sg = NULL;
    int64_t head = 0, covered = 0, cp_at = 0;
    int have_cp = 0, rc;

    if (st == NULL)
        return SPB_ERR;
    if (sqlite3_step(st) == SQLITE_ROW) {
        head = sqlite3_column_int64(st, 0);
        have_cp = sqlite3_column_type(st, 1) != SQLITE_NULL;
        covered = sqlite3_column_int64(st, 1);
        cp_at = sqlite3_column_int64(st, 2);
    }
    sqlite3_finalize(st);
    if (head <= covered)
        return 0;
    if (head - covered < as->checkpoint_every && have_cp &&
        now_ms - cp_at < (int64_t)as->checkpoint_interval_s * 1000)
        return 0;
    rc = spb_audit_signer_open(&sg, as->signing_key, as->signing_cert, err);
    if (rc == 0)
        rc = spb_audit_checkpoint(s, sg, kind, NULL, err);
    spb_audit_signer_free(sg);
    return rc < 0 ? rc : 1;
}

int spb_audit_status_get(spb_store *s, spb_audit_status *out, spb_err *err)
{
    sqlite3_stmt *st =
        spb__prep(s,
                  "SELECT (SELECT COUNT(*) FROM audit), (SELECT MAX(id) FROM audit),"
                  " (SELECT COUNT(*) FROM audit_checkpoints), (SELECT at FROM "
                  "audit_checkpoints ORDER BY id DESC LIMIT 1), (SELECT last_id FROM "
                  "audit_checkpoints ORDER BY id DESC LIMIT 1)",
                  err);
    memset(out, 0, sizeof(*out));
    if (st == NULL)
        return SPB_ERR;
    if (sqlite3_step(st) == SQLITE_ROW) {
        out->records = sqlite3_column_int64(st, 0);
        out->head = sqlite3_column_int64(st, 1);
        out->checkpoints = sqlite3_column_int64(st, 2);
        out->last_checkpoint_at = sqlite3_column_int64(st, 3);
        out->covered_to = sqlite3_column_int64(st, 4);
    }
    sqlite3_finalize(st);
    return 0;
}

/* ------------------------------------------------------------------ verify */

static void problem(spb_audit_verify_result *res, int64_t record, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void problem(spb_audit_verify_result *res, int64_t record, const char *fmt, ...)
{
    va_list ap;
    res->ok = 0;
    if (record > 0 && (res->first_bad == 0 || record < res->first_bad))
        res->first_bad = record;
    if (res->nproblems >= SPB_AUDIT_MAX_PROBLEMS) {
        res->more_problems = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(res->problems[res->nproblems++], sizeof(res->problems[0]), fmt, ap);
    va_end(ap);
}

static int64_t sequence_of(spb_store *s, const char *table)
{
    sqlite3_stmt *st = NULL;
    int64_t seq = 0;
    if (sqlite3_prepare_v2(spb__db(s), "SELECT seq FROM sqlite_sequence WHERE name = ?", -1, &st,
                           NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        seq = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return seq;
}

typedef struct cp_cover {
    int64_t cp_id, last_id;
    char last_hash[SPB_AUDIT_HASH_HEX + 1];
} cp_cover;

static int verify_snapshot(spb_store *s, const spb_audit_trust *trust, spb_audit_verify_result *res,
                           spb_err *err);

/* One read transaction: every check sees the same snapshot, however busy a running service
 * is (WAL), so a record appended meanwhile cannot look like a cut end. */
int spb_audit_verify(spb_store *s, const spb_audit_trust *trust, spb_audit_verify_result *res,
                     spb_err *err)
{
    int rc = spb__exec(s, "BEGIN", err);
    if (rc < 0)
        return rc;
    rc = verify_snapshot(s, trust, res, err);
    sqlite3_exec(spb__db(s), rc < 0 ? "ROLLBACK" : "COMMIT", NULL, NULL, NULL);
    return rc;
}

static int verify_snapshot(spb_store *s, const spb_audit_trust *trust, spb_audit_verify_result *res,
                           spb_err *err)
{
    sqlite3_stmt *st = NULL;
    cp_cover *covers = NULL;
    size_t ncovers = 0, capcovers = 0;
    char link[SPB_AUDIT_HASH_HEX + 1] = SPB_AUDIT_GENESIS;
    char anchor_hash[SPB_AUDIT_HASH_HEX + 1] = SPB_AUDIT_GENESIS;
    char expect_prev[SPB_AUDIT_HASH_HEX + 1];
    int64_t anchor_id = 0, prev_id = 0, last_cp_id = 0, max_cover = 0, max_cover_cp = 0;
    int rc = 0, step;

    memset(res, 0, sizeof(*res));
    res->ok = 1;

    /* 1. checkpoints: each follows the previous one and carries a trusted signature */
    st = spb__prep(s, "SELECT " CHECKPOINT_COLUMNS " FROM audit_checkpoints ORDER BY id", err);
    if (st == NULL)
        return SPB_ERR;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        checkpoint c;
        char text[CP_TEXT_MAX];
        X509 *cert = NULL;
        int n, valid = 1;
        load_checkpoint(st, &c);
        res->checkpoints++;
        last_cp_id = c.id;
        n = checkpoint_text(&c, text, sizeof(text));
        if (n < 0) {
            problem(res, 0, "checkpoint %lld cannot be read", (long long)c.id);
            continue;
        }
        if (strcmp(c.prev, link) != 0) {
            problem(res, 0,
                    "checkpoint %lld does not follow the checkpoint before it: a checkpoint was "
                    "deleted or changed",
                    (long long)c.id);
            valid = 0;
        }
        for (int i = 0; trust != NULL && i < trust->n && cert == NULL; i++) {
            if (strcmp(trust->fingerprints[i], c.signer) == 0)
                cert = trust->certs[i];
        }
        if (cert == NULL) {
            problem(res, 0,
                    "checkpoint %lld is signed by a certificate that is not trusted (SHA-256 "
                    "%.40s...)",
                    (long long)c.id, c.signer);
            valid = 0;
        } else if (!verify_text(cert, text, (size_t)n, c.signature)) {
            problem(res, 0,
                    "checkpoint %lld: the signature does not match its content (the checkpoint "
                    "was changed)",
                    (long long)c.id);
            valid = 0;
        }
        sha256_hex(text, (size_t)n, link);
        if (strcmp(c.kind, "prune") == 0) {
            anchor_id = c.anchor_id;
            snprintf(anchor_hash, sizeof(anchor_hash), "%s", c.anchor_hash);
        }
        if (!valid)
            continue;
        if (ncovers == capcovers) {
            size_t cap = capcovers ? capcovers * 2 : 64;
            cp_cover *grown = realloc(covers, cap * sizeof(*covers));
            if (grown == NULL) {
                rc = spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
                goto out;
            }
            covers = grown;
            capcovers = cap;
        }
        covers[ncovers].cp_id = c.id;
        covers[ncovers].last_id = c.last_id;
        snprintf(covers[ncovers].last_hash, sizeof(covers[0].last_hash), "%s", c.last_hash);
        ncovers++;
        if (c.last_id >= max_cover) {
            max_cover = c.last_id;
            max_cover_cp = c.id;
        }
    }
    if (step != SQLITE_DONE) {
        rc = spb__db_error(s, err, "checkpoints");
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;
    if (sequence_of(s, "audit_checkpoints") > last_cp_id)
        problem(res, 0, "checkpoints after checkpoint %lld were deleted (up to %lld existed)",
                (long long)last_cp_id, (long long)sequence_of(s, "audit_checkpoints"));

    /* 2. records: each hash recomputes, each links to the one before, ids have no gaps */
    snprintf(expect_prev, sizeof(expect_prev), "%s", anchor_hash);
    prev_id = anchor_id;
    st = spb__prep(s, "SELECT " AUDIT_COLUMNS " FROM audit ORDER BY id", err);
    if (st == NULL) {
        rc = SPB_ERR;
        goto out;
    }
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        spb_audit_record r;
        char computed[SPB_AUDIT_HASH_HEX + 1];
        const char *stored = col_str(st, 11);
        int gap = 0;
        record_of(st, &r);
        res->records++;
        if (res->first_id == 0)
            res->first_id = r.id;
        res->last_id = r.id;
        if (r.id <= anchor_id) {
            problem(res, r.id,
                    "record %lld should have been pruned: the chain is anchored after record "
                    "%lld",
                    (long long)r.id, (long long)anchor_id);
        } else if (r.id != prev_id + 1) {
            gap = 1;
            if (r.id == prev_id + 2)
                problem(res, prev_id + 1, "record %lld is missing (deleted)",
                        (long long)(prev_id + 1));
            else
                problem(res, prev_id + 1, "records %lld to %lld are missing (deleted)",
                        (long long)(prev_id + 1), (long long)(r.id - 1));
        }
        if (spb_audit_record_hash(&r, computed) < 0) {
            rc = spb_err_set(err, SPB_ERR, SPB_ISSUE_EXCEPTION, "audit: cannot compute SHA-256");
            goto out;
        }
        if (stored == NULL || strcmp(stored, computed) != 0)
            problem(res, r.id,
                    "record %lld does not match its hash: it was changed, or moved from another "
                    "position",
                    (long long)r.id);
        if (!gap && (r.prev_hash == NULL || strcmp(r.prev_hash, expect_prev) != 0))
            problem(res, r.id,
                    "record %lld does not follow record %lld: the records were re-ordered or one "
                    "between them was removed",
                    (long long)r.id, (long long)prev_id);
        snprintf(expect_prev, sizeof(expect_prev), "%s", stored ? stored : "");
        prev_id = r.id;
    }
    if (step != SQLITE_DONE) {
        rc = spb__db_error(s, err, "records");
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;

    /* 3. what the signed checkpoints say must still be there, unchanged */
    st = spb__prep(s, "SELECT hash FROM audit WHERE id = ?", err);
    if (st == NULL) {
        rc = SPB_ERR;
        goto out;
    }
    for (size_t i = 0; i < ncovers; i++) {
        const cp_cover *c = &covers[i];
        if (c->last_id <= anchor_id || c->last_id == 0)
            continue; /* pruned since: the prune checkpoint anchors the rest */
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, c->last_id);
        if (sqlite3_step(st) == SQLITE_ROW) {
            const char *h = col_str(st, 0);
            if (h == NULL || strcmp(h, c->last_hash) != 0)
                problem(res, c->last_id,
                        "record %lld's hash differs from the one signed in checkpoint %lld: the "
                        "chain was rewritten",
                        (long long)c->last_id, (long long)c->cp_id);
            else if (c->last_id > res->covered_to)
                res->covered_to = c->last_id;
        }
    }
    {
        int64_t end = res->last_id > anchor_id ? res->last_id : anchor_id;
        int64_t seq = sequence_of(s, "audit");
        if (max_cover > end)
            problem(res, end + 1,
                    "records %lld to %lld were removed from the end: checkpoint %lld covers "
                    "record %lld (truncation)",
                    (long long)(end + 1), (long long)max_cover, (long long)max_cover_cp,
                    (long long)max_cover);
        else if (seq > end)
            problem(res, end + 1,
                    "records %lld to %lld were removed from the end (the table had reached "
                    "record %lld)",
                    (long long)(end + 1), (long long)seq, (long long)seq);
    }
out:
    sqlite3_finalize(st);
    free(covers);
    return rc;
}

/* ------------------------------------------------------------------ prune */

int spb_audit_prune(spb_store *s, spb_audit_signer *sg, int64_t before_ms, long batch,
                    int64_t *pruned, spb_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = 0;

    *pruned = 0;
    if (batch < 1)
        batch = 1;
    for (;;) {
        char anchor_hash[SPB_AUDIT_HASH_HEX + 1], expect[SPB_AUDIT_HASH_HEX + 1];
        int64_t anchor_id, last = 0, n = 0, expect_id;
        int step;

        rc = spb__exec(s, "BEGIN IMMEDIATE", err);
        if (rc < 0)
            return rc;
        rc = chain_anchor(s, &anchor_id, anchor_hash, err);
        if (rc < 0)
            goto fail;
        snprintf(expect, sizeof(expect), "%s", anchor_hash);
        expect_id = anchor_id + 1;
        st = spb__prep(s, "SELECT " AUDIT_COLUMNS " FROM audit WHERE id > ? ORDER BY id LIMIT ?",
                       err);
        if (st == NULL) {
            rc = SPB_ERR;
            goto fail;
        }
        sqlite3_bind_int64(st, 1, anchor_id);
        sqlite3_bind_int64(st, 2, batch);
        /* a prefix of the chain older than `before`, checked before it is deleted: pruning
         * must not erase the evidence of tampering */
        while ((step = sqlite3_step(st)) == SQLITE_ROW) {
            spb_audit_record r;
            char computed[SPB_AUDIT_HASH_HEX + 1];
            const char *stored = col_str(st, 11);
            record_of(st, &r);
            if (r.at >= before_ms)
                break;
            if (spb_audit_record_hash(&r, computed) < 0 || stored == NULL ||
                strcmp(computed, stored) != 0 || r.prev_hash == NULL ||
                strcmp(r.prev_hash, expect) != 0 || r.id != expect_id) {
                rc = spb_err_set(err, SPB_EINVALID, SPB_ISSUE_INVARIANT,
                                 "the audit chain does not verify at record %lld; pruning "
                                 "would destroy the evidence",
                                 (long long)r.id);
                spb_err_hint(err, "run spbridge audit verify and investigate first");
                goto fail;
            }
            snprintf(expect, sizeof(expect), "%s", stored);
            last = r.id;
            expect_id = r.id + 1;
            n++;
        }
        if (step != SQLITE_ROW && step != SQLITE_DONE) {
            rc = spb__db_error(s, err, "prune");
            goto fail;
        }
        sqlite3_finalize(st);
        st = NULL;
        if (n == 0) {
            rc = spb__exec(s, "COMMIT", err);
            return rc;
        }
        st = spb__prep(s, "DELETE FROM audit WHERE id <= ?", err);
        if (st == NULL) {
            rc = SPB_ERR;
            goto fail;
        }
        sqlite3_bind_int64(st, 1, last);
        if (sqlite3_step(st) != SQLITE_DONE) {
            rc = spb__db_error(s, err, "prune");
            goto fail;
        }
        sqlite3_finalize(st);
        st = NULL;
        rc = write_checkpoint(s, sg, "prune", last, expect, NULL, err);
        if (rc == 0)
            rc = spb__exec(s, "COMMIT", err);
        if (rc < 0)
            goto fail;
        *pruned += n;
        if (n < batch)
            return 0;
    }
fail:
    sqlite3_finalize(st);
    sqlite3_exec(spb__db(s), "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* ------------------------------------------------------------------ queries */

typedef struct query_sql {
    char text[1024];
    size_t len;
    const char *texts[8];
    int ntexts;
    int64_t ints[6];
    int nints;
    int order[16]; /* bind order: 't' text index or 'i' int index, encoded */
    int norder;
    int none; /* the scope sees nothing */
} query_sql;

static void q_add(query_sql *q, const char *fragment)
{
    int n = snprintf(q->text + q->len, sizeof(q->text) - q->len, "%s", fragment);
    if (n > 0 && (size_t)n < sizeof(q->text) - q->len)
        q->len += (size_t)n;
}

static void q_text(query_sql *q, const char *fragment, const char *value)
{
    q_add(q, fragment);
    q->order[q->norder++] = q->ntexts;
    q->texts[q->ntexts++] = value;
}

static void q_int(query_sql *q, const char *fragment, int64_t value)
{
    q_add(q, fragment);
    q->order[q->norder++] = 100 + q->nints;
    q->ints[q->nints++] = value;
}

/* The WHERE clause for a scope and filter, with only the conditions that apply (so SQLite can
 * use the practice, region and referral indexes). */
static void build_where(query_sql *q, const spb_audit_scope *scope, const spb_audit_filter *f)
{
    q_add(q, " WHERE 1");
    switch (scope->role) {
    case SPB_ROLE_ADMIN:
        break;
    case SPB_ROLE_AUDITOR:
        if (scope->region[0] == '\0')
            q->none = 1;
        else
            q_text(q, " AND region = ?", scope->region);
        break;
    case SPB_ROLE_PRACTICE:
        if (scope->ods[0] == '\0')
            q->none = 1;
        else
            q_text(q, " AND practice = ?", scope->ods);
        break;
    default:
        q->none = 1;
        break;
    }
    if (q->none)
        q_add(q, " AND 0");
    if (f->region != NULL && *f->region != '\0')
        q_text(q, " AND region = ?", f->region);
    if (f->practice != NULL && *f->practice != '\0')
        q_text(q, " AND practice = ?", f->practice);
    if (f->step != NULL && *f->step != '\0')
        q_text(q, " AND step = ?", f->step);
    if (f->referral != NULL && *f->referral != '\0')
        q_text(q, " AND referral = ?", f->referral);
    if (f->id > 0)
        q_int(q, " AND id = ?", f->id);
    if (f->since_ms > 0)
        q_int(q, " AND at >= ?", f->since_ms);
    if (f->until_ms > 0)
        q_int(q, " AND at <= ?", f->until_ms);
}

static void q_bind(const query_sql *q, sqlite3_stmt *st)
{
    for (int i = 0; i < q->norder; i++) {
        int k = q->order[i];
        if (k >= 100)
            sqlite3_bind_int64(st, i + 1, q->ints[k - 100]);
        else
            sqlite3_bind_text(st, i + 1, q->texts[k], -1, SQLITE_TRANSIENT);
    }
}

static void set_text(json_t *o, const char *key, const char *v)
{
    if (v != NULL && *v != '\0')
        json_object_set_new(o, key, json_string(v));
}

int spb_audit_query(spb_store *s, const spb_audit_scope *scope, const spb_audit_filter *f,
                    json_t **rows, int *more, spb_err *err)
{
    query_sql q;
    sqlite3_stmt *st = NULL;
    json_t *arr = NULL;
    int limit = f->limit < 1 ? 100 : f->limit > 10000 ? 10000 : f->limit;
    int rc = 0, step, n = 0;

    *rows = NULL;
    *more = 0;
    memset(&q, 0, sizeof(q));
    q_add(&q, "SELECT " AUDIT_COLUMNS " FROM audit");
    build_where(&q, scope, f);
    if (f->newest_first) {
        q_int(&q, " ORDER BY id DESC LIMIT ?", (int64_t)limit + 1);
    } else {
        q_int(&q, " AND id > ?", f->after_id);
        q_int(&q, " ORDER BY id LIMIT ?", (int64_t)limit + 1);
    }
    st = spb__prep(s, q.text, err);
    if (st == NULL)
        return SPB_ERR;
    q_bind(&q, st);
    arr = json_array();
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        spb_audit_record r;
        json_t *o;
        char when[32];
        if (n == limit) {
            *more = 1;
            break;
        }
        record_of(st, &r);
        spb_audit_format_time(r.at, when);
        o = json_pack("{s:I, s:I, s:s}", "id", (json_int_t)r.id, "at", (json_int_t)r.at, "time",
                      when);
        set_text(o, "identity", r.identity);
        set_text(o, "practice", r.practice);
        set_text(o, "region", r.region);
        set_text(o, "referral", r.referral);
        set_text(o, "step", r.step);
        set_text(o, "result", r.result);
        set_text(o, "detail", r.detail);
        set_text(o, "mapping_version", r.mapping_version);
        set_text(o, "prev_hash", r.prev_hash);
        set_text(o, "hash", col_str(st, 11));
        json_array_append_new(arr, o);
        n++;
    }
    if (step != SQLITE_ROW && step != SQLITE_DONE) {
        rc = spb__db_error(s, err, "audit query");
        json_decref(arr);
        arr = NULL;
    }
    sqlite3_finalize(st);
    *rows = arr;
    return rc;
}

int spb_audit_count(spb_store *s, const spb_audit_scope *scope, const spb_audit_filter *f,
                    int64_t *n, spb_err *err)
{
    query_sql q;
    sqlite3_stmt *st;
    int rc = 0;

    *n = 0;
    memset(&q, 0, sizeof(q));
    q_add(&q, "SELECT COUNT(*) FROM audit");
    build_where(&q, scope, f);
    st = spb__prep(s, q.text, err);
    if (st == NULL)
        return SPB_ERR;
    q_bind(&q, st);
    if (sqlite3_step(st) == SQLITE_ROW)
        *n = sqlite3_column_int64(st, 0);
    else
        rc = spb__db_error(s, err, "audit count");
    sqlite3_finalize(st);
    return rc;
}

/* AuditEvent.outcome: 0 success, 4 minor failure (will be retried, or flagged), 8 serious
 * failure (refused, dead-lettered, quarantined). */
static const char *outcome_code(const char *result)
{
    static const char *const ok[] = {"ok", "duplicate", "no_events", "delivered", NULL};
    static const char *const minor[] = {"retry", "unexpected_transition", "out_of_order", NULL};
    if (result == NULL)
        return "0";
    for (int i = 0; ok[i] != NULL; i++) {
        if (strcmp(result, ok[i]) == 0)
            return "0";
    }
    for (int i = 0; minor[i] != NULL; i++) {
        if (strcmp(result, minor[i]) == 0)
            return "4";
    }
    return "8";
}

static json_t *detail_entry(const char *type, const char *value)
{
    return json_pack("{s:s, s:s}", "type", type, "valueString", value);
}

json_t *spb_audit_to_fhir(const json_t *row)
{
    const char *identity = json_string_value(json_object_get(row, "identity"));
    const char *practice = json_string_value(json_object_get(row, "practice"));
    const char *region = json_string_value(json_object_get(row, "region"));
    const char *referral = json_string_value(json_object_get(row, "referral"));
    const char *step = json_string_value(json_object_get(row, "step"));
    const char *result = json_string_value(json_object_get(row, "result"));
    const char *detail = json_string_value(json_object_get(row, "detail"));
    const char *mapping = json_string_value(json_object_get(row, "mapping_version"));
    char id[32];
    json_t *ev, *entities, *record_details;

    snprintf(id, sizeof(id), "%lld", (long long)json_integer_value(json_object_get(row, "id")));
    ev = json_pack("{s:s, s:s, s:{s:s, s:s, s:s}, s:[{s:s, s:s}], s:s, s:O, s:s, s:s}",
                   "resourceType", "AuditEvent", "id", id, "type", "system",
                   "https://spbridge.dev/fhir/CodeSystem/audit-event-type", "code", "message-flow",
                   "display", "spbridge message flow step", "subtype", "system",
                   "https://spbridge.dev/fhir/CodeSystem/audit-step", "code",
                   step ? step : "unknown", "action", "E", "recorded", json_object_get(row, "time"),
                   "outcome", outcome_code(result), "outcomeDesc", result ? result : "ok");
    json_object_set_new(ev, "agent",
                        json_pack("[{s:{s:{s:s, s:s}}, s:b}]", "who", "identifier", "system",
                                  "https://spbridge.dev/fhir/identity", "value",
                                  identity ? identity : "unknown", "requestor", 1));
    json_object_set_new(ev, "source",
                        json_pack("{s:s, s:{s:s}, s:[{s:s, s:s, s:s}]}", "site", "spbridge",
                                  "observer", "display", "spbridge", "type", "system",
                                  "http://terminology.hl7.org/CodeSystem/security-source-type",
                                  "code", "4", "display", "Application Server"));
    entities = json_array();
    if (practice != NULL) {
        json_t *e =
            json_pack("{s:{s:{s:s, s:s}}, s:{s:s, s:s, s:s}}", "what", "identifier", "system",
                      "https://fhir.nhs.uk/Id/ods-organization-code", "value", practice, "type",
                      "system", "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code",
                      "3", "display", "Organization");
        if (region != NULL)
            json_object_set_new(e, "detail", json_pack("[o]", detail_entry("region", region)));
        json_array_append_new(entities, e);
    }
    if (referral != NULL) {
        char urn[80];
        snprintf(urn, sizeof(urn), "urn:uuid:%s", referral);
        json_array_append_new(
            entities, json_pack("{s:{s:{s:s, s:s}}, s:{s:s, s:s, s:s}, s:s}", "what", "identifier",
                                "system", "urn:ietf:rfc:3986", "value", urn, "type", "system",
                                "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code",
                                "2", "display", "System Object", "description", "the referral"));
    }
    record_details = json_array();
    if (detail != NULL)
        json_array_append_new(record_details, detail_entry("detail", detail));
    if (mapping != NULL)
        json_array_append_new(record_details, detail_entry("mappingVersion", mapping));
    if (json_object_get(row, "prev_hash") != NULL)
        json_array_append_new(
            record_details,
            detail_entry("prevHash", json_string_value(json_object_get(row, "prev_hash"))));
    if (json_object_get(row, "hash") != NULL)
        json_array_append_new(
            record_details, detail_entry("hash", json_string_value(json_object_get(row, "hash"))));
    json_array_append_new(entities,
                          json_pack("{s:{s:s, s:s, s:s}, s:s, s:o}", "type", "system",
                                    "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                                    "code", "4", "display", "Other", "description",
                                    "the audit record (hash chain)", "detail", record_details));
    json_object_set_new(ev, "entity", entities);
    return ev;
}

/* ------------------------------------------------------------------ regions */

int spb_audit_regions_of(const spb_config *cfg, spb_audit_region *out, int max)
{
    int n = 0;
    for (int i = 0; i < cfg->npractices && n < max; i++) {
        if (cfg->practices[i].region[0] == '\0')
            continue;
        snprintf(out[n].practice, sizeof(out[n].practice), "%s", cfg->practices[i].ods);
        snprintf(out[n].region, sizeof(out[n].region), "%s", cfg->practices[i].region);
        n++;
    }
    return n;
}

int spb_audit_sync_regions(spb_store *s, const spb_audit_region *regions, int n, spb_err *err)
{
    sqlite3_stmt *st = NULL;
    int64_t now = spb_now_ms();
    int rc = spb__exec(s, "BEGIN IMMEDIATE; DELETE FROM practice_regions;", err);

    if (rc < 0) {
        sqlite3_exec(spb__db(s), "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    st = spb__prep(s, "INSERT INTO practice_regions(practice, region, updated_at) VALUES (?,?,?)",
                   err);
    if (st == NULL) {
        rc = SPB_ERR;
        goto out;
    }
    for (int i = 0; i < n; i++) {
        sqlite3_reset(st);
        spb__bind_text(st, 1, regions[i].practice);
        spb__bind_text(st, 2, regions[i].region);
        sqlite3_bind_int64(st, 3, now);
        if (sqlite3_step(st) != SQLITE_DONE) {
            rc = spb__db_error(s, err, "practice regions");
            goto out;
        }
    }
    rc = spb__exec(s, "COMMIT", err);
out:
    sqlite3_finalize(st);
    if (rc < 0)
        sqlite3_exec(spb__db(s), "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* ------------------------------------------------------------------ times */

void spb_audit_format_time(int64_t ms, char out[32])
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&secs, &tm) == NULL) {
        snprintf(out, 32, "1970-01-01T00:00:00.000Z");
        return;
    }
    snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

/* Reads exactly `n` digits. */
static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

int spb_audit_parse_time(const char *text, int end_of_day, int64_t *ms)
{
    const char *p = text;
    struct tm tm;
    int y, mo, d, h = 0, mi = 0, sec = 0, frac = 0, off = 0, date_only = 1;
    time_t t;

    if (text == NULL)
        return -1;
    memset(&tm, 0, sizeof(tm));
    if (digits(&p, 4, &y) < 0 || *p++ != '-' || digits(&p, 2, &mo) < 0 || *p++ != '-' ||
        digits(&p, 2, &d) < 0)
        return -1;
    if (*p == 'T' || *p == ' ') {
        date_only = 0;
        p++;
        if (digits(&p, 2, &h) < 0 || *p++ != ':' || digits(&p, 2, &mi) < 0)
            return -1;
        if (*p == ':') {
            p++;
            if (digits(&p, 2, &sec) < 0)
                return -1;
            if (*p == '.') {
                int scale = 100;
                p++;
                if (!isdigit((unsigned char)*p))
                    return -1;
                while (isdigit((unsigned char)*p)) {
                    frac += (*p - '0') * scale;
                    scale /= 10;
                    p++;
                }
            }
        }
        if (*p == 'Z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int sign = *p == '-' ? -1 : 1, oh, om;
            p++;
            if (digits(&p, 2, &oh) < 0 || *p++ != ':' || digits(&p, 2, &om) < 0)
                return -1;
            off = sign * (oh * 60 + om);
        }
    }
    if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return -1;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *ms = ((int64_t)t - (int64_t)off * 60) * 1000 + frac;
    if (date_only && end_of_day)
        *ms += 86400000 - 1;
    return 0;
}
