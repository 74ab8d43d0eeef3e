/*
 * What the running service shares between its threads: the current configuration and
 * mapping set (swapped whole on reload, read under a read lock), the stop flag, and the
 * counters behind /metrics. Every field that changes while threads run is either atomic or
 * behind `lock`.
 */
#ifndef SPB_RUNTIME_H
#define SPB_RUNTIME_H

#include <pthread.h>
#include <stdatomic.h>

#include "spbridge/config.h"
#include "spbridge/mapping_set.h"

#define SPB_LATENCY_BUCKETS 12

typedef struct spb_metrics {
    atomic_long delivered;
    atomic_long dead;
    atomic_long retries;
    atomic_long failed_attempts;
    atomic_long accepted;
    atomic_long refused;
    atomic_long latency_count;
    atomic_long latency_sum_ms;
    atomic_long latency_le[SPB_LATENCY_BUCKETS]; /* cumulative counts per bucket */
} spb_metrics;

/* Upper bounds (seconds) of the delivery latency histogram buckets. */
extern const double spb_latency_bounds[SPB_LATENCY_BUCKETS];

typedef struct spb_runtime {
    pthread_rwlock_t lock; /* guards cfg and maps */
    spb_config *cfg;       /* owned */
    spb_mapping_set *maps; /* owned */
    atomic_int stopping;
    spb_metrics metrics;
    pthread_mutex_t wake_lock; /* delivery workers sleep on wake */
    pthread_cond_t wake;
} spb_runtime;

int spb_runtime_init(spb_runtime *rt, spb_config *cfg, spb_mapping_set *maps);
void spb_runtime_destroy(spb_runtime *rt);

/* Swaps in a new configuration and mapping set (takes ownership), freeing the old ones. */
void spb_runtime_swap(spb_runtime *rt, spb_config *cfg, spb_mapping_set *maps);

/* Wakes delivery workers (new work, or stop). */
void spb_runtime_wake(spb_runtime *rt);

/*
 * Opens a store handle for the calling thread (SQLite handles are per thread) on the
 * configured store_path; logs `event` with the error and returns NULL when it cannot.
 */
struct spb_store *spb_runtime_open_store(spb_runtime *rt, const char *event);

/* Records one delivery latency. */
void spb_metrics_observe_latency(spb_metrics *m, long ms);

#endif
