/* Cancel key table: BackendKeyData (pid, secret) → the session's upstream cancel handle, and a
 * small thread pool that forwards cancels so no event loop ever blocks on one. Client
 * CancelRequests are rate-limited per address, coalesced per key and bounded in number, so a
 * flood of them can neither guess a key quickly nor hoard descriptors. */
#ifndef PGWP_CANCEL_H
#define PGWP_CANCEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct cancel_table;
struct config;

/* Bounds (documented in the README): client cancel jobs waiting for the local pool, and
 * client cancel sockets held open by queued or running jobs (local and peer together). */
#define CANCEL_LOCAL_QUEUE_MAX 128
#define CANCEL_MAX_HELD_FDS    256

struct cancel_table *cancel_table_new(void);
/* Stops the forwarding threads, dropping queued jobs (their sockets are closed) and
 * interrupting peer forwards in flight, and frees everything. */
void cancel_table_free(struct cancel_table *t);

/* Registers a key; the table takes ownership of the upstream cancel handle and frees it on
 * unregister (later, if a cancel is being forwarded with it right then). */
int cancel_register(struct cancel_table *t, uint32_t pid, uint32_t secret, void *handle);
void cancel_unregister(struct cancel_table *t, uint32_t pid, uint32_t secret);

enum cancel_result { CANCEL_FORWARDED, CANCEL_UNKNOWN_KEY, CANCEL_FAILED };

/* Matches (pid, secret) in constant time and forwards the cancel upstream (blocking). */
enum cancel_result cancel_forward(struct cancel_table *t, uint32_t pid, uint32_t secret);

/* A client's CancelRequest, as read from its connection. */
struct cancel_request {
    uint32_t pid, secret;
    int fd; /* the client's connection: always taken over, closed once the request is done
             * (after the cancel took effect, as PostgreSQL does), or at once when refused */
    const struct sockaddr *from; /* the client's address (NULL = unknown) */
    socklen_t fromlen;
    bool via_peer; /* sent with the peer-forward code: match locally, never route onward */
};

/* Handles a client CancelRequest without blocking: refused when its address is over
 * --cancel-rate-limit (a peer's forward is exempt), answered at once when no key matches,
 * coalesced when a cancel for the same key is already queued or running, otherwise queued
 * for the local pool or the owning peer's queue; dropped when those are full. */
void cancel_client_request(struct cancel_table *t, const struct cancel_request *r);

/* A proxy-initiated cancel the session must see delivered before it sends the upstream its next
 * statement: PostgreSQL ignores a cancel that arrives while it waits for a command, but one
 * still in flight when the next statement starts would cancel that statement instead. */
struct cancel_ticket;
/* Queues the cancel; when it has been forwarded the ticket is marked done and wake_fd (an
 * eventfd, -1 = none) is written. NULL on allocation failure (nothing queued). */
struct cancel_ticket *cancel_forward_tracked(struct cancel_table *t, uint32_t pid, uint32_t secret,
                                             int wake_fd);
bool cancel_ticket_done(struct cancel_ticket *k);
enum cancel_result cancel_ticket_result(struct cancel_ticket *k);
void cancel_ticket_release(struct cancel_ticket *k);

/* Constant-time equality of two 32-bit secrets. */
bool cancel_secret_equal(uint32_t a, uint32_t b);

/* A random secret from getrandom(). Returns 0 or -errno. */
int cancel_new_secret(uint32_t *out);

/* Peering: with self_id 1..255 the top byte of every secret this instance hands out is its id
 * (24 random bits remain), and a client CancelRequest whose secret names another instance is
 * forwarded to that peer ("ID=HOST:PORT", resolved here), so cancels work behind a TCP load
 * balancer. Returns 0 or -EINVAL. */
int cancel_set_peers(struct cancel_table *t, int self_id, char *const *peers, size_t n);
#define CANCEL_RATE_BURST_S 5
/* Cancels per second per client address (0 = no limit); the burst is CANCEL_RATE_BURST_S
 * seconds' worth. */
void cancel_set_rate_limit(struct cancel_table *t, unsigned per_second);
/* Both of the above from a configuration (start and reload). */
void cancel_apply_config(struct cancel_table *t, const struct config *cfg);
/* A secret for a new session, carrying this instance's id when peering is on. */
int cancel_session_secret(struct cancel_table *t, uint32_t *out);

#endif
