/*
 * The outcome follower: learns of every change to the Tasks spbridge created (polling
 * each service, and notifications received on /fhir/notify), checks each version against
 * the Task state machine and the right patient, and queues the write-back of its outcome
 * (and the closing of the ServiceRequest when the Task ends) through the durable outbox.
 */
#ifndef SPB_FOLLOWER_H
#define SPB_FOLLOWER_H

#include "spbridge/error.h"
#include "spbridge/runtime.h"

typedef struct spb_follower spb_follower;

int spb_follower_start(spb_follower **out, spb_runtime *rt, spb_err *err);

/* Wakes the follower now (a notification arrived). */
void spb_follower_wake(spb_follower *f);

void spb_follower_stop(spb_follower *f);

/* 1 if `from` -> `to` is allowed by the Task state machine (domain.md), else 0. Same
 * status is allowed (a version that changed something else). */
int spb_task_transition_ok(const char *from, const char *to);

/* 1 for the statuses that end a Task (completed, failed, rejected, cancelled,
 * entered-in-error). */
int spb_task_status_terminal(const char *status);

#endif
