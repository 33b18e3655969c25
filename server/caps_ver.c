/* server/caps_ver.c: the XEP-0115 §5 verification string and its hash, the check that makes a
 * caps cache safe from poisoning: only an answer whose hash is the advertised 'ver' is kept. */
#include "caps_ver.h"
#include "util.h"
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

typedef struct { char *s; size_t n, cap; } buf_t;

static void buf_add(buf_t *b, const char *s)
{
    size_t l = strlen(s);
    if (b->n + l + 2 > b->cap) {
        b->cap = (b->n + l + 2) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, s, l);
    b->n += l;
    b->s[b->n++] = '<';
    b->s[b->n] = '\0';
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

typedef struct { const char *f[4]; } ident_t;    /* category, type, xml:lang, name */

static int cmp_ident(const void *a, const void *b)
{
    const ident_t *x = a, *y = b;
    for (int i = 0; i < 4; i++) {
        int c = strcmp(x->f[i], y->f[i]);
        if (c) return c;
    }
    return 0;
}

static void free_strs(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* The values of a form field, text of each <value/>, malloc'd strings. */
static char **field_values(const xnode_t *field, size_t *n)
{
    char **v = NULL;
    *n = 0;
    for (xnode_t *c = xnode_first_elem(field); c; c = xnode_next_elem(c))
        if (strcmp(c->name, "value") == 0 && strcmp(c->ns, NS_DATA_FORMS) == 0) {
            v = xrealloc(v, (*n + 1) * sizeof *v);
            v[(*n)++] = xnode_text(c);
        }
    return v;
}

typedef struct { char *type; char *s; } form_t;   /* FORM_TYPE and the form's part of S */

static int cmp_form(const void *a, const void *b) { return strcmp(((const form_t *)a)->type, ((const form_t *)b)->type); }

/* One extended form: 1 with *out filled, 0 when it is left out, -1 when it makes S invalid. */
static int form_string(const xnode_t *x, form_t *out)
{
    const xnode_t *ft = NULL;
    size_t nfields = 0;
    for (xnode_t *f = xnode_first_elem(x); f; f = xnode_next_elem(f)) {
        if (strcmp(f->name, "field") != 0 || strcmp(f->ns, NS_DATA_FORMS) != 0) continue;
        const char *var = xnode_attr(f, "var");
        if (!var) continue;
        if (strcmp(var, "FORM_TYPE") == 0) {
            if (ft) return -1;                      /* two FORM_TYPE fields: its value is ambiguous */
            ft = f;
        } else nfields++;
    }
    if (!ft) return 0;
    const char *ftype = xnode_attr(ft, "type");
    if (!ftype || strcmp(ftype, "hidden") != 0) return 0;
    size_t nv;
    char **v = field_values(ft, &nv);
    if (nv == 0) {
        free_strs(v, nv);
        return 0;
    }
    for (size_t i = 1; i < nv; i++)
        if (strcmp(v[i], v[0]) != 0) {
            free_strs(v, nv);
            return -1;
        }
    buf_t b = {0};
    buf_add(&b, v[0]);
    out->type = xstrdup(v[0]);
    free_strs(v, nv);
    /* the other fields sorted by var, each var then its values sorted */
    const xnode_t **fields = xcalloc(nfields + 1, sizeof *fields);
    size_t k = 0;
    for (xnode_t *f = xnode_first_elem(x); f; f = xnode_next_elem(f)) {
        if (strcmp(f->name, "field") != 0 || strcmp(f->ns, NS_DATA_FORMS) != 0) continue;
        const char *var = xnode_attr(f, "var");
        if (var && strcmp(var, "FORM_TYPE") != 0) fields[k++] = f;
    }
    for (size_t i = 1; i < k; i++)               /* insertion sort by var: forms are small */
        for (size_t j = i; j > 0 && strcmp(xnode_attr(fields[j - 1], "var"), xnode_attr(fields[j], "var")) > 0; j--) {
            const xnode_t *t = fields[j];
            fields[j] = fields[j - 1];
            fields[j - 1] = t;
        }
    for (size_t i = 0; i < k; i++) {
        buf_add(&b, xnode_attr(fields[i], "var"));
        v = field_values(fields[i], &nv);
        if (nv > 1) qsort(v, nv, sizeof *v, cmp_str);
        for (size_t j = 0; j < nv; j++) buf_add(&b, v[j]);
        free_strs(v, nv);
    }
    free(fields);
    out->s = b.s ? b.s : xstrdup("");
    return 1;
}

char *caps_ver_string(const xnode_t *query)
{
    ident_t *ids = NULL;
    size_t nids = 0, nfeat = 0, nforms = 0;
    const char **feats = NULL;
    form_t *forms = NULL;
    int bad = 0;
    for (xnode_t *c = xnode_first_elem(query); c && !bad; c = xnode_next_elem(c)) {
        if (strcmp(c->ns, "http://jabber.org/protocol/disco#info") == 0 && strcmp(c->name, "identity") == 0) {
            ids = xrealloc(ids, (nids + 1) * sizeof *ids);
            const char *lang = xnode_attr(c, XML_ATTR_LANG), *cat = xnode_attr(c, "category");
            const char *type = xnode_attr(c, "type"), *name = xnode_attr(c, "name");
            ids[nids++] = (ident_t){{cat ? cat : "", type ? type : "", lang ? lang : "", name ? name : ""}};
        } else if (strcmp(c->ns, "http://jabber.org/protocol/disco#info") == 0 && strcmp(c->name, "feature") == 0) {
            const char *var = xnode_attr(c, "var");
            if (!var) continue;
            feats = xrealloc(feats, (nfeat + 1) * sizeof *feats);
            feats[nfeat++] = var;
        } else if (strcmp(c->ns, NS_DATA_FORMS) == 0 && strcmp(c->name, "x") == 0) {
            form_t f = {0};
            int r = form_string(c, &f);
            if (r < 0) bad = 1;
            else if (r > 0) {
                forms = xrealloc(forms, (nforms + 1) * sizeof *forms);
                forms[nforms++] = f;
            }
        }
    }
    /* (qsort's base must not be NULL, even for no elements) */
    if (nids > 1) qsort(ids, nids, sizeof *ids, cmp_ident);
    if (nfeat > 1) qsort(feats, nfeat, sizeof *feats, cmp_str);
    if (nforms > 1) qsort(forms, nforms, sizeof *forms, cmp_form);
    for (size_t i = 1; i < nids; i++) bad |= cmp_ident(&ids[i - 1], &ids[i]) == 0;
    for (size_t i = 1; i < nfeat; i++) bad |= strcmp(feats[i - 1], feats[i]) == 0;
    for (size_t i = 1; i < nforms; i++) bad |= strcmp(forms[i - 1].type, forms[i].type) == 0;
    buf_t b = {0};
    for (size_t i = 0; i < nids && !bad; i++) {
        char *one = xasprintf("%s/%s/%s/%s", ids[i].f[0], ids[i].f[1], ids[i].f[2], ids[i].f[3]);
        buf_add(&b, one);
        free(one);
    }
    for (size_t i = 0; i < nfeat && !bad; i++) buf_add(&b, feats[i]);
    for (size_t i = 0; i < nforms; i++) {
        if (!bad) {                                  /* the form's part already ends with '<' */
            size_t l = strlen(forms[i].s);
            b.s = xrealloc(b.s, b.n + l + 1);
            memcpy(b.s + b.n, forms[i].s, l + 1);
            b.n += l;
            b.cap = b.n + 1;
        }
        free(forms[i].type);
        free(forms[i].s);
    }
    free(ids);
    free(feats);
    free(forms);
    if (bad) {
        free(b.s);
        return NULL;
    }
    return b.s ? b.s : xstrdup("");
}

static const EVP_MD *md_of(const char *algo)
{
    if (!algo) return NULL;
    if (strcmp(algo, "sha-1") == 0) return EVP_sha1();
    if (strcmp(algo, "sha-224") == 0) return EVP_sha224();
    if (strcmp(algo, "sha-256") == 0) return EVP_sha256();
    if (strcmp(algo, "sha-384") == 0) return EVP_sha384();
    if (strcmp(algo, "sha-512") == 0) return EVP_sha512();
    return NULL;
}

int caps_hash_supported(const char *algo) { return md_of(algo) != NULL; }

char *caps_ver_hash(const char *algo, const char *s)
{
    const EVP_MD *md = md_of(algo);
    if (!md) return NULL;
    unsigned char h[EVP_MAX_MD_SIZE];
    unsigned int hl = 0;
    if (!EVP_Digest(s, strlen(s), h, &hl, md, NULL)) return NULL;
    char *out = xmalloc(4 * ((hl + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)out, h, (int)hl);
    return out;
}

int caps_ver_check(const xnode_t *query, const char *algo, const char *ver)
{
    if (!query || !ver || !caps_hash_supported(algo)) return 0;
    char *s = caps_ver_string(query);
    if (!s) return 0;
    char *h = caps_ver_hash(algo, s);
    int ok = h && strcmp(h, ver) == 0;
    free(h);
    free(s);
    return ok;
}
