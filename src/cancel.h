/* Cancel key table: BackendKeyData (pid, secret) → the session's upstream cancel handle, and a
 * small thread pool that forwards cancels so no event loop ever blocks on one. */
#ifndef PGWP_CANCEL_H
#define PGWP_CANCEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cancel_table;

struct cancel_table *cancel_table_new(void);
/* Stops the forwarding threads (after the queued jobs) and frees everything. */
void cancel_table_free(struct cancel_table *t);

/* Registers a key; the table takes ownership of the upstream cancel handle and frees it on
 * unregister (later, if a cancel is being forwarded with it right then). */
int cancel_register(struct cancel_table *t, uint32_t pid, uint32_t secret, void *handle);
void cancel_unregister(struct cancel_table *t, uint32_t pid);

enum cancel_result { CANCEL_FORWARDED, CANCEL_UNKNOWN_KEY, CANCEL_FAILED };

/* Matches (pid, secret) in constant time and forwards the cancel upstream (blocking). */
enum cancel_result cancel_forward(struct cancel_table *t, uint32_t pid, uint32_t secret);

/* Queues cancel_forward on a pool thread. close_fd >= 0 is closed once the cancel has been
 * forwarded (a client's cancel connection is closed after its cancel took effect, as PostgreSQL
 * does). from_client: count it as a client CancelRequest in metrics. Returns 0 or -ENOMEM. */
int cancel_forward_async(struct cancel_table *t, uint32_t pid, uint32_t secret, int close_fd,
                         bool from_client);

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
 * forwarded to that peer ("ID=HOST:PORT"), so cancels work behind a TCP load balancer.
 * Returns 0 or -EINVAL. */
int cancel_set_peers(struct cancel_table *t, int self_id, char *const *peers, size_t n);
/* A secret for a new session, carrying this instance's id when peering is on. */
int cancel_session_secret(struct cancel_table *t, uint32_t *out);

#endif
