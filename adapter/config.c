/*
 * Declarative configuration. Each setting is a row of a table: the parser, the defaults,
 * the checks and the dump all read the same rows, so a new setting is one line here plus
 * its documentation in docs/configuration.md.
 */
#include "spbridge/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "spbridge/ident.h"

#ifndef SPB_DEFAULT_MAPPINGS_DIR
#define SPB_DEFAULT_MAPPINGS_DIR "mappings"
#endif

typedef enum { CT_STRING, CT_LONG, CT_LOGLEVEL } ctype;

typedef struct setting {
    const char *section; /* "spbridge", "service.*", "practice.*" */
    const char *key;
    ctype type;
    size_t offset; /* into spb_config, spb_service_cfg or spb_practice_cfg */
    size_t size;   /* for strings */
    long min, max;
    const char *def;
    int required;
    const char *doc;
} setting;

#define S(sec, key, type, field, mn, mx, def, req, doc)                                            \
    {                                                                                              \
        sec, key, type, offsetof(spb_config, field), sizeof(((spb_config *)0)->field), mn, mx,     \
            def, req, doc                                                                          \
    }
#define SV(key, field, req, doc)                                                                   \
    {                                                                                              \
        "service.*", key, CT_STRING, offsetof(spb_service_cfg, field),                             \
            sizeof(((spb_service_cfg *)0)->field), 0, 0, "", req, doc                              \
    }
#define CL(key, field, req, doc)                                                                   \
    {                                                                                              \
        "client.*", key, CT_STRING, offsetof(spb_client_cfg, field),                               \
            sizeof(((spb_client_cfg *)0)->field), 0, 0, "", req, doc                               \
    }
#define PR(key, field, req, doc)                                                                   \
    {                                                                                              \
        "practice.*", key, CT_STRING, offsetof(spb_practice_cfg, field),                           \
            sizeof(((spb_practice_cfg *)0)->field), 0, 0, "", req, doc                             \
    }

static const setting settings[] = {
    S("spbridge", "mappings_dir", CT_STRING, mappings_dir, 0, 0, SPB_DEFAULT_MAPPINGS_DIR, 0,
      "folder holding mappings.ini, dialect profiles and ConceptMaps"),
    S("spbridge", "schema_dir", CT_STRING, schema_dir, 0, 0, "", 0,
      "GP2GP XSD folder; when set, GP2GP messages are validated against the official schema"),
    S("spbridge", "log_level", CT_LOGLEVEL, log_level, 0, 0, "info", 0,
      "debug, info, warn or error"),
    S("spbridge", "xml_max_bytes", CT_LONG, xml_max_bytes, 1024, 256L * 1024 * 1024, "16777216", 0,
      "largest XML document accepted, in bytes"),
    S("spbridge", "xml_max_depth", CT_LONG, xml_max_depth, 8, 256, "128", 0,
      "deepest element nesting accepted"),
    S("spbridge", "watch_mappings_ms", CT_LONG, watch_mappings_ms, 0, 3600000, "2000", 0,
      "serve reloads the mapping set when its files change, checking this often; 0: only "
      "on SIGHUP"),
    S("spbridge", "store_path", CT_STRING, store_path, 0, 0, "var/spbridge.db", 0,
      "the SQLite database (outbox, events, audit); relative to the configuration file"),
    S("routing", "default_service", CT_STRING, default_service, 0, 0, "", 0,
      "service for practices with no [practice.ODS] section; empty refuses them"),
    S("server", "listen_address", CT_STRING, listen_address, 0, 0, "127.0.0.1", 0,
      "address `serve` listens on"),
    S("server", "listen_port", CT_LONG, listen_port, 0, 65535, "8443", 0,
      "HTTPS port (0 picks a free port and logs it)"),
    S("server", "tls_cert", CT_STRING, tls_cert, 0, 0, "", 0, "server certificate (PEM)"),
    S("server", "tls_key", CT_STRING, tls_key, 0, 0, "", 0, "server private key (PEM)"),
    S("server", "tls_ca", CT_STRING, tls_ca, 0, 0, "", 0,
      "CA bundle that client certificates must chain to"),
    S("server", "tls_crl", CT_STRING, tls_crl, 0, 0, "", 0,
      "certificate revocation list (PEM) checked for client certificates"),
    S("server", "tls_ciphers", CT_STRING, tls_ciphers, 0, 0,
      "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!MD5:!SHA1", 0,
      "TLS 1.2 cipher list (TLS 1.3 uses OpenSSL's defaults)"),
    S("server", "max_body_bytes", CT_LONG, max_body_bytes, 1024, 256L * 1024 * 1024, "10485760", 0,
      "largest request body accepted (413 above)"),
    S("server", "intake_workers", CT_LONG, intake_workers, 1, 64, "2", 0,
      "threads translating and storing posted events"),
    S("server", "spool_poll_ms", CT_LONG, spool_poll_ms, 100, 3600000, "2000", 0,
      "how often spool folders are scanned"),
    S("delivery", "workers", CT_LONG, delivery_workers, 1, 64, "4", 0,
      "threads delivering Bundles"),
    S("delivery", "connect_timeout_ms", CT_LONG, connect_timeout_ms, 100, 600000, "5000", 0,
      "TCP+TLS connect timeout"),
    S("delivery", "timeout_ms", CT_LONG, timeout_ms, 100, 3600000, "30000", 0,
      "total time one delivery attempt may take"),
    S("delivery", "retry_base_ms", CT_LONG, retry_base_ms, 10, 3600000, "2000", 0,
      "first retry delay; doubles each attempt, with jitter"),
    S("delivery", "retry_max_ms", CT_LONG, retry_max_ms, 10, 86400000, "900000", 0,
      "longest retry delay"),
    S("delivery", "max_attempts", CT_LONG, max_attempts, 1, 100000, "200", 0,
      "attempts before a transiently failing row is dead-lettered"),
    S("delivery", "lease_ms", CT_LONG, lease_ms, 1000, 86400000, "120000", 0,
      "how long a worker owns a row; must exceed timeout_ms"),
    S("delivery", "client_cert", CT_STRING, client_cert, 0, 0, "", 0,
      "certificate spbridge presents to services (PEM)"),
    S("delivery", "client_key", CT_STRING, client_key, 0, 0, "", 0, "its private key (PEM)"),
    S("delivery", "client_key_passphrase_file", CT_STRING, client_key_passphrase_file, 0, 0, "", 0,
      "file holding the key's passphrase, if it is encrypted"),
    S("delivery", "ca_file", CT_STRING, ca_file, 0, 0, "", 0,
      "CA bundle that services' server certificates must chain to"),
    S("delivery", "pinned_public_key", CT_STRING, pinned_public_key, 0, 0, "", 0,
      "optional pin: sha256//BASE64 of the service's public key"),
    S("audit", "signing_key", CT_STRING, audit_signing_key, 0, 0, "", 0,
      "private key (PEM) that signs audit checkpoints; empty: [server] tls_key"),
    S("audit", "signing_cert", CT_STRING, audit_signing_cert, 0, 0, "", 0,
      "its certificate, which `audit verify` checks signatures with; empty: [server] tls_cert"),
    S("audit", "trusted_certs", CT_STRING, audit_trusted_certs, 0, 0, "", 0,
      "more certificates (PEM) whose checkpoint signatures verify accepts (earlier keys)"),
    S("audit", "checkpoint_every", CT_LONG, audit_checkpoint_every, 1, 1000000, "100", 0,
      "a signed checkpoint after this many new audit records"),
    S("audit", "checkpoint_interval_s", CT_LONG, audit_checkpoint_interval_s, 1, 86400, "60", 0,
      "and at least this often (seconds) while records are being added"),
    S("audit", "retention_days", CT_LONG, audit_retention_days, 0, 36500, "0", 0,
      "`audit prune` without --before deletes records older than this; 0 keeps all"),
    S("audit", "prune_batch", CT_LONG, audit_prune_batch, 1, 1000000, "1000", 0,
      "records deleted per transaction when pruning"),
    SV("name", name, 1, "the service's name"),
    SV("ods", ods, 0, "the service's ODS code (Task.owner and ServiceRequest.performer)"),
    SV("endpoint", endpoint, 0, "the service's FHIR base URL"),
    {"service.*", "poll_interval_s", CT_LONG, offsetof(spb_service_cfg, poll_interval_s), 0, 0,
     86400, "900", 0, "how often the service's Tasks are polled (s); 0: notifications only"},
    PR("service", service, 1, "the [service.ID] this practice refers to"),
    PR("dialect", dialect, 0, "the dialect this practice sends (default: detect)"),
    PR("region", region, 0, "the NHS region or ICB the practice belongs to"),
    PR("spool_dir", spool_dir, 0, "folder this practice's GP system drops event files into"),
    {"practice.*", "writeback_format", CT_STRING, offsetof(spb_practice_cfg, writeback_format),
     sizeof(((spb_practice_cfg *)0)->writeback_format), 0, 0, "gp2gp", 0,
     "outcome documents: gp2gp (HL7 v3 ehrComposition) or native"},
    PR("writeback_spool_dir", writeback_spool_dir, 0,
       "folder outcome documents are written to for the GP system to import"),
    PR("writeback_endpoint", writeback_endpoint, 0,
       "HTTPS URL outcome documents are POSTed to (mutual TLS, [delivery] certificate)"),
    CL("role", role_name, 1, "practice, service, auditor or admin"),
    CL("ods", ods, 0, "practice: the ODS code it acts for; service: its ODS code"),
    CL("region", region, 0, "auditor: the region it may see"),
    CL("subject", subject, 0, "match: the certificate subject (e.g. /O=NHS/OU=B83002/CN=...)"),
    CL("san", san, 0, "match: a subjectAltName value (URI, DNS or email)"),
    CL("fingerprint", fingerprint, 0, "match: SHA-256 fingerprint AA:BB:..."),
};

#define NSETTINGS (sizeof(settings) / sizeof(settings[0]))

typedef struct cfg_state {
    spb_config *cfg;
    FILE *f;
    int line;
    spb_diags *diags;
    spb_err *err;
    int errors;
    unsigned char seen[SPB_CONFIG_MAX_SERVICES + SPB_CONFIG_MAX_PRACTICES + SPB_CONFIG_MAX_CLIENTS +
                       1][NSETTINGS];
} cfg_state;

static void cfg_error(cfg_state *st, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void cfg_error(cfg_state *st, int line, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    spb_diag_add(st->diags, SPB_DIAG_ERROR, st->cfg->path, line, "%s", msg);
    if (st->errors++ == 0 && (st->err == NULL || st->err->code == 0)) {
        spb_err_set(st->err, SPB_ECONFIG, SPB_ISSUE_PROCESSING, "%s", msg);
        spb_err_where(st->err, st->cfg->path, line, 0, NULL);
        spb_err_hint(st->err, "see docs/configuration.md; `spbridge config check` lists every "
                              "problem");
    }
}

static int set_value(cfg_state *st, const setting *s, void *base, const char *value)
{
    char *dst = (char *)base + s->offset;
    switch (s->type) {
    case CT_STRING:
    case CT_LOGLEVEL:
        if (strlen(value) >= s->size) {
            cfg_error(st, st->line, "%s is longer than %zu characters", s->key, s->size - 1);
            return 0;
        }
        if (s->type == CT_LOGLEVEL && strcmp(value, "debug") != 0 && strcmp(value, "info") != 0 &&
            strcmp(value, "warn") != 0 && strcmp(value, "error") != 0) {
            cfg_error(st, st->line, "%s must be debug, info, warn or error", s->key);
            return 0;
        }
        snprintf(dst, s->size, "%s", value);
        return 1;
    case CT_LONG: {
        char *end = NULL;
        long v;
        errno = 0;
        v = strtol(value, &end, 10);
        if (errno != 0 || end == value || *end != '\0') {
            cfg_error(st, st->line, "%s must be a whole number, got '%s'", s->key, value);
            return 0;
        }
        if (v < s->min || v > s->max) {
            cfg_error(st, st->line, "%s must be between %ld and %ld, got %ld", s->key, s->min,
                      s->max, v);
            return 0;
        }
        *(long *)(void *)dst = v;
        return 1;
    }
    }
    return 0;
}

static const setting *find_setting(const char *section_pattern, const char *key)
{
    for (size_t i = 0; i < NSETTINGS; i++) {
        if (strcmp(settings[i].section, section_pattern) == 0 && strcmp(settings[i].key, key) == 0)
            return &settings[i];
    }
    return NULL;
}

/* Defaults of a repeated section ([service.X], [practice.X], [client.X]) when it appears. */
static void apply_defaults(const char *pattern, void *base)
{
    for (size_t i = 0; i < NSETTINGS; i++) {
        const setting *s = &settings[i];
        char *dst = (char *)base + s->offset;
        if (strcmp(s->section, pattern) != 0 || s->def[0] == '\0')
            continue;
        if (s->type == CT_LONG)
            *(long *)(void *)dst = strtol(s->def, NULL, 10);
        else
            snprintf(dst, s->size, "%s", s->def);
    }
}

static char *cfg_reader(char *str, int num, void *stream)
{
    cfg_state *st = stream;
    size_t n;
    if (fgets(str, num, st->f) == NULL)
        return NULL;
    st->line++;
    n = strlen(str);
    if (n == (size_t)num - 1 && str[n - 1] != '\n' && !feof(st->f)) {
        int c;
        /* over inih's line buffer: drop the rest so line numbers stay right, and say so */
        while ((c = fgetc(st->f)) != EOF && c != '\n')
            ;
        cfg_error(st, st->line, "line is longer than %d characters", num - 2);
        str[0] = '\0';
    }
    return str;
}

static int cfg_handler(void *user, const char *section, const char *name, const char *value)
{
    cfg_state *st = user;
    spb_config *cfg = st->cfg;
    const char *pattern = section;
    void *base = cfg;
    int slot = 0;
    const setting *s;

    if (strncmp(section, "service.", 8) == 0) {
        const char *id = section + 8;
        int i;
        pattern = "service.*";
        for (i = 0; i < cfg->nservices; i++) {
            if (strcmp(cfg->services[i].id, id) == 0)
                break;
        }
        if (i == cfg->nservices) {
            if (cfg->nservices >= SPB_CONFIG_MAX_SERVICES || *id == '\0' ||
                strlen(id) >= sizeof(cfg->services[0].id)) {
                cfg_error(st, st->line, "cannot add service '%s' (empty, too long or too many)",
                          id);
                return 1;
            }
            apply_defaults("service.*", &cfg->services[i]);
            snprintf(cfg->services[i].id, sizeof(cfg->services[i].id), "%s", id);
            cfg->nservices++;
        }
        base = &cfg->services[i];
        slot = 1 + i;
    } else if (strncmp(section, "practice.", 9) == 0) {
        const char *ods = section + 9;
        char norm[16];
        spb_err e;
        int i;
        pattern = "practice.*";
        spb_err_clear(&e);
        if (spb_ods_check(norm, sizeof(norm), ods, &e) < 0) {
            cfg_error(st, st->line, "[%s]: %s", section, e.message);
            return 1;
        }
        for (i = 0; i < cfg->npractices; i++) {
            if (strcmp(cfg->practices[i].ods, norm) == 0)
                break;
        }
        if (i == cfg->npractices) {
            if (cfg->npractices >= SPB_CONFIG_MAX_PRACTICES) {
                cfg_error(st, st->line, "more than %d practices", SPB_CONFIG_MAX_PRACTICES);
                return 1;
            }
            apply_defaults("practice.*", &cfg->practices[i]);
            snprintf(cfg->practices[i].ods, sizeof(cfg->practices[i].ods), "%s", norm);
            cfg->npractices++;
        }
        base = &cfg->practices[i];
        slot = 1 + SPB_CONFIG_MAX_SERVICES + i;
    }
    if (strncmp(section, "client.", 7) == 0) {
        const char *id = section + 7;
        int i;
        pattern = "client.*";
        for (i = 0; i < cfg->nclients; i++) {
            if (strcmp(cfg->clients[i].name, id) == 0)
                break;
        }
        if (i == cfg->nclients) {
            if (cfg->nclients >= SPB_CONFIG_MAX_CLIENTS || *id == '\0' ||
                strlen(id) >= sizeof(cfg->clients[0].name)) {
                cfg_error(st, st->line, "cannot add client '%s' (empty, too long or too many)", id);
                return 1;
            }
            snprintf(cfg->clients[i].name, sizeof(cfg->clients[i].name), "%s", id);
            cfg->nclients++;
        }
        base = &cfg->clients[i];
        slot = 1 + SPB_CONFIG_MAX_SERVICES + SPB_CONFIG_MAX_PRACTICES + i;
    }
    s = find_setting(pattern, name);
    if (s == NULL) {
        cfg_error(st, st->line, "unknown setting '%s' in [%s]", name, section);
        return 1;
    }
    if (st->seen[slot][s - settings]++) {
        cfg_error(st, st->line, "'%s' is set twice in [%s]", name, section);
        return 1;
    }
    set_value(st, s, base, value);
    return 1;
}

void spb_config_defaults(spb_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < NSETTINGS; i++) {
        const setting *s = &settings[i];
        char *dst = (char *)cfg + s->offset;
        if (strchr(s->section, '*') != NULL)
            continue;
        if (s->type == CT_LONG)
            *(long *)(void *)dst = strtol(s->def, NULL, 10);
        else
            snprintf(dst, s->size, "%s", s->def);
    }
}

int spb_config_load(spb_config *cfg, const char *path, spb_diags *diags, spb_err *err)
{
    cfg_state *st = calloc(1, sizeof(*st));
    int rc;

    if (st == NULL)
        return spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
    snprintf(cfg->path, sizeof(cfg->path), "%s", path);
    st->cfg = cfg;
    st->diags = diags;
    st->err = err;
    st->f = fopen(path, "r");
    if (st->f == NULL) {
        cfg_error(st, 0, "cannot open the configuration file");
        rc = SPB_ECONFIG;
        goto out;
    }
    rc = ini_parse_stream(cfg_reader, st, cfg_handler, st);
    if (rc > 0)
        cfg_error(st, rc, "syntax error (expected [section] or key = value)");
    /* required settings and cross-references */
    for (int i = 0; i < cfg->nservices; i++) {
        for (size_t k = 0; k < NSETTINGS; k++) {
            if (strcmp(settings[k].section, "service.*") == 0 && settings[k].required &&
                !st->seen[1 + i][k])
                cfg_error(st, 0, "[service.%s] needs %s", cfg->services[i].id, settings[k].key);
        }
        if (cfg->services[i].ods[0] != '\0') {
            char norm[16];
            spb_err e;
            spb_err_clear(&e);
            if (spb_ods_check(norm, sizeof(norm), cfg->services[i].ods, &e) < 0)
                cfg_error(st, 0, "[service.%s] ods: %s", cfg->services[i].id, e.message);
            else
                snprintf(cfg->services[i].ods, sizeof(cfg->services[i].ods), "%s", norm);
        }
    }
    for (int i = 0; i < cfg->npractices; i++) {
        int found = 0;
        if (cfg->practices[i].writeback_endpoint[0] != '\0' &&
            strncmp(cfg->practices[i].writeback_endpoint, "https://", 8) != 0)
            cfg_error(st, 0, "[practice.%s] writeback_endpoint must be an https:// URL",
                      cfg->practices[i].ods);
        if (strcmp(cfg->practices[i].writeback_format, "gp2gp") != 0 &&
            strcmp(cfg->practices[i].writeback_format, "native") != 0)
            cfg_error(st, 0, "[practice.%s] writeback_format must be gp2gp or native",
                      cfg->practices[i].ods);
        for (int k = 0; k < cfg->nservices; k++)
            found |= strcmp(cfg->services[k].id, cfg->practices[i].service) == 0;
        if (!found)
            cfg_error(st, 0, "[practice.%s] service '%s' has no [service.%s] section",
                      cfg->practices[i].ods, cfg->practices[i].service, cfg->practices[i].service);
    }
    if (cfg->lease_ms <= cfg->timeout_ms)
        cfg_error(st, 0,
                  "[delivery] lease_ms (%ld) must be longer than timeout_ms (%ld), or a "
                  "row could be sent twice at once",
                  cfg->lease_ms, cfg->timeout_ms);
    for (int i = 0; i < cfg->nclients; i++) {
        spb_client_cfg *cl = &cfg->clients[i];
        static const char *roles[] = {"practice", "service", "auditor", "admin"};
        int r = -1;
        for (int k = 0; k < 4; k++) {
            if (strcmp(cl->role_name, roles[k]) == 0)
                r = k;
        }
        if (r < 0) {
            cfg_error(st, 0, "[client.%s] role must be practice, service, auditor or admin",
                      cl->name);
            continue;
        }
        cl->role = (spb_client_role)r;
        if (cl->subject[0] == '\0' && cl->san[0] == '\0' && cl->fingerprint[0] == '\0')
            cfg_error(st, 0, "[client.%s] needs subject, san or fingerprint to match", cl->name);
        if (cl->role == SPB_ROLE_PRACTICE) {
            char norm[16];
            spb_err e;
            spb_err_clear(&e);
            if (spb_ods_check(norm, sizeof(norm), cl->ods, &e) < 0)
                cfg_error(st, 0, "[client.%s] a practice needs its ods: %s", cl->name, e.message);
            else
                snprintf(cl->ods, sizeof(cl->ods), "%s", norm);
        }
        if (cl->role == SPB_ROLE_SERVICE && cl->ods[0] != '\0') {
            char norm[16];
            spb_err e;
            spb_err_clear(&e);
            if (spb_ods_check(norm, sizeof(norm), cl->ods, &e) < 0)
                cfg_error(st, 0, "[client.%s] ods: %s", cl->name, e.message);
            else
                snprintf(cl->ods, sizeof(cl->ods), "%s", norm);
        }
        if (cl->role == SPB_ROLE_AUDITOR && cl->region[0] == '\0')
            cfg_error(st, 0, "[client.%s] an auditor needs its region", cl->name);
    }
    if (cfg->default_service[0] != '\0') {
        int found = 0;
        for (int k = 0; k < cfg->nservices; k++)
            found |= strcmp(cfg->services[k].id, cfg->default_service) == 0;
        if (!found)
            cfg_error(st, 0, "[routing] default_service '%s' has no [service.%s] section",
                      cfg->default_service, cfg->default_service);
    }
    /* Relative paths in a configuration file are relative to that file, so a config works
     * the same from any working directory. */
    {
        static const char *const path_keys[][2] = {
            {"spbridge", "mappings_dir"}, {"spbridge", "schema_dir"},
            {"spbridge", "store_path"},   {"server", "tls_cert"},
            {"server", "tls_key"},        {"server", "tls_ca"},
            {"server", "tls_crl"},        {"delivery", "client_cert"},
            {"delivery", "client_key"},   {"delivery", "client_key_passphrase_file"},
            {"delivery", "ca_file"},      {"audit", "signing_key"},
            {"audit", "signing_cert"},    {"audit", "trusted_certs"}};
        const char *slash = strrchr(path, '/');
        for (size_t i = 0; i < sizeof(path_keys) / sizeof(path_keys[0]) && slash != NULL; i++) {
            const setting *key = find_setting(path_keys[i][0], path_keys[i][1]);
            char *value = (char *)cfg + key->offset;
            char joined[512];
            if (!st->seen[0][key - settings] || value[0] == '\0' || value[0] == '/')
                continue;
            snprintf(joined, sizeof(joined), "%.*s/%s", (int)(slash - path), path, value);
            snprintf(value, key->size, "%s", joined);
        }
        for (int i = 0; i < cfg->npractices && slash != NULL; i++) {
            char *values[] = {cfg->practices[i].spool_dir, cfg->practices[i].writeback_spool_dir};
            for (int k = 0; k < 2; k++) {
                char joined[512];
                if (values[k][0] == '\0' || values[k][0] == '/')
                    continue;
                snprintf(joined, sizeof(joined), "%.*s/%s", (int)(slash - path), path, values[k]);
                snprintf(values[k], sizeof(cfg->practices[i].spool_dir), "%s", joined);
            }
        }
    }
    rc = st->errors ? SPB_ECONFIG : 0;
out:
    if (st->f != NULL)
        fclose(st->f);
    free(st);
    return rc;
}

void spb_config_dump(const spb_config *cfg, FILE *out)
{
    const char *last = "";
    for (size_t i = 0; i < NSETTINGS; i++) {
        const setting *s = &settings[i];
        const char *dst = (const char *)cfg + s->offset;
        if (strchr(s->section, '*') != NULL)
            continue;
        if (strcmp(last, s->section) != 0)
            fprintf(out, "%s[%s]\n", i ? "\n" : "", s->section);
        last = s->section;
        fprintf(out, "; %s\n", s->doc);
        if (s->type == CT_LONG)
            fprintf(out, "%s = %ld\n", s->key, *(const long *)(const void *)dst);
        else
            fprintf(out, "%s = %s\n", s->key, dst);
    }
    for (int k = 0; k < cfg->nservices; k++) {
        fprintf(out, "\n[service.%s]\nname = %s\n", cfg->services[k].id, cfg->services[k].name);
        if (cfg->services[k].ods[0])
            fprintf(out, "ods = %s\n", cfg->services[k].ods);
        if (cfg->services[k].endpoint[0])
            fprintf(out, "endpoint = %s\n", cfg->services[k].endpoint);
        fprintf(out, "poll_interval_s = %ld\n", cfg->services[k].poll_interval_s);
    }
    for (int k = 0; k < cfg->npractices; k++) {
        const spb_practice_cfg *p = &cfg->practices[k];
        fprintf(out, "\n[practice.%s]\nservice = %s\n", p->ods, p->service);
        if (p->dialect[0])
            fprintf(out, "dialect = %s\n", p->dialect);
        if (p->region[0])
            fprintf(out, "region = %s\n", p->region);
        if (p->spool_dir[0])
            fprintf(out, "spool_dir = %s\n", p->spool_dir);
        fprintf(out, "writeback_format = %s\n", p->writeback_format);
        if (p->writeback_spool_dir[0])
            fprintf(out, "writeback_spool_dir = %s\n", p->writeback_spool_dir);
        if (p->writeback_endpoint[0])
            fprintf(out, "writeback_endpoint = %s\n", p->writeback_endpoint);
    }
    for (int k = 0; k < cfg->nclients; k++) {
        const spb_client_cfg *c = &cfg->clients[k];
        fprintf(out, "\n[client.%s]\nrole = %s\n", c->name, c->role_name);
        if (c->ods[0])
            fprintf(out, "ods = %s\n", c->ods);
        if (c->region[0])
            fprintf(out, "region = %s\n", c->region);
        if (c->subject[0])
            fprintf(out, "subject = %s\n", c->subject);
        if (c->san[0])
            fprintf(out, "san = %s\n", c->san);
        if (c->fingerprint[0])
            fprintf(out, "fingerprint = %s\n", c->fingerprint);
    }
}

static const spb_service_cfg *find_service(const spb_config *cfg, const char *id)
{
    for (int k = 0; k < cfg->nservices; k++) {
        if (strcmp(cfg->services[k].id, id) == 0)
            return &cfg->services[k];
    }
    return NULL;
}

int spb_config_route(void *user, const char *practice_ods, const char *recipient_ods,
                     spb_route *out, spb_err *err)
{
    const spb_config *cfg = user;
    const spb_service_cfg *svc = NULL;

    memset(out, 0, sizeof(*out));
    /* a referral addressed to a configured service goes to that service */
    for (int k = 0; recipient_ods != NULL && k < cfg->nservices && svc == NULL; k++) {
        if (cfg->services[k].ods[0] != '\0' && strcasecmp(cfg->services[k].ods, recipient_ods) == 0)
            svc = &cfg->services[k];
    }
    for (int i = 0; svc == NULL && i < cfg->npractices; i++) {
        if (strcmp(cfg->practices[i].ods, practice_ods) == 0) {
            svc = find_service(cfg, cfg->practices[i].service);
            break;
        }
    }
    if (svc == NULL && cfg->default_service[0] != '\0')
        svc = find_service(cfg, cfg->default_service);
    if (svc == NULL && cfg->nservices == 0 && cfg->npractices == 0) {
        /* no routing configured at all (translate on defaults): a named placeholder */
        snprintf(out->service_id, sizeof(out->service_id), "default");
        snprintf(out->name, sizeof(out->name), "Social prescribing service");
        return 0;
    }
    if (svc == NULL) {
        spb_err_set(err, SPB_EINVALID, SPB_ISSUE_NOT_FOUND,
                    "practice %s has no social prescribing service configured", practice_ods);
        spb_err_hint(err,
                     "add a [practice.%s] section with service = ID, or set "
                     "[routing] default_service",
                     practice_ods);
        return SPB_EINVALID;
    }
    snprintf(out->service_id, sizeof(out->service_id), "%s", svc->id);
    snprintf(out->name, sizeof(out->name), "%s", svc->name);
    snprintf(out->ods, sizeof(out->ods), "%s", svc->ods);
    return 0;
}

const spb_service_cfg *spb_config_service(const spb_config *cfg, const char *id)
{
    return find_service(cfg, id);
}

const spb_practice_cfg *spb_config_practice(const spb_config *cfg, const char *ods)
{
    for (int i = 0; i < cfg->npractices; i++) {
        if (strcmp(cfg->practices[i].ods, ods) == 0)
            return &cfg->practices[i];
    }
    return NULL;
}

const char *spb_config_practice_dialect(const spb_config *cfg, const char *ods)
{
    for (int i = 0; i < cfg->npractices; i++) {
        if (strcmp(cfg->practices[i].ods, ods) == 0)
            return cfg->practices[i].dialect[0] ? cfg->practices[i].dialect : NULL;
    }
    return NULL;
}
