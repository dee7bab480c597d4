/*
 * file: a whole file read into memory, for tests that compare against a
 * committed file (fixtures, proto/). No Criterion: the caller asserts.
 */
#ifndef SHOP_TESTS_SUPPORT_FILE_H
#define SHOP_TESTS_SUPPORT_FILE_H

#include <stddef.h>

/* The bytes of path, NUL-terminated (the terminator not counted in *len,
 * which may be NULL); NULL when it cannot be opened or read. The caller
 * frees it. */
char *test_file_read(const char *path, size_t *len);

#endif
