/*
 * The audit chain's writer, shared by store.c (spb__audit, the migration) and audit.c; not a
 * public API. Both run inside the store's transactions: see audit.h for the guarantees.
 */
#ifndef SPB_AUDIT_INTERNAL_H
#define SPB_AUDIT_INTERNAL_H

#include "spbridge/audit.h"
#include "spbridge/store.h"

/*
 * Appends one record to the chain: reads the chain's head and the practice's region, inserts
 * the record with prev_hash, then sets its hash. Uses the caller's transaction when one is
 * open (the callers hold BEGIN IMMEDIATE, so there is a single writer), else its own.
 * `r->id`, `r->region` and `r->prev_hash` are ignored (filled here).
 */
int spb__audit_append(spb_store *s, const spb_audit_record *r, spb_err *err);

/* Inside the caller's transaction: computes prev_hash and hash for every record that has none
 * (records written before the chain existed), in id order. */
int spb__audit_chain_legacy(spb_store *s, spb_err *err);

#endif
