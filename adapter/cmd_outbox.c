/*
 * `spbridge outbox`: the operator's view of deliveries and a replay that keeps a link to
 * the original attempt. Works on the store directly, beside a running service (SQLite WAL
 * lets both read and write safely).
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "spbridge/log.h"
#include "spbridge/intake.h"
#include "spbridge/store.h"

static void help(FILE *out)
{
    fprintf(out,
            "usage: spbridge outbox [--config FILE] list [--state STATE] [--limit N] [--json]\n"
            "       spbridge outbox [--config FILE] show ID\n"
            "       spbridge outbox [--config FILE] replay ID | replay --dead\n"
            "       spbridge outbox [--config FILE] parked [--limit N]\n"
            "       spbridge outbox [--config FILE] replay-parked PARKED-ID\n\n"
            "list    outbox rows, newest first (STATE: queued, delivering, retrying,\n"
            "        delivered, dead, recorded)\n"
            "show    one row: its attempts, the server's answer and ids, the Bundle\n"
            "replay  queue a dead or delivered row again, linked to the original\n"
            "        (--dead: every dead row not yet replayed)\n"
            "parked  refused inputs kept for replay, with the reason (for an unmapped\n"
            "        code: the code, its system and the ConceptMap to extend)\n"
            "replay-parked\n"
            "        translate a parked input again (after the fix) and queue it; a\n"
            "        still-failing input changes nothing\n\n"
            "Exit codes: 0 ok, 2 usage, 5 configuration, 6 no such row.\n");
}

static void print_table(json_t *rows)
{
    size_t i;
    json_t *r;
    printf("%-6s %-10s %-4s %-12s %-8s %-14s %-36s %s\n", "ID", "STATE", "TRY", "KIND", "PRACTICE",
           "SERVICE", "TRACKING ID", "LAST ERROR");
    json_array_foreach(rows, i, r)
    {
        printf("%-6lld %-10s %-4lld %-12s %-8s %-14s %-36s %s\n",
               (long long)json_integer_value(json_object_get(r, "id")),
               json_string_value(json_object_get(r, "state")),
               (long long)json_integer_value(json_object_get(r, "attempts")),
               json_string_value(json_object_get(r, "kind")),
               json_string_value(json_object_get(r, "practice")),
               json_string_value(json_object_get(r, "service")),
               json_string_value(json_object_get(r, "tracking_id")),
               json_string_value(json_object_get(r, "last_error"))
                   ? json_string_value(json_object_get(r, "last_error"))
                   : "");
    }
}

static int parse_id(const char *s, int64_t *out)
{
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || v <= 0)
        return -1;
    *out = v;
    return 0;
}

/*
 * Replays a parked input after its cause was fixed (usually a ConceptMap extended): a dry
 * translation first, so a still-failing input changes nothing; then the normal intake, as
 * if the practice had sent it again now. The running service delivers it.
 */
static int replay_parked(spb_config *cfg, spb_store *store, const char *id)
{
    spb_parked p;
    spb_mapping_set *maps = NULL;
    spb_runtime rt;
    spb_translation tr;
    spb_translate_opts opts;
    spb_intake_meta meta;
    spb_intake_outcome out;
    spb_err err;
    int rc, exit_code = 0, rt_ready = 0;
    char result[200];

    spb_err_clear(&err);
    memset(&tr, 0, sizeof(tr));
    memset(&out, 0, sizeof(out));
    if (spb_store_parked_get(store, id, &p, &err) < 0) {
        spb_log_err("replay_failed", &err);
        return spb_exit_code(err.code);
    }
    if (p.replayed) {
        fprintf(stderr, "spbridge outbox replay-parked: %s was replayed already\n", id);
        exit_code = 3;
        goto out;
    }
    if (spb_mapping_set_load(&maps, cfg->mappings_dir, NULL, &err) < 0) {
        spb_log_err("mappings_invalid", &err);
        exit_code = 5;
        goto out;
    }
    memset(&opts, 0, sizeof(opts));
    opts.maps = maps;
    opts.schema_dir = cfg->schema_dir[0] ? cfg->schema_dir : NULL;
    opts.limits.max_bytes = (size_t)cfg->xml_max_bytes;
    opts.limits.max_depth = (int)cfg->xml_max_depth;
    opts.route = spb_config_route;
    opts.route_user = cfg;
    rc = spb_translate(&tr, p.body, p.len, p.source_name, &opts, &err);
    spb_translation_clear(&tr);
    if (rc < 0) {
        json_t *oo = spb_fhir_operation_outcome(&err);
        char *text = json_dumps(oo, JSON_INDENT(2));
        printf("still refused; nothing was queued:\n%s\n", text ? text : "");
        free(text);
        json_decref(oo);
        exit_code = spb_exit_code(rc);
        goto out;
    }
    /* the runtime takes ownership of the configuration copy and the mapping set */
    {
        spb_config *copy = malloc(sizeof(*copy));
        if (copy == NULL) {
            exit_code = 1;
            goto out;
        }
        memcpy(copy, cfg, sizeof(*copy));
        spb_runtime_init(&rt, copy, maps);
        maps = NULL;
        rt_ready = 1;
    }
    memset(&meta, 0, sizeof(meta));
    meta.identity = p.identity;
    meta.identity_ods = p.practice;
    meta.channel = "replay";
    meta.source_name = p.source_name;
    spb_intake_document(&rt, store, p.body, p.len, &meta, p.practice[0] ? p.practice : NULL, NULL,
                        &out);
    {
        char *text = json_dumps(out.body, JSON_INDENT(2));
        printf("%s\n", text ? text : "");
        free(text);
    }
    if (out.http_status >= 300) {
        exit_code = 3;
        goto out;
    }
    snprintf(result, sizeof(result), "accepted again: %d queued", out.queued);
    spb_store_parked_mark(store, id, result, &err);
out:
    json_decref(out.body);
    if (rt_ready)
        spb_runtime_destroy(&rt);
    spb_mapping_set_free(maps);
    free(p.body);
    return exit_code;
}

int spb_cmd_outbox(int argc, char **argv)
{
    const char *config_path = NULL;
    spb_config *cfg = NULL;
    spb_store *store = NULL;
    spb_err err;
    int exit_code = 0, i = 1;
    const char *sub;

    spb_err_clear(&err);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        help(argc < 2 ? stderr : stdout);
        return argc < 2 ? SPB_EXIT_USAGE : 0;
    }
    if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
        config_path = argv[i + 1];
        i += 2;
    }
    if (i >= argc) {
        help(stderr);
        return SPB_EXIT_USAGE;
    }
    sub = argv[i++];
    for (int k = i; k < argc; k++) {
        if (strcmp(argv[k], "--help") == 0 || strcmp(argv[k], "-h") == 0) {
            help(stdout);
            return 0;
        }
    }
    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        return 1;
    if (spb_cli_load_config(cfg, config_path) < 0) {
        exit_code = 5;
        goto out;
    }
    if (spb_store_open_existing(&store, cfg->store_path, &err) < 0) {
        spb_log_err("store_open_failed", &err);
        exit_code = spb_exit_code(err.code);
        goto out;
    }
    if (strcmp(sub, "list") == 0 || strcmp(sub, "parked") == 0) {
        const char *state = NULL;
        int limit = 100, as_json = strcmp(sub, "parked") == 0;
        json_t *rows = NULL;
        for (; i < argc; i++) {
            if (strcmp(argv[i], "--state") == 0 && i + 1 < argc)
                state = argv[++i];
            else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc)
                limit = (int)strtol(argv[++i], NULL, 10);
            else if (strcmp(argv[i], "--json") == 0)
                as_json = 1;
            else {
                help(stderr);
                exit_code = SPB_EXIT_USAGE;
                goto out;
            }
        }
        if (limit <= 0)
            limit = 100;
        if (strcmp(sub, "parked") == 0
                ? spb_store_parked_list(store, limit, &rows, &err) < 0
                : spb_store_outbox_list(store, state, limit, &rows, &err) < 0) {
            spb_log_err("outbox_failed", &err);
            exit_code = spb_exit_code(err.code);
            goto out;
        }
        if (as_json) {
            char *text = json_dumps(rows, JSON_INDENT(2));
            if (text != NULL)
                printf("%s\n", text);
            free(text);
        } else {
            print_table(rows);
        }
        json_decref(rows);
    } else if (strcmp(sub, "show") == 0 && i + 1 == argc) {
        int64_t id;
        json_t *row = NULL;
        char *text;
        if (parse_id(argv[i], &id) < 0) {
            fprintf(stderr, "spbridge outbox show: '%s' is not a row id\n", argv[i]);
            exit_code = SPB_EXIT_USAGE;
            goto out;
        }
        if (spb_store_outbox_show(store, id, &row, &err) < 0) {
            spb_log_err("outbox_failed", &err);
            exit_code = spb_exit_code(err.code);
            goto out;
        }
        text = json_dumps(row, JSON_INDENT(2));
        if (text != NULL)
            printf("%s\n", text);
        free(text);
        json_decref(row);
    } else if (strcmp(sub, "replay") == 0 && i + 1 == argc) {
        if (strcmp(argv[i], "--dead") == 0) {
            int n = 0;
            if (spb_store_replay_dead(store, "cli", &n, &err) < 0) {
                spb_log_err("replay_failed", &err);
                exit_code = spb_exit_code(err.code);
                goto out;
            }
            printf("replayed %d dead row(s)\n", n);
        } else {
            int64_t id, new_id = 0;
            if (parse_id(argv[i], &id) < 0) {
                fprintf(stderr, "spbridge outbox replay: '%s' is not a row id\n", argv[i]);
                exit_code = SPB_EXIT_USAGE;
                goto out;
            }
            if (spb_store_replay(store, id, "cli", &new_id, &err) < 0) {
                spb_log_err("replay_failed", &err);
                exit_code = spb_exit_code(err.code);
                goto out;
            }
            printf("row %lld queued again as row %lld\n", (long long)id, (long long)new_id);
        }
    } else if (strcmp(sub, "replay-parked") == 0 && i + 1 == argc) {
        exit_code = replay_parked(cfg, store, argv[i]);
    } else {
        help(stderr);
        exit_code = SPB_EXIT_USAGE;
    }
out:
    spb_store_close(store);
    free(cfg);
    return exit_code;
}
