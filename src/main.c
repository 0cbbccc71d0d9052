/* pgwire-proxy: CLI → config → server_run(). */
#include "authfile.h"
#include "config.h"
#include "server.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--hash-password") == 0)
            return authfile_hash_password_cli(stdin, stdout, stderr);
    struct config cfg;
    char err[512];
    switch (config_load(&cfg, argc, argv, NULL, stdout, err, sizeof(err))) {
    case CONFIG_EXIT_OK:
        return 0;
    case CONFIG_ERROR:
        fprintf(stderr, "pgwire-proxy: %s\n", err);
        return 2;
    case CONFIG_OK:
        break;
    }
    return server_run(&cfg, argc, argv);
}
