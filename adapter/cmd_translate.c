/*
 * `spbridge translate`: GP XML in, one FHIR resource per event out (NDJSON on stdout).
 * Invalid input prints an OperationOutcome on stdout and one structured line on stderr,
 * and the exit code says what class of failure it was.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "spbridge/log.h"
#include "spbridge/translate.h"

static void help(FILE *out)
{
    fprintf(out, "usage: spbridge translate [--config FILE] [--mappings DIR] [--dialect NAME]\n"
                 "                          [--schema-dir DIR] [--pretty] FILE... | -\n\n"
                 "Translates GP system XML (GP2GP HL7 v3, native, or any configured dialect) into\n"
                 "FHIR R4: one transaction Bundle per referral or cancellation, one Observation\n"
                 "report record per declined or signposting event, one JSON document per line.\n\n"
                 "  --config FILE     configuration (default: built-in defaults)\n"
                 "  --mappings DIR    mapping set folder (overrides mappings_dir)\n"
                 "  --dialect NAME    dialect of the input (default: detect from the document)\n"
                 "  --schema-dir DIR  GP2GP XSD folder: validate GP2GP input against it\n"
                 "  --pretty          indent the JSON\n"
                 "  -h, --help        this help\n\n"
                 "An input with no trigger codes prints nothing (and says so on stderr), exit 0.\n"
                 "Invalid input prints a FHIR OperationOutcome on stdout and exits 3 (invalid),\n"
                 "4 (unmapped code), 5 (mapping or configuration error) or 6 (file not found).\n");
}

int spb_cmd_translate(int argc, char **argv)
{
    static const struct option longopts[] = {{"config", required_argument, NULL, 'c'},
                                             {"mappings", required_argument, NULL, 'm'},
                                             {"dialect", required_argument, NULL, 'd'},
                                             {"schema-dir", required_argument, NULL, 's'},
                                             {"pretty", no_argument, NULL, 'p'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *config_path = NULL, *mappings = NULL, *dialect = NULL, *schema_dir = NULL;
    int pretty = 0, opt, exit_code = 0;
    spb_config *cfg = NULL;
    spb_mapping_set *maps = NULL;
    spb_err err;
    int rc;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:m:d:s:ph", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 'm':
            mappings = optarg;
            break;
        case 'd':
            dialect = optarg;
            break;
        case 's':
            schema_dir = optarg;
            break;
        case 'p':
            pretty = 1;
            break;
        case 'h':
            help(stdout);
            return 0;
        default:
            help(stderr);
            return SPB_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "spbridge translate: no input files (use - for stdin)\n");
        help(stderr);
        return SPB_EXIT_USAGE;
    }
    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        return 1;
    rc = spb_cli_load_config(cfg, config_path);
    if (rc < 0) {
        exit_code = spb_exit_code(rc);
        goto out;
    }
    spb_err_clear(&err);
    rc = spb_mapping_set_load(&maps, mappings ? mappings : cfg->mappings_dir, NULL, &err);
    if (rc < 0) {
        spb_log_err("mappings_invalid", &err);
        exit_code = spb_exit_code(rc);
        goto out;
    }
    for (int i = optind; i < argc; i++) {
        const char *path = argv[i];
        const char *name = strcmp(path, "-") == 0 ? "(stdin)" : path;
        char *data = NULL;
        size_t len = 0;
        spb_translation tr;
        spb_translate_opts opts;

        memset(&opts, 0, sizeof(opts));
        memset(&tr, 0, sizeof(tr));
        opts.maps = maps;
        opts.dialect = dialect;
        opts.schema_dir = schema_dir ? schema_dir : (cfg->schema_dir[0] ? cfg->schema_dir : NULL);
        opts.limits.max_bytes = (size_t)cfg->xml_max_bytes;
        opts.limits.max_depth = (int)cfg->xml_max_depth;
        opts.route = spb_config_route;
        opts.route_user = cfg;
        spb_err_clear(&err);
        rc = spb_cli_read_input(path, opts.limits.max_bytes, &data, &len, &err);
        if (rc == 0)
            rc = spb_translate(&tr, data, len, name, &opts, &err);
        free(data);
        if (rc < 0) {
            json_t *oo = spb_fhir_operation_outcome(&err);
            char *text = json_dumps(oo, pretty ? JSON_INDENT(2) : JSON_COMPACT);
            if (text != NULL) {
                fputs(text, stdout);
                fputc('\n', stdout);
                free(text);
            }
            json_decref(oo);
            spb_log_err("translate_failed", &err);
            if (exit_code == 0)
                exit_code = spb_exit_code(rc);
            continue;
        }
        if (tr.n == 0) {
            char cand[24];
            snprintf(cand, sizeof(cand), "%zu", tr.candidates);
            spb_log(SPB_LOG_INFO, "no_events", "file", name, "dialect", tr.dialect, "candidates",
                    cand, "reason", "no entry has a trigger code", (const char *)NULL);
        }
        for (size_t k = 0; k < tr.n; k++) {
            char *text = json_dumps(tr.items[k].resource, pretty ? JSON_INDENT(2) : JSON_COMPACT);
            char line[16];
            if (text == NULL) {
                exit_code = 1;
                continue;
            }
            fputs(text, stdout);
            fputc('\n', stdout);
            free(text);
            snprintf(line, sizeof(line), "%d", tr.items[k].source_line);
            spb_log(SPB_LOG_INFO, "translated", "file", name, "line", line, "dialect", tr.dialect,
                    "kind", spb_event_kind_name(tr.items[k].kind), "event_id",
                    tr.items[k].event_uuid, "referral", tr.items[k].source_uuid, "practice",
                    tr.items[k].practice_ods, "service", tr.items[k].service_id, "code",
                    tr.items[k].trigger_code, "mappings", tr.mapping_version, (const char *)NULL);
        }
        spb_translation_clear(&tr);
    }
    fflush(stdout);
out:
    spb_mapping_set_free(maps);
    free(cfg);
    return exit_code;
}
