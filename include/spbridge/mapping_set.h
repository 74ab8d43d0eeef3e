/*
 * A mapping set: everything that turns one dialect's XML into canonical events and codes
 * into meanings, loaded as one versioned unit from a folder with a `mappings.ini`
 * manifest. The set's version (manifest version, every ConceptMap's url|version, and a
 * SHA-256 over the content of every file) is recorded with each translation so an auditor
 * can tell exactly which mapping produced a message.
 */
#ifndef SPB_MAPPING_SET_H
#define SPB_MAPPING_SET_H

#include "spbridge/conceptmap.h"
#include "spbridge/diag.h"
#include "spbridge/error.h"
#include "spbridge/profile.h"

typedef struct spb_mapping_set spb_mapping_set;

/* Loads `dir`/mappings.ini and everything it names. Returns 0 or SPB_ECONFIG. */
int spb_mapping_set_load(spb_mapping_set **out, const char *dir, spb_diags *diags, spb_err *err);

void spb_mapping_set_free(spb_mapping_set *m);

/* The dialect called `name`, or NULL. */
const spb_profile *spb_mapping_set_dialect(const spb_mapping_set *m, const char *name);

/* Number of dialects and the i-th one, in manifest order (auto-detection order). */
size_t spb_mapping_set_dialect_count(const spb_mapping_set *m);
const spb_profile *spb_mapping_set_dialect_at(const spb_mapping_set *m, size_t i);

const spb_cmap_set *spb_mapping_set_cmaps(const spb_mapping_set *m);

/* "name@version sha256:<first 16 hex>" */
const char *spb_mapping_set_version(const spb_mapping_set *m);

/* The full content hash (64 hex) and the ConceptMap url|version list. */
const char *spb_mapping_set_hash(const spb_mapping_set *m);
const char *spb_mapping_set_cmap_versions(const spb_mapping_set *m);

const char *spb_mapping_set_dir(const spb_mapping_set *m);

#endif
