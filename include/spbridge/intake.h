/*
 * Intake: one received document (HTTPS POST or spool file) -> translation -> practice check
 * -> one store transaction. Shared by every channel so they refuse, park, audit and answer
 * identically. Runs on intake threads, never on the event loop.
 */
#ifndef SPB_INTAKE_H
#define SPB_INTAKE_H

#include <jansson.h>

#include "spbridge/runtime.h"
#include "spbridge/store.h"

typedef struct spb_intake_outcome {
    int http_status; /* 200, 202, 400, 403, 413, 422, 500, 503 */
    json_t *body;    /* owned: the answer (result JSON or OperationOutcome) */
    int queued;      /* rows queued for delivery */
} spb_intake_outcome;

/*
 * Processes one document. `acting_ods` is the practice the sender may act for, or NULL for
 * an administrator (any practice). `dialect` may be NULL (the practice's configured dialect,
 * else detection). Never fails: the outcome says what to answer.
 */
void spb_intake_document(spb_runtime *rt, spb_store *store, const char *data, size_t len,
                         const spb_intake_meta *meta, const char *acting_ods, const char *dialect,
                         spb_intake_outcome *out);

/* HTTP status for an spb_err from translation (400, 413, 415, 422, 500). */
int spb_http_status_for(const spb_err *err);

#endif
