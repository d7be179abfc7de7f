/* The libpq oracle of the URL tests: reads hex-encoded connection strings, one per line, and
 * prints what libpq's own PQconninfoParse makes of each (values hex-encoded), or its error.
 * A string with a hostaddr is also given to PQconnectStart, whose option checks (one host
 * per hostaddr, one port per host) PQconninfoParse does not make; with a hostaddr libpq
 * resolves no name, and the connection it starts is closed at once. Only an option error
 * ("could not match ...", "invalid ...") counts as a refusal, never a network one.
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
typedef struct pg_conn PGconn;
extern PGconn *PQconnectStart(const char *conninfo);
extern int PQstatus(const PGconn *conn);
extern char *PQerrorMessage(const PGconn *conn);
extern void PQfinish(PGconn *conn);
#define CONNECTION_BAD 1

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
            int hostaddr = 0;
            for (PQconninfoOption *o = opts; o->keyword; o++)
                if (!strcmp(o->keyword, "hostaddr") && o->val && o->val[0]) hostaddr = 1;
            if (hostaddr) {
                PGconn *conn = PQconnectStart(in);
                const char *msg = conn ? PQerrorMessage(conn) : "";
                if (conn && PQstatus(conn) == CONNECTION_BAD &&
                    (strstr(msg, "could not match") || !strncmp(msg, "invalid ", 8))) {
                    printf("ERR ");
                    hex(msg);
                    printf("\n");
                    fflush(stdout);
                    PQfinish(conn);
                    PQconninfoFree(opts);
                    free(in);
                    continue;
                }
                if (conn) PQfinish(conn);
            }
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
