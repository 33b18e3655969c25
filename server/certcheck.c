/* server/certcheck.c: certificate checks for federation: chain verification against the system
 * store or a partner's CA, and RFC 6125/9525 matching of DNS-IDs, SRV-IDs and XmppAddr identities. */
#include "certcheck.h"
#include "jid.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/objects.h>

#define OID_XMPPADDR "1.3.6.1.5.5.7.8.5"     /* id-on-xmppAddr, RFC 6120 §13.7.1.4 */
#define OID_DNSSRV "1.3.6.1.5.5.7.8.7"       /* id-on-dnsSRV, RFC 4985 */

static X509_STORE *system_store;

/* prep(name) == domain, where name is a presented identifier: ASCII (A-labels) for DNS names, or
 * UTF-8 for XmppAddr. jid_prep_domain maps A-labels to U-labels and folds case, as domain is. */
static int same_domain(const char *name, const char *domain)
{
    if (!*name || strchr(name, '*')) return 0;
    char *p = jid_prep_domain(name);
    int r = p && strcmp(p, domain) == 0;
    free(p);
    return r;
}

int certcheck_dns_id(const char *presented, const char *domain)
{
    if (!presented || !domain) return 0;
    for (const unsigned char *c = (const unsigned char *)presented; *c; c++)
        if (*c >= 0x80 || *c <= 0x20) return 0;     /* dNSName is IA5 host-name syntax */
    if (presented[0] == '[' || strchr(presented, ':')) return 0;   /* no IP literals */
    if (strncmp(presented, "*.", 2) != 0) return same_domain(presented, domain);
    const char *rest = presented + 2;
    size_t rl = strlen(rest);
    if (rl && rest[rl - 1] == '.') rl--;
    /* at least two labels after the wildcard: "*.com" would cover a whole TLD */
    const char *dot = memchr(rest, '.', rl);
    if (!dot || dot == rest || dot + 1 >= rest + rl) return 0;
    /* domain's first label (one label only, non-empty) must be followed by rest */
    const char *ddot = strchr(domain, '.');
    if (!ddot || ddot == domain) return 0;
    return same_domain(rest, ddot + 1);
}

/* The otherName value as a NUL-free C string (malloc'd), or NULL. */
static char *other_name_string(const OTHERNAME *on)
{
    const ASN1_TYPE *v = on->value;
    if (!v) return NULL;
    const ASN1_STRING *s;
    if (v->type == V_ASN1_UTF8STRING) s = v->value.utf8string;
    else if (v->type == V_ASN1_IA5STRING) s = v->value.ia5string;
    else return NULL;
    int len = ASN1_STRING_length(s);
    const unsigned char *d = ASN1_STRING_get0_data(s);
    if (len <= 0 || memchr(d, 0, (size_t)len)) return NULL;
    char *out = malloc((size_t)len + 1);
    if (!out) return NULL;
    memcpy(out, d, (size_t)len);
    out[len] = '\0';
    return out;
}

static int oid_is(const ASN1_OBJECT *o, const char *dotted)
{
    char buf[64];
    if (OBJ_obj2txt(buf, sizeof buf, o, 1) <= 0) return 0;
    return strcmp(buf, dotted) == 0;
}

static int srv_id_matches(const char *v, const char *domain)
{
    static const char *const services[] = {"_xmpp-server.", "_xmpps-server.", NULL};
    for (size_t i = 0; services[i]; i++) {
        size_t l = strlen(services[i]);
        if (strncasecmp(v, services[i], l) == 0) return same_domain(v + l, domain);
    }
    return 0;
}

int certcheck_name(struct x509_st *cert, const char *domain)
{
    if (!cert || !domain || !*domain) return 0;
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (!names) return 0;
    int found = 0;
    for (int i = 0; !found && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        if (gn->type == GEN_DNS) {
            const ASN1_STRING *s = gn->d.dNSName;
            int len = ASN1_STRING_length(s);
            const unsigned char *d = ASN1_STRING_get0_data(s);
            if (len <= 0 || len > 1024 || memchr(d, 0, (size_t)len)) continue;
            char buf[1025];
            memcpy(buf, d, (size_t)len);
            buf[len] = '\0';
            found = certcheck_dns_id(buf, domain);
        } else if (gn->type == GEN_OTHERNAME) {
            const OTHERNAME *on = gn->d.otherName;
            int xmpp = oid_is(on->type_id, OID_XMPPADDR), srv = !xmpp && oid_is(on->type_id, OID_DNSSRV);
            if (!xmpp && !srv) continue;
            char *v = other_name_string(on);
            if (!v) continue;
            found = xmpp ? same_domain(v, domain) : srv_id_matches(v, domain);
            free(v);
        }
    }
    GENERAL_NAMES_free(names);
    return found;
}

/* 1 when leaf (with the untrusted chain the peer sent) ends at an anchor of store. */
static int chain_ok(X509_STORE *store, X509 *leaf, STACK_OF(X509) *chain, const char **reason)
{
    X509_STORE_CTX *sctx = X509_STORE_CTX_new();
    if (!sctx) return 0;
    int ok = 0;
    if (X509_STORE_CTX_init(sctx, store, leaf, chain) == 1) {
        ok = X509_verify_cert(sctx) == 1;
        if (!ok && reason) *reason = X509_verify_cert_error_string(X509_STORE_CTX_get_error(sctx));
    }
    X509_STORE_CTX_free(sctx);
    return ok;
}

int certcheck_eku(struct x509_st *cert, int incoming)
{
    /* UINT32_MAX: no extension; 0 also when the certificate's extensions cannot be parsed */
    uint32_t xku = X509_get_extended_key_usage(cert);
    if (xku == UINT32_MAX) return 1;
    return (xku & XKU_SSL_SERVER) || (incoming && (xku & XKU_SSL_CLIENT));
}

int certcheck_cert(struct x509_st *leaf, struct stack_st_X509 *chain, const char *domain, const char *ca_file,
                   int incoming, const char **reason)
{
    const char *dummy;
    if (!reason) reason = &dummy;
    *reason = "no certificate";
    if (!leaf) return 0;
    int ok = 0;
    if (ca_file) {
        X509_STORE *st = X509_STORE_new();
        if (st && X509_STORE_load_file(st, ca_file) == 1) ok = chain_ok(st, leaf, chain, reason);
        else *reason = "cannot load the partner's ca file";
        X509_STORE_free(st);
    }
    if (!ok) {
        if (!system_store) {
            system_store = X509_STORE_new();
            if (system_store) X509_STORE_set_default_paths(system_store);
        }
        const char *r2 = NULL;
        if (system_store) ok = chain_ok(system_store, leaf, chain, &r2);
        if (!ok && !ca_file && r2) *reason = r2;     /* with a partner CA, its verdict is the useful one */
    }
    if (!ok) return 0;
    if (!certcheck_eku(leaf, incoming)) {
        *reason = incoming ? "the certificate's extendedKeyUsage allows neither serverAuth nor clientAuth"
                           : "the certificate's extendedKeyUsage does not allow serverAuth";
        return 0;
    }
    if (!certcheck_name(leaf, domain)) {
        *reason = "certificate does not name the domain";
        return 0;
    }
    *reason = NULL;
    return 1;
}

int certcheck_peer(struct ssl_st *ssl, const char *domain, const char *ca_file, const char **reason)
{
    X509 *leaf = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    STACK_OF(X509) *chain = ssl ? SSL_get_peer_cert_chain(ssl) : NULL;
    return certcheck_cert(leaf, chain, domain, ca_file, ssl && SSL_is_server(ssl), reason);
}

void certcheck_cleanup(void)
{
    X509_STORE_free(system_store);
    system_store = NULL;
}
