/*
 * Mapping set manifest loader. The manifest is small INI:
 *
 *   [set]          name, version
 *   [dialects]     NAME = relative/path.ini        (order = auto-detection order)
 *   [conceptmaps]  ROLE = file.json [file2.json ...] (roles: triggers, needs, outcomes)
 *
 * Paths are relative to the manifest's folder. Everything is loaded and checked before
 * the set is handed out, so a running service either has a whole good set or keeps its
 * old one.
 */
#include "spbridge/mapping_set.h"

#include "spbridge/fhir_build.h"

#include <ini.h>
#include <stdarg.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DIALECTS 32

typedef struct pending_map {
    spb_map_role role;
    char path[512];
    char label[256]; /* as written in the manifest */
    int line;
} pending_map;

struct spb_mapping_set {
    char dir[512];
    char name[64];
    char set_version[32];
    spb_profile *dialects[MAX_DIALECTS];
    size_t ndialects;
    spb_cmap_set *cmaps;
    char hash[65];
    char version[160];
    char cmap_versions[2048];
};

typedef struct manifest_state {
    spb_mapping_set *m;
    char manifest[600];
    FILE *f;
    int line;
    struct {
        char name[64];
        char path[512];
        int line;
    } dialects[MAX_DIALECTS];
    int ndialects;
    pending_map maps[64];
    int nmaps;
    spb_diags *diags;
    spb_err *err;
    int errors;
} manifest_state;

static void mf_error(manifest_state *st, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void mf_error(manifest_state *st, int line, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    spb_diag_add(st->diags, SPB_DIAG_ERROR, st->manifest, line, "%s", msg);
    if (st->errors++ == 0 && (st->err == NULL || st->err->code == 0)) {
        spb_err_set(st->err, SPB_ECONFIG, SPB_ISSUE_PROCESSING, "%s", msg);
        spb_err_where(st->err, st->manifest, line, 0, NULL);
    }
}

static char *mf_reader(char *str, int num, void *stream)
{
    manifest_state *st = stream;
    if (fgets(str, num, st->f) == NULL)
        return NULL;
    st->line++;
    return str;
}

static int mf_handler(void *user, const char *section, const char *name, const char *value)
{
    manifest_state *st = user;
    spb_mapping_set *m = st->m;

    if (strcmp(section, "set") == 0) {
        if (strcmp(name, "name") == 0)
            snprintf(m->name, sizeof(m->name), "%s", value);
        else if (strcmp(name, "version") == 0)
            snprintf(m->set_version, sizeof(m->set_version), "%s", value);
        else
            mf_error(st, st->line, "unknown key '%s' in [set] (known: name, version)", name);
        return 1;
    }
    if (strcmp(section, "dialects") == 0) {
        for (int i = 0; i < st->ndialects; i++) {
            if (strcmp(st->dialects[i].name, name) == 0) {
                mf_error(st, st->line, "dialect '%s' is listed twice", name);
                return 1;
            }
        }
        if (st->ndialects >= MAX_DIALECTS) {
            mf_error(st, st->line, "more than %d dialects", MAX_DIALECTS);
            return 1;
        }
        snprintf(st->dialects[st->ndialects].name, sizeof(st->dialects[0].name), "%s", name);
        if (value[0] == '/')
            snprintf(st->dialects[st->ndialects].path, sizeof(st->dialects[0].path), "%s", value);
        else
            snprintf(st->dialects[st->ndialects].path, sizeof(st->dialects[0].path), "%s/%s",
                     m->dir, value);
        st->dialects[st->ndialects].line = st->line;
        st->ndialects++;
        return 1;
    }
    if (strcmp(section, "conceptmaps") == 0) {
        int role = spb_map_role_parse(name);
        char buf[1024];
        char *p, *tok;
        if (role < 0) {
            mf_error(st, st->line,
                     "unknown ConceptMap role '%s' (known: triggers, needs, outcomes)", name);
            return 1;
        }
        snprintf(buf, sizeof(buf), "%s", value);
        p = buf;
        /* whitespace-separated file list; strtok is banned, so split by hand */
        while (*p) {
            while (*p == ' ' || *p == '\t')
                p++;
            if (*p == '\0')
                break;
            tok = p;
            while (*p && *p != ' ' && *p != '\t')
                p++;
            if (*p)
                *p++ = '\0';
            if (st->nmaps >= 64) {
                mf_error(st, st->line, "too many ConceptMap files");
                return 1;
            }
            st->maps[st->nmaps].role = (spb_map_role)role;
            if (tok[0] == '/')
                snprintf(st->maps[st->nmaps].path, sizeof(st->maps[0].path), "%s", tok);
            else
                snprintf(st->maps[st->nmaps].path, sizeof(st->maps[0].path), "%s/%s", m->dir, tok);
            st->maps[st->nmaps].line = st->line;
            snprintf(st->maps[st->nmaps].label, sizeof(st->maps[0].label), "%s", tok);
            st->nmaps++;
        }
        return 1;
    }
    mf_error(st, st->line, "unknown section [%s] (known: set, dialects, conceptmaps)", section);
    return 1;
}

static int hash_file(EVP_MD_CTX *ctx, const char *path, const char *label)
{
    FILE *f = fopen(path, "rb");
    char buf[8192];
    size_t n;

    if (f == NULL)
        return -1;
    /* the name inside the set (not where the set sits on this machine), then the content,
     * so a rename changes the hash but moving the folder does not */
    EVP_DigestUpdate(ctx, label, strlen(label) + 1);
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        EVP_DigestUpdate(ctx, buf, n);
    fclose(f);
    return 0;
}

typedef struct trigger_check {
    manifest_state *st;
    int bad;
} trigger_check;

static void check_trigger_target(void *user, const char *system, const char *code,
                                 const spb_cmap_match *m)
{
    trigger_check *tc = user;
    if (spb_event_kind_parse(m->target_code) >= 0)
        return;
    tc->bad++;
    spb_diag_add(tc->st->diags, SPB_DIAG_ERROR, m->map_file, m->element_line,
                 "trigger %s|%s maps to '%s'; a trigger's target must be referral, "
                 "cancellation, declined or signposting",
                 system, code, m->target_code);
    if (tc->st->errors++ == 0 && (tc->st->err == NULL || tc->st->err->code == 0)) {
        spb_err_set(tc->st->err, SPB_ECONFIG, SPB_ISSUE_PROCESSING,
                    "trigger %s|%s maps to '%s', which is not an event kind", system, code,
                    m->target_code);
        spb_err_where(tc->st->err, m->map_file, m->element_line, 0, NULL);
    }
}

int spb_mapping_set_load(spb_mapping_set **out, const char *dir, spb_diags *diags, spb_err *err)
{
    manifest_state *st = NULL;
    spb_mapping_set *m = NULL;
    EVP_MD_CTX *md = NULL;
    int rc = SPB_ECONFIG;

    *out = NULL;
    st = calloc(1, sizeof(*st));
    m = calloc(1, sizeof(*m));
    if (st == NULL || m == NULL) {
        rc = spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
        goto out;
    }
    snprintf(m->dir, sizeof(m->dir), "%s", dir);
    snprintf(st->manifest, sizeof(st->manifest), "%s/mappings.ini", dir);
    st->m = m;
    st->diags = diags;
    st->err = err;
    st->f = fopen(st->manifest, "r");
    if (st->f == NULL) {
        mf_error(st, 0, "cannot open the mapping set manifest");
        spb_err_hint(err, "point mappings_dir at a folder holding mappings.ini (the shipped "
                          "one is mappings/ in the source tree)");
        goto out;
    }
    {
        int prc = ini_parse_stream(mf_reader, st, mf_handler, st);
        if (prc > 0)
            mf_error(st, prc, "syntax error");
    }
    if (m->name[0] == '\0')
        mf_error(st, 1, "[set] name is required");
    if (st->ndialects == 0)
        mf_error(st, 1, "[dialects] lists no dialect");
    if (spb_cmap_set_new(&m->cmaps, err) < 0)
        goto out;
    md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "cannot hash mappings");
        goto out;
    }
    hash_file(md, st->manifest, "mappings.ini");
    for (int i = 0; i < st->ndialects; i++) {
        spb_profile *p = NULL;
        if (spb_profile_load(&p, st->dialects[i].path, diags, err) < 0) {
            st->errors++;
            continue;
        }
        if (strcmp(spb_profile_name(p), st->dialects[i].name) != 0) {
            mf_error(st, st->dialects[i].line,
                     "manifest calls the dialect '%s' but %s says name = %s", st->dialects[i].name,
                     st->dialects[i].path, spb_profile_name(p));
        }
        m->dialects[m->ndialects++] = p;
        hash_file(md, st->dialects[i].path, st->dialects[i].name);
    }
    for (int i = 0; i < st->nmaps; i++) {
        if (spb_cmap_set_load(m->cmaps, st->maps[i].role, st->maps[i].path, diags, err) < 0) {
            st->errors++;
            continue;
        }
        hash_file(md, st->maps[i].path, st->maps[i].label);
    }
    /* every trigger must mean one of the event kinds the pipeline knows */
    {
        trigger_check tc = {st, 0};
        spb_cmap_each(m->cmaps, SPB_ROLE_TRIGGERS, check_trigger_target, &tc);
    }
    /* reverse coverage: every Task status needs a GP code or an explicit "do not write back" */
    {
        static const char *statuses[] = {"draft",    "requested", "received",  "accepted",
                                         "rejected", "ready",     "cancelled", "in-progress",
                                         "on-hold",  "failed",    "completed", "entered-in-error"};
        int have_outcomes = 0;
        for (int i = 0; i < st->nmaps; i++)
            have_outcomes |= st->maps[i].role == SPB_ROLE_OUTCOMES;
        for (size_t i = 0; have_outcomes && i < sizeof(statuses) / sizeof(statuses[0]); i++) {
            spb_cmap_match mm;
            if (spb_cmap_translate(m->cmaps, SPB_ROLE_OUTCOMES, "http://hl7.org/fhir/task-status",
                                   statuses[i], &mm) ||
                spb_cmap_is_unmatched(m->cmaps, SPB_ROLE_OUTCOMES,
                                      "http://hl7.org/fhir/task-status", statuses[i]))
                continue;
            mf_error(st, 0,
                     "outcomes: Task status '%s' has neither a GP code nor an explicit \"do not "
                     "write back\" (an element with equivalence unmatched) in %s",
                     statuses[i], spb_cmap_files(m->cmaps, SPB_ROLE_OUTCOMES));
        }
    }
    {
        int have_triggers = 0;
        for (int i = 0; i < st->nmaps; i++)
            have_triggers |= st->maps[i].role == SPB_ROLE_TRIGGERS;
        if (!have_triggers)
            mf_error(st, 1, "[conceptmaps] has no triggers map: nothing would be an event");
    }
    {
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned int dlen = 0;
        EVP_DigestFinal_ex(md, digest, &dlen);
        for (unsigned int i = 0; i < dlen && i < 32; i++)
            snprintf(m->hash + 2 * i, 3, "%02x", digest[i]);
    }
    spb_cmap_versions(m->cmaps, m->cmap_versions, sizeof(m->cmap_versions));
    snprintf(m->version, sizeof(m->version), "%s@%s sha256:%.16s", m->name,
             m->set_version[0] ? m->set_version : "unversioned", m->hash);
    rc = st->errors ? SPB_ECONFIG : 0;
out:
    if (st != NULL && st->f != NULL)
        fclose(st->f);
    EVP_MD_CTX_free(md);
    free(st);
    if (rc < 0) {
        spb_mapping_set_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void spb_mapping_set_free(spb_mapping_set *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->ndialects; i++)
        spb_profile_free(m->dialects[i]);
    spb_cmap_set_free(m->cmaps);
    free(m);
}

const spb_profile *spb_mapping_set_dialect(const spb_mapping_set *m, const char *name)
{
    for (size_t i = 0; i < m->ndialects; i++) {
        if (strcmp(spb_profile_name(m->dialects[i]), name) == 0)
            return m->dialects[i];
    }
    return NULL;
}

size_t spb_mapping_set_dialect_count(const spb_mapping_set *m)
{
    return m->ndialects;
}

const spb_profile *spb_mapping_set_dialect_at(const spb_mapping_set *m, size_t i)
{
    return i < m->ndialects ? m->dialects[i] : NULL;
}

const spb_cmap_set *spb_mapping_set_cmaps(const spb_mapping_set *m)
{
    return m->cmaps;
}

const char *spb_mapping_set_version(const spb_mapping_set *m)
{
    return m->version;
}

const char *spb_mapping_set_hash(const spb_mapping_set *m)
{
    return m->hash;
}

const char *spb_mapping_set_cmap_versions(const spb_mapping_set *m)
{
    return m->cmap_versions;
}

const char *spb_mapping_set_dir(const spb_mapping_set *m)
{
    return m->dir;
}
