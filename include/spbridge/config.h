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
#define SPB_CONFIG_MAX_CLIENTS   256

typedef struct spb_service_cfg {
    char id[64];
    char name[200];
    char ods[16];
    char endpoint[512];
    long poll_interval_s; /* how often its Tasks are polled; 0: notifications only */
} spb_service_cfg;

typedef struct spb_practice_cfg {
    char ods[16];
    char service[64];
    char dialect[64];
    char region[32];
    char spool_dir[512];
    char writeback_format[16]; /* gp2gp | native */
    char writeback_spool_dir[512];
    char writeback_endpoint[512];
} spb_practice_cfg;

typedef enum {
    SPB_ROLE_PRACTICE = 0,
    SPB_ROLE_SERVICE,
    SPB_ROLE_AUDITOR,
    SPB_ROLE_ADMIN,
} spb_client_role;

/* A client certificate's identity: matched by fingerprint, SAN or subject. */
typedef struct spb_client_cfg {
    char name[64];
    char role_name[16];
    spb_client_role role;
    char ods[16];          /* practice: the practice it may act for; service: its ODS */
    char region[32];       /* auditor: the region it may see */
    char subject[256];     /* e.g. /O=NHS/OU=B83002/CN=... (as openssl -subject prints, */
    char san[256];         /*   or CN=...), a SAN URI/DNS value, */
    char fingerprint[128]; /*   or a SHA-256 fingerprint AA:BB:... */
} spb_client_cfg;

typedef struct spb_config {
    char path[512];
    char mappings_dir[512];
    char schema_dir[512];
    char log_level[16];
    long xml_max_bytes;
    long xml_max_depth;
    long watch_mappings_ms;
    char default_service[64];
    char store_path[512];
    /* [server] */
    char listen_address[64];
    long listen_port;
    char tls_cert[512], tls_key[512], tls_ca[512], tls_crl[512], tls_ciphers[512];
    long max_body_bytes;
    long intake_workers;
    long spool_poll_ms;
    /* [delivery] */
    long delivery_workers;
    long connect_timeout_ms, timeout_ms;
    long retry_base_ms, retry_max_ms, max_attempts, lease_ms;
    char client_cert[512], client_key[512], client_key_passphrase_file[512], ca_file[512];
    char pinned_public_key[256];
    /* [audit] (docs/audit.md) */
    char audit_signing_key[512], audit_signing_cert[512], audit_trusted_certs[512];
    long audit_checkpoint_every, audit_checkpoint_interval_s;
    long audit_retention_days, audit_prune_batch;
    spb_client_cfg clients[SPB_CONFIG_MAX_CLIENTS];
    int nclients;
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

/* Route function for spb_translate: the service whose ods is the referral's recipient, else
 * the practice's service, else default_service. */
int spb_config_route(void *cfg, const char *practice_ods, const char *recipient_ods, spb_route *out,
                     spb_err *err);

/* The service with id `id`, or NULL. */
const spb_service_cfg *spb_config_service(const spb_config *cfg, const char *id);

/* The practice's configuration, or NULL. */
const spb_practice_cfg *spb_config_practice(const spb_config *cfg, const char *ods);

/* The practice's configured dialect, or NULL. */
const char *spb_config_practice_dialect(const spb_config *cfg, const char *ods);

#endif
