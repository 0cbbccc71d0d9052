/* Cancel internals shared by cancel.c (key table, local pool) and cancel_peer.c (forwarding to
 * the instance that owns a key). */
#ifndef PGWP_CANCEL_INT_H
#define PGWP_CANCEL_INT_H

#include "cancel.h"
#include "metrics.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct cancel_entry;

struct cancel_job {
    struct cancel_job *next;
    struct cancel_table *t;
    uint32_t pid, secret;
    int close_fd;     /* client connection to close when done, -1 = none */
    bool from_client; /* a client's CancelRequest: counted in metrics */
    bool holds_slot;  /* close_fd is counted against CANCEL_MAX_HELD_FDS */
    struct cancel_ticket *ticket;
    struct cancel_entry *pinned; /* matched entry, pinned until the forward is done */
    int peer_id;                 /* 0: local; else the peer instance that owns the key */
};

/* Counts (client jobs), logs, closes the client socket, signals the ticket, frees the job.
 * o is the metrics outcome for a client job; r what a ticket reports. */
void cancel_job_finish(struct cancel_job *j, enum cancel_result r, enum metrics_cancel_outcome o);

/* ---- peers (cancel_peer.c) ---------------------------------------------------------------- */

struct cancel_peers;

/* Starts the forwarder thread. NULL on failure. */
struct cancel_peers *cancel_peers_new(void);
/* Stops the thread at once: queued and in-flight forwards are finished as dropped. */
void cancel_peers_free(struct cancel_peers *p);
/* Parses and resolves "ID=HOST:PORT" entries; queues of peers that remain are kept, jobs for
 * peers that are gone are dropped. Returns 0 or -EINVAL (nothing changed). */
int cancel_peers_set(struct cancel_peers *p, int self_id, char *const *peers, size_t n);
int cancel_peers_self_id(struct cancel_peers *p);
/* The configured peer whose id is in the secret's top byte, or 0 (this instance, or none). */
int cancel_peers_owner(struct cancel_peers *p, uint32_t secret);
/* Whether addr is one of the peers' resolved addresses (any port). */
bool cancel_peers_is_peer_addr(struct cancel_peers *p, const struct sockaddr *addr);

enum cancel_peer_submit { CANCEL_PEER_QUEUED, CANCEL_PEER_DOWN, CANCEL_PEER_FULL };
/* Queues j (j->peer_id set) for its peer; on anything but QUEUED the caller still owns j. */
enum cancel_peer_submit cancel_peers_submit(struct cancel_peers *p, struct cancel_job *j);

#endif
