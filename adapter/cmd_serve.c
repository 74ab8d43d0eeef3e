/* `spbridge serve`: run the service until SIGTERM (see server.c). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "spbridge/log.h"
#include "spbridge/server.h"

static void help(FILE *out)
{
    fprintf(out,
            "usage: spbridge serve --config FILE [--port-file FILE]\n\n"
            "Runs spbridge as a service: HTTPS intake with mutual TLS (POST /events,\n"
            "GET /events/{id}, GET /healthz, GET /metrics), practice spool folders, and\n"
            "delivery of queued Bundles to the social prescribing services.\n\n"
            "  --config FILE     configuration (docs/configuration.md); required\n"
            "  --port-file FILE  write the listening port here once bound\n"
            "  -h, --help        this help\n\n"
            "Signals: SIGTERM/SIGINT finish in-flight requests and deliveries, then stop;\n"
            "SIGHUP reloads configuration, mappings and certificates (a bad set is refused\n"
            "and the old one stays). Exit 0 after a clean stop, 5 on a configuration error.\n");
}

int spb_cmd_serve(int argc, char **argv)
{
    static const struct option longopts[] = {{"config", required_argument, NULL, 'c'},
                                             {"port-file", required_argument, NULL, 'p'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    spb_serve_opts opts;
    spb_err err;
    int opt, rc;

    memset(&opts, 0, sizeof(opts));
    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:p:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            opts.config_path = optarg;
            break;
        case 'p':
            opts.port_file = optarg;
            break;
        case 'h':
            help(stdout);
            return 0;
        default:
            help(stderr);
            return SPB_EXIT_USAGE;
        }
    }
    if (opts.config_path == NULL || optind != argc) {
        help(stderr);
        return SPB_EXIT_USAGE;
    }
    spb_err_clear(&err);
    rc = spb_serve(&opts, &err);
    if (rc < 0) {
        spb_log_err("serve_failed", &err);
        return spb_exit_code(rc);
    }
    return 0;
}
