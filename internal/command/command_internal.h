/* The command module's own parts (command.c: the transaction; idem.c: the
 * records). Not part of its contract. */
#ifndef SHOP_COMMAND_INTERNAL_H
#define SHOP_COMMAND_INTERNAL_H

#include "command/command.h"

/* A call's record key: its scope and the keyed digest of its request. */
typedef struct command_idem_key {
  char scope[201];
  unsigned char hash[32];
} command_idem_key;

void command_idem_key_of(const rpc_call *call, command_idem_key *k);

/* Inserts the call's record with its current status and reply (NULL: a
 * failure's record) in the open transaction on tx. ALREADY_EXISTS: the
 * key was used before (a repeat): roll back and replay. */
status_code command_idem_insert(db_conn *tx, rpc_call *call, const command_idem_key *k,
                                const ProtobufCMessage *reply, char *errbuf, size_t errlen);

typedef enum command_idem_found {
  COMMAND_IDEM_NONE,       /* no record: run the command */
  COMMAND_IDEM_REPLAYED,   /* the call holds the stored reply */
  COMMAND_IDEM_REFUSED,    /* the call holds a refusal (another request's key) */
  COMMAND_IDEM_UNREADABLE, /* the database did not answer (errbuf) */
} command_idem_found;

/* Looks the call's record up on c (no transaction needed) and, when there
 * is one, puts its reply (or the refusal) on the call. */
command_idem_found command_idem_replay(db_conn *c, rpc_call *call, const command_idem_key *k,
                                       char *errbuf, size_t errlen);

#endif
