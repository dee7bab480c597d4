#include <criterion/criterion.h>
#include <string.h>

#include "status/status.h"

Test(status, codes_have_the_grpc_canonical_numbers) {
  cr_assert_eq(STATUS_OK, 0);
  cr_assert_eq(STATUS_CANCELLED, 1);
  cr_assert_eq(STATUS_INVALID_ARGUMENT, 3);
  cr_assert_eq(STATUS_DEADLINE_EXCEEDED, 4);
  cr_assert_eq(STATUS_NOT_FOUND, 5);
  cr_assert_eq(STATUS_ALREADY_EXISTS, 6);
  cr_assert_eq(STATUS_PERMISSION_DENIED, 7);
  cr_assert_eq(STATUS_RESOURCE_EXHAUSTED, 8);
  cr_assert_eq(STATUS_FAILED_PRECONDITION, 9);
  cr_assert_eq(STATUS_ABORTED, 10);
  cr_assert_eq(STATUS_UNIMPLEMENTED, 12);
  cr_assert_eq(STATUS_INTERNAL, 13);
  cr_assert_eq(STATUS_UNAVAILABLE, 14);
  cr_assert_eq(STATUS_DATA_LOSS, 15);
  cr_assert_eq(STATUS_UNAUTHENTICATED, 16);
}

Test(status, names_round_trip_for_every_code) {
  for (int code = 0; code <= 16; code++) {
    status_code back;
    cr_assert(status_from_name(status_name(code), &back), "code %d", code);
    cr_assert_eq((int)back, code);
  }
}

Test(status, names_are_the_canonical_upper_case_ones) {
  cr_assert_str_eq(status_name(STATUS_INVALID_ARGUMENT), "INVALID_ARGUMENT");
  cr_assert_str_eq(status_name(STATUS_UNAUTHENTICATED), "UNAUTHENTICATED");
  cr_assert_str_eq(status_name(STATUS_OK), "OK");
}

Test(status, parsing_ignores_case_and_rejects_unknown_names) {
  status_code c;
  cr_assert(status_from_name("not_found", &c));
  cr_assert_eq(c, STATUS_NOT_FOUND);
  cr_assert_not(status_from_name("NOPE", &c));
  cr_assert_not(status_from_name(NULL, &c));
}

Test(status, numbers_outside_the_map_read_as_unknown) {
  cr_assert_not(status_is_valid(17));
  cr_assert_not(status_is_valid(-1));
  cr_assert_str_eq(status_name(99), "UNKNOWN");
  cr_assert_eq(status_exit_code(99), STATUS_UNKNOWN);
  cr_assert_eq(status_exit_code(STATUS_NOT_FOUND), 5);
}
