/*
 * page: the pages of a list query: the page size a PageRequest asks for,
 * opaque page tokens bound to the filters they were issued for (a token of
 * another query is refused), and one page (count and rows) on one
 * connection.
 *
 * Thread-safety: any thread.
 */
#ifndef SHOP_PAGE_H
#define SHOP_PAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db/db.h"
#include "rpc/rpc.h"
#include "shop/common/v1/common.pb-c.h"

/* One page of a list query on one connection of pool: *total from
 * count_sql (with count_params), *rows from page_sql (with page_params;
 * the caller frees them). False when either failed: the call's status is
 * set as handler_db_failed sets it, with what naming the listing. */
bool page_list(rpc_call *call, db_pool *pool, const char *count_sql, const db_value *count_params,
               size_t ncount, const char *page_sql, const db_value *page_params, size_t npage,
               const char *what, int64_t *total, db_rows **rows);

#define PAGE_DEFAULT 50
#define PAGE_MAX 500
#define PAGE_TOKEN_MAX 8192
#define PAGE_FIELDS_MAX 4
#define PAGE_FIELD_MAX 1024

/* The page size a PageRequest asks for (NULL: the default); false with
 * INVALID_ARGUMENT on the call (violation page.page_size) when out of
 * range. */
bool page_size(rpc_call *call, const Shop__Common__V1__PageRequest *page, int *size);

/* The position after the last item of a page: a few key fields (the sort
 * key and the id), as text. */
typedef struct page_pos {
  size_t n;
  char field[PAGE_FIELDS_MAX][PAGE_FIELD_MAX];
} page_pos;

/* Writes an opaque token (base64url) for pos, bound to a digest of
 * filters (the canonical text of the query's filters and sort). */
void page_token_encode(char out[PAGE_TOKEN_MAX], const char *filters, const page_pos *pos);

/* Decodes a token; "" or NULL gives pos->n = 0 (the first page). False with
 * INVALID_ARGUMENT on the call (violation page.page_token) when the token
 * is malformed or was issued for other filters. */
bool page_token_decode(rpc_call *call, const char *token, const char *filters, page_pos *pos);

#endif
