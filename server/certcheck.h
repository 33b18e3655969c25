/* server/certcheck.h: is a peer server's certificate good for its XMPP domain? Chain verification
 * (system trust store or a partner's own CA) and RFC 6125 / RFC 9525 name matching for XMPP. */
#ifndef CIVITAS_CERTCHECK_H
#define CIVITAS_CERTCHECK_H

struct ssl_st;      /* OpenSSL's SSL */
struct x509_st;     /* OpenSSL's X509 */
struct stack_st_X509;   /* OpenSSL's STACK_OF(X509) */

/* Does cert name the XMPP service domain `domain` (prepared, as jid_prep_domain returns it)?
 * The reference identifiers are those of RFC 6120 §13.7.1.2 / RFC 7590 / XEP-0178:
 *  - DNS-ID: subjectAltName dNSName equal to domain (IDNs compare in U-label form after
 *    preparation), or a wildcard "*.rest" whose '*' is the complete left-most label, matching
 *    exactly one label of domain, with at least two labels in rest (RFC 9525 §6.3);
 *  - SRV-ID: subjectAltName otherName id-on-dnsSRV (RFC 4985) "_xmpp-server.<domain>" (or
 *    "_xmpps-server.<domain>", XEP-0368); no wildcards;
 *  - XmppAddr: subjectAltName otherName id-on-xmppAddr (RFC 6120 §13.7.1.4) equal to domain.
 * The subject's CN is never used (RFC 9525 §6.3 dropped CN-IDs), and neither are IP addresses.
 * Returns 1 on a match, 0 otherwise (also for NULL arguments). */
int certcheck_name(struct x509_st *cert, const char *domain);

/* One presented DNS-ID (a dNSName value as written in a certificate) against domain, with the
 * rules above; exposed for the unit tests. 1 match, 0 not. */
int certcheck_dns_id(const char *presented, const char *domain);

/* May cert authenticate a server (RFC 5280 §4.2.1.12)? Without an extendedKeyUsage extension there is
 * no restriction; with one it must list id-kp-serverAuth, or, for a peer that connected to us
 * (incoming 1, its certificate is a TLS client certificate and servers differ in what they present),
 * id-kp-clientAuth. anyExtendedKeyUsage alone is refused (RFC 5280 allows that; OpenSSL's TLS
 * purposes do the same), as is an extension that cannot be parsed. 1 acceptable, 0 not. */
int certcheck_eku(struct x509_st *cert, int incoming);

/* Verify leaf (with the untrusted chain the peer sent, may be NULL) for domain: the chain must end
 * at a trust anchor of the system's store or of ca_file (a partner's `ca:`, PEM, may be NULL),
 * certcheck_eku(leaf, incoming) must hold and certcheck_name must match. Returns 1 when it
 * verifies; else 0 with *reason set to a short static English text for logs (reason may be NULL). */
int certcheck_cert(struct x509_st *leaf, struct stack_st_X509 *chain, const char *domain, const char *ca_file,
                   int incoming, const char **reason);

/* certcheck_cert for the certificate the TLS peer of ssl presented: when we are the TLS server the
 * peer connected to us (incoming: its client certificate), else it is the server we connected to. */
int certcheck_peer(struct ssl_st *ssl, const char *domain, const char *ca_file, const char **reason);

/* Free the cached system trust store (at shutdown). */
void certcheck_cleanup(void);

#endif
