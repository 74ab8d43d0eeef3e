/* Helpers shared by subcommands: configuration loading and bounded input reading. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "spbridge/log.h"

int spb_cli_load_config(spb_config *cfg, const char *path)
{
    spb_err err;
    spb_diags *diags;
    int rc = 0;

    spb_config_defaults(cfg);
    if (path == NULL)
        return 0;
    diags = calloc(1, sizeof(*diags));
    if (diags == NULL)
        return SPB_ENOMEM;
    spb_err_clear(&err);
    rc = spb_config_load(cfg, path, diags, &err);
    if (rc < 0) {
        for (size_t i = 0; i < diags->n; i++) {
            char line[16];
            snprintf(line, sizeof(line), "%d", diags->items[i].line);
            spb_log(SPB_LOG_ERROR, "config_invalid", "file", diags->items[i].file, "line",
                    diags->items[i].line ? line : NULL, "error", diags->items[i].message,
                    (const char *)NULL);
        }
    } else {
        spb_log_level lvl;
        if (spb_log_parse_level(cfg->log_level, &lvl) == 0)
            spb_log_set_level(lvl);
    }
    free(diags);
    return rc;
}

int spb_cli_read_input(const char *path, size_t max_bytes, char **out, size_t *len, spb_err *err)
{
    FILE *f;
    char *buf = NULL;
    size_t cap = 65536, n = 0;
    int is_stdin = strcmp(path, "-") == 0;
    int rc = 0;

    *out = NULL;
    *len = 0;
    f = is_stdin ? stdin : fopen(path, "rb");
    if (f == NULL) {
        spb_err_set(err, SPB_ENOTFOUND, SPB_ISSUE_NOT_FOUND, "cannot open the input file");
        spb_err_hint(err, "check the path and that the file is readable");
        spb_err_where(err, path, 0, 0, NULL);
        return SPB_ENOTFOUND;
    }
    buf = malloc(cap + 1);
    if (buf == NULL) {
        rc = spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
        goto out;
    }
    for (;;) {
        size_t got;
        if (n == cap) {
            char *grown;
            if (cap > max_bytes) {
                spb_err_set(err, SPB_ETOOBIG, SPB_ISSUE_TOO_LONG,
                            "the document is over the limit of %zu bytes", max_bytes);
                spb_err_hint(err, "send one event or consultation per document, or raise "
                                  "xml_max_bytes");
                spb_err_where(err, path, 0, 0, NULL);
                rc = SPB_ETOOBIG;
                goto out;
            }
            cap *= 2;
            grown = realloc(buf, cap + 1);
            if (grown == NULL) {
                rc = spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
                goto out;
            }
            buf = grown;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        spb_err_set(err, SPB_ERR, SPB_ISSUE_EXCEPTION, "read error");
        spb_err_where(err, path, 0, 0, NULL);
        rc = SPB_ERR;
        goto out;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    buf = NULL;
out:
    free(buf);
    if (!is_stdin)
        fclose(f);
    return rc;
}
