/*
 * spbridge: connects GP clinical systems to social prescribing services.
 * This file only dispatches subcommands; each lives in its own cmd_*.c.
 */
#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "spbridge/xml_input.h"

#ifndef SPB_VERSION
#define SPB_VERSION "0.0.0"
#endif

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"serve", spb_cmd_serve, "run the service: mutual-TLS intake, outbox, delivery"},
    {"translate", spb_cmd_translate, "translate GP XML events into FHIR R4 Bundles (NDJSON)"},
    {"validate", spb_cmd_validate, "validate FHIR R4 JSON against spbridge's profiles"},
    {"outbox", spb_cmd_outbox, "list, show and replay deliveries; list parked inputs"},
    {"referrals", spb_cmd_referrals, "show the whole life of one referral"},
    {"audit", spb_cmd_audit, "verify, query and prune the tamper-evident audit trail"},
    {"report", spb_cmd_report, "referral activity per practice, region and week"},
    {"mappings", spb_cmd_mappings, "check mapping sets (dialect profiles and ConceptMaps)"},
    {"config", spb_cmd_config, "check or show the configuration"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: spbridge COMMAND [OPTIONS] [ARGS]\n\n"
                 "Connects GP clinical systems to social prescribing services.\n\n"
                 "Commands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "  %-10s %s\n", "version", "print the version");
    fprintf(out, "\nRun 'spbridge COMMAND --help' for a command's options.\n"
                 "Exit codes: 0 ok, 1 internal error, 2 usage, 3 invalid input, 4 unmapped "
                 "code,\n5 configuration or mapping error, 6 not found, 7 refused, 8 peer "
                 "unavailable.\n");
}

int main(int argc, char **argv)
{
    int rc;

    if (argc < 2) {
        usage(stderr);
        return SPB_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("spbridge %s\n", SPB_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(argv[1], commands[i].name) == 0) {
            spb_xml_global_init();
            curl_global_init(CURL_GLOBAL_DEFAULT);
            rc = commands[i].run(argc - 1, argv + 1);
            curl_global_cleanup();
            spb_xml_global_cleanup();
            return rc;
        }
    }
    fprintf(stderr, "spbridge: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return SPB_EXIT_USAGE;
}
