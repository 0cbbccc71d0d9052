/* The process: listeners, accept, signals, reload and shutdown. */
#ifndef PGWP_SERVER_H
#define PGWP_SERVER_H

#include "config.h"

/* Runs until shutdown; returns the process exit code. Takes ownership of cfg. */
int server_run(struct config *cfg, int argc, char **argv);

#endif
