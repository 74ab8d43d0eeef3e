/*
 * ConceptMaps: which source codes are events and what they mean, how needs codes map,
 * and (later) how outcomes map back. Code meaning is data in FHIR R4 ConceptMap JSON
 * files, never C tables; each map has a role given by the mapping set's manifest.
 */
#ifndef SPB_CONCEPTMAP_H
#define SPB_CONCEPTMAP_H

#include "spbridge/diag.h"
#include "spbridge/error.h"

typedef enum {
    SPB_ROLE_TRIGGERS = 0, /* source code -> event kind (referral, declined, ...) */
    SPB_ROLE_NEEDS,        /* need / reason code -> SNOMED CT for ServiceRequest.reasonCode */
    SPB_ROLE_OUTCOMES,     /* Task outcome -> GP code (write-back) */
    SPB_ROLE__COUNT
} spb_map_role;

typedef struct spb_cmap_set spb_cmap_set;

/* One successful lookup; strings are borrowed from the set. */
typedef struct spb_cmap_match {
    const char *target_system;
    const char *target_code;
    const char *target_display;
    const char *equivalence;
    const char *product_system; /* first `product` of the target, or NULL */
    const char *product_code;
    const char *product_display;
    const char *map_url;
    const char *map_version;
    const char *map_file;
    int element_line; /* line of the element in map_file, 0 if unknown */
} spb_cmap_match;

int spb_cmap_set_new(spb_cmap_set **out, spb_err *err);
void spb_cmap_set_free(spb_cmap_set *s);

/* Role names as written in the manifest: "triggers", "needs", "outcomes". -1 if unknown. */
int spb_map_role_parse(const char *name);
const char *spb_map_role_name(spb_map_role role);

/*
 * Loads one ConceptMap file under `role`. Structural problems and conflicts (the same
 * source code mapped to two different targets within a role) are reported with file and
 * line into `diags` and the first into `err`. Returns 0 or SPB_ECONFIG.
 */
int spb_cmap_set_load(spb_cmap_set *s, spb_map_role role, const char *path, spb_diags *diags,
                      spb_err *err);

/*
 * Translates (system, code) under `role`. Returns 1 and fills `out` when mapped, 0 when
 * the code has no mapping (or is explicitly unmatched).
 */
int spb_cmap_translate(const spb_cmap_set *s, spb_map_role role, const char *system,
                       const char *code, spb_cmap_match *out);

/* 1 if (system, code) is listed in `role` as explicitly unmatched ("do not map"/"do not
 * write back"), else 0. */
int spb_cmap_is_unmatched(const spb_cmap_set *s, spb_map_role role, const char *system,
                          const char *code);

/*
 * Where the first group of `role` with source `system` is: its file (borrowed) in *file and
 * the line of the group's '{' as the result. 0 with *file NULL when no loaded map of the
 * role has such a group (for pointing at the group a coverage check is about).
 */
int spb_cmap_group_line(const spb_cmap_set *s, spb_map_role role, const char *system,
                        const char **file);

/* A comma-separated list of the files loaded for `role`, for "extend this map" hints. */
const char *spb_cmap_files(const spb_cmap_set *s, spb_map_role role);

/* Appends "url|version" of every map, in load order, to `buf` (for the mapping version). */
void spb_cmap_versions(const spb_cmap_set *s, char *buf, size_t size);

/* Calls `fn` for every source mapping of `role` (for `mappings diff`). */
typedef void (*spb_cmap_each_fn)(void *user, const char *system, const char *code,
                                 const spb_cmap_match *m);
void spb_cmap_each(const spb_cmap_set *s, spb_map_role role, spb_cmap_each_fn fn, void *user);

#endif
