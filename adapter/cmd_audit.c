/*
 * `spbridge audit`: check the audit trail's hash chain and signed checkpoints, query it, and
 * prune it. Works on the store directly, beside a running service (WAL; every write is one
 * BEGIN IMMEDIATE transaction, so the chain stays linear). An operator with the store file
 * sees every record, like an administrator.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "spbridge/audit.h"
#include "spbridge/log.h"
#include "spbridge/store.h"

static void help(FILE *out)
{
    fprintf(out,
            "usage: spbridge audit verify [--config FILE] [--json]\n"
            "       spbridge audit query [--config FILE] [--region R] [--practice ODS]\n"
            "                            [--since T] [--until T] [--step S] [--referral ID]\n"
            "                            [--after ID] [--limit N] [--json]\n"
            "       spbridge audit prune [--config FILE] [--before DATE] [--batch N]\n"
            "       spbridge audit checkpoint [--config FILE]\n\n"
            "verify      recompute every record's SHA-256 and link, check every checkpoint's\n"
            "            signature, and name the first bad record (edited, deleted, re-ordered,\n"
            "            or cut from the end)\n"
            "query       records in order, oldest first (at most --limit, default 100; continue\n"
            "            with --after the last id). T: YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]Z;\n"
            "            a date alone in --until means the end of that day\n"
            "prune       delete records older than DATE (default: [audit] retention_days ago)\n"
            "            in batches, each ending with a signed checkpoint that anchors the rest\n"
            "checkpoint  sign a checkpoint covering every record now\n\n"
            "Exit codes: 0 ok, 2 usage, 3 the chain does not verify (or prune refused),\n"
            "5 configuration, 6 no store.\n");
}

static const char *arg_value(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc)
        return NULL;
    return argv[++*i];
}

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end = NULL;
    long v;
    if (s == NULL)
        return -1;
    v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static void print_rows(json_t *rows)
{
    size_t i;
    json_t *r;
    printf("%-7s %-24s %-8s %-6s %-22s %-12s %-20s %-36s %s\n", "ID", "TIME", "PRACTICE", "REGION",
           "STEP", "RESULT", "IDENTITY", "REFERRAL", "DETAIL");
    json_array_foreach(rows, i, r)
    {
        const char *keys[] = {"time",   "practice", "region",   "step",
                              "result", "identity", "referral", "detail"};
        const char *v[8];
        for (int k = 0; k < 8; k++) {
            v[k] = json_string_value(json_object_get(r, keys[k]));
            if (v[k] == NULL)
                v[k] = "-";
        }
        printf("%-7lld %-24s %-8s %-6s %-22s %-12s %-20s %-36s %s\n",
               (long long)json_integer_value(json_object_get(r, "id")), v[0], v[1], v[2], v[3],
               v[4], v[5], v[6], v[7]);
    }
}

static int run_verify(spb_store *store, const spb_config *cfg, int as_json)
{
    spb_audit_trust *trust = NULL;
    spb_audit_verify_result *res = calloc(1, sizeof(*res));
    spb_err err;
    int exit_code = 0;

    spb_err_clear(&err);
    if (res == NULL)
        return 1;
    if (spb_audit_trust_from_config(&trust, cfg, &err) < 0 ||
        spb_audit_verify(store, trust, res, &err) < 0) {
        spb_log_err("audit_verify_failed", &err);
        exit_code = spb_exit_code(err.code);
        goto out;
    }
    if (as_json) {
        json_t *problems = json_array();
        json_t *o;
        char *text;
        for (int i = 0; i < res->nproblems; i++)
            json_array_append_new(problems, json_string(res->problems[i]));
        o = json_pack("{s:b, s:I, s:I, s:I, s:I, s:I, s:o, s:b}", "ok", res->ok, "records",
                      (json_int_t)res->records, "firstRecord", (json_int_t)res->first_id,
                      "lastRecord", (json_int_t)res->last_id, "checkpoints",
                      (json_int_t)res->checkpoints, "signedUpTo", (json_int_t)res->covered_to,
                      "problems", problems, "moreProblems", res->more_problems);
        if (res->first_bad > 0)
            json_object_set_new(o, "firstBadRecord", json_integer(res->first_bad));
        text = json_dumps(o, JSON_INDENT(2));
        if (text != NULL)
            printf("%s\n", text);
        free(text);
        json_decref(o);
    } else if (res->ok) {
        printf("audit chain ok: %lld records", (long long)res->records);
        if (res->records > 0)
            printf(" (%lld to %lld)", (long long)res->first_id, (long long)res->last_id);
        printf(", %lld signed checkpoints; signed up to record %lld", (long long)res->checkpoints,
               (long long)res->covered_to);
        if (res->last_id > res->covered_to)
            printf(" (%lld newer records are covered by the next checkpoint)",
                   (long long)(res->last_id - res->covered_to));
        printf("\n");
    } else {
        if (res->first_bad > 0)
            printf("audit chain BROKEN: the first bad record is %lld\n", (long long)res->first_bad);
        else
            printf("audit chain BROKEN: a checkpoint does not verify\n");
        for (int i = 0; i < res->nproblems; i++)
            printf("  %s\n", res->problems[i]);
        if (res->more_problems)
            printf("  ... and more\n");
    }
    if (!res->ok) {
        char first[32];
        snprintf(first, sizeof(first), "%lld", (long long)res->first_bad);
        spb_log(SPB_LOG_ERROR, "audit_chain_broken", "first_bad", res->first_bad ? first : NULL,
                "reason", res->nproblems ? res->problems[0] : NULL, (const char *)NULL);
        exit_code = 3;
    }
out:
    spb_audit_trust_free(trust);
    free(res);
    return exit_code;
}

int spb_cmd_audit(int argc, char **argv)
{
    const char *config_path = NULL, *sub = NULL;
    char **rest = NULL;
    int nrest = 0, exit_code = 0;
    spb_config *cfg = NULL;
    spb_store *store = NULL;
    spb_err err;

    spb_err_clear(&err);
    rest = calloc((size_t)argc + 1, sizeof(*rest));
    if (rest == NULL)
        return 1;
    /* --config may come before or after the subcommand */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            help(stdout);
            goto out;
        }
        if (strcmp(argv[i], "--config") == 0) {
            config_path = arg_value(argc, argv, &i);
            if (config_path == NULL)
                goto usage;
        } else if (sub == NULL && argv[i][0] != '-') {
            sub = argv[i];
        } else {
            rest[nrest++] = argv[i];
        }
    }
    if (sub == NULL)
        goto usage;
    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        exit_code = 1;
        goto out;
    }
    if (spb_cli_load_config(cfg, config_path) < 0) {
        exit_code = 5;
        goto out;
    }
    if (strcmp(sub, "verify") == 0) {
        int as_json = 0;
        for (int i = 0; i < nrest; i++) {
            if (strcmp(rest[i], "--json") == 0)
                as_json = 1;
            else
                goto usage;
        }
        if (spb_store_open_existing(&store, cfg->store_path, &err) < 0)
            goto store_failed;
        exit_code = run_verify(store, cfg, as_json);
    } else if (strcmp(sub, "query") == 0) {
        spb_audit_scope scope;
        spb_audit_filter f;
        json_t *rows = NULL;
        int more = 0, as_json = 0;
        memset(&scope, 0, sizeof(scope));
        memset(&f, 0, sizeof(f));
        scope.role = SPB_ROLE_ADMIN;
        f.limit = 100;
        for (int i = 0; i < nrest; i++) {
            const char *o = rest[i];
            const char *v = i + 1 < nrest ? rest[i + 1] : NULL;
            long n;
            if (strcmp(o, "--json") == 0) {
                as_json = 1;
                continue;
            }
            if (v == NULL)
                goto usage;
            i++;
            if (strcmp(o, "--region") == 0)
                f.region = v;
            else if (strcmp(o, "--practice") == 0)
                f.practice = v;
            else if (strcmp(o, "--step") == 0)
                f.step = v;
            else if (strcmp(o, "--referral") == 0)
                f.referral = v;
            else if (strcmp(o, "--since") == 0 && spb_audit_parse_time(v, 0, &f.since_ms) == 0)
                continue;
            else if (strcmp(o, "--until") == 0 && spb_audit_parse_time(v, 1, &f.until_ms) == 0)
                continue;
            else if (strcmp(o, "--limit") == 0 && parse_long(v, 1, 10000, &n) == 0)
                f.limit = (int)n;
            else if (strcmp(o, "--after") == 0 && parse_long(v, 0, 0x7fffffffL, &n) == 0)
                f.after_id = n;
            else
                goto usage;
        }
        if (spb_store_open_existing(&store, cfg->store_path, &err) < 0 ||
            spb_audit_query(store, &scope, &f, &rows, &more, &err) < 0)
            goto store_failed;
        if (as_json) {
            char *text = json_dumps(rows, JSON_INDENT(2));
            if (text != NULL)
                printf("%s\n", text);
            free(text);
        } else {
            print_rows(rows);
            if (more)
                printf("(more: continue with --after %lld)\n",
                       (long long)json_integer_value(
                           json_object_get(json_array_get(rows, json_array_size(rows) - 1), "id")));
        }
        json_decref(rows);
    } else if (strcmp(sub, "prune") == 0 || strcmp(sub, "checkpoint") == 0) {
        spb_audit_signer *sg = NULL;
        int64_t before = 0, pruned = 0, cp = 0;
        long batch = cfg->audit_prune_batch;
        int pruning = strcmp(sub, "prune") == 0;
        for (int i = 0; i < nrest; i++) {
            const char *v = i + 1 < nrest ? rest[i + 1] : NULL;
            if (pruning && strcmp(rest[i], "--before") == 0 && v != NULL &&
                spb_audit_parse_time(v, 0, &before) == 0)
                i++;
            else if (pruning && strcmp(rest[i], "--batch") == 0 &&
                     parse_long(v, 1, 1000000, &batch) == 0)
                i++;
            else
                goto usage;
        }
        if (pruning && before == 0) {
            if (cfg->audit_retention_days <= 0) {
                fprintf(stderr, "spbridge audit prune: give --before DATE (or set [audit] "
                                "retention_days)\n");
                exit_code = SPB_EXIT_USAGE;
                goto out;
            }
            before = spb_now_ms() - (int64_t)cfg->audit_retention_days * 86400000;
        }
        if (spb_audit_signer_from_config(&sg, cfg, &err) < 0 ||
            spb_store_open_existing(&store, cfg->store_path, &err) < 0) {
            spb_audit_signer_free(sg);
            goto store_failed;
        }
        if (pruning) {
            if (spb_audit_prune(store, sg, before, batch, &pruned, &err) < 0) {
                spb_audit_signer_free(sg);
                goto store_failed;
            }
            {
                char when[32];
                spb_audit_format_time(before, when);
                printf("pruned %lld audit records older than %s\n", (long long)pruned, when);
            }
        } else {
            if (spb_audit_checkpoint(store, sg, "manual", &cp, &err) < 0) {
                spb_audit_signer_free(sg);
                goto store_failed;
            }
            printf("signed checkpoint %lld\n", (long long)cp);
        }
        spb_audit_signer_free(sg);
    } else {
        goto usage;
    }
    goto out;

store_failed:
    spb_log_err("audit_failed", &err);
    exit_code = spb_exit_code(err.code);
    goto out;
usage:
    help(stderr);
    exit_code = SPB_EXIT_USAGE;
out:
    spb_store_close(store);
    free(cfg);
    free(rest);
    return exit_code;
}
