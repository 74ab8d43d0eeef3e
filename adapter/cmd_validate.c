/*
 * `spbridge validate`: checks FHIR R4 JSON against the shipped profiles with the built-in
 * validator (fhir/validator.c). Each input holds one resource, NDJSON, or several JSON
 * documents one after another. A valid resource prints `ok FILE#N TYPE`; an invalid one
 * prints an OperationOutcome (one line) listing every problem with its FHIRPath.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "spbridge/fhir_build.h"
#include "spbridge/log.h"
#include "spbridge/validator.h"

#define VALIDATE_MAX_BYTES ((size_t)64 * 1024 * 1024)

static void help(FILE *out)
{
    fprintf(out, "usage: spbridge validate [--profiles DIR] [--base] [--pretty] [--outcomes]\n"
                 "                         FILE... | -\n"
                 "       spbridge validate [--profiles DIR] --list\n\n"
                 "Validates FHIR R4 JSON (one resource, NDJSON, or documents one after another)\n"
                 "against base R4 and spbridge's profiles, Bundles with every entry.\n\n"
                 "  --profiles DIR  a conformance folder holding profiles/ and valuesets/\n"
                 "                  (default: the one this build ships)\n"
                 "  --base          check against base FHIR R4 only, without spbridge's profiles\n"
                 "  --pretty        indent the OperationOutcomes\n"
                 "  --outcomes      print an OperationOutcome for every resource, valid or not\n"
                 "  --list          print the loaded profiles and exit\n"
                 "  -h, --help      this help\n\n"
                 "Prints `ok FILE#N TYPE` for a valid resource (N counts resources in the file\n"
                 "from 1) and an OperationOutcome naming FILE#N for an invalid one.\n"
                 "Exit: 0 all valid, 3 any invalid (or not JSON), 5 the profiles do not load,\n"
                 "6 a file cannot be read.\n");
}

static void print_json(json_t *j, int pretty)
{
    char *text = json_dumps(j, pretty ? JSON_INDENT(2) : JSON_COMPACT);
    if (text != NULL) {
        fputs(text, stdout);
        fputc('\n', stdout);
        free(text);
    }
}

/* An input problem that is not about one element (not JSON, no resource). */
static void print_input_problem(const char *source, const char *msg, int pretty)
{
    spb_validation_report rep;
    json_t *oo;

    memset(&rep, 0, sizeof(rep));
    rep.nissues = 1;
    rep.nerrors = 1;
    rep.issues[0].severity = SPB_SEVERITY_ERROR;
    rep.issues[0].code = SPB_ISSUE_STRUCTURE;
    snprintf(rep.issues[0].message, sizeof(rep.issues[0].message), "%s", msg);
    oo = spb_validation_outcome(&rep, source);
    print_json(oo, pretty);
    json_decref(oo);
}

typedef struct tally {
    size_t resources, valid, invalid;
} tally;

/* Validates every JSON document in `data`; returns 1 if all were valid, else 0. */
static int validate_buffer(const spb_validator *v, unsigned flags, const char *name,
                           const char *data, size_t len, int pretty, int outcomes, tally *t)
{
    size_t pos = 0, n = 0;
    int all_ok = 1;

    for (;;) {
        json_error_t jerr;
        json_t *doc;
        char source[512];
        spb_validation_report rep;
        spb_err err;

        while (pos < len &&
               (data[pos] == ' ' || data[pos] == '\t' || data[pos] == '\r' || data[pos] == '\n'))
            pos++;
        if (pos >= len)
            break;
        n++;
        snprintf(source, sizeof(source), "%s#%zu", name, n);
        doc = json_loadb(data + pos, len - pos, JSON_DISABLE_EOF_CHECK | JSON_REJECT_DUPLICATES,
                         &jerr);
        if (doc == NULL) {
            char msg[SPB_VALIDATION_MSG_MAX];
            snprintf(msg, sizeof(msg), "not valid JSON: %s (line %d, column %d of this document)",
                     jerr.text, jerr.line, jerr.column);
            print_input_problem(source, msg, pretty);
            t->resources++;
            t->invalid++;
            return 0; /* where the next document starts is unknown */
        }
        pos += (size_t)jerr.position;
        t->resources++;
        spb_err_clear(&err);
        if (!json_is_object(doc)) {
            print_input_problem(source, "a FHIR resource must be a JSON object", pretty);
            t->invalid++;
            all_ok = 0;
        } else if (spb_validate_flags(v, doc, flags, &rep, &err) == 0) {
            t->valid++;
            if (outcomes || rep.nissues > 0) {
                json_t *oo = spb_validation_outcome(&rep, source);
                if (!outcomes)
                    printf("ok %s %s (%zu warnings)\n", source, rep.resource_type, rep.nwarnings);
                print_json(oo, pretty);
                json_decref(oo);
            } else {
                printf("ok %s %s\n", source, rep.resource_type);
            }
        } else if (err.code == SPB_EINVALID) {
            json_t *oo = spb_validation_outcome(&rep, source);
            print_json(oo, pretty);
            json_decref(oo);
            t->invalid++;
            all_ok = 0;
        } else {
            spb_log_err("validate_failed", &err);
            t->invalid++;
            all_ok = 0;
        }
        json_decref(doc);
    }
    if (n == 0) {
        char source[512];
        snprintf(source, sizeof(source), "%s#1", name);
        print_input_problem(source, "no resource found (empty input)", pretty);
        t->invalid++;
        return 0;
    }
    return all_ok;
}

int spb_cmd_validate(int argc, char **argv)
{
    static const struct option longopts[] = {{"profiles", required_argument, NULL, 'P'},
                                             {"base", no_argument, NULL, 'b'},
                                             {"pretty", no_argument, NULL, 'p'},
                                             {"outcomes", no_argument, NULL, 'o'},
                                             {"list", no_argument, NULL, 'l'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *dir = NULL;
    int pretty = 0, outcomes = 0, list = 0, opt, exit_code = 0;
    unsigned flags = 0;
    spb_validator *owned = NULL;
    const spb_validator *v = NULL;
    spb_err err;
    tally t;
    int rc;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "P:bpolh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'b':
            flags |= SPB_VALIDATE_BASE_ONLY;
            break;
        case 'P':
            dir = optarg;
            break;
        case 'p':
            pretty = 1;
            break;
        case 'o':
            outcomes = 1;
            break;
        case 'l':
            list = 1;
            break;
        case 'h':
            help(stdout);
            return 0;
        default:
            help(stderr);
            return SPB_EXIT_USAGE;
        }
    }
    if (optind >= argc && !list) {
        fprintf(stderr, "spbridge validate: no input files (use - for stdin)\n");
        help(stderr);
        return SPB_EXIT_USAGE;
    }
    spb_err_clear(&err);
    if (dir != NULL) {
        rc = spb_validator_load(&owned, dir, &err);
        v = owned;
    } else {
        rc = spb_validator_shared(&v, &err);
    }
    if (rc < 0) {
        spb_log_err("profiles_invalid", &err);
        exit_code = spb_exit_code(rc);
        goto out;
    }
    if (list) {
        for (size_t i = 0; i < spb_validator_profile_count(v); i++)
            printf("%s\n", spb_validator_profile_url(v, i));
        goto out;
    }
    memset(&t, 0, sizeof(t));
    for (int i = optind; i < argc; i++) {
        const char *path = argv[i];
        const char *name = strcmp(path, "-") == 0 ? "(stdin)" : path;
        char *data = NULL;
        size_t len = 0;

        spb_err_clear(&err);
        rc = spb_cli_read_input(path, VALIDATE_MAX_BYTES, &data, &len, &err);
        if (rc < 0) {
            json_t *oo = spb_fhir_operation_outcome(&err);
            print_json(oo, pretty);
            json_decref(oo);
            spb_log_err("validate_failed", &err);
            if (exit_code == 0)
                exit_code = spb_exit_code(rc);
            continue;
        }
        if (!validate_buffer(v, flags, name, data, len, pretty, outcomes, &t) && exit_code == 0)
            exit_code = spb_exit_code(SPB_EINVALID);
        free(data);
    }
    fflush(stdout);
    {
        char nres[24], nvalid[24], ninvalid[24];
        snprintf(nres, sizeof(nres), "%zu", t.resources);
        snprintf(nvalid, sizeof(nvalid), "%zu", t.valid);
        snprintf(ninvalid, sizeof(ninvalid), "%zu", t.invalid);
        spb_log(t.invalid ? SPB_LOG_WARN : SPB_LOG_INFO, "validated", "resources", nres, "valid",
                nvalid, "invalid", ninvalid, (const char *)NULL);
    }
out:
    spb_validator_free(owned);
    return exit_code;
}
