/*
 * Dialect profiles: INI files that say, with XPath 1.0 and namespace prefixes, where each
 * canonical event field lives in a dialect's XML, and how raw values are transformed.
 * Adding a dialect is writing a profile, never code. The format is documented in
 * docs/dialect-profiles.md; mappings/dialects/ holds the shipped ones.
 */
#ifndef SPB_PROFILE_H
#define SPB_PROFILE_H

#include <libxml/tree.h>

#include "spbridge/diag.h"
#include "spbridge/error.h"
#include "spbridge/event.h"

typedef struct spb_profile spb_profile;

/*
 * Loads and compiles the profile at `path`. Every problem (syntax, unknown key, an XPath
 * that does not compile or uses an undeclared prefix or variable, a transform naming a
 * missing map) is reported with file and line into `diags` when given; the first also
 * goes to `err`. Returns 0 or SPB_ECONFIG.
 */
int spb_profile_load(spb_profile **out, const char *path, spb_diags *diags, spb_err *err);

/* Frees a profile. NULL-safe. */
void spb_profile_free(spb_profile *p);

const char *spb_profile_name(const spb_profile *p);
const char *spb_profile_title(const spb_profile *p);
const char *spb_profile_path(const spb_profile *p);

/*
 * The XSD a document with root element `root_name` is checked against, written to `buf`:
 * `schema.ROOT = path` or `schema = path` in [dialect]. A path starting "$schema_dir/" is
 * under the configured schema folder and is skipped (NULL) when none is configured.
 */
const char *spb_profile_schema_for(const spb_profile *p, const char *root_name,
                                   const char *schema_dir, char *buf, size_t size);

/* The XPath expressions (in fallback order) given for a field; returns how many (<= max).
 * Strings are borrowed from the profile. */
int spb_profile_field_exprs(const spb_profile *p, spb_field_id id, const char **out, int max);

/* Calls `fn` for every setting of the profile as a (key, value) pair: dialect keys,
 * namespaces, variables, fields (with their fallback number), transforms and map entries.
 * Keys are stable, so two profiles can be compared setting by setting. */
typedef void (*spb_profile_describe_fn)(void *user, const char *key, const char *value);
void spb_profile_describe(const spb_profile *p, spb_profile_describe_fn fn, void *user);

/* The profile's transform chain for a field as written ("" if none). */
const char *spb_profile_field_transform(const spb_profile *p, spb_field_id id);

/* 1 if the profile's `accept` expression holds for `doc` (or it has none), else 0. */
int spb_profile_accepts(const spb_profile *p, xmlDocPtr doc);

/* Called for every field value found, for `mappings explain`. */
typedef void (*spb_trace_fn)(void *user, const char *field, const char *xpath, int xpath_line,
                             const char *raw, const char *value);

typedef struct spb_extract_ops {
    /*
     * Decides, from an event holding only event.id, event.kind and codes, whether the
     * candidate is worth extracting whole: 1 yes, 0 skip, negative to stop with `err` set.
     */
    int (*filter)(void *user, const spb_event *ev, spb_err *err);
    /* Receives each complete event (borrowed; cleared after the call). */
    int (*sink)(void *user, spb_event *ev, spb_err *err);
    spb_trace_fn trace; /* may be NULL */
    void *user;
} spb_extract_ops;

/*
 * Runs the profile over `doc`: selects candidate events, fills each event's fields,
 * applies transforms and checks value types. Errors name `docname`, the line of the
 * offending node, its XPath, and the field. Returns 0 or a negative spb_code.
 */
int spb_profile_extract(const spb_profile *p, xmlDocPtr doc, const char *docname,
                        const spb_extract_ops *ops, spb_err *err);

#endif
