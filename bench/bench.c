/*
 * spbridge benchmarks. Each measures an spbridge operation and a floor: the cheapest thing
 * that must happen anyway for the same input (parsing the XML; one durable SQLite commit),
 * and prints the ratio. Ratios, not absolute times, are the figures to track: this machine
 * is shared and noisy, so the floor is measured in the same run, interleaved.
 *
 *   bench [ITERATIONS]   (default 300)
 */
#include <libxml/parser.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "spbridge/intake.h"
#include "spbridge/log.h"
#include "spbridge/mapping_set.h"
#include "spbridge/runtime.h"
#include "spbridge/store.h"
#include "spbridge/translate.h"
#include "spbridge/xml_input.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = (size_t)n;
    fclose(f);
    return buf;
}

/* Median of runs of `fn`, each run timing `iters` calls. */
typedef void (*op_fn)(void *user);
static double time_op(op_fn fn, void *user, int iters)
{
    double t0 = now_s();
    for (int i = 0; i < iters; i++)
        fn(user);
    return (now_s() - t0) / iters;
}

typedef struct tr_args {
    const char *data;
    size_t len;
    spb_translate_opts *opts;
} tr_args;

static void op_translate(void *user)
{
    tr_args *a = user;
    spb_translation tr;
    spb_err err;
    spb_err_clear(&err);
    if (spb_translate(&tr, a->data, a->len, "bench.xml", a->opts, &err) < 0) {
        fprintf(stderr, "translate failed: %s\n", err.message);
        exit(1);
    }
    spb_translation_clear(&tr);
}

static void op_parse(void *user)
{
    tr_args *a = user;
    xmlDocPtr doc = xmlReadMemory(a->data, (int)a->len, "bench.xml", NULL, XML_PARSE_NONET);
    xmlFreeDoc(doc);
}

static void report(const char *name, double op, double floor)
{
    printf("%-34s %9.3f ms   floor %9.3f ms   ratio %6.2f\n", name, op * 1000, floor * 1000,
           op / floor);
}

static void bench_translate(const char *name, const char *path, spb_translate_opts *opts, int iters)
{
    tr_args a;
    double t_op, t_floor;
    a.data = slurp(path, &a.len);
    a.opts = opts;
    if (a.data == NULL) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(1);
    }
    op_translate(&a); /* warm caches (XSD compile) */
    /* interleave so load changes hit both */
    t_op = 0;
    t_floor = 0;
    for (int r = 0; r < 3; r++) {
        t_floor += time_op(op_parse, &a, iters / 3 + 1);
        t_op += time_op(op_translate, &a, iters / 3 + 1);
    }
    report(name, t_op / 3, t_floor / 3);
    free((char *)a.data);
}

int main(int argc, char **argv)
{
    int iters = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 300;
    spb_mapping_set *maps = NULL;
    spb_translate_opts opts;
    spb_err err;
    char dir[] = "/tmp/spb-bench-XXXXXX";

    if (iters < 3)
        iters = 3;
    spb_log_set_level(SPB_LOG_WARN); /* per-event info lines would be measured too */
    spb_xml_global_init();
    spb_err_clear(&err);
    if (spb_mapping_set_load(&maps, SPB_SOURCE_DIR "/mappings", NULL, &err) < 0) {
        fprintf(stderr, "mappings: %s\n", err.message);
        return 1;
    }
    memset(&opts, 0, sizeof(opts));
    opts.maps = maps;
    printf("spbridge benchmarks (%d iterations; ratio = spbridge / floor, lower is better)\n",
           iters);
    bench_translate("translate native referral", SPB_SOURCE_DIR "/examples/native/referral.xml",
                    &opts, iters);
    bench_translate("translate GP2GP extract",
                    SPB_SOURCE_DIR "/examples/gp2gp/referral-ehr-extract.xml", &opts, iters);
    if (access(SPB_SOURCE_DIR "/../shared/gp2gp/samples/RCMR_IN030000UK06-schema-example.xml",
               R_OK) == 0)
        bench_translate("scan 800 KB GP2GP record",
                        SPB_SOURCE_DIR
                        "/../shared/gp2gp/samples/RCMR_IN030000UK06-schema-example.xml",
                        &opts, iters / 10 + 3);

    /* intake: translate + one durable transaction, against a bare durable commit */
    if (mkdtemp(dir) != NULL) {
        char path[128], fpath[128];
        spb_store *store = NULL;
        sqlite3 *db = NULL;
        spb_config *cfg = calloc(1, sizeof(*cfg));
        spb_runtime rt;
        size_t len;
        char *tmpl = slurp(SPB_SOURCE_DIR "/examples/native/referral.xml", &len);
        int n = iters / 3 + 3;
        double t0, t_op, t_floor;

        snprintf(path, sizeof(path), "%s/store.db", dir);
        snprintf(fpath, sizeof(fpath), "%s/floor.db", dir);
        spb_config_defaults(cfg);
        spb_store_open(&store, path, &err);
        spb_runtime_init(&rt, cfg, maps);
        sqlite3_open(fpath, &db);
        sqlite3_exec(db,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE t(id "
                     "INTEGER PRIMARY KEY, body TEXT);",
                     NULL, NULL, NULL);
        t0 = now_s();
        for (int i = 0; i < n; i++) {
            char *doc = strdup(tmpl), *at = strstr(doc, "5f0c2b1e-7a43-4d0b-9a36-2f1d8c7e9b10");
            spb_intake_meta meta = {"bench", "B83002", "bench", "bench.xml"};
            spb_intake_outcome out;
            char id[40];
            snprintf(id, sizeof(id), "%08x-7a43-4d0b-9a36-2f1d8c7e9b10", i);
            memcpy(at, id, 36);
            spb_intake_document(&rt, store, doc, len, &meta, "B83002", NULL, &out);
            if (out.http_status != 202) {
                fprintf(stderr, "intake answered %d\n", out.http_status);
                return 1;
            }
            json_decref(out.body);
            free(doc);
        }
        t_op = (now_s() - t0) / n;
        t0 = now_s();
        for (int i = 0; i < n; i++) {
            sqlite3_stmt *st;
            sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
            sqlite3_prepare_v2(db, "INSERT INTO t(body) VALUES (?)", -1, &st, NULL);
            sqlite3_bind_text(st, 1, tmpl, (int)len, SQLITE_STATIC);
            sqlite3_step(st);
            sqlite3_finalize(st);
            sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        }
        t_floor = (now_s() - t0) / n;
        report("intake (translate + store, durable)", t_op, t_floor);
        sqlite3_close(db);
        spb_store_close(store);
        rt.maps = NULL; /* freed below */
        spb_runtime_destroy(&rt);
        free(tmpl);
        {
            char cmd[200];
            snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
            if (system(cmd) != 0)
                fprintf(stderr, "could not remove %s\n", dir);
        }
    }
    spb_mapping_set_free(maps);
    spb_xml_global_cleanup();
    return 0;
}
