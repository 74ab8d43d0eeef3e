/*
 * Subcommands of the spbridge binary. Each takes argc/argv after its own name and
 * returns the process exit code (docs/cli.md lists them).
 */
#ifndef SPB_CLI_H
#define SPB_CLI_H

#include "spbridge/config.h"
#include "spbridge/error.h"

#define SPB_EXIT_USAGE 2

int spb_cmd_translate(int argc, char **argv);
int spb_cmd_validate(int argc, char **argv);
int spb_cmd_mappings(int argc, char **argv);
int spb_cmd_config(int argc, char **argv);
int spb_cmd_serve(int argc, char **argv);
int spb_cmd_outbox(int argc, char **argv);
int spb_cmd_referrals(int argc, char **argv);
int spb_cmd_audit(int argc, char **argv);
int spb_cmd_report(int argc, char **argv);

/* Loads --config FILE (or the defaults when NULL) and logs any problem; returns 0 or an
 * spb_code. */
int spb_cli_load_config(spb_config *cfg, const char *path);

/* Reads a whole file (or stdin for "-") of at most max_bytes; *too_big is set past that. */
int spb_cli_read_input(const char *path, size_t max_bytes, char **out, size_t *len, spb_err *err);

#endif
