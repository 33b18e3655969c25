/* server/config.c: reads the YAML config (libyaml's event API, only here) into a tree per file, merges
 * includes, then fills config_t by walking const option tables with generic typed setters. */
#include "config.h"
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

/* Limits that keep a hostile or broken file from costing more than a real config ever needs. */
#define MAX_FILE_SIZE (4u << 20)       /* bytes per file */
#define MAX_NEST 32                    /* nested collections */
#define MAX_NODES 100000               /* nodes over all files */
#define MAX_INCLUDE_DEPTH 8            /* main file is depth 0 */
#define MAX_LIST 1024                  /* entries of one list of strings */
#define PATH_TEXT 256                  /* dotted key paths in messages ("limits.max_depth"), truncated */

/* ---------------------------------------------------------------------------------------------- */
/* memory: every allocation of a config is one block on c->mem, freed together by config_free.     */

typedef struct mem_block {
    struct mem_block *next;
    max_align_t data[];
} mem_block_t;

static void oom(void)
{
    fputs("civitas: out of memory while loading the configuration\n", stderr);
    abort();
}

static void *cmem(config_t *c, size_t n)
{
    mem_block_t *b = calloc(1, sizeof *b + n);
    if (!b) oom();
    b->next = c->mem;
    c->mem = b;
    return b->data;
}

static char *cstrndup(config_t *c, const char *s, size_t n)
{
    char *d = cmem(c, n + 1);
    memcpy(d, s, n);
    return d;
}

static char *cstrdup(config_t *c, const char *s) { return s ? cstrndup(c, s, strlen(s)) : NULL; }

/* ---------------------------------------------------------------------------------------------- */
/* errors                                                                                          */

/* Append "FILE:LINE: message". Control characters (which quoted YAML can smuggle into keys and
 * values) become '?' so that one error stays one line in a log. errors may be NULL. */
static void add_errorv(strlist_t *errors, const char *file, int line, const char *fmt, va_list ap)
{
    if (!errors) return;
    char msg[1024];
    int k = snprintf(msg, sizeof msg, "%s:%d: ", file ? file : "(config)", line);
    if (k < 0) k = 0;
    if ((size_t)k < sizeof msg) vsnprintf(msg + k, sizeof msg - (size_t)k, fmt, ap);
    for (unsigned char *p = (unsigned char *)msg; *p; p++)
        if (*p < 0x20 || *p == 0x7f) *p = '?';
    if (strlist_add(errors, msg) < 0) oom();
}

static void add_error(strlist_t *errors, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void add_error(strlist_t *errors, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    add_errorv(errors, file, line, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------------------------------------- */
/* loading state                                                                                   */

typedef struct walk {
    config_t *c;
    strlist_t *errors;                 /* failure = this grew */
    const char *const *known;          /* module names, NULL-terminated, or NULL for "any" */
    const char *main_file;             /* interned path of the main file */
    size_t nodes;                      /* nodes made so far (MAX_NODES) */
    char *chain[MAX_INCLUDE_DEPTH + 2]; /* canonical paths of the files being read, for cycles */
    int nchain;
} walk_t;

static void errf(walk_t *w, const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void errf(walk_t *w, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    add_errorv(w->errors, file, line, fmt, ap);
    va_end(ap);
}

/* Keep a copy of a file name for the lifetime of the config; nodes point at it. */
static const char *file_ref(walk_t *w, const char *path)
{
    if (strlist_add(&w->c->files, path) < 0) oom();
    return w->c->files.v[w->c->files.n - 1];
}

static void join_path(char *out, const char *path, const char *key)
{
    if (!path || !*path) snprintf(out, PATH_TEXT, "%.200s", key ? key : "");
    else snprintf(out, PATH_TEXT, "%.120s.%.120s", path, key ? key : "");
}

/* The absolute form of `rel`, taken relative to the directory of `file`. */
static char *resolve(walk_t *w, const char *file, const char *rel)
{
    while (rel[0] == '.' && rel[1] == '/') rel += 2;
    if (rel[0] == '/') return cstrdup(w->c, rel);
    const char *slash = strrchr(file, '/');
    char cwd[PATH_MAX];
    if (file[0] != '/' && !getcwd(cwd, sizeof cwd)) strcpy(cwd, ".");
    size_t dlen = slash ? (size_t)(slash - file) : 0;
    size_t need = (file[0] != '/' ? strlen(cwd) + 1 : 0) + dlen + 1 + strlen(rel) + 1;
    char *out = cmem(w->c, need);
    if (file[0] == '/') snprintf(out, need, "%.*s/%s", (int)dlen, file, rel);
    else if (dlen == 0 || (dlen == 1 && file[0] == '.')) snprintf(out, need, "%s/%s", cwd, rel);
    else {
        const char *d = file;
        while (dlen >= 2 && d[0] == '.' && d[1] == '/') d += 2, dlen -= 2;
        snprintf(out, need, "%s/%.*s/%s", cwd, (int)dlen, d, rel);
    }
    return out;
}

/* ---------------------------------------------------------------------------------------------- */
/* tree helpers                                                                                    */

static cfg_node_t *new_node(walk_t *w, int type, const char *file, int line)
{
    cfg_node_t *n = cmem(w->c, sizeof *n);
    n->type = type;
    n->file = file;
    n->line = line;
    w->nodes++;
    return n;
}

static void append_child(cfg_node_t *parent, cfg_node_t *n)
{
    cfg_node_t **p = &parent->children;
    while (*p) p = &(*p)->next;
    *p = n;
}

static const cfg_node_t *find_child(const cfg_node_t *map, const char *key)
{
    if (!map || map->type != CFG_MAP) return NULL;
    for (const cfg_node_t *n = map->children; n; n = n->next)
        if (n->key && strcmp(n->key, key) == 0) return n;
    return NULL;
}

/* Unlink and return the value of `key` in `map`, or NULL. */
static cfg_node_t *take_child(cfg_node_t *map, const char *key)
{
    for (cfg_node_t **p = &map->children; *p; p = &(*p)->next)
        if ((*p)->key && strcmp((*p)->key, key) == 0) {
            cfg_node_t *n = *p;
            *p = n->next;
            n->next = NULL;
            return n;
        }
    return NULL;
}

static int is_null(const cfg_node_t *n) { return n->type == CFG_SCALAR && n->is_null; }

/* How a node looks in a message: "a list", "a mapping", "nothing" or the quoted text. */
static const char *kind_text(const cfg_node_t *n, char *buf, size_t len)
{
    if (n->type == CFG_SEQ) return "a list";
    if (n->type == CFG_MAP) return "a mapping";
    if (n->is_null) return "nothing";
    snprintf(buf, len, "'%.80s'", n->value);
    return buf;
}

static int cmp_key(const void *a, const void *b)
{
    const cfg_node_t *x = *(const cfg_node_t *const *)a, *y = *(const cfg_node_t *const *)b;
    int r = strcmp(x->key, y->key);
    return r ? r : (x->line > y->line) - (x->line < y->line);
}

/* YAML wants keys unique within a mapping; a second one would silently win, so it is an error. */
static void check_duplicate_keys(walk_t *w, const cfg_node_t *map)
{
    size_t n = 0, i = 0;
    for (const cfg_node_t *k = map->children; k; k = k->next) n++;
    if (n < 2) return;
    const cfg_node_t **v = malloc(n * sizeof *v);
    if (!v) oom();
    for (const cfg_node_t *k = map->children; k; k = k->next) v[i++] = k;
    qsort(v, n, sizeof *v, cmp_key);
    for (i = 1; i < n; i++) {
        size_t first = i - 1;
        while (i < n && strcmp(v[first]->key, v[i]->key) == 0) {
            errf(w, v[i]->file, v[i]->line, "duplicate key '%.80s' (first at line %d)", v[i]->key, v[first]->line);
            i++;
        }
    }
    free(v);
}

/* ---------------------------------------------------------------------------------------------- */
/* YAML -> tree (libyaml event API)                                                                */

typedef struct frame {
    cfg_node_t *node, *tail;           /* open collection and its last child */
    char *key;                         /* mapping: key read, value pending */
    int key_line;
} frame_t;

static void syntax_error(walk_t *w, const char *file, const yaml_parser_t *p, const char *buf, size_t len)
{
    int line;
    if (p->error == YAML_READER_ERROR) {   /* only an offset is known: count lines up to it */
        line = 1;
        for (size_t i = 0; i < p->problem_offset && i < len; i++) line += buf[i] == '\n';
    } else {
        line = (int)p->problem_mark.line + 1;
    }
    if (p->context)
        errf(w, file, line, "YAML syntax error: %s (%s at line %d)", p->problem ? p->problem : "unknown problem",
             p->context, (int)p->context_mark.line + 1);
    else
        errf(w, file, line, "YAML syntax error: %s", p->problem ? p->problem : "unknown problem");
}

static int scalar_is_null(const yaml_event_t *ev)
{
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return 0;
    const char *v = (const char *)ev->data.scalar.value;
    return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") || !strcmp(v, "NULL");
}

/* Handle one event; 0 to go on, -1 after reporting an error. */
static int on_event(walk_t *w, const char *file, yaml_event_t *ev, frame_t *st, int *sp, cfg_node_t **root,
                    int *docs)
{
    int line = (int)ev->start_mark.line + 1;
    frame_t *top = *sp ? &st[*sp - 1] : NULL;
    const yaml_char_t *anchor = NULL;
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (++*docs > 1) {
            errf(w, file, line, "a second YAML document ('---') is not supported: one file holds one mapping");
            return -1;
        }
        return 0;
    case YAML_ALIAS_EVENT:
        errf(w, file, line, "YAML aliases (*%.40s) are not supported: write the value out",
             (const char *)ev->data.alias.anchor);
        return -1;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        if (top && top->node->type == CFG_MAP) check_duplicate_keys(w, top->node);
        (*sp)--;
        return 0;
    case YAML_SCALAR_EVENT: anchor = ev->data.scalar.anchor; break;
    case YAML_SEQUENCE_START_EVENT: anchor = ev->data.sequence_start.anchor; break;
    case YAML_MAPPING_START_EVENT: anchor = ev->data.mapping_start.anchor; break;
    default: return 0;
    }
    if (anchor) {
        errf(w, file, line, "YAML anchors (&%.40s) are not supported: write the value out", (const char *)anchor);
        return -1;
    }
    if (++w->nodes > MAX_NODES) {
        errf(w, file, line, "too many values (more than %d)", MAX_NODES);
        return -1;
    }
    if (ev->type == YAML_SCALAR_EVENT && strlen((const char *)ev->data.scalar.value) != ev->data.scalar.length) {
        errf(w, file, line, "a NUL character is not allowed here");
        return -1;
    }
    if (top && top->node->type == CFG_MAP && !top->key) {   /* this is a key */
        if (ev->type != YAML_SCALAR_EVENT) {
            errf(w, file, line, "a key must be a plain string, not a list or mapping");
            return -1;
        }
        top->key = cstrdup(w->c, (const char *)ev->data.scalar.value);
        top->key_line = line;
        return 0;
    }
    w->nodes--;   /* new_node counts it */
    cfg_node_t *n = new_node(w, ev->type == YAML_SCALAR_EVENT ? CFG_SCALAR
                                : ev->type == YAML_SEQUENCE_START_EVENT ? CFG_SEQ : CFG_MAP, file, line);
    if (ev->type == YAML_SCALAR_EVENT) {
        n->value = cstrdup(w->c, (const char *)ev->data.scalar.value);
        n->is_null = scalar_is_null(ev);
    }
    if (!top) {
        *root = n;
    } else {
        if (top->node->type == CFG_MAP) {
            n->key = top->key;
            n->line = top->key_line;
            top->key = NULL;
        }
        if (top->tail) top->tail->next = n;
        else top->node->children = n;
        top->tail = n;
    }
    if (n->type != CFG_SCALAR) {
        if (*sp >= MAX_NEST) {
            errf(w, file, line, "nested more than %d levels deep", MAX_NEST);
            return -1;
        }
        st[(*sp)++] = (frame_t){.node = n};
    }
    return 0;
}

/* Parse one file's text into a tree whose root is a mapping (an empty file gives an empty one).
 * NULL after reporting an error. */
static cfg_node_t *parse_yaml(walk_t *w, const char *file, const char *buf, size_t len)
{
    yaml_parser_t p;
    yaml_event_t ev;
    frame_t st[MAX_NEST];
    int sp = 0, docs = 0, failed = 0;
    cfg_node_t *root = NULL;
    if (!yaml_parser_initialize(&p)) oom();
    yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
    for (;;) {
        if (!yaml_parser_parse(&p, &ev)) {
            syntax_error(w, file, &p, buf, len);
            failed = 1;
            break;
        }
        yaml_event_type_t type = ev.type;
        failed = on_event(w, file, &ev, st, &sp, &root, &docs) < 0;
        yaml_event_delete(&ev);
        if (failed || type == YAML_STREAM_END_EVENT) break;
    }
    yaml_parser_delete(&p);
    if (failed) return NULL;
    if (!root || is_null(root)) return new_node(w, CFG_MAP, file, root ? root->line : 1);
    if (root->type != CFG_MAP) {
        errf(w, file, root->line, "the top level must be a mapping (key: value lines)");
        return NULL;
    }
    return root;
}

/* The whole of a regular file, NUL-terminated; NULL with errno set (EFBIG when too large). */
static char *read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat sb;
    if (fstat(fd, &sb) < 0) memset(&sb, 0, sizeof sb);
    if (!S_ISREG(sb.st_mode) || sb.st_size > (off_t)MAX_FILE_SIZE) {
        int e = S_ISDIR(sb.st_mode) ? EISDIR : S_ISREG(sb.st_mode) ? EFBIG : EINVAL;
        close(fd);
        errno = e;
        return NULL;
    }
    char *buf = malloc((size_t)sb.st_size + 1);
    if (!buf) oom();
    size_t got = 0;
    while (got < (size_t)sb.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)sb.st_size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    *len = got;
    return buf;
}

/* ---------------------------------------------------------------------------------------------- */
/* includes                                                                                        */

/* Merge the top-level mapping of an included file into the including one: new keys are added,
 * mappings merge key by key, lists append, and a scalar set in both is an error naming both. */
static void merge(walk_t *w, cfg_node_t *dst, cfg_node_t *src, const char *path)
{
    cfg_node_t *s = src->children, *next;
    src->children = NULL;
    for (; s; s = next) {
        next = s->next;
        s->next = NULL;
        cfg_node_t *d = (cfg_node_t *)find_child(dst, s->key);
        char sub[PATH_TEXT];
        join_path(sub, path, s->key);
        if (!d) {
            append_child(dst, s);
        } else if (is_null(s)) {
            /* "key:" with nothing adds nothing */
        } else if (is_null(d)) {
            cfg_node_t *keep = d->next;
            *d = *s;
            d->next = keep;
        } else if (d->type == CFG_MAP && s->type == CFG_MAP) {
            merge(w, d, s, sub);
        } else if (d->type == CFG_SEQ && s->type == CFG_SEQ) {
            if (s->children) append_child(d, s->children);
        } else {
            errf(w, s->file, s->line, "%s: already set at %s:%d", sub, d->file, d->line);
        }
    }
}

static cfg_node_t *load_file(walk_t *w, const char *path, const char *data, size_t len, int depth,
                             const cfg_node_t *from);

static int has_glob_magic(const char *s) { return strpbrk(s, "*?[") != NULL; }

static void include_pattern(walk_t *w, cfg_node_t *root, const cfg_node_t *p, int depth)
{
    char *pat = resolve(w, p->file, p->value);
    glob_t g;
    int rc = glob(pat, GLOB_MARK, NULL, &g);
    if (rc == GLOB_NOMATCH) {
        /* a pattern may match nothing (an empty conf.d); a plain file name must exist */
        if (!has_glob_magic(p->value)) errf(w, p->file, p->line, "include: '%.200s' does not exist", pat);
    } else if (rc != 0) {
        errf(w, p->file, p->line, "include: cannot read '%.200s'", pat);
    } else {
        for (size_t i = 0; i < g.gl_pathc; i++) {
            size_t l = strlen(g.gl_pathv[i]);
            if (l && g.gl_pathv[i][l - 1] == '/') continue;   /* a directory */
            cfg_node_t *sub = load_file(w, g.gl_pathv[i], NULL, 0, depth + 1, p);
            if (sub) merge(w, root, sub, "");
        }
    }
    if (rc != GLOB_NOMATCH) globfree(&g);
}

/* `include:` takes a file pattern or a list of them, relative to the file it is written in. */
static void process_includes(walk_t *w, cfg_node_t *root, int depth)
{
    cfg_node_t *inc = take_child(root, "include");
    if (!inc || is_null(inc)) return;
    if (inc->type == CFG_SCALAR) {
        if (!*inc->value) errf(w, inc->file, inc->line, "include: a file pattern is required");
        else include_pattern(w, root, inc, depth);
        return;
    }
    if (inc->type != CFG_SEQ) {
        errf(w, inc->file, inc->line, "include: expected a file pattern or a list of them, got a mapping");
        return;
    }
    for (const cfg_node_t *p = inc->children; p; p = p->next) {
        if (p->type != CFG_SCALAR || p->is_null || !*p->value) {
            errf(w, p->file, p->line, "include: expected a file pattern");
            continue;
        }
        include_pattern(w, root, p, depth);
    }
}

/* Read and parse one file and, recursively, its includes. from: the include entry naming it
 * (NULL for the main file). data: the text when already in memory. */
static cfg_node_t *load_file(walk_t *w, const char *path, const char *data, size_t len, int depth,
                             const cfg_node_t *from)
{
    const char *rfile = from ? from->file : path;
    int rline = from ? from->line : 1;
    if (depth > MAX_INCLUDE_DEPTH) {
        errf(w, rfile, rline, "include: '%.200s': includes nested more than %d deep", path, MAX_INCLUDE_DEPTH);
        return NULL;
    }
    char *canon = realpath(path, NULL);
    if (!canon && !(canon = strdup(path))) oom();
    for (int i = 0; i < w->nchain; i++)
        if (strcmp(w->chain[i], canon) == 0) {
            errf(w, rfile, rline, "include: '%.200s' is already being read (include cycle)", path);
            free(canon);
            return NULL;
        }
    const char *file = file_ref(w, path);
    char *buf = NULL;
    if (!data) {
        if (!(buf = read_file(path, &len))) {
            if (from) errf(w, rfile, rline, "include: cannot read '%.200s': %s", path, strerror(errno));
            else errf(w, file, 1, "cannot read the configuration: %s", strerror(errno));
            free(canon);
            return NULL;
        }
        data = buf;
    } else if (len > MAX_FILE_SIZE) {
        errf(w, file, 1, "cannot read the configuration: %s", strerror(EFBIG));
        free(canon);
        return NULL;
    }
    cfg_node_t *root = parse_yaml(w, file, data, len);
    free(buf);
    if (root) {
        w->chain[w->nchain++] = canon;
        process_includes(w, root, depth);
        w->nchain--;
    }
    free(canon);
    return root;
}

/* ---------------------------------------------------------------------------------------------- */
/* typed values, shared by the option tables and the cfg_get_* functions for modules              */

static int node_string(const cfg_node_t *n, const char *path, const char **out, strlist_t *errors)
{
    char buf[100];
    if (n->type != CFG_SCALAR || n->is_null || !*n->value) {
        add_error(errors, n->file, n->line, "%s: expected a string, got %s", path,
                  n->type == CFG_SCALAR && !n->is_null ? "an empty one" : kind_text(n, buf, sizeof buf));
        return -1;
    }
    *out = n->value;
    return 0;
}

static int node_bool(const cfg_node_t *n, const char *path, int *out, strlist_t *errors)
{
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    if (n->type == CFG_SCALAR)
        for (int i = 0; i < 3; i++) {
            if (strcasecmp(n->value, yes[i]) == 0) return *out = 1, 0;
            if (strcasecmp(n->value, no[i]) == 0) return *out = 0, 0;
        }
    char buf[100];
    add_error(errors, n->file, n->line, "%s: expected true or false (yes/no, on/off), got %s", path,
              kind_text(n, buf, sizeof buf));
    return -1;
}

static int node_int(const cfg_node_t *n, const char *path, long min, long max, long *out, strlist_t *errors)
{
    char buf[100];
    const char *s = n->type == CFG_SCALAR ? n->value : "";
    const char *d = s + (*s == '+' || *s == '-');
    int digits = *d != '\0';
    for (const char *q = d; *q; q++) digits &= isdigit((unsigned char)*q) != 0;
    if (n->type != CFG_SCALAR || n->is_null || !digits) {
        add_error(errors, n->file, n->line, "%s: expected a whole number, got %s", path, kind_text(n, buf, sizeof buf));
        return -1;
    }
    errno = 0;
    long v = strtol(s, NULL, 10);
    if (errno == ERANGE || v < min) {
        if (v < min) add_error(errors, n->file, n->line, "%s: %.40s is below the minimum %ld", path, s, min);
        else add_error(errors, n->file, n->line, "%s: %.40s is above the maximum %ld", path, s, max);
        return -1;
    }
    if (v > max) {
        add_error(errors, n->file, n->line, "%s: %.40s is above the maximum %ld", path, s, max);
        return -1;
    }
    *out = v;
    return 0;
}

/* Index of `s` in a NULL-terminated list, or -1. */
static int choice_index(const char *const *choices, const char *s)
{
    for (int i = 0; choices[i]; i++)
        if (strcmp(choices[i], s) == 0) return i;
    return -1;
}

static void choice_error(walk_t *w, const cfg_node_t *n, const char *path, const char *const *choices)
{
    char list[200] = "";
    for (int i = 0; choices[i]; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", choices[i]);
    errf(w, n->file, n->line, "%s: '%.80s' is not one of %s", path, n->value, list);
}

/* ---------------------------------------------------------------------------------------------- */
/* value checks (a check may rewrite the value in place: lowercase, uppercase)                     */

typedef int (*check_fn)(walk_t *w, const cfg_node_t *n, const char *path, char *value);

/* Host names: lowercased, one trailing dot dropped, LDH or non-ASCII (IDN) labels. Full IDNA2008
 * preparation happens in jid.c; this catches what is certainly wrong with the line at hand. */
static int check_domain(walk_t *w, const cfg_node_t *n, const char *path, char *v)
{
    size_t len = strlen(v);
    if (len > 1 && v[len - 1] == '.') v[--len] = '\0';
    const char *why = NULL;
    if (len > 1023) why = "longer than 1023 bytes";
    else if (v[0] == '.' || strstr(v, "..")) why = "has an empty label";
    for (char *p = v; *p && !why; p++) {
        unsigned char ch = (unsigned char)*p;
        *p = (char)tolower(ch);
        if (ch < 0x80 && !isalnum(ch) && ch != '-' && ch != '.' && ch != '_') why = "has a character not allowed in a domain";
    }
    if (!why) return 0;
    errf(w, n->file, n->line, "%s: '%.80s' is not a domain name (%s)", path, v, why);
    return -1;
}

/* "host:port" or "[v6]:port" with port 0..65535; ip_only: host must be an IP literal (listeners). */
static const char *addr_problem(const char *v, int ip_only)
{
    char host[256];
    const char *port;
    if (v[0] == '[') {
        const char *close = strchr(v, ']');
        if (!close || close[1] != ':') return "expected [IPv6]:port";
        size_t hl = (size_t)(close - v - 1);
        if (hl == 0 || hl >= sizeof host) return "not an IPv6 address";
        memcpy(host, v + 1, hl);
        host[hl] = '\0';
        struct in6_addr a6;
        if (inet_pton(AF_INET6, host, &a6) != 1) return "not an IPv6 address";
        port = close + 2;
    } else {
        const char *colon = strrchr(v, ':');
        if (!colon) return "the :port is missing";
        size_t hl = (size_t)(colon - v);
        if (memchr(v, ':', hl)) return "write IPv6 addresses in brackets, as [::1]:5222";
        if (hl == 0 || hl >= sizeof host) return "the host is missing or too long";
        memcpy(host, v, hl);
        host[hl] = '\0';
        struct in_addr a4;
        if (ip_only && inet_pton(AF_INET, host, &a4) != 1) return "not an IPv4 address (or [IPv6])";
        for (const char *p = host; *p; p++)
            if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '_') return "not a host name";
        port = colon + 1;
    }
    size_t pl = strlen(port);
    if (pl == 0 || pl > 5 || strspn(port, "0123456789") != pl || atol(port) > 65535)
        return "the port must be a number from 0 to 65535";
    return NULL;
}

static int check_listen(walk_t *w, const cfg_node_t *n, const char *path, char *v)
{
    const char *why = addr_problem(v, 1);
    if (!why) return 0;
    errf(w, n->file, n->line, "%s: '%.80s' is not address:port (%s)", path, v, why);
    return -1;
}

/* http.trusted_proxies: "192.0.2.1", "10.0.0.0/8", "::1", "fd00::/8" */
static int check_proxy(walk_t *w, const cfg_node_t *n, const char *path, char *v)
{
    char ip[64];
    const char *slash = strchr(v, '/');
    size_t il = slash ? (size_t)(slash - v) : strlen(v);
    unsigned char buf[16];
    int bits = -1, max = 0;
    if (il < sizeof ip) {
        memcpy(ip, v, il);
        ip[il] = '\0';
        if (inet_pton(AF_INET, ip, buf) == 1) max = 32;
        else if (inet_pton(AF_INET6, ip, buf) == 1) max = 128;
    }
    if (max && slash) {
        size_t bl = strlen(slash + 1);
        if (bl >= 1 && bl <= 3 && strspn(slash + 1, "0123456789") == bl) bits = atoi(slash + 1);
    }
    if (max && (!slash || (bits >= 0 && bits <= max))) return 0;
    errf(w, n->file, n->line, "%s: '%.80s' is not an IP address or address/prefix-length", path, v);
    return -1;
}

/* http.public_url: "https://chat.example" or "http://host:port/prefix", no trailing slash */
static int check_public_url(walk_t *w, const cfg_node_t *n, const char *path, char *v)
{
    size_t l = strlen(v);
    if ((strncmp(v, "https://", 8) == 0 || strncmp(v, "http://", 7) == 0) && l > 8 && v[l - 1] != '/' &&
        !strpbrk(v, " \t?#\"'<>\\"))
        return 0;
    errf(w, n->file, n->line, "%s: '%.80s' is not an http:// or https:// URL without a trailing '/'", path, v);
    return -1;
}

static int check_route(walk_t *w, const cfg_node_t *n, const char *path, char *v)
{
    const char *why = addr_problem(v, 0);
    if (!why) return 0;
    errf(w, n->file, n->line, "%s: '%.80s' is not host:port (%s)", path, v, why);
    return -1;
}

static int check_module(walk_t *w, const cfg_node_t *n, const char *path, char *v)
{
    if (!w->known || choice_index(w->known, v) >= 0) return 0;
    errf(w, n->file, n->line, "%s: no module named '%.80s'", path, v);
    return -1;
}

/* The mechanisms civitas implements; names are case-insensitive here and stored uppercase. */
static const char *const sasl_mechs[] = {"SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1",
                                         "PLAIN", "EXTERNAL", NULL};

static int check_mech(walk_t *w, const cfg_node_t *n, const char *path, char *v)
{
    for (char *p = v; *p; p++) *p = (char)toupper((unsigned char)*p);
    if (choice_index(sasl_mechs, v) >= 0) return 0;
    choice_error(w, n, path, sasl_mechs);
    return -1;
}

/* ---------------------------------------------------------------------------------------------- */
/* option tables                                                                                   */

typedef enum {
    T_STR,      /* char *: non-empty string (choices and check optional) */
    T_PATH,     /* char *: path, made absolute against the file it is written in */
    T_BOOL,     /* int */
    T_INT,      /* long within [min, max] */
    T_ENUM,     /* int: index into choices */
    T_STRLIST,  /* strlist_t: a list of strings (a single string counts as a list of one) */
    T_SECTION,  /* a nested mapping whose rows (sub) fill the same struct */
    T_ARRAY,    /* a list of mappings, each filling one element struct described by sub */
} opt_type_t;

typedef struct opt opt_t;
/* Cross-key rules of one array element (after its keys were set). */
typedef void (*elem_fn)(walk_t *w, const cfg_node_t *item, void *elem, const char *path);

struct opt {
    const char *name;
    opt_type_t type;
    size_t off;                        /* the field this row fills */
    long def, min, max;                /* T_INT default and bounds; T_BOOL/T_ENUM default */
    const char *sdef;                  /* T_STR/T_PATH default (NULL: none) */
    const char *const *choices;        /* T_ENUM names (index = value); T_STR allowed values */
    check_fn check;                    /* T_STR/T_STRLIST per-value check */
    size_t flag_off;                   /* T_STRLIST: 1 + offset of an int set when the key is present; 0 none */
    int unique;                        /* T_STRLIST: an entry given twice is an error */
    int required;
    const opt_t *sub;                  /* T_SECTION / T_ARRAY rows */
    size_t count_off, elem_size, line_off, file_off;   /* T_ARRAY: size_t count, element layout */
    size_t value_line_off1;            /* scalars: 1 + offset of an int that gets the value's line (0: none) */
    elem_fn elem_check;                /* T_ARRAY */
};

#define FIELD(base, off, type) ((type *)(void *)((char *)(base) + (off)))
_Static_assert(sizeof(fed_mode_t) == sizeof(int) && sizeof(e2e_policy_t) == sizeof(int), "enums are stored as int");

static const char *const fed_modes[] = {"open", "allowlist", "off", NULL};
static const char *const e2e_policies[] = {"off", "warn", "require", NULL};
static const char *const storage_drivers[] = {"sqlite", "postgresql", NULL};
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

static void host_check(walk_t *w, const cfg_node_t *item, void *elem, const char *path)
{
    const cfg_host_t *h = elem;
    if (!h->certificate != !h->key)
        errf(w, item->file, item->line, "%s: '%.80s': tls needs both certificate and key (or neither)", path,
             h->name ? h->name : "?");
}

#define H(f) offsetof(cfg_host_t, f)
static const opt_t tls_opts[] = {
    {.name = "certificate", .type = T_PATH, .off = H(certificate), .value_line_off1 = 1 + H(certificate_line)},
    {.name = "key", .type = T_PATH, .off = H(key), .value_line_off1 = 1 + H(key_line)},
    {0}};
static const opt_t host_opts[] = {
    {.name = "name", .type = T_STR, .off = H(name), .check = check_domain, .required = 1},
    {.name = "tls", .type = T_SECTION, .sub = tls_opts},
    {0}};

#define P(f) offsetof(cfg_partner_t, f)
static const opt_t partner_opts[] = {
    {.name = "domain", .type = T_STR, .off = P(domain), .check = check_domain, .required = 1},
    {.name = "route", .type = T_STR, .off = P(route), .check = check_route},
    {.name = "ca", .type = T_PATH, .off = P(ca)},
    {.name = "e2e", .type = T_ENUM, .off = P(e2e), .def = E2E_OFF, .choices = e2e_policies,
     .value_line_off1 = 1 + P(e2e_line)},
    {0}};

#define C(f) offsetof(config_t, f)
static const opt_t listen_opts[] = {
    {.name = "client", .type = T_STRLIST, .off = C(listen_client), .check = check_listen},
    {.name = "client_tls", .type = T_STRLIST, .off = C(listen_client_tls), .check = check_listen},
    {.name = "server", .type = T_STRLIST, .off = C(listen_server), .check = check_listen},
    {.name = "server_tls", .type = T_STRLIST, .off = C(listen_server_tls), .check = check_listen},
    {.name = "http", .type = T_STRLIST, .off = C(listen_http), .check = check_listen},
    {.name = "https", .type = T_STRLIST, .off = C(listen_https), .check = check_listen},
    {0}};
static const opt_t http_opts[] = {
    {.name = "trusted_proxies", .type = T_STRLIST, .off = C(http_trusted_proxies), .check = check_proxy},
    {.name = "public_url", .type = T_STR, .off = C(http_public_url), .check = check_public_url},
    {.name = "max_header_size", .type = T_INT, .off = C(http_max_header_size), .def = 16384, .min = 1024, .max = 1048576},
    {.name = "max_headers", .type = T_INT, .off = C(http_max_headers), .def = 64, .min = 8, .max = 1000},
    {.name = "request_timeout", .type = T_INT, .off = C(http_request_timeout), .def = 30, .min = 1, .max = 3600},
    {.name = "idle_timeout", .type = T_INT, .off = C(http_idle_timeout), .def = 60, .min = 1, .max = 3600},
    {.name = "min_body_rate", .type = T_INT, .off = C(http_min_body_rate), .def = 1024, .min = 0, .max = 1000000000},
    {.name = "max_connections", .type = T_INT, .off = C(http_max_connections), .def = 4096, .min = 1, .max = 1000000},
    {.name = "max_connections_per_ip", .type = T_INT, .off = C(http_max_connections_per_ip), .def = 64, .min = 1,
     .max = 1000000},
    {0}};
static const opt_t storage_opts[] = {
    {.name = "driver", .type = T_STR, .off = C(storage_driver), .sdef = "sqlite", .choices = storage_drivers},
    {.name = "dsn", .type = T_STR, .off = C(storage_dsn)},
    {0}};
static const opt_t federation_opts[] = {
    {.name = "mode", .type = T_ENUM, .off = C(fed_mode), .def = FED_OPEN, .choices = fed_modes},
    {.name = "dialback", .type = T_BOOL, .off = C(fed_dialback), .def = 1},
    {.name = "partners", .type = T_ARRAY, .off = C(partners), .count_off = C(npartners), .sub = partner_opts,
     .elem_size = sizeof(cfg_partner_t), .line_off = P(line), .file_off = P(file)},
    {0}};
static const opt_t sasl_opts[] = {
    {.name = "mechanisms", .type = T_STRLIST, .off = C(sasl_mechanisms), .check = check_mech,
     .flag_off = 1 + C(sasl_mechanisms_set), .unique = 1},
    {.name = "iterations", .type = T_INT, .off = C(scram_iterations), .def = 4096, .min = 4096, .max = 1000000},
    {.name = "fast_token_days", .type = T_INT, .off = C(fast_token_days), .def = 14, .min = 0, .max = 3650},
    {0}};
static const opt_t log_opts[] = {
    {.name = "level", .type = T_STR, .off = C(log_level), .sdef = "info", .choices = log_levels},
    {.name = "file", .type = T_PATH, .off = C(log_file)},
    {.name = "jids", .type = T_BOOL, .off = C(log_jids), .def = 0},
    {0}};
#define LIMIT(n, d, lo, hi) {.name = #n, .type = T_INT, .off = C(n), .def = d, .min = lo, .max = hi}
static const opt_t limits_opts[] = {
    LIMIT(max_stanza_size, 262144, 10000, 16777216),
    LIMIT(max_stanza_size_preauth, 8192, 1024, 16777216),
    LIMIT(max_depth, 64, 8, 1024),
    LIMIT(max_attributes, 64, 8, 1024),
    LIMIT(stream_header_timeout, 30, 1, 3600),
    LIMIT(auth_timeout, 60, 1, 3600),
    LIMIT(max_connections_per_ip, 64, 1, 1000000),
    LIMIT(max_sessions_per_ip, 0, 0, 10000000),
    LIMIT(max_unauthenticated, 1024, 1, 10000000),
    LIMIT(sasl_failures_per_ip, 5, 1, 1000),
    LIMIT(max_output_buffer, 1048576, 65536, 1073741824),
    LIMIT(max_bytes_per_second, 100000, 1024, 1073741824),
    LIMIT(max_bytes_per_second_preauth, 10000, 1024, 1073741824),
    LIMIT(max_stanzas_per_second, 100, 1, 1000000),
    LIMIT(max_s2s_queue_bytes, 1048576, 65536, 1073741824),
    {0}};
static const opt_t top_opts[] = {
    {.name = "hosts", .type = T_ARRAY, .off = C(hosts), .count_off = C(nhosts), .sub = host_opts,
     .elem_size = sizeof(cfg_host_t), .line_off = H(line), .file_off = H(file), .elem_check = host_check},
    {.name = "listen", .type = T_SECTION, .sub = listen_opts},
    {.name = "data_dir", .type = T_PATH, .off = C(data_dir), .sdef = "data"},
    {.name = "storage", .type = T_SECTION, .sub = storage_opts},
    {.name = "federation", .type = T_SECTION, .sub = federation_opts},
    {.name = "modules", .type = T_STRLIST, .off = C(modules), .check = check_module,
     .flag_off = 1 + C(modules_set), .unique = 1},
    {.name = "sasl", .type = T_SECTION, .sub = sasl_opts},
    {.name = "log", .type = T_SECTION, .sub = log_opts},
    {.name = "user", .type = T_STR, .off = C(user)},
    {.name = "limits", .type = T_SECTION, .sub = limits_opts},
    {.name = "http", .type = T_SECTION, .sub = http_opts},
    {0}};

/* ---------------------------------------------------------------------------------------------- */
/* the generic setters                                                                             */

static void apply_defaults(walk_t *w, const opt_t *t, void *base)
{
    for (; t->name; t++) {
        switch (t->type) {
        case T_STR: *FIELD(base, t->off, char *) = cstrdup(w->c, t->sdef); break;
        case T_PATH: *FIELD(base, t->off, char *) = t->sdef ? resolve(w, w->main_file, t->sdef) : NULL; break;
        case T_BOOL:
        case T_ENUM: *FIELD(base, t->off, int) = (int)t->def; break;
        case T_INT: *FIELD(base, t->off, long) = t->def; break;
        case T_SECTION: apply_defaults(w, t->sub, base); break;
        case T_STRLIST:
        case T_ARRAY: break;   /* start empty (the struct is zeroed) */
        }
    }
}

static void walk_map(walk_t *w, const cfg_node_t *map, const opt_t *table, void *base, const char *path, int top);

static void set_string(walk_t *w, const cfg_node_t *n, const opt_t *t, void *base, const char *path)
{
    const char *s;
    if (node_string(n, path, &s, w->errors) < 0) return;
    if (t->choices && choice_index(t->choices, s) < 0) {
        choice_error(w, n, path, t->choices);
        return;
    }
    char *v = t->type == T_PATH ? resolve(w, n->file, s) : cstrdup(w->c, s);
    if (t->check && t->check(w, n, path, v) < 0) return;
    *FIELD(base, t->off, char *) = v;
}

static void set_strlist(walk_t *w, const cfg_node_t *n, const opt_t *t, void *base, const char *path)
{
    strlist_t *l = FIELD(base, t->off, strlist_t);
    if (t->flag_off) *FIELD(base, t->flag_off - 1, int) = 1;
    if (is_null(n)) return;
    if (n->type == CFG_MAP) {
        errf(w, n->file, n->line, "%s: expected a list, got a mapping", path);
        return;
    }
    const cfg_node_t *items = n->type == CFG_SEQ ? n->children : n;
    for (const cfg_node_t *i = items; i; i = n->type == CFG_SEQ ? i->next : NULL) {
        const char *s;
        if (l->n >= MAX_LIST) {
            errf(w, i->file, i->line, "%s: more than %d entries", path, MAX_LIST);
            return;
        }
        if (node_string(i, path, &s, w->errors) < 0) continue;
        char *v = cstrdup(w->c, s);
        if (t->check && t->check(w, i, path, v) < 0) continue;
        size_t k = 0;
        while (t->unique && k < l->n && strcmp(l->v[k], v) != 0) k++;
        if (t->unique && k < l->n) {
            errf(w, i->file, i->line, "%s: '%.80s' is listed twice", path, v);
            continue;
        }
        if (strlist_add(l, v) < 0) oom();
    }
}

static void set_array(walk_t *w, const cfg_node_t *n, const opt_t *t, void *base, const char *path)
{
    if (is_null(n)) return;
    if (n->type != CFG_SEQ) {
        char buf[100];
        errf(w, n->file, n->line, "%s: expected a list of entries (- key: value), got %s", path,
             kind_text(n, buf, sizeof buf));
        return;
    }
    size_t count = 0, i = 0;
    for (const cfg_node_t *it = n->children; it; it = it->next) count++;
    char *arr = count ? cmem(w->c, count * t->elem_size) : NULL;
    for (const cfg_node_t *it = n->children; it; it = it->next, i++) {
        void *elem = arr + i * t->elem_size;
        *FIELD(elem, t->line_off, int) = it->line;
        *FIELD(elem, t->file_off, const char *) = it->file;
        apply_defaults(w, t->sub, elem);
        size_t before = w->errors->n;
        walk_map(w, it, t->sub, elem, path, 0);
        if (t->elem_check && w->errors->n == before) t->elem_check(w, it, elem, path);
    }
    *FIELD(base, t->off, void *) = arr;
    *FIELD(base, t->count_off, size_t) = count;
}

/* The setter for one key: by the row's type, the value of `n` goes into base + t->off. */
static void set_opt(walk_t *w, const cfg_node_t *n, const opt_t *t, void *base, const char *path)
{
    int idx;
    if (t->value_line_off1) *FIELD(base, t->value_line_off1 - 1, int) = n->line;
    switch (t->type) {
    case T_STR:
    case T_PATH: set_string(w, n, t, base, path); break;
    case T_BOOL: node_bool(n, path, FIELD(base, t->off, int), w->errors); break;
    case T_INT: node_int(n, path, t->min, t->max, FIELD(base, t->off, long), w->errors); break;
    case T_ENUM:
        if (n->type != CFG_SCALAR || n->is_null) {
            char buf[100];
            errf(w, n->file, n->line, "%s: expected one of the words listed for it, got %s", path,
                 kind_text(n, buf, sizeof buf));
        } else if ((idx = choice_index(t->choices, n->value)) < 0) {
            choice_error(w, n, path, t->choices);
        } else {
            *FIELD(base, t->off, int) = idx;
        }
        break;
    case T_STRLIST: set_strlist(w, n, t, base, path); break;
    case T_SECTION: walk_map(w, n, t->sub, base, path, 0); break;
    case T_ARRAY: set_array(w, n, t, base, path); break;
    }
}

/* A top-level key that names a known module: keep its mapping for the module to read. */
static void add_module_section(walk_t *w, const cfg_node_t *n)
{
    if (n->type != CFG_MAP && !is_null(n)) {
        errf(w, n->file, n->line, "%.80s: a module's section must be a mapping (key: value lines)", n->key);
        return;
    }
    cfg_node_t *s = new_node(w, CFG_MAP, n->file, n->line);
    s->key = n->key;
    s->children = n->type == CFG_MAP ? n->children : NULL;
    cfg_node_t **p = &w->c->module_sections;
    while (*p) p = &(*p)->next;
    *p = s;
}

static void walk_map(walk_t *w, const cfg_node_t *map, const opt_t *table, void *base, const char *path, int top)
{
    if (!is_null(map) && map->type != CFG_MAP) {
        char buf[100];
        errf(w, map->file, map->line, "%s: expected a mapping (key: value lines), got %s", path,
             kind_text(map, buf, sizeof buf));
        return;
    }
    uint64_t seen = 0;
    for (const cfg_node_t *n = is_null(map) ? NULL : map->children; n; n = n->next) {
        int i = 0;
        while (table[i].name && strcmp(table[i].name, n->key) != 0) i++;
        if (!table[i].name) {
            if (top && w->known && choice_index(w->known, n->key) >= 0) add_module_section(w, n);
            else if (top) errf(w, n->file, n->line, "unknown key '%.80s'", n->key);
            else errf(w, n->file, n->line, "unknown key '%.80s' in '%s'", n->key, path);
            continue;
        }
        char sub[PATH_TEXT];
        join_path(sub, path, n->key);
        seen |= (uint64_t)1 << (i & 63);
        set_opt(w, n, &table[i], base, sub);
    }
    for (int i = 0; table[i].name; i++)
        if (table[i].required && !(seen & ((uint64_t)1 << (i & 63))))
            errf(w, map->file, map->line, "%s: '%s' is required", path, table[i].name);
}

/* ---------------------------------------------------------------------------------------------- */
/* rules across keys                                                                               */

typedef struct named {
    const char *name, *file;
    int line;
    size_t idx;
} named_t;

static int cmp_named(const void *a, const void *b)
{
    const named_t *x = a, *y = b;
    int r = strcmp(x->name, y->name);
    return r ? r : (x->idx > y->idx) - (x->idx < y->idx);
}

/* Report every name given more than once (names[i] NULL: skipped). */
static void check_unique(walk_t *w, named_t *v, size_t n, const char *what)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i].name) v[m++] = v[i];
    qsort(v, m, sizeof *v, cmp_named);
    for (size_t i = 1, first = 0; i < m; i++) {
        if (strcmp(v[i].name, v[first].name) != 0) {
            first = i;
            continue;
        }
        errf(w, v[i].file, v[i].line, "%s: '%.80s' is listed twice (first at %s:%d)", what, v[i].name,
             v[first].file, v[first].line);
    }
}

static void final_checks(walk_t *w, const cfg_node_t *root)
{
    config_t *c = w->c;
    const cfg_node_t *h = find_child(root, "hosts");
    if (c->nhosts == 0 && (!h || is_null(h) || h->type == CFG_SEQ)) {   /* else its shape was reported */
        errf(w, h ? h->file : w->main_file, h ? h->line : 1,
             "no hosts: list at least one domain under 'hosts:' (- name: example.org)");
    }
    size_t n = c->nhosts > c->npartners ? c->nhosts : c->npartners;
    named_t *v = malloc((n ? n : 1) * sizeof *v);
    if (!v) oom();
    for (size_t i = 0; i < c->nhosts; i++) v[i] = (named_t){c->hosts[i].name, c->hosts[i].file, c->hosts[i].line, i};
    check_unique(w, v, c->nhosts, "hosts");
    for (size_t i = 0; i < c->npartners; i++)
        v[i] = (named_t){c->partners[i].domain, c->partners[i].file, c->partners[i].line, i};
    check_unique(w, v, c->npartners, "federation.partners");
    free(v);
    if (c->storage_driver && strcmp(c->storage_driver, "postgresql") == 0 && !c->storage_dsn) {
        const cfg_node_t *s = find_child(root, "storage");
        errf(w, s ? s->file : w->main_file, s ? s->line : 1, "storage.dsn is required with driver postgresql");
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* public                                                                                          */

static config_t *load(const char *path, const char *data, size_t len, const char *const *known, strlist_t *errors)
{
    strlist_t local = {0};
    if (!errors) errors = &local;
    size_t before = errors->n;
    if (!path || !*path) {
        add_error(errors, "(config)", 1, "no configuration file given");
        return NULL;
    }
    config_t *c = calloc(1, sizeof *c);
    if (!c) oom();
    walk_t w = {.c = c, .errors = errors, .known = known};
    c->path = cstrdup(c, path);
    w.main_file = file_ref(&w, path);
    apply_defaults(&w, top_opts, c);
    cfg_node_t *root = load_file(&w, path, data, len, 0, NULL);
    if (root) {
        walk_map(&w, root, top_opts, c, "", 1);
        final_checks(&w, root);
    }
    if (errors->n > before) {
        config_free(c);
        c = NULL;
    }
    strlist_free(&local);
    return c;
}

config_t *config_load(const char *file, const char *const *known_modules, strlist_t *errors)
{
    return load(file, NULL, 0, known_modules, errors);
}

config_t *config_load_buffer(const char *path, const char *data, size_t len, const char *const *known_modules,
                             strlist_t *errors)
{
    return load(path, data ? data : "", data ? len : 0, known_modules, errors);
}

void config_free(config_t *c)
{
    if (!c) return;
    strlist_t *lists[] = {&c->listen_client, &c->listen_client_tls, &c->listen_server, &c->listen_server_tls,
                          &c->listen_http, &c->listen_https, &c->http_trusted_proxies, &c->modules, &c->sasl_mechanisms, &c->files};
    for (size_t i = 0; i < sizeof lists / sizeof *lists; i++) strlist_free(lists[i]);
    for (mem_block_t *b = c->mem, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(c);
}

const cfg_host_t *config_host(const config_t *c, const char *domain)
{
    if (!c || !domain) return NULL;
    for (size_t i = 0; i < c->nhosts; i++)
        if (c->hosts[i].name && strcasecmp(c->hosts[i].name, domain) == 0) return &c->hosts[i];
    return NULL;
}

const cfg_partner_t *config_partner(const config_t *c, const char *domain)
{
    if (!c || !domain) return NULL;
    for (size_t i = 0; i < c->npartners; i++)
        if (c->partners[i].domain && strcasecmp(c->partners[i].domain, domain) == 0) return &c->partners[i];
    return NULL;
}

const cfg_node_t *config_module_section(const config_t *c, const char *module)
{
    if (!c || !module) return NULL;
    for (const cfg_node_t *s = c->module_sections; s; s = s->next)
        if (strcmp(s->key, module) == 0) return s;
    return NULL;
}

/* The value of `key` in a module section and its dotted name for messages. */
static const cfg_node_t *section_value(const cfg_node_t *section, const char *key, char *path)
{
    const cfg_node_t *n = key ? find_child(section, key) : NULL;
    if (n) join_path(path, section->key, key);
    return n;
}

int cfg_get_int(const cfg_node_t *section, const char *key, long def, long min, long max, long *out, strlist_t *errors)
{
    char path[PATH_TEXT];
    const cfg_node_t *n = section_value(section, key, path);
    *out = def;
    return n ? node_int(n, path, min, max, out, errors) : 0;
}

int cfg_get_bool(const cfg_node_t *section, const char *key, int def, int *out, strlist_t *errors)
{
    char path[PATH_TEXT];
    const cfg_node_t *n = section_value(section, key, path);
    *out = def;
    return n ? node_bool(n, path, out, errors) : 0;
}

int cfg_get_string(const cfg_node_t *section, const char *key, const char *def, const char **out, strlist_t *errors)
{
    char path[PATH_TEXT];
    const cfg_node_t *n = section_value(section, key, path);
    *out = def;
    return n ? node_string(n, path, out, errors) : 0;
}

int cfg_check_keys(const cfg_node_t *section, const char *const *allowed, strlist_t *errors)
{
    if (!section) return 0;
    int r = 0;
    if (section->type != CFG_MAP) {
        add_error(errors, section->file, section->line, "%.80s: expected a mapping (key: value lines)",
                  section->key ? section->key : "section");
        return -1;
    }
    for (const cfg_node_t *n = section->children; n; n = n->next)
        if (!allowed || choice_index(allowed, n->key) < 0) {
            add_error(errors, n->file, n->line, "unknown key '%.80s' in section '%.80s'", n->key,
                      section->key ? section->key : "?");
            r = -1;
        }
    return r;
}

/* ---------------------------------------------------------------------------------------------- */
/* more typed values for module options: one value node named by a path, and the cfg_get_* forms  */

const cfg_node_t *cfg_child(const cfg_node_t *map, const char *key) { return key ? find_child(map, key) : NULL; }

int cfg_value_int(const cfg_node_t *n, const char *path, long min, long max, long *out, strlist_t *errors)
{
    return node_int(n, path, min, max, out, errors);
}

int cfg_value_bool(const cfg_node_t *n, const char *path, int *out, strlist_t *errors)
{
    return node_bool(n, path, out, errors);
}

int cfg_value_string(const cfg_node_t *n, const char *path, const char **out, strlist_t *errors)
{
    return node_string(n, path, out, errors);
}

int cfg_value_enum(const cfg_node_t *n, const char *path, const char *const *choices, int *out, strlist_t *errors)
{
    char list[300] = "", buf[100];
    for (int i = 0; choices[i]; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", choices[i]);
    if (n->type != CFG_SCALAR || n->is_null) {
        add_error(errors, n->file, n->line, "%s: expected one of %s, got %s", path, list, kind_text(n, buf, sizeof buf));
        return -1;
    }
    int i = choice_index(choices, n->value);
    if (i < 0) {
        add_error(errors, n->file, n->line, "%s: '%.80s' is not one of %s", path, n->value, list);
        return -1;
    }
    *out = i;
    return 0;
}

int cfg_value_list(const cfg_node_t *n, const char *path, strlist_t *out, strlist_t *errors)
{
    char buf[100];
    strlist_t l = {0};
    if (is_null(n)) return *out = l, 0;     /* "key:" with nothing: the empty list */
    if (n->type != CFG_SEQ) {
        add_error(errors, n->file, n->line, "%s: expected a list of strings ([a, b] or '- a' lines), got %s", path,
                  kind_text(n, buf, sizeof buf));
        return -1;
    }
    int bad = 0;
    for (const cfg_node_t *i = n->children; i; i = i->next) {
        const char *s;
        if (l.n >= MAX_LIST) {
            add_error(errors, i->file, i->line, "%s: more than %d entries", path, MAX_LIST);
            bad = 1;
            break;
        }
        if (node_string(i, path, &s, errors) < 0) bad = 1;
        else if (strlist_add(&l, s) < 0) oom();
    }
    if (bad) {
        strlist_free(&l);
        return -1;
    }
    *out = l;
    return 0;
}

/* A whole number followed by one of units[] (the empty unit: factor 1, so a plain number is seconds
 * or bytes); -1 when the text is not that shape, -2 when it overflows a long. */
typedef struct unit { const char *name; long factor; } unit_t;

static int parse_units(const char *s, const unit_t *units, long *out)
{
    const char *p = s;
    if (!isdigit((unsigned char)*p)) return -1;
    while (isdigit((unsigned char)*p)) p++;
    const unit_t *u = units;
    while (u->name && strcmp(u->name, p) != 0) u++;
    if (!u->name) return -1;
    errno = 0;
    long v = strtol(s, NULL, 10);
    if (errno == ERANGE || v > LONG_MAX / u->factor) return -2;
    *out = v * u->factor;
    return 0;
}

static const unit_t duration_units[] = {{"", 1}, {"s", 1}, {"m", 60}, {"h", 3600}, {"d", 86400}, {NULL, 0}};
/* Binary units only: "10M" is 10 MiB, as in nginx and Prosody; there is no decimal "MB" to confuse. */
static const unit_t size_units[] = {{"", 1},           {"K", 1L << 10},   {"k", 1L << 10},   {"KiB", 1L << 10},
                                    {"M", 1L << 20},   {"m", 1L << 20},   {"MiB", 1L << 20}, {"G", 1L << 30},
                                    {"g", 1L << 30},   {"GiB", 1L << 30}, {"T", 1L << 40},   {"t", 1L << 40},
                                    {"TiB", 1L << 40}, {NULL, 0}};

/* v in the largest unit that divides it, in its longest spelling ("10MiB", "14d"); else plain
 * ("90s", "1000"). */
static const char *format_units(long v, const unit_t *units, char *buf, size_t len)
{
    const unit_t *best = NULL;
    for (const unit_t *u = units; u->name; u++) {
        if (u->factor == 1 || v == 0 || v % u->factor != 0) continue;
        if (!best || u->factor > best->factor || (u->factor == best->factor && strlen(u->name) > strlen(best->name)))
            best = u;
    }
    if (best) snprintf(buf, len, "%ld%s", v / best->factor, best->name);
    else snprintf(buf, len, "%ld%s", v, units == duration_units ? "s" : "");
    return buf;
}

const char *cfg_format_duration(long seconds, char *buf, size_t len) { return format_units(seconds, duration_units, buf, len); }
const char *cfg_format_size(long bytes, char *buf, size_t len) { return format_units(bytes, size_units, buf, len); }

static int value_units(const cfg_node_t *n, const char *path, const unit_t *units, const char *what, long min,
                       long max, long *out, strlist_t *errors)
{
    char buf[100], lim[40];
    long v = 0;
    int r = n->type == CFG_SCALAR && !n->is_null ? parse_units(n->value, units, &v) : -1;
    const char *(*fmt)(long, char *, size_t) = units == duration_units ? cfg_format_duration : cfg_format_size;
    if (r == -1) {
        add_error(errors, n->file, n->line, "%s: expected %s, got %s", path, what, kind_text(n, buf, sizeof buf));
        return -1;
    }
    if (r == -2 || v > max) {
        add_error(errors, n->file, n->line, "%s: %.40s is above the maximum %s", path, n->value, fmt(max, lim, sizeof lim));
        return -1;
    }
    if (v < min) {
        add_error(errors, n->file, n->line, "%s: %.40s is below the minimum %s", path, n->value, fmt(min, lim, sizeof lim));
        return -1;
    }
    *out = v;
    return 0;
}

int cfg_value_duration(const cfg_node_t *n, const char *path, long min, long max, long *out, strlist_t *errors)
{
    return value_units(n, path, duration_units, "a duration (seconds, or a whole number with s, m, h or d: 30s, 5m, 72h, 14d)",
                       min, max, out, errors);
}

int cfg_value_size(const cfg_node_t *n, const char *path, long min, long max, long *out, strlist_t *errors)
{
    return value_units(n, path, size_units,
                       "a size (bytes, or a whole number with K, M, G or T, also written KiB, MiB, GiB, TiB, "
                       "binary: 512K, 10M, 1G)",
                       min, max, out, errors);
}

int cfg_get_enum(const cfg_node_t *section, const char *key, const char *const *choices, int def, int *out,
                 strlist_t *errors)
{
    char path[PATH_TEXT];
    const cfg_node_t *n = section_value(section, key, path);
    *out = def;
    return n ? cfg_value_enum(n, path, choices, out, errors) : 0;
}

int cfg_get_duration(const cfg_node_t *section, const char *key, long def, long min, long max, long *out,
                     strlist_t *errors)
{
    char path[PATH_TEXT];
    const cfg_node_t *n = section_value(section, key, path);
    *out = def;
    return n ? cfg_value_duration(n, path, min, max, out, errors) : 0;
}

int cfg_get_size(const cfg_node_t *section, const char *key, long def, long min, long max, long *out,
                 strlist_t *errors)
{
    char path[PATH_TEXT];
    const cfg_node_t *n = section_value(section, key, path);
    *out = def;
    return n ? cfg_value_size(n, path, min, max, out, errors) : 0;
}

int cfg_get_list(const cfg_node_t *section, const char *key, const char *const *def, strlist_t *out, strlist_t *errors)
{
    char path[PATH_TEXT];
    const cfg_node_t *n = section_value(section, key, path);
    strlist_t l = {0};
    if (n && cfg_value_list(n, path, &l, errors) == 0) return *out = l, 0;
    for (size_t i = 0; def && def[i]; i++)
        if (strlist_add(&l, def[i]) < 0) oom();
    *out = l;
    return n ? -1 : 0;
}
