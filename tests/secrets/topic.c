/* Creates or deletes a scratch topic for no_secrets.sh's negative control
 * (the test brokers do not create topics on their own):
 *
 *   no_secrets_topic create|delete BROKERS TOPIC */
#include <stdio.h>
#include <string.h>

#include "events/events.h"

int main(int argc, char **argv) {
  if (argc != 4 || (strcmp(argv[1], "create") != 0 && strcmp(argv[1], "delete") != 0)) {
    fprintf(stderr, "usage: %s create|delete BROKERS TOPIC\n", argv[0]);
    return 2;
  }
  char err[512];
  status_code st = strcmp(argv[1], "create") == 0
                       ? events_topic_create(argv[2], argv[3], 1, 30000, err, sizeof err)
                       : events_topic_delete(argv[2], argv[3], 30000, err, sizeof err);
  if (st != STATUS_OK) fprintf(stderr, "%s %s: %s\n", argv[1], argv[3], err);
  events_shutdown_wait(10000);
  return st == STATUS_OK ? 0 : 1;
}
