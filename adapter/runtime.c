/* Shared service state; see runtime.h. */
#include "spbridge/runtime.h"

#include "spbridge/log.h"
#include "spbridge/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double spb_latency_bounds[SPB_LATENCY_BUCKETS] = {0.05, 0.1, 0.25, 0.5, 1,   2.5,
                                                        5,    10,  30,   60,  300, 3600};

int spb_runtime_init(spb_runtime *rt, spb_config *cfg, spb_mapping_set *maps)
{
    memset(rt, 0, sizeof(*rt));
    if (pthread_rwlock_init(&rt->lock, NULL) != 0)
        return -1;
    pthread_mutex_init(&rt->wake_lock, NULL);
    pthread_cond_init(&rt->wake, NULL);
    rt->cfg = cfg;
    rt->maps = maps;
    return 0;
}

void spb_runtime_destroy(spb_runtime *rt)
{
    spb_mapping_set_free(rt->maps);
    free(rt->cfg);
    pthread_rwlock_destroy(&rt->lock);
    pthread_mutex_destroy(&rt->wake_lock);
    pthread_cond_destroy(&rt->wake);
}

void spb_runtime_swap(spb_runtime *rt, spb_config *cfg, spb_mapping_set *maps)
{
    spb_config *old_cfg;
    spb_mapping_set *old_maps;

    pthread_rwlock_wrlock(&rt->lock);
    old_cfg = rt->cfg;
    old_maps = rt->maps;
    rt->cfg = cfg;
    rt->maps = maps;
    pthread_rwlock_unlock(&rt->lock);
    free(old_cfg);
    spb_mapping_set_free(old_maps);
}

void spb_runtime_wake(spb_runtime *rt)
{
    pthread_mutex_lock(&rt->wake_lock);
    pthread_cond_broadcast(&rt->wake);
    pthread_mutex_unlock(&rt->wake_lock);
}

struct spb_store *spb_runtime_open_store(spb_runtime *rt, const char *event)
{
    spb_store *store = NULL;
    char path[512];
    spb_err err;

    pthread_rwlock_rdlock(&rt->lock);
    snprintf(path, sizeof(path), "%s", rt->cfg->store_path);
    pthread_rwlock_unlock(&rt->lock);
    spb_err_clear(&err);
    if (spb_store_open(&store, path, &err) < 0) {
        spb_log_err(event, &err);
        return NULL;
    }
    return store;
}

void spb_metrics_observe_latency(spb_metrics *m, long ms)
{
    atomic_fetch_add(&m->latency_count, 1);
    atomic_fetch_add(&m->latency_sum_ms, ms);
    for (int i = 0; i < SPB_LATENCY_BUCKETS; i++) {
        if ((double)ms / 1000.0 <= spb_latency_bounds[i])
            atomic_fetch_add(&m->latency_le[i], 1);
    }
}
