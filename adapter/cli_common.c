/* Helpers shared by subcommands: configuration loading and bounded input reading. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#include "spbridge/buf.h"
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
    spb_buf buf;
    char chunk[65536];
    int is_stdin = strcmp(path, "-") == 0;
    int rc = 0;

    *out = NULL;
    *len = 0;
    /* Read up to twice the limit, so translation can say how big a document somewhat over
     * it is; past that, stop reading. */
    spb_buf_init(&buf, max_bytes < sizeof(chunk) ? 2 * sizeof(chunk) : 2 * max_bytes);
    f = is_stdin ? stdin : fopen(path, "rb");
    if (f == NULL) {
        spb_err_set(err, SPB_ENOTFOUND, SPB_ISSUE_NOT_FOUND, "cannot open the input file");
        spb_err_hint(err, "check the path and that the file is readable");
        spb_err_where(err, path, 0, 0, NULL);
        return SPB_ENOTFOUND;
    }
    for (size_t got; rc == 0 && (got = fread(chunk, 1, sizeof(chunk), f)) > 0;)
        rc = spb_buf_append(&buf, chunk, got);
    if (rc == SPB_ETOOBIG) {
        spb_err_set(err, SPB_ETOOBIG, SPB_ISSUE_TOO_LONG,
                    "the document is over the limit of %zu bytes", max_bytes);
        spb_err_hint(err, "send one event or consultation per document, or raise "
                          "xml_max_bytes");
        spb_err_where(err, path, 0, 0, NULL);
    } else if (rc < 0) {
        spb_err_set(err, rc, SPB_ISSUE_EXCEPTION, "out of memory");
    } else if (ferror(f)) {
        rc = spb_err_set(err, SPB_ERR, SPB_ISSUE_EXCEPTION, "read error");
        spb_err_where(err, path, 0, 0, NULL);
    } else {
        *out = spb_buf_take(&buf, len);
        if (*out == NULL)
            rc = spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
    }
    spb_buf_free(&buf);
    if (!is_stdin)
        fclose(f);
    return rc;
}
