/* A main() for the fuzz targets without libFuzzer, so that any compiler
 * (and the sanitized test build) can run them:
 *
 *   rpc_envelope_replay [-runs=N] [-seed=S] FILE_OR_DIR...
 *
 * Replays every input file, then runs N mutations (byte flips, inserts,
 * deletes, truncations, splices of two inputs) drawn from a generator
 * seeded with S. Same seed, same inputs. Exits non-zero only through the
 * target's own abort() or a sanitizer report. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct input {
  uint8_t *data;
  size_t len;
} input;

static input *inputs;
static size_t n_inputs, cap_inputs;

static void add_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
  if (buf == NULL || (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n)) {
    free(buf);
    fclose(f);
    return;
  }
  fclose(f);
  if (n_inputs == cap_inputs) {
    cap_inputs = cap_inputs ? cap_inputs * 2 : 64;
    inputs = realloc(inputs, cap_inputs * sizeof *inputs);
  }
  inputs[n_inputs++] = (input){buf, (size_t)n};
}

static void add_path(const char *path) {
  struct stat st;
  if (stat(path, &st) != 0) {
    fprintf(stderr, "replay: cannot read %s\n", path);
    exit(2);
  }
  if (!S_ISDIR(st.st_mode)) {
    add_file(path);
    return;
  }
  struct dirent **names;
  int n = scandir(path, &names, NULL, alphasort);
  for (int i = 0; i < n; i++) {
    if (names[i]->d_name[0] != '.') {
      char full[4096];
      snprintf(full, sizeof full, "%s/%s", path, names[i]->d_name);
      add_file(full);
    }
    free(names[i]);
  }
  free(names);
}

static uint64_t rng;
static uint64_t next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static size_t mutate(uint8_t *buf, size_t len, size_t cap) {
  int rounds = 1 + (int)(next() % 4);
  for (int r = 0; r < rounds; r++) {
    switch (next() % 6) {
    case 0: /* flip a bit */
      if (len > 0) buf[next() % len] ^= (uint8_t)(1u << (next() % 8));
      break;
    case 1: /* set a byte to an interesting value */
      if (len > 0) {
        static const uint8_t v[] = {0x00, 0x01, 0x7f, 0x80, 0xff, 0x0a, 0x12, 0x08};
        buf[next() % len] = v[next() % sizeof v];
      }
      break;
    case 2: /* insert a byte */
      if (len < cap) {
        size_t at = len ? next() % (len + 1) : 0;
        memmove(buf + at + 1, buf + at, len - at);
        buf[at] = (uint8_t)next();
        len++;
      }
      break;
    case 3: /* delete a byte */
      if (len > 0) {
        size_t at = next() % len;
        memmove(buf + at, buf + at + 1, len - at - 1);
        len--;
      }
      break;
    case 4: /* truncate */
      if (len > 0) len = next() % len;
      break;
    default: { /* splice the tail of another input */
      const input *o = &inputs[next() % n_inputs];
      if (o->len == 0) break;
      size_t at = len ? next() % len : 0;
      size_t from = next() % o->len;
      size_t n = o->len - from;
      if (at + n > cap) n = cap - at;
      memcpy(buf + at, o->data + from, n);
      if (at + n > len) len = at + n;
      break;
    }
    }
  }
  return len;
}

int main(int argc, char **argv) {
  long runs = 0;
  uint64_t seed = 1;
  LLVMFuzzerInitialize(&argc, &argv);
  for (int i = 1; i < argc; i++) {
    if (strncmp(argv[i], "-runs=", 6) == 0)
      runs = atol(argv[i] + 6);
    else if (strncmp(argv[i], "-seed=", 6) == 0)
      seed = strtoull(argv[i] + 6, NULL, 10);
    else
      add_path(argv[i]);
  }
  if (n_inputs == 0) add_file("/dev/null");
  if (n_inputs == 0) {
    inputs = calloc(1, sizeof *inputs);
    inputs[0] = (input){calloc(1, 1), 0};
    n_inputs = 1;
  }
  for (size_t i = 0; i < n_inputs; i++) LLVMFuzzerTestOneInput(inputs[i].data, inputs[i].len);
  rng = seed * 0x9e3779b97f4a7c15ULL + 1;
  size_t cap = 4096;
  uint8_t *buf = malloc(cap);
  for (long r = 0; r < runs; r++) {
    const input *src = &inputs[next() % n_inputs];
    size_t len = src->len < cap ? src->len : cap;
    memcpy(buf, src->data, len);
    len = mutate(buf, len, cap);
    /* Exact-size copy, so that ASan catches reads past the input. */
    uint8_t *exact = malloc(len ? len : 1);
    memcpy(exact, buf, len);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
  }
  free(buf);
  for (size_t i = 0; i < n_inputs; i++) free(inputs[i].data);
  free(inputs);
  printf("replay: %zu inputs replayed, %ld mutations run (seed %llu): no failure\n", n_inputs, runs,
         (unsigned long long)seed);
  return 0;
}
