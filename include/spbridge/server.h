/*
 * `spbridge serve`: the HTTPS front door (libevent + OpenSSL, mutual TLS), intake threads,
 * spool folders and delivery workers, until SIGTERM. SIGHUP reloads configuration, mappings
 * and certificates without dropping connections.
 */
#ifndef SPB_SERVER_H
#define SPB_SERVER_H

#include "spbridge/error.h"

typedef struct spb_serve_opts {
    const char *config_path;
    const char *port_file; /* write the listening port here once bound (tests) */
} spb_serve_opts;

/* Runs the service; returns 0 after a clean stop or a negative spb_code. */
int spb_serve(const spb_serve_opts *opts, spb_err *err);

#endif
