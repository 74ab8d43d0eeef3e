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
    S("routing", "default_service", CT_STRING, default_service, 0, 0, "", 0,
      "service for practices with no [practice.ODS] section; empty refuses them"),
    SV("name", name, 1, "the service's name"),
    SV("ods", ods, 0, "the service's ODS code (Task.owner and ServiceRequest.performer)"),
    SV("endpoint", endpoint, 0, "the service's FHIR base URL"),
    PR("service", service, 1, "the [service.ID] this practice refers to"),
    PR("dialect", dialect, 0, "the dialect this practice sends (default: detect)"),
    PR("region", region, 0, "the NHS region or ICB the practice belongs to"),
};

#define NSETTINGS (sizeof(settings) / sizeof(settings[0]))

typedef struct cfg_state {
    spb_config *cfg;
    FILE *f;
    int line;
    spb_diags *diags;
    spb_err *err;
    int errors;
    unsigned char seen[SPB_CONFIG_MAX_SERVICES + SPB_CONFIG_MAX_PRACTICES + 1][NSETTINGS];
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
    if (st->errors++ == 0) {
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
            snprintf(cfg->practices[i].ods, sizeof(cfg->practices[i].ods), "%s", norm);
            cfg->npractices++;
        }
        base = &cfg->practices[i];
        slot = 1 + SPB_CONFIG_MAX_SERVICES + i;
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
        for (int k = 0; k < cfg->nservices; k++)
            found |= strcmp(cfg->services[k].id, cfg->practices[i].service) == 0;
        if (!found)
            cfg_error(st, 0, "[practice.%s] service '%s' has no [service.%s] section",
                      cfg->practices[i].ods, cfg->practices[i].service, cfg->practices[i].service);
    }
    if (cfg->default_service[0] != '\0') {
        int found = 0;
        for (int k = 0; k < cfg->nservices; k++)
            found |= strcmp(cfg->services[k].id, cfg->default_service) == 0;
        if (!found)
            cfg_error(st, 0, "[routing] default_service '%s' has no [service.%s] section",
                      cfg->default_service, cfg->default_service);
    }
    /* Relative folders in a configuration file are relative to that file, so a config
     * works the same from any working directory. */
    {
        char *dirs[] = {cfg->mappings_dir, cfg->schema_dir};
        const setting *keys[] = {find_setting("spbridge", "mappings_dir"),
                                 find_setting("spbridge", "schema_dir")};
        const char *slash = strrchr(path, '/');
        for (size_t i = 0; i < 2 && slash != NULL; i++) {
            char joined[sizeof(cfg->mappings_dir)];
            if (!st->seen[0][keys[i] - settings] || dirs[i][0] == '\0' || dirs[i][0] == '/')
                continue;
            snprintf(joined, sizeof(joined), "%.*s/%s", (int)(slash - path), path, dirs[i]);
            snprintf(dirs[i], sizeof(cfg->mappings_dir), "%s", joined);
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
    }
    for (int k = 0; k < cfg->npractices; k++) {
        const spb_practice_cfg *p = &cfg->practices[k];
        fprintf(out, "\n[practice.%s]\nservice = %s\n", p->ods, p->service);
        if (p->dialect[0])
            fprintf(out, "dialect = %s\n", p->dialect);
        if (p->region[0])
            fprintf(out, "region = %s\n", p->region);
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

int spb_config_route(void *user, const char *practice_ods, spb_route *out, spb_err *err)
{
    const spb_config *cfg = user;
    const spb_service_cfg *svc = NULL;

    memset(out, 0, sizeof(*out));
    for (int i = 0; i < cfg->npractices; i++) {
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

const char *spb_config_practice_dialect(const spb_config *cfg, const char *ods)
{
    for (int i = 0; i < cfg->npractices; i++) {
        if (strcmp(cfg->practices[i].ods, ods) == 0)
            return cfg->practices[i].dialect[0] ? cfg->practices[i].dialect : NULL;
    }
    return NULL;
}
