/* libFuzzer target for the pg_hba.conf parser and matcher: any bytes either parse into rules
 * that match without crashing, or give an error naming the file. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hba.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1), err[512] = "";
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    struct hba *h = hba_parse(buf, size, "fuzz.conf", err, sizeof(err));
    free(buf);
    if (!h) {
        CHECK(strstr(err, "fuzz.conf") != NULL);
        return 0;
    }
    struct sockaddr_storage v4 = {0}, v6 = {0};
    v4.ss_family = AF_INET;
    inet_pton(AF_INET, "10.1.2.3", &((struct sockaddr_in *)&v4)->sin_addr);
    v6.ss_family = AF_INET6;
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &((struct sockaddr_in6 *)&v6)->sin6_addr);
    const struct hba_query qs[] = {
        {.local = true, .user = "alice", .database = "alice"},
        {.ssl = true, .addr = &v4, .user = "all", .database = "db"},
        {.addr = &v6, .user = "bob", .database = "all"},
    };
    for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        const struct hba_rule *r = hba_match(h, &qs[i]);
        if (r) {
            CHECK(r->method <= HBA_PEER && r->line >= 1 && r->text);
            CHECK(r->method != HBA_PEER || r->conn == HBA_LOCAL);
            CHECK(r->method != HBA_CERT || r->conn == HBA_HOSTSSL);
        }
    }
    hba_free(h);
    return 0;
}
