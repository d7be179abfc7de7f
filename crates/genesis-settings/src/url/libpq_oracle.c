/* The libpq oracle of the URL tests: reads hex-encoded connection strings, one per line, and
 * prints what libpq's own PQconninfoParse makes of each (values hex-encoded), or its error.
 * The prototypes are libpq's public ones, declared here so that only libpq.so.5 is needed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *keyword, *envvar, *compiled, *val, *label, *dispchar;
    int dispsize;
} PQconninfoOption;
extern PQconninfoOption *PQconninfoParse(const char *conninfo, char **errmsg);
extern void PQconninfoFree(PQconninfoOption *options);
extern void PQfreemem(void *ptr);

static void hex(const char *s) {
    for (; *s; s++) printf("%02x", (unsigned char)*s);
}

int main(void) {
    static char line[1 << 16];
    while (fgets(line, sizeof line, stdin)) {
        size_t n = strlen(line);
        if (n && line[n - 1] == '\n') line[--n] = 0;
        char *in = calloc(n / 2 + 1, 1);
        for (size_t i = 0; i < n / 2; i++) sscanf(line + 2 * i, "%2hhx", (unsigned char *)&in[i]);
        char *err = NULL;
        PQconninfoOption *opts = PQconninfoParse(in, &err);
        if (!opts) {
            printf("ERR ");
            if (err) { hex(err); PQfreemem(err); }
        } else {
            printf("OK");
            for (PQconninfoOption *o = opts; o->keyword; o++)
                if (o->val) { printf(" %s=", o->keyword); hex(o->val); }
            PQconninfoFree(opts);
        }
        printf("\n");
        fflush(stdout);
        free(in);
    }
    return 0;
}
