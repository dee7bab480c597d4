/* shop-openapi-gen FDS OUT: writes the OpenAPI 3.1 document of the
 * gateway's routes, built from the descriptor set FDS (with source info),
 * to OUT. Run by the build; see gateway.h. */
#include <stdio.h>
#include <stdlib.h>

#include "gateway/gateway.h"

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: shop-openapi-gen DESCRIPTOR_SET OUT.json\n");
    return 2;
  }
  FILE *f = fopen(argv[1], "rb");
  if (f == NULL) {
    perror(argv[1]);
    return 1;
  }
  size_t cap = 1 << 20, n = 0;
  unsigned char *buf = malloc(cap);
  size_t got;
  while (buf != NULL && (got = fread(buf + n, 1, cap - n, f)) > 0) {
    n += got;
    if (n == cap) {
      unsigned char *nb = realloc(buf, cap *= 2);
      if (nb == NULL) free(buf);
      buf = nb;
    }
  }
  fclose(f);
  if (buf == NULL) {
    fprintf(stderr, "shop-openapi-gen: out of memory\n");
    return 1;
  }
  json_t *doc = NULL;
  char err[512] = "";
  status_code st = gateway_openapi_build(&doc, buf, n, err, sizeof err);
  free(buf);
  if (st != STATUS_OK) {
    fprintf(stderr, "shop-openapi-gen: %s\n", err);
    return 1;
  }
  int rc = json_dump_file(doc, argv[2], JSON_INDENT(1)) == 0 ? 0 : 1;
  if (rc != 0) fprintf(stderr, "shop-openapi-gen: cannot write %s\n", argv[2]);
  json_decref(doc);
  return rc;
}
