/* `spbridge config check|show`: validate a configuration file or print effective settings. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void help(FILE *out)
{
    fprintf(out,
            "usage: spbridge config check FILE\n"
            "       spbridge config show [FILE]\n\n"
            "check  report every problem in FILE (one log line each, with its line number, on\n"
            "       stderr); exit 5 if any\n"
            "show   print the effective settings (FILE over the built-in defaults)\n");
}

int spb_cmd_config(int argc, char **argv)
{
    spb_config *cfg;
    int rc, exit_code = 0;

    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        help(argc < 2 ? stderr : stdout);
        return argc < 2 ? SPB_EXIT_USAGE : 0;
    }
    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        return 1;
    if (strcmp(argv[1], "check") == 0 && argc == 3) {
        rc = spb_cli_load_config(cfg, argv[2]);
        if (rc < 0)
            exit_code = spb_exit_code(rc);
        else
            printf("%s: ok (%d services, %d practices)\n", argv[2], cfg->nservices,
                   cfg->npractices);
    } else if (strcmp(argv[1], "show") == 0 && argc <= 3) {
        rc = spb_cli_load_config(cfg, argc == 3 ? argv[2] : NULL);
        if (rc < 0)
            exit_code = spb_exit_code(rc);
        else
            spb_config_dump(cfg, stdout);
    } else {
        help(stderr);
        exit_code = SPB_EXIT_USAGE;
    }
    free(cfg);
    return exit_code;
}
