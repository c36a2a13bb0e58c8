/* hello.c: the smallest libclerk program: write, read, compare-and-swap.
 *
 *   cc hello.c $(pkg-config --cflags --libs raftkv-clerk) -o hello
 *   RAFTKV_CLUSTER=127.0.0.1:7001,127.0.0.2:7001,127.0.0.3:7001 ./hello
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <clerk/clerk.h>

int main(int argc, char **argv)
{
    const char *servers = argc > 1 ? argv[1] : getenv("RAFTKV_CLUSTER");
    if (!servers) {
        fprintf(stderr, "usage: hello HOST:PORT,... (or set RAFTKV_CLUSTER)\n");
        return 2;
    }
    struct clerk *ck;
    if (clerk_open(&ck, servers, NULL) != CLERK_OK) {
        fprintf(stderr, "hello: %s\n", clerk_open_error());
        return 2;
    }
    int err = clerk_put(ck, "hello", 5, "world", 5);
    if (err != CLERK_OK) {
        fprintf(stderr, "hello: put: %s: %s\n", clerk_strerror(err),
                clerk_errmsg(ck));
        clerk_close(ck);
        return 1;
    }
    void *value;
    size_t len;
    err = clerk_get(ck, "hello", 5, &value, &len);
    if (err != CLERK_OK) {
        fprintf(stderr, "hello: get: %s\n", clerk_strerror(err));
        clerk_close(ck);
        return 1;
    }
    printf("hello -> %.*s\n", (int)len, (char *)value);
    clerk_free(value);
    /* Only one of two racing writers wins a compare-and-swap. */
    err = clerk_cas(ck, "hello", 5, "world", 5, "raftkv", 6, NULL, NULL);
    printf("cas world -> raftkv: %s\n", clerk_error_code(err));
    err = clerk_cas(ck, "hello", 5, "world", 5, "again", 5, NULL, NULL);
    printf("cas world -> again: %s\n", clerk_error_code(err));
    clerk_close(ck);
    return 0;
}
