/*
 * The audit trail: one record per step of every message flow, tamper-evident.
 *
 * Each record carries the SHA-256 of the record before it (`prev_hash`) and its own `hash`,
 * the SHA-256 of a canonical serialisation of all its fields, prev_hash and id included
 * (spb_audit_record_hash). Records are written only by the store's spb__audit(), inside the
 * caller's transaction (BEGIN IMMEDIATE: a single writer), so the chain has no forks.
 *
 * A hash chain alone proves nothing against someone who can rewrite the whole table, so
 * spbridge also writes signed checkpoints (the service's key, OpenSSL): "record N has hash H,
 * the chain starts after record A with hash X". `spb_audit_verify` recomputes every hash and
 * link and checks every checkpoint signature, so an edited, deleted, re-ordered or truncated
 * record is found and named. Pruning deletes old records in bounded batches and leaves a
 * signed checkpoint that anchors the rest of the chain. docs/audit.md explains the whole
 * argument, and what it does not cover.
 */
#ifndef SPB_AUDIT_H
#define SPB_AUDIT_H

#include <jansson.h>
#include <stdint.h>

#include "spbridge/config.h"
#include "spbridge/error.h"
#include "spbridge/store.h"

#define SPB_AUDIT_HASH_HEX 64
/* The prev_hash of the first record ever written. */
#define SPB_AUDIT_GENESIS "0000000000000000000000000000000000000000000000000000000000000000"
/* Longest detail kept on a record (longer ones are cut at a UTF-8 boundary). */
#define SPB_AUDIT_DETAIL_MAX 1024

/* One record as stored. Empty strings and NULL are the same (the store keeps NULL). */
typedef struct spb_audit_record {
    int64_t id;
    int64_t at; /* milliseconds since the epoch */
    const char *identity, *practice, *region, *referral;
    const char *step, *result, *detail, *mapping_version;
    const char *prev_hash;
} spb_audit_record;

/* SHA-256 (lower-case hex) of the record's canonical serialisation. 0 or SPB_ERR. */
int spb_audit_record_hash(const spb_audit_record *r, char out[SPB_AUDIT_HASH_HEX + 1]);

/* ---- signing and verifying checkpoints ---- */

typedef struct spb_audit_signer spb_audit_signer;

/* Loads a private key and its certificate (PEM). The key must belong to the certificate. */
int spb_audit_signer_open(spb_audit_signer **out, const char *key_path, const char *cert_path,
                          spb_err *err);
void spb_audit_signer_free(spb_audit_signer *sg);

/* The signing key and certificate from [audit] (defaulting to [server] tls_key/tls_cert). */
int spb_audit_signer_from_config(spb_audit_signer **out, const spb_config *cfg, spb_err *err);

/* Certificates whose checkpoint signatures verify accepts. */
typedef struct spb_audit_trust spb_audit_trust;

/* Reads every certificate in each PEM file (empty or NULL paths are skipped). */
int spb_audit_trust_load(spb_audit_trust **out, const char *const *paths, int npaths, spb_err *err);
/* [audit] signing_cert (or [server] tls_cert) and [audit] trusted_certs. */
int spb_audit_trust_from_config(spb_audit_trust **out, const spb_config *cfg, spb_err *err);
void spb_audit_trust_free(spb_audit_trust *t);

/* Writes a signed checkpoint covering every record now in the table (its own transaction).
 * `kind`: "periodic", "stop", "manual". `id_out` may be NULL. */
int spb_audit_checkpoint(spb_store *s, spb_audit_signer *sg, const char *kind, int64_t *id_out,
                         spb_err *err);

/* What a running service needs to sign checkpoints (copied out of the configuration, so no
 * lock is held while keys are read and the store is written). */
typedef struct spb_audit_settings {
    char signing_key[512], signing_cert[512];
    long checkpoint_every, checkpoint_interval_s;
} spb_audit_settings;

void spb_audit_settings_of(const spb_config *cfg, spb_audit_settings *out);

/* Writes a checkpoint of `kind` when `checkpoint_every` records were added since the last one,
 * or any record was added and `checkpoint_interval_s` passed (or there is no checkpoint yet).
 * 1 written, 0 not due, negative on error. */
int spb_audit_checkpoint_due(spb_store *s, const spb_audit_settings *as, const char *kind,
                             int64_t now_ms, spb_err *err);

/* The chain at a glance, for the dashboard. */
typedef struct spb_audit_status {
    int64_t records, head;      /* records present, the newest id */
    int64_t checkpoints;        /* checkpoints written */
    int64_t last_checkpoint_at; /* 0 when none */
    int64_t covered_to;         /* the newest record the last checkpoint covers */
} spb_audit_status;

int spb_audit_status_get(spb_store *s, spb_audit_status *st, spb_err *err);

/* ---- verify and prune ---- */

#define SPB_AUDIT_MAX_PROBLEMS 16

typedef struct spb_audit_verify_result {
    int ok;
    int64_t records;           /* records checked */
    int64_t first_id, last_id; /* the records present (0 when none) */
    int64_t checkpoints;       /* checkpoints checked */
    int64_t covered_to;        /* the newest record a valid signed checkpoint covers */
    int64_t first_bad;         /* the first bad record's id (0 when the problem is not a record) */
    int nproblems;             /* at most SPB_AUDIT_MAX_PROBLEMS kept, in the order found */
    int more_problems;         /* more were found than kept */
    char problems[SPB_AUDIT_MAX_PROBLEMS][256];
} spb_audit_verify_result;

/* Checks the whole chain and every checkpoint. Returns 0 when the check ran (see res->ok),
 * negative when it could not run (store error). */
int spb_audit_verify(spb_store *s, const spb_audit_trust *trust, spb_audit_verify_result *res,
                     spb_err *err);

/* Deletes records older than `before_ms` in batches of `batch`, each batch one transaction
 * ending with a signed "prune" checkpoint that anchors the chain. Refuses (SPB_EINVALID) to
 * delete records whose chain does not verify. `pruned` receives how many were deleted. */
int spb_audit_prune(spb_store *s, spb_audit_signer *sg, int64_t before_ms, long batch,
                    int64_t *pruned, spb_err *err);

/* ---- who sees what, and queries ---- */

/* The viewer: an admin sees every record, an auditor those of its region, a practice its own;
 * any other role sees nothing. */
typedef struct spb_audit_scope {
    spb_client_role role;
    char ods[16];
    char region[32];
} spb_audit_scope;

typedef struct spb_audit_filter {
    const char *region, *practice, *step, *referral; /* NULL: any */
    int64_t id;                                      /* one record; 0: any */
    int64_t since_ms, until_ms;                      /* at >= since, at <= until; 0: open */
    int64_t after_id;                                /* paging: records with id > after_id */
    int limit;                                       /* at most this many (1..10000) */
    int newest_first;                                /* descending ids (after_id ignored) */
} spb_audit_filter;

/* Records in id order as JSON objects (id, at, time, identity, practice, region, referral,
 * step, result, detail, mapping_version, prev_hash, hash). `more` is set when more match. */
int spb_audit_query(spb_store *s, const spb_audit_scope *scope, const spb_audit_filter *f,
                    json_t **rows, int *more, spb_err *err);

/* How many records match (for Bundle.total). */
int spb_audit_count(spb_store *s, const spb_audit_scope *scope, const spb_audit_filter *f,
                    int64_t *n, spb_err *err);

/* The FHIR R4 AuditEvent for one record from spb_audit_query. */
json_t *spb_audit_to_fhir(const json_t *row);

/* ---- regions ---- */

typedef struct spb_audit_region {
    char practice[16];
    char region[32];
} spb_audit_region;

/* The configuration's [practice.ODS] region settings (at most `max`); returns how many. */
int spb_audit_regions_of(const spb_config *cfg, spb_audit_region *out, int max);

/* Replaces the store's practice -> region table, which spb__audit reads to put the region on
 * each record, with `regions` (one transaction). */
int spb_audit_sync_regions(spb_store *s, const spb_audit_region *regions, int n, spb_err *err);

/* ---- times ---- */

/* "2026-11-21T11:38:11.949Z" */
void spb_audit_format_time(int64_t ms, char out[32]);

/* Parses YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS[.fff]][Z|+HH:MM|-HH:MM] (UTC when no offset).
 * `end_of_day`: a date alone means its last millisecond instead of its first. */
int spb_audit_parse_time(const char *text, int end_of_day, int64_t *ms);

#endif
