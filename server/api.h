/* server/api.h: marks for the module API. civitasd is built with -fvisibility=hidden: only the
 * functions declared under these marks (module.h and the headers it includes) are exported to
 * modules; everything else in the core stays internal (scripts/include-graph checks with nm). */
#ifndef CIVITAS_API_H
#define CIVITAS_API_H
#define CIVITAS_API __attribute__((visibility("default")))        /* one declaration */
#define CIVITAS_API_BEGIN _Pragma("GCC visibility push(default)")   /* every declaration until */
#define CIVITAS_API_END _Pragma("GCC visibility pop")               /* ... this one */
#endif
