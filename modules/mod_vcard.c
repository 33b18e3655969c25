/* modules/mod_vcard.c: XEP-0054 vcard-temp: each account's vCard, set by its owner, read by anyone
 * through the account's bare JID; stored as serialised XML, bounded in size. XEP-0153: the SHA-1
 * of the vCard's photo is added to the owner's available presence when the client left it out. */
#include "module.h"
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_VCARD "vcard-temp"
#define KV_STORE "vcard"
#define KV_KEY "vcard"
#define KV_PHOTO "photo"          /* hex SHA-1 of the photo's binary value (XEP-0153 §3.1) */
#define NS_VCARD_UPDATE "vcard-temp:x:update"

static struct vcard_conf {
    long max_size;
} conf;

static storage_t *store;

/* XEP-0054 §3.1 and §3.3: the stored vCard; none: an empty <vCard/> for the owner, and
 * <service-unavailable/> for anyone else (also for an account that does not exist, so that
 * the answer does not tell the two apart). */
static int on_get(hook_event_t *ev, void *ud)
{
    (void)ud;
    const jid_t *to = ev->to;
    xnode_t *child = xnode_first_elem(ev->stanza);
    if (!to->node || strcmp(child->name, "vCard") != 0) return hook_error_cond(ev, STANZA_ERR_BAD_REQUEST);
    int own = hook_own_account(ev);
    if (!own) {
        int ex = storage_account_exists(store, to->node, to->domain);
        if (ex < 0) return hook_error(ev, "wait", "internal-server-error");
        if (ex == 0) return hook_error_cond(ev, STANZA_ERR_SERVICE_UNAVAILABLE);
    }
    void *val;
    size_t len;
    int r = storage_kv_get(store, KV_STORE, to->node, to->domain, KV_KEY, &val, &len);
    if (r < 0) {
        log_warn("vcard", "reading a vCard failed: %s", storage_last_error(store));
        return hook_error(ev, "wait", "internal-server-error");
    }
    xnode_t *card = NULL;
    if (r == 0) {
        card = xnode_parse_one(val, len, NULL);
        free(val);
        if (!card) log_warn("vcard", "a stored vCard of %s does not parse", log_jid(to->bare));
    }
    if (!card && !own) return hook_error_cond(ev, STANZA_ERR_SERVICE_UNAVAILABLE);
    xnode_t *reply = stanza_reply(ev->stanza);
    xnode_add_child(reply, card ? card : xnode_new("vCard", NS_VCARD));
    return hook_reply(ev, reply);
}

/* XEP-0153 §3.1: the hash is the hex SHA-1 of the image data (PHOTO/BINVAL, base64). 0 with
 * hex filled, -1 when the card has no photo (or an undecodable one). */
static int photo_hash(const xnode_t *card, char *hex)
{
    xnode_t *photo = xnode_child(card, "PHOTO", NS_VCARD);
    xnode_t *bin = photo ? xnode_child(photo, "BINVAL", NS_VCARD) : NULL;
    if (!bin) return -1;
    char *b64 = xnode_text(bin), *w = b64;
    for (const char *p = b64; *p; p++)          /* base64 in vCards is often folded */
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') *w++ = *p;
    *w = '\0';
    unsigned char *data = NULL, md[20];
    size_t len = 0;
    int r = (*b64 && base64_decode(b64, strlen(b64), &data, &len) == 0 &&
             digest_sha1(data, len, md) == 0) ? 0 : -1;
    if (r == 0) hex_encode(md, 20, hex);
    free(data);
    free(b64);
    return r;
}

/* "presence/self": an available presence without a vcard-temp:x:update element gets the photo
 * hash, so contacts' clients learn of the avatar (XEP-0153 §3.2, §4.1). */
static int on_presence(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_t *p = ev->stanza;
    if (!p || xnode_attr(p, "type") || xnode_child(p, "x", NS_VCARD_UPDATE) || !ev->from || !ev->from->node)
        return HOOK_PASS;
    void *val;
    size_t len;
    if (storage_kv_get(store, KV_STORE, ev->from->node, ev->from->domain, KV_PHOTO, &val, &len) != 0)
        return HOOK_PASS;
    xnode_add_text(xnode_add_elem(xnode_add_elem(p, "x", NS_VCARD_UPDATE), "photo", NULL), val);
    free(val);
    return HOOK_PASS;
}

/* XEP-0054 §3.2: only the owner sets it (<forbidden/> otherwise); the whole card is replaced;
 * an empty <vCard/> is stored as such. Larger than vcard.max_size bytes: <not-acceptable/>. */
static int on_set(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!hook_own_account(ev)) return hook_error_cond(ev, STANZA_ERR_FORBIDDEN);
    xnode_t *child = xnode_first_elem(ev->stanza);
    if (strcmp(child->name, "vCard") != 0) return hook_error_cond(ev, STANZA_ERR_BAD_REQUEST);
    size_t len;
    char *xml = xnode_serialize(child, NULL, &len);
    if (!xml) return hook_error_cond(ev, STANZA_ERR_BAD_REQUEST);
    if (len > (size_t)conf.max_size) {
        free(xml);
        return hook_reply(ev, stanza_error(ev->stanza, "modify", "not-acceptable", "the vCard is too large"));
    }
    int r = storage_kv_set(store, KV_STORE, ev->to->node, ev->to->domain, KV_KEY, xml, len);
    free(xml);
    char hash[2 * 20 + 1];
    if (r == 0) {
        if (photo_hash(child, hash) == 0)
            r = storage_kv_set(store, KV_STORE, ev->to->node, ev->to->domain, KV_PHOTO, hash, strlen(hash));
        else
            r = storage_kv_del(store, KV_STORE, ev->to->node, ev->to->domain, KV_PHOTO);
    }
    if (r < 0) {
        log_warn("vcard", "storing a vCard failed: %s", storage_last_error(store));
        return hook_error(ev, "wait", "internal-server-error");
    }
    return hook_reply(ev, stanza_reply(ev->stanza));
}

static int load(module_ctx_t *m)
{
    store = module_storage(m);
    module_add_feature(m, NS_VCARD);
    module_hook(m, "iq-get/bare/" NS_VCARD, 0, on_get, NULL);
    module_hook(m, "iq-set/bare/" NS_VCARD, 0, on_set, NULL);
    module_hook(m, "presence/self", 20, on_presence, NULL);   /* before the presence broadcast */
    return 0;
}

static const module_option_t options[] = {
    {.name = "max_size", .type = MOPT_INT, .offset = offsetof(struct vcard_conf, max_size),
     .def = 65536, .min = 256, .max = 16777216},
    {0}};

const module_t civitas_module = { .abi = CIVITAS_MODULE_ABI, .name = "vcard", .load = load,
                                    .options = options, .conf = &conf };
