/* shopctl: Shop's command-line client (grpcurl- and kcat-like). Every
 * command lives in internal/cli; see `shopctl --help`. */
#include "cli/cli.h"

int main(int argc, char **argv) { return cli_main(argc, argv); }
