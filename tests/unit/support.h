/*
 * Helpers shared by the unit tests: a scratch folder per test group and small file
 * utilities. Header-only (static functions) so each test stays one executable.
 * Include after <cmocka.h>.
 */
#ifndef SPB_TEST_SUPPORT_H
#define SPB_TEST_SUPPORT_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[64];

/* Creates /tmp/spb-test-<what>-XXXXXX; returns 0 or -1 (for cmocka group setup). */
static inline int support_make_tmpdir(const char *what)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/spb-test-%s-XXXXXX", what);
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

/* Removes the scratch folder and the files in it. */
static inline void support_remove_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *de;

    if (d != NULL) {
        while ((de = readdir(d)) != NULL) {
            char path[512];
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof(path), "%s/%s", tmpdir, de->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(tmpdir);
}

/* Writes `text` to tmpdir/`name` and puts the full path in `path`. */
static inline void write_file(char *path, size_t size, const char *name, const char *text)
{
    FILE *f;

    snprintf(path, size, "%s/%s", tmpdir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

/* 1-based number of the first line of `text` containing `marker`, or 0. */
static inline int line_of(const char *text, const char *marker)
{
    const char *hit = strstr(text, marker);
    int line = 1;

    if (hit == NULL)
        return 0;
    for (const char *p = text; p < hit; p++)
        line += (*p == '\n');
    return line;
}

#endif
