/*
 * Mapping set manifest loader. The manifest is small INI:
 *
 *   [set]          name, version
 *   [dialects]     NAME = relative/path.ini        (order = auto-detection order)
 *   [conceptmaps]  ROLE = file.json [file2.json ...] (roles: triggers, needs, outcomes)
 *
 * Paths are relative to the manifest's folder. Everything is loaded and checked before
 * the set is handed out, so a running service either has a whole good set or keeps its
 * old one. Each problem is reported at the line an engineer would edit: a key given twice
 * at its second line (naming the first), a missing or repeated file at the manifest line
 * naming it, a coverage gap at the ConceptMap group it is about.
 */
#include "spbridge/mapping_set.h"

#include "spbridge/fhir_build.h"

#include <ini.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_DIALECTS  32
#define MAX_MAP_FILES 64
#define TASK_STATUS   "http://hl7.org/fhir/task-status"

/* One file the manifest names: a dialect profile or a ConceptMap. */
typedef struct named_file {
    char name[64]; /* the dialect's name, or the ConceptMap's role */
    spb_map_role role;
    char label[256]; /* as written in the manifest */
    char path[512];  /* as opened */
    char real[1024]; /* resolved, to see the same file named twice */
    int line;        /* the manifest line naming it */
    int loaded;
} named_file;

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
    int indented;         /* the current line starts with white space */
    int name_line;        /* where [set] name was given, 0 if not yet */
    int version_line;     /* where [set] version was given */
    int conceptmaps_line; /* the [conceptmaps] header */
    char unknown_section[64];
    named_file dialects[MAX_DIALECTS];
    int ndialects;
    named_file maps[MAX_MAP_FILES];
    int nmaps;
    int role_line[SPB_ROLE__COUNT]; /* first line naming files for each role */
    spb_diags *diags;
    spb_err *err;
    int errors;
} manifest_state;

/* Every problem goes to the list; the first also becomes the caller's error. */
static void report(manifest_state *st, const char *file, int line, const char *msg)
{
    spb_diag_add(st->diags, SPB_DIAG_ERROR, file, line, "%s", msg);
    if (st->errors++ == 0 && (st->err == NULL || st->err->code == 0)) {
        spb_err_set(st->err, SPB_ECONFIG, SPB_ISSUE_PROCESSING, "%s", msg);
        spb_err_where(st->err, file, line, 0, NULL);
    }
}

static void mf_error(manifest_state *st, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void mf_error(manifest_state *st, int line, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    report(st, st->manifest, line, msg);
}

static char *mf_reader(char *str, int num, void *stream)
{
    manifest_state *st = stream;
    const char *p = str;

    if (fgets(str, num, st->f) == NULL)
        return NULL;
    st->line++;
    st->indented = str[0] == ' ' || str[0] == '\t';
    while (*p == ' ' || *p == '\t')
        p++;
    if (strncmp(p, "[conceptmaps]", 13) == 0 && st->conceptmaps_line == 0)
        st->conceptmaps_line = st->line;
    return str;
}

/* `value` relative to the manifest's folder, unless it is absolute. */
static void resolve(const spb_mapping_set *m, const char *value, char *out, size_t size)
{
    if (value[0] == '/')
        snprintf(out, size, "%s", value);
    else
        snprintf(out, size, "%s/%s", m->dir, value);
}

/* [set]: each key once; a second `name =` would silently rename the set. */
static void set_key(manifest_state *st, const char *name, const char *value)
{
    spb_mapping_set *m = st->m;
    int *seen = strcmp(name, "name") == 0      ? &st->name_line
                : strcmp(name, "version") == 0 ? &st->version_line
                                               : NULL;

    if (seen == NULL) {
        mf_error(st, st->line, "unknown key '%s' in [set] (known: name, version)", name);
        return;
    }
    if (*seen > 0) {
        mf_error(st, st->line, "[set] %s is given twice (first on line %d); keep one", name, *seen);
        return;
    }
    *seen = st->line;
    if (seen == &st->version_line) {
        snprintf(m->set_version, sizeof(m->set_version), "%s", value);
    } else if (value[0] == '\0') {
        mf_error(st, st->line, "[set] name is empty; the set's name is part of its version");
    } else {
        snprintf(m->name, sizeof(m->name), "%s", value);
    }
}

static void add_dialect(manifest_state *st, const char *name, const char *value)
{
    named_file *d;

    for (int i = 0; i < st->ndialects; i++) {
        if (strcmp(st->dialects[i].name, name) == 0) {
            mf_error(st, st->line, "dialect '%s' is listed twice (first on line %d)", name,
                     st->dialects[i].line);
            return;
        }
    }
    if (st->ndialects >= MAX_DIALECTS) {
        mf_error(st, st->line, "more than %d dialects", MAX_DIALECTS);
        return;
    }
    if (value[0] == '\0') {
        mf_error(st, st->line, "dialect '%s' names no profile file", name);
        return;
    }
    d = &st->dialects[st->ndialects++];
    snprintf(d->name, sizeof(d->name), "%s", name);
    snprintf(d->label, sizeof(d->label), "%s", value);
    resolve(st->m, value, d->path, sizeof(d->path));
    d->line = st->line;
}

/* One file of a role; `tok` is NUL-terminated. */
static void add_map_file(manifest_state *st, int role, const char *tok)
{
    named_file *f;

    if (st->nmaps >= MAX_MAP_FILES) {
        mf_error(st, st->line, "more than %d ConceptMap files", MAX_MAP_FILES);
        return;
    }
    f = &st->maps[st->nmaps++];
    f->role = (spb_map_role)role;
    snprintf(f->name, sizeof(f->name), "%s", spb_map_role_name(f->role));
    snprintf(f->label, sizeof(f->label), "%s", tok);
    resolve(st->m, tok, f->path, sizeof(f->path));
    f->line = st->line;
}

/* [conceptmaps] ROLE = a.json b.json: a repeated role line adds files (documented). */
static void add_conceptmaps(manifest_state *st, const char *name, const char *value)
{
    int role = spb_map_role_parse(name);
    int files = 0;
    char buf[1024];
    char *p = buf;

    if (role < 0) {
        mf_error(st, st->line, "unknown ConceptMap role '%s' (known: triggers, needs, outcomes)",
                 name);
        return;
    }
    if (st->role_line[role] == 0)
        st->role_line[role] = st->line;
    snprintf(buf, sizeof(buf), "%s", value);
    /* whitespace-separated file list; strtok is banned, so split by hand */
    while (*p) {
        char *tok;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            break;
        tok = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
        if (*p)
            *p++ = '\0';
        add_map_file(st, role, tok);
        files++;
    }
    if (files == 0)
        mf_error(st, st->line, "'%s' names no ConceptMap file", name);
}

static int mf_handler(void *user, const char *section, const char *name, const char *value)
{
    manifest_state *st = user;

    /* inih joins an indented line to the key above it; only a file list may go on */
    if (st->indented && (strcmp(section, "conceptmaps") != 0 || strchr(value, '=') != NULL)) {
        mf_error(st, st->line,
                 "an indented line continues '%s'; only [conceptmaps] file lists can go on to "
                 "the next line",
                 name);
        return 1;
    }
    if (strcmp(section, "set") == 0)
        set_key(st, name, value);
    else if (strcmp(section, "dialects") == 0)
        add_dialect(st, name, value);
    else if (strcmp(section, "conceptmaps") == 0)
        add_conceptmaps(st, name, value);
    else if (strcmp(st->unknown_section, section) != 0) {
        snprintf(st->unknown_section, sizeof(st->unknown_section), "%s", section);
        mf_error(st, st->line, "unknown section [%s] (known: set, dialects, conceptmaps)", section);
    }
    return 1;
}

/* The file exists, is a file, and is not already named on another line. `kind` says what
 * names it ("dialect", "role"). */
static int check_named_file(manifest_state *st, named_file *f, const char *kind)
{
    struct stat sb;
    char *real;

    if (stat(f->path, &sb) != 0) {
        mf_error(st, f->line,
                 "%s '%s' names %s, which does not exist (a relative path is relative to the "
                 "folder of mappings.ini)",
                 kind, f->name, f->label);
        return -1;
    }
    if (!S_ISREG(sb.st_mode)) {
        mf_error(st, f->line, "%s '%s' names %s, which is not a file", kind, f->name, f->label);
        return -1;
    }
    if (access(f->path, R_OK) != 0) {
        mf_error(st, f->line, "%s '%s' names %s, which this user cannot read", kind, f->name,
                 f->label);
        return -1;
    }
    /* "a.json" and "./a.json" are one file: compare where they really are */
    real = realpath(f->path, NULL);
    snprintf(f->real, sizeof(f->real), "%s", real != NULL ? real : f->path);
    free(real);
    for (int i = 0; i < st->ndialects + st->nmaps; i++) {
        const named_file *o = i < st->ndialects ? &st->dialects[i] : &st->maps[i - st->ndialects];
        if (o == f)
            return 0; /* only earlier files are compared */
        if (o->real[0] != '\0' && strcmp(o->real, f->real) == 0) {
            mf_error(st, f->line, "%s is already named on line %d (as %s); name each file once",
                     f->label, o->line, o->name);
            return -1;
        }
    }
    return 0;
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

static void note_accept(void *user, const char *key, const char *value)
{
    if (strcmp(key, "dialect.accept") == 0)
        *(int *)user = value[0] != '\0';
}

/* A profile without `accept` takes every document, so a dialect listed after it would
 * never be detected: the documented rule (put it last) is checked, not just stated. */
static void check_catch_all(manifest_state *st, const named_file *d, const spb_profile *p, int last)
{
    int has_accept = 1;

    spb_profile_describe(p, note_accept, &has_accept);
    if (!has_accept && !last)
        mf_error(st, d->line,
                 "dialect '%s' has no accept, so it takes every document and the dialects "
                 "listed after it are never tried; list it last",
                 d->name);
}

static void load_dialects(manifest_state *st, EVP_MD_CTX *md)
{
    spb_mapping_set *m = st->m;

    for (int i = 0; i < st->ndialects; i++) {
        named_file *d = &st->dialects[i];
        spb_profile *p = NULL;
        if (check_named_file(st, d, "dialect") < 0)
            continue;
        if (spb_profile_load(&p, d->path, st->diags, st->err) < 0) {
            st->errors++;
            continue;
        }
        if (strcmp(spb_profile_name(p), d->name) != 0)
            mf_error(st, d->line, "manifest calls the dialect '%s' but %s says name = %s", d->name,
                     d->path, spb_profile_name(p));
        check_catch_all(st, d, p, i == st->ndialects - 1);
        m->dialects[m->ndialects++] = p;
        d->loaded = 1;
        hash_file(md, d->path, d->name);
    }
}

static void load_conceptmaps(manifest_state *st, EVP_MD_CTX *md)
{
    for (int i = 0; i < st->nmaps; i++) {
        named_file *f = &st->maps[i];
        if (check_named_file(st, f, "role") < 0)
            continue;
        if (spb_cmap_set_load(st->m->cmaps, f->role, f->path, st->diags, st->err) < 0) {
            st->errors++;
            continue;
        }
        f->loaded = 1;
        hash_file(md, f->path, f->label);
    }
}

typedef struct trigger_check {
    manifest_state *st;
} trigger_check;

static void check_trigger_target(void *user, const char *system, const char *code,
                                 const spb_cmap_match *m)
{
    trigger_check *tc = user;
    char msg[400];

    if (spb_event_kind_parse(m->target_code) >= 0)
        return;
    snprintf(msg, sizeof(msg),
             "trigger %s|%s maps to '%s'; a trigger's target must be referral, cancellation, "
             "declined or signposting",
             system, code, m->target_code);
    report(tc->st, m->map_file, m->element_line, msg);
}

/* 1 when every file of `role` was named and loaded (a check over the role means something). */
static int role_complete(const manifest_state *st, spb_map_role role)
{
    int any = 0;
    for (int i = 0; i < st->nmaps; i++) {
        if (st->maps[i].role != role)
            continue;
        if (!st->maps[i].loaded)
            return 0;
        any = 1;
    }
    return any;
}

static int manifest_line_of(const manifest_state *st, const char *path)
{
    for (int i = 0; i < st->nmaps; i++) {
        if (strcmp(st->maps[i].path, path) == 0)
            return st->maps[i].line;
    }
    return 0;
}

/* Reverse coverage: every Task status needs a GP code or an explicit "do not write back",
 * reported at the task-status group, naming the manifest line that brings in its file. */
static void check_reverse_coverage(manifest_state *st)
{
    static const char *statuses[] = {"draft",    "requested", "received",  "accepted",
                                     "rejected", "ready",     "cancelled", "in-progress",
                                     "on-hold",  "failed",    "completed", "entered-in-error"};
    const spb_cmap_set *cm = st->m->cmaps;
    const char *file = NULL;
    int gline;

    if (!role_complete(st, SPB_ROLE_OUTCOMES))
        return;
    gline = spb_cmap_group_line(cm, SPB_ROLE_OUTCOMES, TASK_STATUS, &file);
    if (file == NULL) {
        mf_error(st, st->role_line[SPB_ROLE_OUTCOMES],
                 "outcomes: no ConceptMap named here has a group with source " TASK_STATUS
                 ", so no Task status has a GP code or an explicit \"do not write back\" (%s)",
                 spb_cmap_files(cm, SPB_ROLE_OUTCOMES));
        return;
    }
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        spb_cmap_match mm;
        char msg[480];
        if (spb_cmap_translate(cm, SPB_ROLE_OUTCOMES, TASK_STATUS, statuses[i], &mm) ||
            spb_cmap_is_unmatched(cm, SPB_ROLE_OUTCOMES, TASK_STATUS, statuses[i]))
            continue;
        snprintf(msg, sizeof(msg),
                 "outcomes: Task status '%s' has neither a GP code nor an explicit \"do not "
                 "write back\" (an element with equivalence unmatched) in this group (the file "
                 "is named at %s:%d)",
                 statuses[i], st->manifest, manifest_line_of(st, file));
        report(st, file, gline, msg);
    }
}

/* Whole-set checks, once every file has loaded. */
static void check_set(manifest_state *st)
{
    trigger_check tc = {st};

    if (st->m->name[0] == '\0' && st->name_line == 0)
        mf_error(st, 1, "[set] name is required");
    if (st->ndialects == 0)
        mf_error(st, 1, "[dialects] lists no dialect");
    spb_cmap_each(st->m->cmaps, SPB_ROLE_TRIGGERS, check_trigger_target, &tc);
    check_reverse_coverage(st);
    if (st->role_line[SPB_ROLE_TRIGGERS] == 0)
        mf_error(st, st->conceptmaps_line > 0 ? st->conceptmaps_line : 1,
                 "[conceptmaps] has no triggers map: nothing would be an event");
}

static void finish_version(spb_mapping_set *m, EVP_MD_CTX *md)
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;

    EVP_DigestFinal_ex(md, digest, &dlen);
    for (unsigned int i = 0; i < dlen && i < 32; i++)
        snprintf(m->hash + 2 * i, 3, "%02x", digest[i]);
    spb_cmap_versions(m->cmaps, m->cmap_versions, sizeof(m->cmap_versions));
    snprintf(m->version, sizeof(m->version), "%s@%s sha256:%.16s", m->name,
             m->set_version[0] ? m->set_version : "unversioned", m->hash);
}

/* Opens and parses the manifest itself. -1 when it cannot be opened. */
static int read_manifest(manifest_state *st)
{
    int prc;

    st->f = fopen(st->manifest, "r");
    if (st->f == NULL) {
        mf_error(st, 0, "cannot open the mapping set manifest");
        spb_err_hint(st->err, "point mappings_dir at a folder holding mappings.ini (the shipped "
                              "one is mappings/ in the source tree)");
        return -1;
    }
    prc = ini_parse_stream(mf_reader, st, mf_handler, st);
    if (prc > 0)
        mf_error(st, prc, "syntax error");
    return 0;
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
    if (read_manifest(st) < 0)
        goto out;
    if (spb_cmap_set_new(&m->cmaps, err) < 0)
        goto out;
    md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "cannot hash mappings");
        goto out;
    }
    hash_file(md, st->manifest, "mappings.ini");
    load_dialects(st, md);
    load_conceptmaps(st, md);
    check_set(st);
    finish_version(m, md);
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
