/* Cancel key table: BackendKeyData (pid, secret) → the session's upstream cancel handle. */
#ifndef PGWP_CANCEL_H
#define PGWP_CANCEL_H

#include <stdbool.h>
#include <stdint.h>

struct cancel_table;

struct cancel_table *cancel_table_new(void);
void cancel_table_free(struct cancel_table *t);

/* Registers a key; handle is an upstream cancel handle owned by the caller until
 * cancel_unregister returns (which waits for any cancel in flight on it). */
int cancel_register(struct cancel_table *t, uint32_t pid, uint32_t secret, void *handle);
void cancel_unregister(struct cancel_table *t, uint32_t pid);

enum cancel_result { CANCEL_FORWARDED, CANCEL_UNKNOWN_KEY, CANCEL_FAILED };

/* Matches (pid, secret) in constant time and forwards the cancel upstream. */
enum cancel_result cancel_forward(struct cancel_table *t, uint32_t pid, uint32_t secret);

/* Constant-time equality of two 32-bit secrets. */
bool cancel_secret_equal(uint32_t a, uint32_t b);

/* A random secret from getrandom(). Returns 0 or -errno. */
int cancel_new_secret(uint32_t *out);

#endif
