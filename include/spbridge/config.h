/*
 * spbridge configuration: one INI file described by a declarative table (name, type,
 * bounds, default, documentation). The table drives parsing, defaults, `config check`
 * and the dump of effective settings; every bad setting is reported with file and line
 * before anything starts.
 */
#ifndef SPB_CONFIG_H
#define SPB_CONFIG_H

#include <stdio.h>

#include "spbridge/diag.h"
#include "spbridge/error.h"
#include "spbridge/translate.h"

#define SPB_CONFIG_MAX_SERVICES  32
#define SPB_CONFIG_MAX_PRACTICES 512

typedef struct spb_service_cfg {
    char id[64];
    char name[200];
    char ods[16];
    char endpoint[512];
} spb_service_cfg;

typedef struct spb_practice_cfg {
    char ods[16];
    char service[64];
    char dialect[64];
    char region[32];
} spb_practice_cfg;

typedef struct spb_config {
    char path[512];
    char mappings_dir[512];
    char schema_dir[512];
    char log_level[16];
    long xml_max_bytes;
    long xml_max_depth;
    char default_service[64];
    spb_service_cfg services[SPB_CONFIG_MAX_SERVICES];
    int nservices;
    spb_practice_cfg practices[SPB_CONFIG_MAX_PRACTICES];
    int npractices;
} spb_config;

/* Fills `cfg` with the built-in defaults (no file). */
void spb_config_defaults(spb_config *cfg);

/* Loads `path` over the defaults. Every problem goes to `diags`; the first to `err`.
 * Returns 0 or SPB_ECONFIG. */
int spb_config_load(spb_config *cfg, const char *path, spb_diags *diags, spb_err *err);

/* Writes the effective settings as INI (for `config show`). */
void spb_config_dump(const spb_config *cfg, FILE *out);

/* Route function for spb_translate: the practice's service, else default_service. */
int spb_config_route(void *cfg, const char *practice_ods, spb_route *out, spb_err *err);

/* The practice's configured dialect, or NULL. */
const char *spb_config_practice_dialect(const spb_config *cfg, const char *ods);

#endif
