/*
 * `spbridge report`: referral activity per practice, region and ISO week (report.h), as JSON
 * or CSV, from the store directly. The same figures as GET /audit/report for an administrator.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "spbridge/log.h"
#include "spbridge/report.h"
#include "spbridge/store.h"

static void help(FILE *out)
{
    fprintf(out, "usage: spbridge report [--config FILE] [--format json|csv] [--region R]\n"
                 "                       [--practice ODS] [--since DATE] [--until DATE]\n\n"
                 "Per practice, region and ISO week (UTC): referrals sent, accepted, rejected,\n"
                 "declined, completed, signposting events, median and 90th percentile time from\n"
                 "referral to acceptance and to completion, delivery failures, retries and dead\n"
                 "letters (docs/audit.md defines each). Default format: json.\n"
                 "Exit codes: 0 ok, 2 usage, 5 configuration, 6 no store.\n");
}

int spb_cmd_report(int argc, char **argv)
{
    const char *config_path = NULL, *format = "json";
    spb_report_filter f;
    spb_audit_scope scope;
    spb_config *cfg = NULL;
    spb_store *store = NULL;
    json_t *report = NULL;
    spb_err err;
    int exit_code = 0;

    spb_err_clear(&err);
    memset(&f, 0, sizeof(f));
    memset(&scope, 0, sizeof(scope));
    scope.role = SPB_ROLE_ADMIN;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            help(stdout);
            return 0;
        }
        if (v == NULL)
            goto usage;
        i++;
        if (strcmp(argv[i - 1], "--config") == 0)
            config_path = v;
        else if (strcmp(argv[i - 1], "--format") == 0 &&
                 (strcmp(v, "json") == 0 || strcmp(v, "csv") == 0))
            format = v;
        else if (strcmp(argv[i - 1], "--region") == 0)
            f.region = v;
        else if (strcmp(argv[i - 1], "--practice") == 0)
            f.practice = v;
        else if (strcmp(argv[i - 1], "--since") == 0 &&
                 spb_audit_parse_time(v, 0, &f.since_ms) == 0)
            continue;
        else if (strcmp(argv[i - 1], "--until") == 0 &&
                 spb_audit_parse_time(v, 1, &f.until_ms) == 0)
            continue;
        else
            goto usage;
    }
    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        return 1;
    if (spb_cli_load_config(cfg, config_path) < 0) {
        exit_code = 5;
        goto out;
    }
    if (spb_store_open_existing(&store, cfg->store_path, &err) < 0 ||
        spb_report_build(store, &scope, &f, &report, &err) < 0) {
        spb_log_err("report_failed", &err);
        exit_code = spb_exit_code(err.code);
        goto out;
    }
    if (strcmp(format, "csv") == 0) {
        char *csv = spb_report_csv(report);
        if (csv == NULL) {
            exit_code = 1;
            goto out;
        }
        fputs(csv, stdout);
        free(csv);
    } else {
        char *text = json_dumps(report, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
        if (text != NULL)
            printf("%s\n", text);
        free(text);
    }
    goto out;
usage:
    help(stderr);
    exit_code = SPB_EXIT_USAGE;
out:
    json_decref(report);
    spb_store_close(store);
    free(cfg);
    return exit_code;
}
