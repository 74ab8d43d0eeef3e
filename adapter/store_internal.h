/*
 * Helpers shared by the store's source files (store.c, store_follow.c); not a public API.
 * Every function follows store.c's conventions: errors go to `err`, 0 or negative returns.
 */
#ifndef SPB_STORE_INTERNAL_H
#define SPB_STORE_INTERNAL_H

#include <jansson.h>
#include <sqlite3.h>
#include <stdint.h>

#include "spbridge/store.h"

sqlite3 *spb__db(spb_store *s);
int spb__db_error(spb_store *s, spb_err *err, const char *what);
int spb__exec(spb_store *s, const char *sql, spb_err *err);
sqlite3_stmt *spb__prep(spb_store *s, const char *sql, spb_err *err);
void spb__bind_text(sqlite3_stmt *st, int i, const char *v);
int spb__audit(spb_store *s, int64_t at, const char *identity, const char *practice,
               const char *referral, const char *step, const char *result, const char *detail,
               const char *mapping_version, spb_err *err);
int spb__rows_to_array(spb_store *s, sqlite3_stmt *st, json_t *arr, spb_err *err);

/* Runs `st` (finalizing it) and returns every row as a JSON array in *out. */
int spb__query_array(spb_store *s, sqlite3_stmt *st, json_t **out, spb_err *err);

#endif
