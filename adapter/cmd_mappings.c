/*
 * `spbridge mappings`: tools for integration engineers.
 *   check [DIR]            every problem in a mapping set, with file and line
 *   explain [--dialect N] FILE
 *                          a dry run: each field's XPath and value, each code and the
 *                          ConceptMap element that mapped it, and the resulting FHIR
 *   diff OLD_DIR NEW_DIR   which codes change meaning, appear or disappear, and which
 *                          dialect fields change
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "spbridge/log.h"
#include "spbridge/mapping_set.h"
#include "spbridge/translate.h"

static void help(FILE *out)
{
    fprintf(out,
            "usage: spbridge mappings check [--config FILE] [DIR]\n"
            "       spbridge mappings explain [--config FILE] [--mappings DIR] [--dialect NAME] "
            "FILE\n"
            "       spbridge mappings diff OLD_DIR NEW_DIR\n\n"
            "check    load the mapping set in DIR (default: mappings_dir) and report every\n"
            "         problem as FILE:LINE: error|warning: message; exit 5 on any error\n"
            "explain  translate FILE without sending anything and show, for each event, every\n"
            "         field's XPath and value, each code and the ConceptMap element that\n"
            "         mapped it, and the FHIR produced; exit as translate does\n"
            "diff     compare two mapping sets: codes whose meaning changes, appears or\n"
            "         disappears, and dialect fields or transforms that change; exit 0 (5 if a\n"
            "         set does not load)\n");
}

/* ------------------------------------------------------------------ check */

static int cmd_check(const char *config_path, const char *dir)
{
    spb_config *cfg = calloc(1, sizeof(*cfg));
    spb_diags *diags = calloc(1, sizeof(*diags));
    spb_mapping_set *maps = NULL;
    spb_err err;
    int exit_code = 0;

    if (cfg == NULL || diags == NULL) {
        exit_code = 1;
        goto out;
    }
    if (spb_cli_load_config(cfg, config_path) < 0) {
        exit_code = 5;
        goto out;
    }
    spb_err_clear(&err);
    spb_mapping_set_load(&maps, dir ? dir : cfg->mappings_dir, diags, &err);
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < diags->n; i++) {
            const spb_diag_item *d = &diags->items[i];
            if ((pass == 0) != (d->severity == SPB_DIAG_ERROR))
                continue;
            printf("%s:%d: %s: %s\n", d->file, d->line, pass == 0 ? "error" : "warning",
                   d->message);
        }
    }
    if (diags->errors > 0) {
        printf("%zu error(s), %zu warning(s)\n", diags->errors, diags->warnings);
        exit_code = 5;
    } else {
        printf("ok: %s (%zu dialects, %zu warning(s))\n", spb_mapping_set_version(maps),
               spb_mapping_set_dialect_count(maps), diags->warnings);
    }
out:
    spb_mapping_set_free(maps);
    free(diags);
    free(cfg);
    return exit_code;
}

/* ---------------------------------------------------------------- explain */

#define MAX_TRACE 4096

typedef struct trace_line {
    char field[64];
    char value[300];
    char xpath[300];
    int line;
} trace_line;

typedef struct explain_state {
    trace_line *lines;
    size_t n;
    size_t event_start[512]; /* index of each candidate's first line */
    int extracted[512];      /* did the candidate get past the trigger filter? */
    size_t nevents;
    const char *profile_path;
} explain_state;

static void on_trace(void *user, const char *field, const char *xpath, int xpath_line,
                     const char *raw, const char *value)
{
    explain_state *st = user;
    trace_line *l;
    (void)raw;
    if (strcmp(field, "event.id") == 0 && st->nevents < 512) {
        st->event_start[st->nevents] = st->n;
        st->extracted[st->nevents] = 0;
        st->nevents++;
    }
    if (st->nevents > 0 && (field[0] == '$' || strncmp(field, "patient.", 8) == 0 ||
                            strncmp(field, "practice.", 9) == 0))
        st->extracted[st->nevents - 1] = 1;
    if (st->n >= MAX_TRACE)
        return;
    l = &st->lines[st->n++];
    snprintf(l->field, sizeof(l->field), "%s", field);
    snprintf(l->value, sizeof(l->value), "%s", value ? value : "");
    snprintf(l->xpath, sizeof(l->xpath), "%s", xpath ? xpath : "");
    l->line = xpath_line;
}

static void print_match(const char *role, const spb_cmap_set *cm, spb_map_role r,
                        const char *system, const char *code)
{
    spb_cmap_match m;
    if (spb_cmap_translate(cm, r, system, code, &m)) {
        printf("    %-8s %s|%s -> %s%s%s (%s) by ConceptMap %s|%s", role, system, code,
               m.target_system ? m.target_system : "", m.target_system ? "|" : "", m.target_code,
               m.equivalence ? m.equivalence : "", m.map_url ? m.map_url : "?",
               m.map_version ? m.map_version : "-");
        if (m.map_file != NULL)
            printf(" (%s:%d)", m.map_file, m.element_line);
        if (m.product_code != NULL)
            printf("; ServiceRequest.code %s|%s", m.product_system, m.product_code);
        printf("\n");
    } else if (spb_cmap_is_unmatched(cm, r, system, code)) {
        printf("    %-8s %s|%s -> explicitly unmatched in %s\n", role, system, code,
               spb_cmap_files(cm, r));
    } else {
        printf("    %-8s %s|%s -> no mapping (%s)\n", role, system, code, spb_cmap_files(cm, r));
    }
}

static int cmd_explain(int argc, char **argv)
{
    const char *config_path = NULL, *mappings = NULL, *dialect = NULL, *file = NULL;
    spb_config *cfg = calloc(1, sizeof(*cfg));
    spb_mapping_set *maps = NULL;
    explain_state st;
    spb_translation tr;
    spb_translate_opts opts;
    spb_err err;
    char *data = NULL;
    size_t len = 0;
    int rc, exit_code = 0;

    memset(&st, 0, sizeof(st));
    memset(&tr, 0, sizeof(tr));
    st.lines = calloc(MAX_TRACE, sizeof(*st.lines));
    if (cfg == NULL || st.lines == NULL) {
        exit_code = 1;
        goto out;
    }
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            config_path = argv[++i];
        else if (strcmp(argv[i], "--mappings") == 0 && i + 1 < argc)
            mappings = argv[++i];
        else if (strcmp(argv[i], "--dialect") == 0 && i + 1 < argc)
            dialect = argv[++i];
        else if (argv[i][0] == '-' && strcmp(argv[i], "-") != 0) {
            help(stderr);
            exit_code = SPB_EXIT_USAGE;
            goto out;
        } else
            file = argv[i];
    }
    if (file == NULL) {
        help(stderr);
        exit_code = SPB_EXIT_USAGE;
        goto out;
    }
    if (spb_cli_load_config(cfg, config_path) < 0) {
        exit_code = 5;
        goto out;
    }
    spb_err_clear(&err);
    if (spb_mapping_set_load(&maps, mappings ? mappings : cfg->mappings_dir, NULL, &err) < 0) {
        spb_log_err("mappings_invalid", &err);
        exit_code = spb_exit_code(err.code);
        goto out;
    }
    memset(&opts, 0, sizeof(opts));
    opts.maps = maps;
    opts.dialect = dialect;
    opts.schema_dir = cfg->schema_dir[0] ? cfg->schema_dir : NULL;
    opts.limits.max_bytes = (size_t)cfg->xml_max_bytes;
    opts.limits.max_depth = (int)cfg->xml_max_depth;
    opts.route = spb_config_route;
    opts.route_user = cfg;
    opts.trace = on_trace;
    opts.trace_user = &st;
    rc = spb_cli_read_input(file, opts.limits.max_bytes, &data, &len, &err);
    if (rc == 0)
        rc = spb_translate(&tr, data, len, file, &opts, &err);
    printf("mapping set: %s\n", spb_mapping_set_version(maps));
    if (tr.dialect[0])
        printf("dialect:     %s (%s; the line numbers below are in this file)\n", tr.dialect,
               spb_profile_path(spb_mapping_set_dialect(maps, tr.dialect)));
    printf("candidates:  %zu, events: %zu\n\n", tr.candidates, tr.n);
    for (size_t e = 0, shown = 0; e < st.nevents; e++) {
        size_t from = st.event_start[e];
        size_t to = e + 1 < st.nevents ? st.event_start[e + 1] : st.n;
        const char *last_group = NULL;
        if (!st.extracted[e]) {
            /* a candidate that is not an event: show why (none of its codes is a trigger) */
            printf("candidate %zu: not an event; codes:", e + 1);
            for (size_t i = from; i < to; i++) {
                if (strcmp(st.lines[i].field, "codes.code") == 0)
                    printf(" %s", st.lines[i].value);
                else if (strcmp(st.lines[i].field, "codes.system") == 0)
                    printf(" (%s)", st.lines[i].value);
            }
            printf(" - none is in the triggers ConceptMap\n");
            continue;
        }
        printf("event %zu\n", ++shown);
        printf("  %-30s %-40s %s\n", "FIELD", "VALUE", "FROM (XPath, profile line)");
        for (size_t i = from; i < to; i++) {
            const trace_line *l = &st.lines[i];
            printf("  %-30s %-40s %s (line %d)\n", l->field, l->value, l->xpath, l->line);
        }
        /* codes and needs through their ConceptMaps, as translate uses them */
        printf("  mappings:\n");
        for (size_t i = from; i < to; i++) {
            const trace_line *l = &st.lines[i];
            int is_codes = strcmp(l->field, "codes.code") == 0;
            int is_needs = strcmp(l->field, "needs.code") == 0;
            if (!is_codes && !is_needs)
                continue;
            /* the member lines come as code, system, display for each node */
            for (size_t k = i + 1; k < to && k < i + 3; k++) {
                if (strcmp(st.lines[k].field, is_codes ? "codes.system" : "needs.system") == 0) {
                    print_match(is_codes ? "trigger" : "need", spb_mapping_set_cmaps(maps),
                                is_codes ? SPB_ROLE_TRIGGERS : SPB_ROLE_NEEDS, st.lines[k].value,
                                l->value);
                    break;
                }
            }
            last_group = l->field;
        }
        (void)last_group;
        printf("\n");
    }
    if (rc < 0) {
        json_t *oo = spb_fhir_operation_outcome(&err);
        char *text = json_dumps(oo, JSON_INDENT(2));
        printf("result: refused\n%s\n", text ? text : "");
        free(text);
        json_decref(oo);
        exit_code = spb_exit_code(rc);
        goto out;
    }
    for (size_t k = 0; k < tr.n; k++) {
        char *text = json_dumps(tr.items[k].resource, JSON_INDENT(2));
        printf("FHIR for event %zu (%s, referral %s, service %s):\n%s\n\n", k + 1,
               spb_event_kind_name(tr.items[k].kind), tr.items[k].source_uuid,
               tr.items[k].service_id, text ? text : "");
        free(text);
    }
    if (tr.n == 0)
        printf("result: no entry has a trigger code; nothing would be sent\n");
out:
    spb_translation_clear(&tr);
    free(data);
    free(st.lines);
    spb_mapping_set_free(maps);
    free(cfg);
    return exit_code;
}

/* ------------------------------------------------------------------- diff */

typedef struct code_row {
    char key[400];    /* role|system|code */
    char target[400]; /* target system|code (or "unmatched") */
} code_row;

typedef struct code_rows {
    code_row *rows;
    size_t n, cap;
    spb_map_role role;
} code_rows;

static void collect(void *user, const char *system, const char *code, const spb_cmap_match *m)
{
    code_rows *cr = user;
    code_row *r;
    if (cr->n == cr->cap) {
        size_t cap = cr->cap ? cr->cap * 2 : 64;
        code_row *grown = realloc(cr->rows, cap * sizeof(*grown));
        if (grown == NULL)
            return;
        cr->rows = grown;
        cr->cap = cap;
    }
    r = &cr->rows[cr->n++];
    snprintf(r->key, sizeof(r->key), "%s %s|%s", spb_map_role_name(cr->role), system, code);
    snprintf(r->target, sizeof(r->target), "%s|%s (%s)%s%s%s%s",
             m->target_system ? m->target_system : "", m->target_code ? m->target_code : "",
             m->equivalence ? m->equivalence : "", m->product_code ? " product " : "",
             m->product_system ? m->product_system : "", m->product_code ? "|" : "",
             m->product_code ? m->product_code : "");
}

static int cmp_rows(const void *a, const void *b)
{
    return strcmp(((const code_row *)a)->key, ((const code_row *)b)->key);
}

static int diff_codes(const spb_mapping_set *a, const spb_mapping_set *b)
{
    int changes = 0;
    for (int role = 0; role < SPB_ROLE__COUNT; role++) {
        code_rows x = {NULL, 0, 0, (spb_map_role)role}, y = {NULL, 0, 0, (spb_map_role)role};
        size_t i = 0, k = 0;
        spb_cmap_each(spb_mapping_set_cmaps(a), (spb_map_role)role, collect, &x);
        spb_cmap_each(spb_mapping_set_cmaps(b), (spb_map_role)role, collect, &y);
        qsort(x.rows, x.n, sizeof(code_row), cmp_rows);
        qsort(y.rows, y.n, sizeof(code_row), cmp_rows);
        while (i < x.n || k < y.n) {
            int c = i >= x.n ? 1 : k >= y.n ? -1 : strcmp(x.rows[i].key, y.rows[k].key);
            if (c < 0) {
                printf("removed  %s (was -> %s)\n", x.rows[i].key, x.rows[i].target);
                i++;
                changes++;
            } else if (c > 0) {
                printf("added    %s -> %s\n", y.rows[k].key, y.rows[k].target);
                k++;
                changes++;
            } else {
                if (strcmp(x.rows[i].target, y.rows[k].target) != 0) {
                    printf("changed  %s: %s -> %s\n", x.rows[i].key, x.rows[i].target,
                           y.rows[k].target);
                    changes++;
                }
                i++;
                k++;
            }
        }
        free(x.rows);
        free(y.rows);
    }
    return changes;
}

typedef struct kv_list {
    code_row *rows;
    size_t n, cap;
} kv_list;

static void collect_kv(void *user, const char *key, const char *value)
{
    kv_list *l = user;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        code_row *grown = realloc(l->rows, cap * sizeof(*grown));
        if (grown == NULL)
            return;
        l->rows = grown;
        l->cap = cap;
    }
    snprintf(l->rows[l->n].key, sizeof(l->rows[0].key), "%s", key);
    snprintf(l->rows[l->n].target, sizeof(l->rows[0].target), "%s", value ? value : "");
    l->n++;
}

/* Every setting of every dialect (fields, variables, transforms, maps, namespaces, accept,
 * events, schemas), compared key by key. */
static int diff_dialects(const spb_mapping_set *a, const spb_mapping_set *b)
{
    int changes = 0;
    for (size_t i = 0; i < spb_mapping_set_dialect_count(a); i++) {
        const spb_profile *pa = spb_mapping_set_dialect_at(a, i);
        const spb_profile *pb = spb_mapping_set_dialect(b, spb_profile_name(pa));
        kv_list x = {NULL, 0, 0}, y = {NULL, 0, 0};
        size_t p = 0, q = 0;
        if (pb == NULL) {
            printf("removed  dialect %s\n", spb_profile_name(pa));
            changes++;
            continue;
        }
        spb_profile_describe(pa, collect_kv, &x);
        spb_profile_describe(pb, collect_kv, &y);
        qsort(x.rows, x.n, sizeof(code_row), cmp_rows);
        qsort(y.rows, y.n, sizeof(code_row), cmp_rows);
        while (p < x.n || q < y.n) {
            int c = p >= x.n ? 1 : q >= y.n ? -1 : strcmp(x.rows[p].key, y.rows[q].key);
            if (c < 0) {
                printf("removed  dialect %s %s = %s\n", spb_profile_name(pa), x.rows[p].key,
                       x.rows[p].target);
                p++;
                changes++;
            } else if (c > 0) {
                printf("added    dialect %s %s = %s\n", spb_profile_name(pa), y.rows[q].key,
                       y.rows[q].target);
                q++;
                changes++;
            } else {
                if (strcmp(x.rows[p].target, y.rows[q].target) != 0) {
                    printf("changed  dialect %s %s\n           - %s\n           + %s\n",
                           spb_profile_name(pa), x.rows[p].key, x.rows[p].target, y.rows[q].target);
                    changes++;
                }
                p++;
                q++;
            }
        }
        free(x.rows);
        free(y.rows);
    }
    for (size_t i = 0; i < spb_mapping_set_dialect_count(b); i++) {
        const spb_profile *pb = spb_mapping_set_dialect_at(b, i);
        if (spb_mapping_set_dialect(a, spb_profile_name(pb)) == NULL) {
            printf("added    dialect %s\n", spb_profile_name(pb));
            changes++;
        }
    }
    return changes;
}

static int cmd_diff(const char *old_dir, const char *new_dir)
{
    spb_mapping_set *a = NULL, *b = NULL;
    spb_err err;
    int changes, exit_code = 0;

    spb_err_clear(&err);
    if (spb_mapping_set_load(&a, old_dir, NULL, &err) < 0 ||
        spb_mapping_set_load(&b, new_dir, NULL, &err) < 0) {
        spb_log_err("mappings_invalid", &err);
        exit_code = 5;
        goto out;
    }
    printf("old: %s\nnew: %s\n", spb_mapping_set_version(a), spb_mapping_set_version(b));
    changes = diff_codes(a, b);
    changes += diff_dialects(a, b);
    printf("%d change(s)\n", changes);
out:
    spb_mapping_set_free(a);
    spb_mapping_set_free(b);
    return exit_code;
}

int spb_cmd_mappings(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        help(argc < 2 ? stderr : stdout);
        return argc < 2 ? SPB_EXIT_USAGE : 0;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            help(stdout);
            return 0;
        }
    }
    if (strcmp(argv[1], "check") == 0) {
        const char *config_path = NULL, *dir = NULL;
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
                config_path = argv[++i];
            else if (argv[i][0] == '-') {
                help(stderr);
                return SPB_EXIT_USAGE;
            } else
                dir = argv[i];
        }
        return cmd_check(config_path, dir);
    }
    if (strcmp(argv[1], "explain") == 0)
        return cmd_explain(argc - 2, argv + 2);
    if (strcmp(argv[1], "diff") == 0 && argc == 4)
        return cmd_diff(argv[2], argv[3]);
    fprintf(stderr, "spbridge mappings: unknown or incomplete subcommand '%s'\n", argv[1]);
    help(stderr);
    return SPB_EXIT_USAGE;
}
