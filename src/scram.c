/* SCRAM-SHA-256(-PLUS), server side. The parser follows PostgreSQL's (auth-scram.c): the same
 * order of checks, so a client gets the same SQLSTATE and text for the same mistake. Every
 * attribute is read from a NUL-terminated copy whose length was checked first, so no read can
 * run past the message. */
#include "scram.h"
#include "text_len.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define B64_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

/* ---------- primitives ---------- */

static void hmac(const uint8_t *key, size_t keylen, const void *data, size_t len,
                 uint8_t out[SCRAM_KEY_LEN])
{
    unsigned int n = SCRAM_KEY_LEN;
    if (!HMAC(EVP_sha256(), key, (int)keylen, data, len, out, &n))
        memset(out, 0, SCRAM_KEY_LEN); /* fails closed: no client key hashes to this */
}

static void sha256(const uint8_t *in, size_t len, uint8_t out[SCRAM_KEY_LEN])
{
    SHA256(in, len, out);
}

void scram_derive(const uint8_t key[SCRAM_KEY_LEN], const char *label, const char *user,
                  uint8_t out[SCRAM_KEY_LEN])
{
    char buf[64 + 256];
    size_t l = strlen(label) + 1, u = text_len(user, sizeof(buf) - 64);
    memcpy(buf, label, l < 64 ? l : 64);
    memcpy(buf + (l < 64 ? l : 64), user, u);
    hmac(key, SCRAM_KEY_LEN, buf, (l < 64 ? l : 64) + u, out);
}

int scram_b64_encode(const uint8_t *in, size_t len, char *out, size_t outlen)
{
    size_t need = (len + 2) / 3 * 4;
    if (need + 1 > outlen)
        return -1;
    EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    out[need] = 0;
    return (int)need;
}

int scram_b64_decode(const char *in, size_t len, uint8_t *out, size_t outlen)
{
    if (len % 4)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            char c = in[i + k];
            const char *p = c ? strchr(B64_CHARS, c) : NULL;
            if (c == '=' && i + 4 == len && k >= 2 && (k == 3 || in[i + 3] == '=')) {
                pad++;
                v <<= 6;
                continue;
            }
            if (!p || pad)
                return -1; /* whitespace, a stray '=', or data after padding */
            v = v << 6 | (uint32_t)(p - B64_CHARS);
        }
        uint8_t b[3] = {(uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
        for (int k = 0; k < 3 - pad; k++) {
            if (o == outlen)
                return -1;
            out[o++] = b[k];
        }
    }
    return (int)o;
}

/* ---------- secrets ---------- */

int scram_make_secret(const char *password, size_t pwlen, const uint8_t *salt, size_t salt_len,
                      int iterations, struct scram_secret *out)
{
    uint8_t salted[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN];
    if (salt_len > SCRAM_SALT_MAX || iterations < 1)
        return -1;
    if (PKCS5_PBKDF2_HMAC(password, (int)pwlen, salt, (int)salt_len, iterations, EVP_sha256(),
                          SCRAM_KEY_LEN, salted) != 1)
        return -1;
    memset(out, 0, sizeof(*out));
    out->iterations = iterations;
    memcpy(out->salt, salt, salt_len);
    out->salt_len = salt_len;
    hmac(salted, SCRAM_KEY_LEN, "Client Key", 10, client_key);
    sha256(client_key, SCRAM_KEY_LEN, out->stored_key);
    hmac(salted, SCRAM_KEY_LEN, "Server Key", 10, out->server_key);
    OPENSSL_cleanse(salted, sizeof(salted));
    OPENSSL_cleanse(client_key, sizeof(client_key));
    return 0;
}

void scram_mock_secret(const uint8_t key[SCRAM_KEY_LEN], const char *user, int iterations,
                       struct scram_secret *out)
{
    uint8_t d[SCRAM_KEY_LEN];
    memset(out, 0, sizeof(*out));
    out->iterations = iterations;
    scram_derive(key, "salt", user, d);
    memcpy(out->salt, d, SCRAM_SALT_LEN);
    out->salt_len = SCRAM_SALT_LEN;
    /* keys from the same key: the verification runs the same HMACs and hash as a real one */
    scram_derive(key, "stored", user, out->stored_key);
    scram_derive(key, "server", user, out->server_key);
}

static int decode_exact(const char *s, size_t len, uint8_t *out, size_t want)
{
    uint8_t buf[SCRAM_SALT_MAX];
    int n = scram_b64_decode(s, len, buf, sizeof(buf));
    if (n != (int)want)
        return -1;
    memcpy(out, buf, want);
    return 0;
}

int scram_parse_secret(const char *s, struct scram_secret *out)
{
    static const char prefix[] = "SCRAM-SHA-256$";
    if (!s || strncmp(s, prefix, sizeof(prefix) - 1) != 0)
        return -1;
    const char *p = s + sizeof(prefix) - 1, *colon = strchr(p, ':');
    const char *dollar = colon ? strchr(colon, '$') : NULL;
    const char *colon2 = dollar ? strchr(dollar, ':') : NULL;
    if (!colon || !dollar || !colon2 || colon == p)
        return -1;
    memset(out, 0, sizeof(*out));
    long iter = 0;
    for (const char *q = p; q < colon; q++) {
        if (*q < '0' || *q > '9' || iter > 100000000)
            return -1;
        iter = iter * 10 + (*q - '0');
    }
    if (iter < 1)
        return -1;
    out->iterations = (int)iter;
    int n = scram_b64_decode(colon + 1, (size_t)(dollar - colon - 1), out->salt, SCRAM_SALT_MAX);
    if (n <= 0)
        return -1;
    out->salt_len = (size_t)n;
    if (decode_exact(dollar + 1, (size_t)(colon2 - dollar - 1), out->stored_key, SCRAM_KEY_LEN) ||
        decode_exact(colon2 + 1, strlen(colon2 + 1), out->server_key, SCRAM_KEY_LEN))
        return -1;
    return 0;
}

int scram_format_secret(const struct scram_secret *sec, char *out, size_t outlen)
{
    char salt[SCRAM_SALT_MAX * 2], sk[64], svk[64];
    if (scram_b64_encode(sec->salt, sec->salt_len, salt, sizeof(salt)) < 0 ||
        scram_b64_encode(sec->stored_key, SCRAM_KEY_LEN, sk, sizeof(sk)) < 0 ||
        scram_b64_encode(sec->server_key, SCRAM_KEY_LEN, svk, sizeof(svk)) < 0)
        return -1;
    int n = snprintf(out, outlen, "SCRAM-SHA-256$%d:%s$%s:%s", sec->iterations, salt, sk, svk);
    return n < 0 || (size_t)n >= outlen ? -1 : n;
}

/* ---------- the initial response ---------- */

int scram_parse_initial(const uint8_t *payload, size_t len, const char **mech, const uint8_t **data,
                        int32_t *datalen, const char **why)
{
    const uint8_t *nul = memchr(payload, 0, len);
    if (!nul) {
        *why = "invalid string in message";
        return -1;
    }
    *mech = (const char *)payload;
    size_t rest = len - (size_t)(nul + 1 - payload);
    const uint8_t *p = nul + 1;
    if (rest < 4) {
        *why = "insufficient data left in message";
        return -1;
    }
    int32_t n = (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
    rest -= 4;
    /* compared with what is left, never by adding to a pointer: a huge length cannot wrap */
    if (n < -1 || (n >= 0 && (size_t)n > rest)) {
        *why = "insufficient data left in message";
        return -1;
    }
    if ((n == -1 && rest != 0) || (n >= 0 && (size_t)n != rest)) {
        *why = "invalid message format";
        return -1;
    }
    *data = p + 4;
    *datalen = n;
    return 0;
}

/* ---------- the exchange ---------- */

static enum scram_status err(struct scram_state *st, const char *code, const char *message,
                             const char *detail)
{
    snprintf(st->code, sizeof(st->code), "%s", code);
    snprintf(st->message, sizeof(st->message), "%s", message);
    snprintf(st->detail, sizeof(st->detail), "%s", detail ? detail : "");
    st->stage = SCRAM_STAGE_DONE;
    return SCRAM_ERROR;
}

#define MALFORMED "malformed SCRAM message"

/* PostgreSQL's sanitize_char: printable ASCII as itself, anything else as 0x%02x. */
static const char *shown(char c, char buf[8])
{
    if (c >= 0x21 && c < 0x7f)
        snprintf(buf, 8, "%c", c);
    else
        snprintf(buf, 8, "0x%02x", (unsigned char)c);
    return buf;
}

/* Reads "<attr>=<value>" up to the next ',' (consumed) or the end. NULL on a mismatch, with
 * the error recorded. */
static char *read_attr(struct scram_state *st, char **input, char attr)
{
    char *begin = *input, c[8], d[80];
    if (*begin != attr) {
        snprintf(d, sizeof(d), "Expected attribute \"%c\" but found \"%s\".", attr,
                 shown(*begin, c));
        err(st, "08P01", MALFORMED, d);
        return NULL;
    }
    if (begin[1] != '=') {
        snprintf(d, sizeof(d), "Expected character \"=\" for attribute \"%c\".", attr);
        err(st, "08P01", MALFORMED, d);
        return NULL;
    }
    begin += 2;
    char *end = begin + strcspn(begin, ",");
    *input = *end ? end + 1 : end;
    *end = 0;
    return begin;
}

/* Any "<letter>=<value>" attribute (an extension, or the proof). */
static char *read_any_attr(struct scram_state *st, char **input, char *attr)
{
    char *begin = *input, c[8], d[80];
    if (!*begin) {
        err(st, "08P01", MALFORMED, "Attribute expected, but found end of string.");
        return NULL;
    }
    if (!((*begin >= 'A' && *begin <= 'Z') || (*begin >= 'a' && *begin <= 'z'))) {
        snprintf(d, sizeof(d), "Attribute expected, but found invalid character \"%s\".",
                 shown(*begin, c));
        err(st, "08P01", MALFORMED, d);
        return NULL;
    }
    *attr = *begin;
    return read_attr(st, input, *begin);
}

static bool printable(const char *s)
{
    for (; *s; s++)
        if (*s < 0x21 || *s > 0x7e || *s == ',')
            return false;
    return true;
}

void scram_init(struct scram_state *st, const struct scram_secret *secret, bool mock,
                bool plus_offered, bool plus, const uint8_t *cbind, size_t cbind_len)
{
    memset(st, 0, sizeof(*st));
    st->secret = *secret;
    st->mock = mock;
    st->plus_offered = plus_offered;
    st->plus = plus && plus_offered && cbind_len > 0 && cbind_len <= SCRAM_CBIND_MAX;
    if (st->plus) {
        memcpy(st->cbind, cbind, cbind_len);
        st->cbind_len = cbind_len;
    }
}

static const char plus_without_data[] = "The client selected SCRAM-SHA-256-PLUS, but the SCRAM "
                                        "message does not include channel binding data.";

/* The gs2 header: flag, then an empty authzid. */
static enum scram_status read_gs2(struct scram_state *st, char **input)
{
    char *in = *input, c[8], d[80];
    switch (*in) {
    case 'y':
        if (!st->plus && st->plus_offered)
            /* RFC 5802 §6: the client thinks the server cannot bind, but it offered to: a
             * man in the middle removed -PLUS from the list */
            return err(st, "28000", "SCRAM channel binding negotiation error",
                       "The client supports SCRAM channel binding but thinks the server does "
                       "not.  However, this server does support channel binding.");
        /* fall through */
    case 'n':
        if (st->plus)
            return err(st, "08P01", MALFORMED, plus_without_data);
        st->flag = *in++;
        if (*in != ',') {
            snprintf(d, sizeof(d), "Comma expected, but found character \"%s\".", shown(*in, c));
            return err(st, "08P01", MALFORMED, d);
        }
        in++;
        break;
    case 'p': {
        if (!st->plus)
            return err(st, "08P01", MALFORMED,
                       "The client selected SCRAM-SHA-256 without channel binding, but the SCRAM "
                       "message includes channel binding data.");
        char *type = read_attr(st, &in, 'p');
        if (!type)
            return SCRAM_ERROR;
        if (strcmp(type, SCRAM_CBIND_TYPE) != 0) {
            char msg[160], t[64];
            snprintf(t, sizeof(t), "%.40s", type);
            for (char *q = t; *q; q++)
                if (*q < 0x20 || *q > 0x7e)
                    *q = '?';
            snprintf(msg, sizeof(msg), "unsupported SCRAM channel-binding type \"%s\"", t);
            return err(st, "08P01", msg, NULL);
        }
        st->flag = 'p';
        break;
    }
    default:
        snprintf(d, sizeof(d), "Unexpected channel-binding flag \"%s\".", shown(*in, c));
        return err(st, "08P01", MALFORMED, d);
    }
    if (*in == 'a')
        return err(st, "0A000", "client uses authorization identity, but it is not supported",
                   NULL);
    if (*in != ',') {
        snprintf(d, sizeof(d), "Unexpected attribute \"%s\" in client-first-message.",
                 shown(*in, c));
        return err(st, "08P01", MALFORMED, d);
    }
    *input = in + 1;
    return SCRAM_CONTINUE;
}

static enum scram_status client_first(struct scram_state *st, char *in, const char *server_nonce,
                                      char *out, size_t outcap, size_t *outlen)
{
    if (read_gs2(st, &in) != SCRAM_CONTINUE)
        return SCRAM_ERROR;
    st->first_bare_len = strlen(in);
    memcpy(st->first_bare, in, st->first_bare_len + 1);
    if (*in == 'm')
        return err(st, "0A000", "client requires an unsupported SCRAM extension", NULL);
    char attr;
    if (!read_attr(st, &in, 'n')) /* ignored: the startup packet's user counts */
        return SCRAM_ERROR;
    char *nonce = read_attr(st, &in, 'r');
    if (!nonce)
        return SCRAM_ERROR;
    if (!printable(nonce))
        return err(st, "08P01", "non-printable characters in SCRAM nonce", NULL);
    while (*in)
        if (!read_any_attr(st, &in, &attr))
            return SCRAM_ERROR;
    char salt[SCRAM_SALT_MAX * 2];
    scram_b64_encode(st->secret.salt, st->secret.salt_len, salt, sizeof(salt));
    int n = snprintf(st->server_first, sizeof(st->server_first), "r=%s%s,s=%s,i=%d", nonce,
                     server_nonce, salt, st->secret.iterations);
    if (n < 0 || (size_t)n >= sizeof(st->server_first) || (size_t)n >= outcap)
        return err(st, "08P01", MALFORMED, "The message is too long.");
    st->server_first_len = (size_t)n;
    st->client_nonce_len = strlen(nonce);
    st->nonce_len = st->client_nonce_len + strlen(server_nonce);
    memcpy(out, st->server_first, (size_t)n + 1);
    *outlen = (size_t)n;
    st->stage = SCRAM_STAGE_FINAL;
    return SCRAM_CONTINUE;
}

/* c=: base64 of the gs2 header, plus the certificate hash with -PLUS. */
static enum scram_status check_cbind(struct scram_state *st, const char *c)
{
    if (st->plus) {
        static const char hdr[] = "p=" SCRAM_CBIND_TYPE ",,";
        uint8_t input[sizeof(hdr) + SCRAM_CBIND_MAX];
        char want[2 * sizeof(input)];
        memcpy(input, hdr, sizeof(hdr) - 1);
        memcpy(input + sizeof(hdr) - 1, st->cbind, st->cbind_len);
        scram_b64_encode(input, sizeof(hdr) - 1 + st->cbind_len, want, sizeof(want));
        size_t wl = strlen(want), cl = strlen(c);
        if (wl != cl || CRYPTO_memcmp(want, c, wl) != 0)
            return err(st, "28000", "SCRAM channel binding check failed", NULL);
        return SCRAM_CONTINUE;
    }
    if ((st->flag == 'n' && strcmp(c, "biws") == 0) || (st->flag == 'y' && strcmp(c, "eSws") == 0))
        return SCRAM_CONTINUE;
    return err(st, "08P01", "unexpected SCRAM channel-binding attribute in client-final-message",
               NULL);
}

/* H(proof XOR HMAC(StoredKey, AuthMessage)) == StoredKey, compared in constant time; the
 * server signature is computed on every path, so a mock costs what a real check costs. */
static bool verify(struct scram_state *st, const char *without_proof, size_t wlen,
                   const uint8_t proof[SCRAM_KEY_LEN], uint8_t sig[SCRAM_KEY_LEN])
{
    char auth[3 * SCRAM_MAX_MESSAGE + 256];
    size_t n = 0;
    memcpy(auth + n, st->first_bare, st->first_bare_len), n += st->first_bare_len;
    auth[n++] = ',';
    memcpy(auth + n, st->server_first, st->server_first_len), n += st->server_first_len;
    auth[n++] = ',';
    memcpy(auth + n, without_proof, wlen), n += wlen;
    uint8_t client_sig[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN];
    hmac(st->secret.stored_key, SCRAM_KEY_LEN, auth, n, client_sig);
    for (int i = 0; i < SCRAM_KEY_LEN; i++)
        client_key[i] = proof[i] ^ client_sig[i];
    sha256(client_key, SCRAM_KEY_LEN, stored);
    hmac(st->secret.server_key, SCRAM_KEY_LEN, auth, n, sig);
    bool ok = CRYPTO_memcmp(stored, st->secret.stored_key, SCRAM_KEY_LEN) == 0;
    OPENSSL_cleanse(client_key, sizeof(client_key));
    return ok && !st->mock;
}

static enum scram_status client_final(struct scram_state *st, char *msg, const char *orig,
                                      char *out, size_t outcap, size_t *outlen)
{
    char *in = msg, attr = 0, *value = NULL, *proof_at = NULL;
    char *c = read_attr(st, &in, 'c');
    if (!c || check_cbind(st, c) != SCRAM_CONTINUE)
        return SCRAM_ERROR;
    const char *nonce = read_attr(st, &in, 'r');
    if (!nonce)
        return SCRAM_ERROR;
    do {
        proof_at = in - 1; /* the ',' before "p=": the without-proof part ends there */
        value = read_any_attr(st, &in, &attr);
        if (!value)
            return SCRAM_ERROR;
    } while (attr != 'p');
    uint8_t proof[SCRAM_KEY_LEN];
    if (decode_exact(value, strlen(value), proof, SCRAM_KEY_LEN))
        return err(st, "08P01", MALFORMED, "Malformed proof in client-final-message.");
    if (*in)
        return err(st, "08P01", MALFORMED, "Garbage found at the end of client-final-message.");
    if (strlen(nonce) != st->nonce_len || memcmp(nonce, st->server_first + 2, st->nonce_len) != 0)
        return err(st, "08P01", "invalid SCRAM response", "Nonce does not match.");
    st->stage = SCRAM_STAGE_DONE;
    uint8_t sig[SCRAM_KEY_LEN];
    /* msg was cut into pieces by the reads: the without-proof part comes from the original */
    bool ok = verify(st, orig, (size_t)(proof_at - msg), proof, sig);
    if (!ok)
        return SCRAM_FAILED;
    char b64[64];
    scram_b64_encode(sig, SCRAM_KEY_LEN, b64, sizeof(b64));
    int n = snprintf(out, outcap, "v=%s", b64);
    *outlen = n > 0 ? (size_t)n : 0;
    return SCRAM_OK;
}

enum scram_status scram_exchange(struct scram_state *st, const uint8_t *msg, size_t len,
                                 const char *server_nonce, char *out, size_t outcap, size_t *outlen)
{
    char copy[SCRAM_MAX_MESSAGE + 1], orig[SCRAM_MAX_MESSAGE + 1];
    *outlen = 0;
    if (outcap)
        out[0] = 0;
    if (st->stage == SCRAM_STAGE_DONE)
        return err(st, "08P01", MALFORMED, "The exchange is over.");
    if (len == 0)
        return err(st, "08P01", MALFORMED, "The message is empty.");
    if (len > SCRAM_MAX_MESSAGE)
        return err(st, "08P01", MALFORMED, "The message is too long.");
    if (memchr(msg, 0, len))
        return err(st, "08P01", MALFORMED, "Message length does not match input length.");
    if (outcap < 2 * SCRAM_MAX_MESSAGE)
        return err(st, "08P01", MALFORMED, "The message is too long.");
    memcpy(copy, msg, len);
    copy[len] = 0;
    if (st->stage == SCRAM_STAGE_FIRST)
        return client_first(st, copy, server_nonce, out, outcap, outlen);
    memcpy(orig, msg, len);
    orig[len] = 0;
    return client_final(st, copy, orig, out, outcap, outlen);
}

/* ---------- the client side (tests, benchmark) ---------- */

int scram_client_final(const char *password, const char *client_first_bare,
                       const char *server_first, const char *cbind_b64, char *out, size_t outlen)
{
    const char *r = strstr(server_first, "r="), *s = strstr(server_first, ",s=");
    const char *i = strstr(server_first, ",i=");
    if (!r || !s || !i)
        return -1;
    uint8_t salt[SCRAM_SALT_MAX];
    int sl = scram_b64_decode(s + 3, (size_t)(i - s - 3), salt, sizeof(salt));
    if (sl <= 0)
        return -1;
    uint8_t salted[SCRAM_KEY_LEN], ck[SCRAM_KEY_LEN], sk[SCRAM_KEY_LEN], sig[SCRAM_KEY_LEN];
    if (PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, sl, atoi(i + 3), EVP_sha256(),
                          SCRAM_KEY_LEN, salted) != 1)
        return -1;
    hmac(salted, SCRAM_KEY_LEN, "Client Key", 10, ck);
    sha256(ck, SCRAM_KEY_LEN, sk);
    char wo[SCRAM_MAX_MESSAGE], auth[3 * SCRAM_MAX_MESSAGE];
    int wl = snprintf(wo, sizeof(wo), "c=%s,r=%.*s", cbind_b64 ? cbind_b64 : "biws",
                      (int)strcspn(r + 2, ","), r + 2);
    int al = snprintf(auth, sizeof(auth), "%s,%s,%s", client_first_bare, server_first, wo);
    if (wl < 0 || al < 0 || (size_t)al >= sizeof(auth))
        return -1;
    hmac(sk, SCRAM_KEY_LEN, auth, (size_t)al, sig);
    for (int k = 0; k < SCRAM_KEY_LEN; k++)
        ck[k] ^= sig[k];
    char p[64];
    scram_b64_encode(ck, SCRAM_KEY_LEN, p, sizeof(p));
    int n = snprintf(out, outlen, "%s,p=%s", wo, p);
    return n < 0 || (size_t)n >= outlen ? -1 : 0;
}
