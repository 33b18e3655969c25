/* tests/unit/test_certcheck.c: RFC 6125/9525 name matching for XMPP server certificates (DNS-ID with
 * wildcards, SRV-ID, XmppAddr, no CN-ID), the extended key usage of peer certificates (RFC 5280
 * §4.2.1.12) and XEP-0185 dialback keys. */
#include "tap.h"
#include "certcheck.h"
#include "dialback.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* A certificate whose subjectAltName is written in OpenSSL's config syntax (NULL: none). */
static X509 *make_cert(const char *cn, const char *san)
{
    X509 *x = X509_new();
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, k);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, n);
    if (san) {
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
        if (!e) {
            fprintf(stderr, "bad SAN '%s'\n", san);
            return NULL;
        }
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    X509_sign(x, k, EVP_sha256());
    EVP_PKEY_free(k);
    return x;
}

/* A certificate with one name built by hand: a dNSName (xmpp 0) or an id-on-xmppAddr UTF8String
 * (xmpp 1) holding exactly the len bytes of v (for embedded NULs and raw UTF-8). */
static X509 *make_raw_cert(int xmpp, const char *v, size_t len)
{
    X509 *x = make_cert("raw", NULL);
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_STRING *s = xmpp ? ASN1_UTF8STRING_new() : ASN1_IA5STRING_new();
    ASN1_STRING_set(s, v, (int)len);
    if (xmpp) {
        ASN1_TYPE *t = ASN1_TYPE_new();
        ASN1_TYPE_set(t, V_ASN1_UTF8STRING, s);
        GENERAL_NAME_set0_othername(g, OBJ_txt2obj("1.3.6.1.5.5.7.8.5", 1), t);
    } else {
        GENERAL_NAME_set0_value(g, GEN_DNS, s);
    }
    sk_GENERAL_NAME_push(gens, g);
    X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT);
    GENERAL_NAMES_free(gens);
    return x;
}

static void dns_ids(void)
{
    ok(certcheck_dns_id("example.org", "example.org") == 1, "DNS-ID: equal names match");
    ok(certcheck_dns_id("EXAMPLE.Org", "example.org") == 1, "DNS-ID: comparison is case-insensitive (RFC 6125 §6.4.1)");
    ok(certcheck_dns_id("example.org.", "example.org") == 1, "DNS-ID: a trailing dot is ignored");
    ok(certcheck_dns_id("example.com", "example.org") == 0, "DNS-ID: different names do not match");
    ok(certcheck_dns_id("sub.example.org", "example.org") == 0, "DNS-ID: a subdomain is not the domain");
    ok(certcheck_dns_id("*.example.org", "xmpp.example.org") == 1, "wildcard: '*.' matches one left-most label");
    ok(certcheck_dns_id("*.example.org", "example.org") == 0, "wildcard: does not match the bare parent domain");
    ok(certcheck_dns_id("*.example.org", "a.b.example.org") == 0, "wildcard: matches exactly one label, not two");
    ok(certcheck_dns_id("*.org", "example.org") == 0, "wildcard: at least two labels must follow '*' (no TLD wildcards)");
    ok(certcheck_dns_id("x*.example.org", "xmpp.example.org") == 0,
       "wildcard: partial-label wildcards are not accepted (RFC 9525 §6.3)");
    ok(certcheck_dns_id("*mpp.example.org", "xmpp.example.org") == 0, "wildcard: '*' must be the whole label");
    ok(certcheck_dns_id("xmpp.*.org", "xmpp.example.org") == 0, "wildcard: only in the left-most label");
    ok(certcheck_dns_id("*.*.org", "a.example.org") == 0, "wildcard: only one '*'");
    ok(certcheck_dns_id("xn--mnchen-3ya.de", "münchen.de") == 1, "IDN: an A-label DNS-ID matches the U-label domain");
    ok(certcheck_dns_id("*.xn--mnchen-3ya.de", "chat.münchen.de") == 1, "IDN: wildcard over an A-label parent");
    ok(certcheck_dns_id("[::1]", "[::1]") == 0, "IP literals are not DNS-IDs");
    ok(certcheck_dns_id("", "example.org") == 0 && certcheck_dns_id(NULL, "example.org") == 0, "empty or NULL: no match");
    ok(certcheck_dns_id("exa mple.org", "exa mple.org") == 0, "a space is never part of a DNS-ID");
}

static void cert_names(void)
{
    X509 *c = make_cert("ignored.example",
                        "DNS:*.example.org,otherName:1.3.6.1.5.5.7.8.5;UTF8:chat.example.net,"
                        "otherName:1.3.6.1.5.5.7.8.7;IA5:_xmpp-server.srv.example");
    ok(c != NULL, "test certificate built");
    ok(certcheck_name(c, "a.example.org") == 1, "certificate: wildcard DNS-ID in subjectAltName");
    ok(certcheck_name(c, "example.org") == 0, "certificate: the wildcard does not cover the parent");
    ok(certcheck_name(c, "chat.example.net") == 1, "certificate: id-on-xmppAddr names the domain (RFC 6120 §13.7.1.4)");
    ok(certcheck_name(c, "srv.example") == 1, "certificate: SRV-ID _xmpp-server.<domain> (RFC 6125 §6.5.1, RFC 4985)");
    ok(certcheck_name(c, "ignored.example") == 0, "certificate: the subject CN is not used when SANs exist");
    ok(certcheck_name(c, "other.example") == 0, "certificate: unrelated domain does not match");
    ok(certcheck_name(c, NULL) == 0 && certcheck_name(NULL, "a.example.org") == 0, "NULL arguments: no match");
    X509_free(c);

    c = make_cert("cn-only.example", NULL);
    ok(certcheck_name(c, "cn-only.example") == 0, "RFC 9525 §6.3: a CN-ID alone is not accepted");
    X509_free(c);

    c = make_cert("x", "otherName:1.3.6.1.5.5.7.8.5;UTF8:user@chat.example.net,"
                       "otherName:1.3.6.1.5.5.7.8.7;IA5:_imap.srv2.example,"
                       "otherName:1.3.6.1.5.5.7.8.7;IA5:_xmpps-server.srv3.example,"
                       "otherName:1.3.6.1.5.5.7.8.7;IA5:_xmpp-server.*.srv4.example");
    ok(certcheck_name(c, "chat.example.net") == 0, "XmppAddr of a user JID does not name the server domain");
    ok(certcheck_name(c, "srv2.example") == 0, "SRV-ID of another service (_imap) does not count");
    ok(certcheck_name(c, "srv3.example") == 1, "SRV-ID _xmpps-server (XEP-0368 direct TLS) counts");
    ok(certcheck_name(c, "a.srv4.example") == 0, "SRV-IDs take no wildcards");
    X509_free(c);

    c = make_raw_cert(1, "MÜNCHEN.de", strlen("MÜNCHEN.de"));
    ok(certcheck_name(c, "münchen.de") == 1, "XmppAddr is UTF-8 and compares after preparation (RFC 6120 §13.7.1.4)");
    X509_free(c);

    static const char nul[] = "evil.example\0.example.org";
    c = make_raw_cert(0, nul, sizeof nul - 1);
    ok(certcheck_name(c, "evil.example") == 0 && certcheck_name(c, "a.example.org") == 0,
       "a dNSName with an embedded NUL matches nothing");
    X509_free(c);
    c = make_raw_cert(1, nul, sizeof nul - 1);
    ok(certcheck_name(c, "evil.example") == 0, "an XmppAddr with an embedded NUL matches nothing");
    X509_free(c);
}

/* ---- extended key usage ---- */

static EVP_PKEY *ca_key;
static X509 *ca_cert;

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!e) {
        fprintf(stderr, "bad extension '%s'\n", value);
        exit(2);
    }
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
}

/* A test CA (made once) and leaf certificates it signs for DNS:domain, with extendedKeyUsage eku
 * in OpenSSL's config syntax (NULL: no such extension). */
static X509 *make_leaf(const char *domain, const char *eku)
{
    if (!ca_cert) {
        ca_key = EVP_EC_gen("P-256");
        ca_cert = X509_new();
        X509_set_version(ca_cert, 2);
        ASN1_INTEGER_set(X509_get_serialNumber(ca_cert), 1);
        X509_gmtime_adj(X509_getm_notBefore(ca_cert), -60);
        X509_gmtime_adj(X509_getm_notAfter(ca_cert), 3600);
        X509_set_pubkey(ca_cert, ca_key);
        X509_NAME_add_entry_by_txt(X509_get_subject_name(ca_cert), "CN", MBSTRING_ASC,
                                   (const unsigned char *)"eku test CA", -1, -1, 0);
        X509_set_issuer_name(ca_cert, X509_get_subject_name(ca_cert));
        add_ext(ca_cert, ca_cert, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(ca_cert, ca_cert, NID_key_usage, "critical,keyCertSign,cRLSign");
        X509_sign(ca_cert, ca_key, EVP_sha256());
    }
    static long serial = 2;
    X509 *x = X509_new();
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, k);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)domain, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(ca_cert));
    char san[300];
    snprintf(san, sizeof san, "DNS:%s", domain);
    add_ext(x, ca_cert, NID_subject_alt_name, san);
    if (eku) add_ext(x, ca_cert, NID_ext_key_usage, eku);
    X509_sign(x, ca_key, EVP_sha256());
    EVP_PKEY_free(k);
    return x;
}

static void key_usage(void)
{
    static const struct {
        const char *eku;            /* NULL: no extendedKeyUsage extension */
        int outgoing, incoming;     /* accepted for a server we connect to / a peer connecting to us */
        const char *what;
    } cases[] = {
        {NULL, 1, 1, "no extendedKeyUsage extension: no restriction (RFC 5280 §4.2.1.12)"},
        {"serverAuth", 1, 1, "serverAuth"},
        {"serverAuth,clientAuth", 1, 1, "serverAuth and clientAuth"},
        {"clientAuth", 0, 1, "clientAuth only: good for a peer connecting to us, not for a server we connect to"},
        {"codeSigning", 0, 0, "codeSigning only"},
        {"codeSigning,emailProtection", 0, 0, "codeSigning and emailProtection"},
        {"anyExtendedKeyUsage", 0, 0, "anyExtendedKeyUsage without serverAuth (RFC 5280 lets us refuse it)"},
    };
    char ca_path[] = "/tmp/civitas-test-ca-XXXXXX";
    int fd = mkstemp(ca_path);
    FILE *fp = fd >= 0 ? fdopen(fd, "w") : NULL;
    X509_free(make_leaf("x.example", NULL));     /* makes the CA */
    ok(fp && PEM_write_X509(fp, ca_cert) == 1, "test CA written");
    if (fp) fclose(fp);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        X509 *leaf = make_leaf("peer.example", cases[i].eku);
        ok(certcheck_eku(leaf, 0) == cases[i].outgoing && certcheck_eku(leaf, 1) == cases[i].incoming,
           "extendedKeyUsage %s: outgoing %s, incoming %s", cases[i].what, cases[i].outgoing ? "accepted" : "refused",
           cases[i].incoming ? "accepted" : "refused");
        const char *r_out = NULL, *r_in = NULL;
        int v_out = certcheck_cert(leaf, NULL, "peer.example", ca_path, 0, &r_out);
        int v_in = certcheck_cert(leaf, NULL, "peer.example", ca_path, 1, &r_in);
        ok(v_out == cases[i].outgoing && v_in == cases[i].incoming &&
               (v_out || (r_out && strstr(r_out, "extendedKeyUsage"))) &&
               (v_in || (r_in && strstr(r_in, "extendedKeyUsage"))),
           "the full check (chain to the partner's CA, name, key usage) gives the same verdict, with the reason (%s)",
           r_out ? r_out : r_in ? r_in : "verified");
        X509_free(leaf);
    }
    X509 *leaf = make_leaf("peer.example", "clientAuth");
    const char *r = NULL;
    ok(certcheck_cert(leaf, NULL, "other.example", ca_path, 1, &r) == 0 && r && strstr(r, "name"),
       "an incoming clientAuth certificate still has to name the domain (%s)", r ? r : "accepted");
    X509_free(leaf);
    unlink(ca_path);
    X509_free(ca_cert);
    EVP_PKEY_free(ca_key);
}

static void dialback_keys(void)
{
    dialback_init();
    char *k = dialback_key("receiving.example", "originating.example", "stream-1");
    ok(k && strlen(k) == 64 && strspn(k, "0123456789abcdef") == 64, "XEP-0185: the key is 64 lowercase hex digits");
    ok(dialback_check("receiving.example", "originating.example", "stream-1", k) == 1, "the key verifies");
    ok(dialback_check("receiving.example", "originating.example", "stream-2", k) == 0,
       "XEP-0185: the key is bound to the stream id");
    ok(dialback_check("originating.example", "receiving.example", "stream-1", k) == 0,
       "XEP-0185: the key is bound to the direction (receiving, originating)");
    ok(dialback_check("receiving.example", "evil.example", "stream-1", k) == 0, "a key for another domain fails");
    char *k2 = dialback_key("receiving.example", "originating.example", "stream-1");
    ok(strcmp(k, k2) == 0, "the same inputs give the same key (stateless verification)");
    char prefix[40];
    memcpy(prefix, k, 39);
    prefix[39] = '\0';
    ok(dialback_check("receiving.example", "originating.example", "stream-1", prefix) == 0, "a prefix of the key fails");
    ok(dialback_check("receiving.example", "originating.example", "stream-1", "") == 0, "an empty key fails");
    ok(dialback_check("receiving.example", "originating.example", "stream-1", NULL) == 0, "no key fails");
    dialback_init();
    ok(dialback_check("receiving.example", "originating.example", "stream-1", k) == 0,
       "a new secret (restart) invalidates old keys: the secret is random, not derived from anything fixed");
    free(k);
    free(k2);
    dialback_cleanup();
}

int main(void)
{
    dns_ids();
    cert_names();
    key_usage();
    dialback_keys();
    return done_testing();
}
