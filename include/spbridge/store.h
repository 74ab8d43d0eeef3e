/*
 * The durable store (SQLite): events received, the outbox of Bundles to deliver, every
 * delivery attempt, parked (rejected) inputs, and audit records.
 *
 * Guarantees: intake writes an event's outbox rows and its audit records in one
 * transaction (WAL, synchronous FULL) before the sender is told "accepted", so an accepted
 * referral survives any crash. Delivery claims a row with a lease; a row whose worker died
 * is re-queued, and because every Bundle is made of conditional creates, re-sending it
 * creates nothing twice: at-least-once delivery of an idempotent Bundle is exactly-once on
 * the server. Rows of one referral are delivered in order (a cancellation never overtakes
 * its referral); different referrals never wait for each other.
 * docs/delivery-guarantees.md explains the whole argument.
 */
#ifndef SPB_STORE_H
#define SPB_STORE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "spbridge/error.h"
#include "spbridge/translate.h"

typedef struct spb_store spb_store;

/* Opens (creating if needed) the database at `path`. One handle per thread. */
int spb_store_open(spb_store **out, const char *path, spb_err *err);
void spb_store_close(spb_store *s);

/* Like spb_store_open, but SPB_ENOTFOUND instead of creating a new store (operator CLIs). */
int spb_store_open_existing(spb_store **out, const char *path, spb_err *err);

/* Milliseconds since the Unix epoch (wall clock), used for every stored time. */
int64_t spb_now_ms(void);

/* Who sent a document and how. */
typedef struct spb_intake_meta {
    const char *identity;     /* the client identity name, or "spool:<ODS>" */
    const char *identity_ods; /* the practice the sender may act for ("" for admin) */
    const char *channel;      /* "https" or "spool" */
    const char *source_name;  /* file name or "POST /events" */
} spb_intake_meta;

typedef struct spb_intake_item {
    char tracking_id[SPB_UUID_LEN + 1];
    char referral[SPB_UUID_LEN + 1];
    spb_event_kind kind;
    int duplicate;     /* the same source event was received before: nothing new queued */
    int64_t outbox_id; /* 0 for report records */
} spb_intake_item;

/*
 * Stores a translation: for each event not seen before, the event, its outbox row
 * (referrals and cancellations: queued; declined/signposting: recorded, never sent) and
 * audit records, all in one transaction. `items` receives one entry per translated event
 * (at most `max`). Returns 0 or a negative spb_code; on failure nothing is written.
 */
int spb_store_intake(spb_store *s, const spb_translation *tr, const spb_intake_meta *meta,
                     spb_intake_item *items, size_t max, size_t *n, spb_err *err);

/*
 * Checks, before a translation is stored, that no event of it could act on another
 * patient's or another practice's referral: an event that refers to an earlier referral (a
 * cancellation) must name one received before (or earlier in the same document) from the
 * same practice, for the same patient (NHS number, and birth date when both give one); an
 * event received before must come again for the same patient. Returns 0; SPB_EINVALID
 * (unknown referral, other patient) or SPB_EAUTH (other practice) with `*bad` the index of
 * the offending event and err saying why without patient values; or another negative code
 * when the store cannot be read.
 */
int spb_store_check_links(spb_store *s, const spb_translation *tr, size_t *bad, spb_err *err);

/*
 * Keeps a refused input for replay: the body, who sent it and the error. Writes the
 * audit record in the same transaction. `id_out` receives the parked input's id.
 */
int spb_store_park(spb_store *s, const spb_intake_meta *meta, const char *body, size_t len,
                   const spb_err *reason, char id_out[SPB_UUID_LEN + 1], spb_err *err);

/* One audit record outside any other transaction (refusals, reloads). */
int spb_store_audit(spb_store *s, const char *identity, const char *practice, const char *referral,
                    const char *step, const char *result, const char *detail, spb_err *err);

/* ---- delivery ---- */

typedef struct spb_outbox_job {
    int64_t id;
    char event_id[SPB_UUID_LEN + 1];
    char referral[SPB_UUID_LEN + 1];
    char practice[16];
    char service_id[64];
    char *payload; /* owned: free() */
    int attempts;  /* including this one */
    int64_t created_at;
    char channel[16];   /* fhir | writeback */
    char method[8];     /* POST | PUT */
    char url_path[256]; /* for fhir rows: appended to the service's base URL */
    char content_type[64];
    char kind[16]; /* referral, cancellation, close, writeback */
} spb_outbox_job;

/* Claims the next due row (state queued/retrying, due, first of its referral) with a lease.
 * Returns 1 with `job` filled, 0 when nothing is due, or a negative spb_code. */
int spb_store_claim(spb_store *s, int64_t now_ms, int64_t lease_ms, spb_outbox_job *job,
                    spb_err *err);

/* Earliest next_attempt_at among pending rows, or -1 if none. */
int64_t spb_store_next_due(spb_store *s);

typedef enum {
    SPB_DELIVERED = 0,
    SPB_RETRY,
    SPB_DEAD,
} spb_delivery_outcome;

typedef struct spb_attempt_result {
    spb_delivery_outcome outcome;
    int http_status;         /* 0 when no HTTP answer */
    const char *error;       /* why it failed, for operators (no patient data) */
    const char *response;    /* the server's body (OperationOutcome or transaction-response) */
    const char *server_ids;  /* JSON array of {"resourceType","id","status"} when delivered */
    int64_t next_attempt_at; /* for SPB_RETRY */
    int64_t started_at, finished_at;
} spb_attempt_result;

/* Records an attempt and moves the row to delivered, retrying or dead (one transaction,
 * with audit records). */
int spb_store_finish(spb_store *s, const spb_outbox_job *job, const spb_attempt_result *r,
                     spb_err *err);

/* Returns rows left 'delivering' by a dead worker (lease expired, or all when `all`) to
 * retrying, due now. `n` receives how many. */
int spb_store_recover(spb_store *s, int64_t now_ms, int all, int *n, spb_err *err);

/* ---- operators' views ---- */

typedef struct spb_store_counts {
    long queued, delivering, retrying, delivered, dead, recorded, parked;
    long attempts, failed_attempts;
} spb_store_counts;

int spb_store_counts_get(spb_store *s, spb_store_counts *c, spb_err *err);

/* The state of one tracking id (event, its outbox rows and attempts). SPB_ENOTFOUND if
 * unknown. `practice` receives the event's practice, for authorisation. */
int spb_store_event_status(spb_store *s, const char *tracking_id, json_t **out, char practice[16],
                           spb_err *err);

/* Outbox rows (newest first, at most `limit`), optionally only one state. */
int spb_store_outbox_list(spb_store *s, const char *state, int limit, json_t **out, spb_err *err);

/* One outbox row with its attempts and payload. */
int spb_store_outbox_show(spb_store *s, int64_t id, json_t **out, spb_err *err);

/* Queues a new delivery of row `id` linked to it (replay_of). */
int spb_store_replay(spb_store *s, int64_t id, const char *who, int64_t *new_id, spb_err *err);

/* Replays every dead row; `n` receives how many. */
int spb_store_replay_dead(spb_store *s, const char *who, int *n, spb_err *err);

/* A parked input, for replay. */
typedef struct spb_parked {
    char identity[80];
    char practice[16];
    char channel[16];
    char source_name[256];
    char *body; /* owned: free() */
    size_t len;
    int replayed;
} spb_parked;
int spb_store_parked_get(spb_store *s, const char *id, spb_parked *out, spb_err *err);

/* Records that a parked input was replayed, and how (audited). */
int spb_store_parked_mark(spb_store *s, const char *id, const char *result, spb_err *err);

/* Parked inputs (refused documents kept for replay), newest first. */
int spb_store_parked_list(spb_store *s, int limit, json_t **out, spb_err *err);

/* ---- following Tasks and writing outcomes back (store_follow.c) ---- */

/* What spbridge knows of one delivered referral. */
typedef struct spb_referral_row {
    char referral[SPB_UUID_LEN + 1];
    char practice[16];
    char service_id[64];
    char event_id[SPB_UUID_LEN + 1];
    char nhs_number[16];
    char birth_date[16];
    char patient_id[128], practice_org_id[128], sr_id[128], task_id[128];
    char task_status[32];
    char task_version[64];
    char task_last_updated[40];
    char task_business_status[64];
    int closed;
    char *sr_payload; /* owned: the ServiceRequest as sent */
} spb_referral_row;

/* Loads a referral by its uuid, or by the Task's server id when `by_task` (for `service_id`).
 * Returns 1 found, 0 unknown, negative on error. Free with spb_referral_row_clear. */
int spb_store_referral_get(spb_store *s, const char *key, int by_task, const char *service_id,
                           spb_referral_row *out, spb_err *err);
void spb_referral_row_clear(spb_referral_row *r);

/* Practices with delivered referrals at `service_id`, and the practice Organization's server
 * id: up to `max` pairs. */
typedef struct spb_follow_target {
    char practice[16];
    char org_id[128];
} spb_follow_target;
int spb_store_follow_targets(spb_store *s, const char *service_id, spb_follow_target *out, int max,
                             int *n, spb_err *err);

/* The _lastUpdated cursor for (service, practice): "" when never polled. */
int spb_store_cursor_get(spb_store *s, const char *service_id, const char *practice, char *out,
                         size_t size, spb_err *err);
int spb_store_cursor_set(spb_store *s, const char *service_id, const char *practice,
                         const char *cursor, spb_err *err);

/* A new outbox row made by spbridge itself (write-back, closing a ServiceRequest). */
typedef struct spb_outbox_new {
    const char *kind;     /* writeback | close */
    const char *channel;  /* fhir | writeback */
    const char *method;   /* POST | PUT */
    const char *url_path; /* fhir: relative to the service base; may be NULL */
    const char *content_type;
    const char *payload;
    const char *dedupe_key; /* exactly once: a second row with the same key is not made */
} spb_outbox_new;

/* One Task version seen at a service. */
typedef struct spb_task_version {
    const char *service_id;
    const char *task_id;
    const char *version_id;
    const char *referral;
    const char *status;
    const char *business_status;
    const char *last_updated;
    const char *flag;   /* NULL, "unexpected_transition", "out_of_order", "quarantined" */
    const char *detail; /* why flagged (no patient data) */
    int advance;        /* 1: this version becomes the referral's current state */
    const char *const *output_keys; /* outputs written back by this version (once each) */
    int noutput_keys;
} spb_task_version;

/* Whether an output (by key) was already written back for the referral: 1 yes, 0 no. */
int spb_store_output_written(spb_store *s, const char *referral, const char *key, spb_err *err);

/*
 * Records a Task version and whatever it causes, in one transaction: the version row
 * (UNIQUE per service/task/version: a version seen before returns 1 and changes nothing),
 * the referral's current state when `advance`, and up to two outbox rows (write-back,
 * closing the ServiceRequest; deduplicated by key), with audit records. 0 when recorded.
 */
int spb_store_task_version(spb_store *s, const spb_task_version *tv, const spb_referral_row *ref,
                           const spb_outbox_new *rows, int nrows, spb_err *err);

/* Whether this Task version was seen before (1) or not (0). */
int spb_store_task_version_seen(spb_store *s, const char *service_id, const char *task_id,
                                const char *version_id, spb_err *err);

/* Notifications received on /fhir/notify, processed by the follower. */
int spb_store_notify_add(spb_store *s, const char *service_id, const char *task_id, spb_err *err);
typedef struct spb_notification {
    int64_t id;
    char service_id[64];
    char task_id[128];
} spb_notification;
int spb_store_notify_pending(spb_store *s, const char *service_id, spb_notification *out, int max,
                             int *n, spb_err *err);
int spb_store_notify_done(spb_store *s, int64_t id, spb_err *err);

/* The whole life of a referral (by referral uuid or tracking id): events, deliveries, Task
 * versions, write-backs and quarantines. SPB_ENOTFOUND if unknown. */
int spb_store_referral_life(spb_store *s, const char *id, json_t **out, spb_err *err);

#endif
