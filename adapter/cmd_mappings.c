/*
 * `spbridge mappings check [DIR]`: load a whole mapping set and list every problem with
 * file and line, errors and warnings apart. (explain and diff arrive with the mapping tools
 * issue.)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "spbridge/mapping_set.h"

static void help(FILE *out)
{
    fprintf(out, "usage: spbridge mappings check [--config FILE] [DIR]\n\n"
                 "Loads the mapping set in DIR (default: mappings_dir) and reports every\n"
                 "problem as FILE:LINE: error|warning: message. Exit 0 when there are no\n"
                 "errors (warnings allowed), 5 otherwise.\n");
}

int spb_cmd_mappings(int argc, char **argv)
{
    spb_config *cfg = NULL;
    spb_diags *diags = NULL;
    spb_mapping_set *maps = NULL;
    const char *config_path = NULL, *dir = NULL;
    spb_err err;
    int exit_code = 0;

    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        help(argc < 2 ? stderr : stdout);
        return argc < 2 ? SPB_EXIT_USAGE : 0;
    }
    if (strcmp(argv[1], "check") != 0) {
        fprintf(stderr, "spbridge mappings: unknown subcommand '%s'\n", argv[1]);
        help(stderr);
        return SPB_EXIT_USAGE;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            help(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            config_path = argv[++i];
        else if (argv[i][0] == '-') {
            help(stderr);
            return SPB_EXIT_USAGE;
        } else
            dir = argv[i];
    }
    cfg = calloc(1, sizeof(*cfg));
    diags = calloc(1, sizeof(*diags));
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
