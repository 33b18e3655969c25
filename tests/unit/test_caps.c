/* tests/unit/test_caps.c: TAP tests for server/caps_ver.c: the XEP-0115 §5 verification string
 * and hash, with the XEP's own examples (§5.2 simple, §5.3 complex) and the §5.4 rejections. */
#include "caps_ver.h"
#include "util.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

#define DI "http://jabber.org/protocol/disco#info"

static xnode_t *parse(const char *xml)
{
    xnode_t *n = xnode_parse_one(xml, strlen(xml), NULL);
    if (!n) printf("# cannot parse %s\n", xml);
    return n;
}

/* §5.2 Simple Generation Example (Exodus 0.9.1) */
static const char simple[] =
    "<query xmlns='" DI "' node='http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0='>"
    "<identity category='client' name='Exodus 0.9.1' type='pc'/>"
    "<feature var='http://jabber.org/protocol/caps'/>"
    "<feature var='http://jabber.org/protocol/disco#info'/>"
    "<feature var='http://jabber.org/protocol/disco#items'/>"
    "<feature var='http://jabber.org/protocol/muc'/>"
    "</query>";
static const char simple_s[] =
    "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<"
    "http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<";

/* §5.3 Complex Generation Example (Psi 0.11, two identities in two languages, a softwareinfo
 * form), with elements in another order than S lists them, as the XEP's example has them */
static const char complex_[] =
    "<query xmlns='" DI "' node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>"
    "<identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>"
    "<identity xml:lang='el' category='client' name='\xce\xa8 0.11' type='pc'/>"
    "<feature var='http://jabber.org/protocol/caps'/>"
    "<feature var='http://jabber.org/protocol/disco#info'/>"
    "<feature var='http://jabber.org/protocol/disco#items'/>"
    "<feature var='http://jabber.org/protocol/muc'/>"
    "<x xmlns='jabber:x:data' type='result'>"
    "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>"
    "<field var='ip_version' type='text-multi'><value>ipv4</value><value>ipv6</value></field>"
    "<field var='os'><value>Mac</value></field>"
    "<field var='os_version'><value>10.5.1</value></field>"
    "<field var='software'><value>Psi</value></field>"
    "<field var='software_version'><value>0.11</value></field>"
    "</x></query>";
static const char complex_s[] =
    "client/pc/el/\xce\xa8 0.11<client/pc/en/Psi 0.11<http://jabber.org/protocol/caps<"
    "http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<"
    "http://jabber.org/protocol/muc<urn:xmpp:dataforms:softwareinfo<ip_version<ipv4<ipv6<os<Mac<"
    "os_version<10.5.1<software<Psi<software_version<0.11<";

static int s_is(const char *xml, const char *want, const char *what)
{
    xnode_t *q = parse(xml);
    char *s = q ? caps_ver_string(q) : NULL;
    int ok_ = (s == NULL && want == NULL) || (s && want && strcmp(s, want) == 0);
    if (!ok_) printf("# %s: got %s\n#   want %s\n", what, s ? s : "(null)", want ? want : "(null)");
    free(s);
    xnode_free(q);
    return ok_;
}

int main(void)
{
    ok(s_is(simple, simple_s, "simple"), "XEP-0115 §5.2: the verification string of the simple example");
    char *h = caps_ver_hash("sha-1", simple_s);
    ok(h && strcmp(h, "QgayPKawpkPSDYmwT/WM94uAlu0=") == 0, "§5.2: its SHA-1 is QgayPKawpkPSDYmwT/WM94uAlu0= (%s)",
       h ? h : "null");
    free(h);
    ok(s_is(complex_, complex_s, "complex"), "XEP-0115 §5.3: identities by xml:lang, the form's fields sorted");
    xnode_t *q = parse(complex_);
    ok(caps_ver_check(q, "sha-1", "q07IKJEyjvHSyhy//CH0CxmKi8w="), "§5.3: hashes to q07IKJEyjvHSyhy//CH0CxmKi8w=");
    ok(!caps_ver_check(q, "sha-1", "QgayPKawpkPSDYmwT/WM94uAlu0="), "a wrong ver does not verify");
    ok(!caps_ver_check(q, "md5", "q07IKJEyjvHSyhy//CH0CxmKi8w="), "an unsupported hash does not verify");
    xnode_free(q);
    h = caps_ver_hash("sha-256", "");
    ok(h && strcmp(h, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=") == 0, "sha-256 of the empty string, base64");
    free(h);

    /* order of the answer does not matter: features and identities reversed */
    ok(s_is("<query xmlns='" DI "'><feature var='http://jabber.org/protocol/muc'/>"
            "<feature var='http://jabber.org/protocol/disco#items'/><feature var='http://jabber.org/protocol/disco#info'/>"
            "<feature var='http://jabber.org/protocol/caps'/><identity category='client' name='Exodus 0.9.1' type='pc'/></query>",
            simple_s, "reordered"), "§5.1: identities and features are sorted, whatever the answer's order");
    /* identity sort is by category, then type (field-wise, not the joined string) */
    ok(s_is("<query xmlns='" DI "'><identity category='client-x' type='a'/><identity category='client' type='b'/></query>",
            "client/b//<client-x/a//<", "field-wise"), "§5.1: identities sort by category before type");

    /* §5.4 rejections */
    ok(s_is("<query xmlns='" DI "'><identity category='client' type='pc' name='A'/>"
            "<identity category='client' type='pc' name='A'/></query>", NULL, "dup identity"),
       "§5.4: two identical identities: not usable");
    ok(s_is("<query xmlns='" DI "'><feature var='a'/><feature var='a'/></query>", NULL, "dup feature"),
       "§5.4: a feature twice: not usable");
    ok(s_is("<query xmlns='" DI "'><x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>"
            "<value>urn:a</value></field></x><x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>"
            "<value>urn:a</value></field></x></query>", NULL, "dup form"),
       "§5.4: two forms with one FORM_TYPE: not usable");
    ok(s_is("<query xmlns='" DI "'><x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>"
            "<value>urn:a</value><value>urn:b</value></field></x></query>", NULL, "two FORM_TYPE values"),
       "§5.4: a FORM_TYPE with two different values: not usable");
    ok(s_is("<query xmlns='" DI "'><feature var='f'/><x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'>"
            "<value>urn:a</value></field><field var='x'><value>1</value></field></x>"
            "<x xmlns='jabber:x:data' type='result'><field var='y'><value>2</value></field></x></query>",
            "f<", "ignored forms"),
       "§5.4: forms without FORM_TYPE or with a FORM_TYPE not hidden are left out");
    return done_testing();
}
