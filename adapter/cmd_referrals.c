/*
 * `spbridge referrals show ID`: the whole life of one referral for support staff: the
 * events received, every delivery and write-back, the Task versions seen at the service,
 * and any quarantine. ID is the referral's uuid or any tracking id of its events.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "spbridge/log.h"
#include "spbridge/store.h"

static void help(FILE *out)
{
    fprintf(out, "usage: spbridge referrals [--config FILE] show ID\n\n"
                 "Prints, as JSON, everything spbridge knows of one referral: its events,\n"
                 "deliveries (with the server's ids), the Task versions received from the\n"
                 "service, write-backs and quarantines. ID is the referral uuid or a tracking\n"
                 "id. Exit codes: 0 ok, 2 usage, 5 configuration, 6 unknown referral.\n");
}

int spb_cmd_referrals(int argc, char **argv)
{
    const char *config_path = NULL;
    spb_config *cfg = NULL;
    spb_store *store = NULL;
    json_t *life = NULL;
    spb_err err;
    int i = 1, exit_code = 0;

    spb_err_clear(&err);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        help(argc < 2 ? stderr : stdout);
        return argc < 2 ? SPB_EXIT_USAGE : 0;
    }
    if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
        config_path = argv[i + 1];
        i += 2;
    }
    if (i + 2 != argc || strcmp(argv[i], "show") != 0) {
        help(stderr);
        return SPB_EXIT_USAGE;
    }
    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        return 1;
    if (spb_cli_load_config(cfg, config_path) < 0) {
        exit_code = 5;
        goto out;
    }
    if (spb_store_open_existing(&store, cfg->store_path, &err) < 0 ||
        spb_store_referral_life(store, argv[i + 1], &life, &err) < 0) {
        spb_log_err("referrals_failed", &err);
        exit_code = spb_exit_code(err.code);
        goto out;
    }
    {
        char *text = json_dumps(life, JSON_INDENT(2));
        if (text != NULL)
            printf("%s\n", text);
        free(text);
    }
out:
    json_decref(life);
    spb_store_close(store);
    free(cfg);
    return exit_code;
}
