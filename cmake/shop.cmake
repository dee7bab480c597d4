# Build helpers shared by every CMakeLists.txt of Shop.

set(SHOP_GEN_DIR ${PROJECT_SOURCE_DIR}/gen)

# google/protobuf/descriptor.proto, which the vendored google/api/
# annotations.proto extends (Debian's libprotobuf-dev): compiled too, so that
# the gateway can read each method's google.api.http option out of the
# descriptor set.
set(SHOP_PROTOBUF_PROTO_ROOT /usr/include)

# shop_generate_protos(): the one rule that writes gen/. Runs protoc-c once
# over every .proto under proto/ (the gRPC health proto included: proto/
# keeps its own copy, proto/grpc/health/v1/health.proto; and descriptor.proto
# from SHOP_PROTOBUF_PROTO_ROOT) and builds the static library shop_proto. It also
# writes the compiled FileDescriptorSet, embedded as shop_descriptor_set[] in
# the library shop_descriptors, for the reflection method.
function(shop_generate_protos)
  file(GLOB_RECURSE protos RELATIVE ${PROJECT_SOURCE_DIR}/proto CONFIGURE_DEPENDS
       ${PROJECT_SOURCE_DIR}/proto/*.proto)
  list(SORT protos)
  set(descriptor google/protobuf/descriptor.proto)
  set(outputs)
  set(inputs)
  foreach(p ${protos} ${descriptor})
    string(REGEX REPLACE "\\.proto$" "" stem ${p})
    list(APPEND outputs ${SHOP_GEN_DIR}/${stem}.pb-c.c ${SHOP_GEN_DIR}/${stem}.pb-c.h)
  endforeach()
  foreach(p ${protos})
    list(APPEND inputs ${PROJECT_SOURCE_DIR}/proto/${p})
  endforeach()
  set(desc ${CMAKE_BINARY_DIR}/shop_descriptors.pb)
  # The same with the proto comments (source info), for the OpenAPI
  # generator's descriptions; not embedded anywhere.
  set(desc_doc ${CMAKE_BINARY_DIR}/shop_descriptors_doc.pb)
  set(SHOP_DESCRIPTOR_SET_DOC ${desc_doc} PARENT_SCOPE)
  add_custom_command(
    OUTPUT ${outputs}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${SHOP_GEN_DIR}
    COMMAND ${PROTOC_C} --c_out=${SHOP_GEN_DIR} -I${PROJECT_SOURCE_DIR}/proto
            -I${SHOP_PROTOBUF_PROTO_ROOT} ${protos} ${descriptor}
    DEPENDS ${inputs} ${SHOP_PROTOBUF_PROTO_ROOT}/${descriptor}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    COMMENT "protoc-c: proto/ -> gen/"
    VERBATIM)
  # The descriptor sets live in the build folder, gen/ in the source tree:
  # their own rule, so that a second build folder (build, build-release),
  # which finds gen/ already newer than proto/, still rewrites its own.
  add_custom_command(
    OUTPUT ${desc} ${desc_doc}
    COMMAND ${PROTOC} --descriptor_set_out=${desc} --include_imports
            -I${PROJECT_SOURCE_DIR}/proto -I${SHOP_PROTOBUF_PROTO_ROOT} ${protos}
    COMMAND ${PROTOC} --descriptor_set_out=${desc_doc} --include_imports --include_source_info
            -I${PROJECT_SOURCE_DIR}/proto -I${SHOP_PROTOBUF_PROTO_ROOT} ${protos}
    DEPENDS ${inputs}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    COMMENT "protoc: proto/ -> descriptor sets"
    VERBATIM)
  set(srcs)
  foreach(o ${outputs})
    if(o MATCHES "\\.c$")
      list(APPEND srcs ${o})
    endif()
  endforeach()
  # One target owns the generation: with the Makefile generator, two
  # targets that depend on the same custom command's outputs would each run
  # it, racing each other in a parallel build.
  add_custom_target(shop_proto_gen DEPENDS ${outputs} ${desc} ${desc_doc})
  add_library(shop_proto STATIC ${srcs})
  add_dependencies(shop_proto shop_proto_gen)
  target_include_directories(shop_proto PUBLIC ${SHOP_GEN_DIR})
  target_link_libraries(shop_proto PUBLIC PkgConfig::PROTOBUF_C)
  # Generated code is not ours to warn about.
  target_compile_options(shop_proto PRIVATE -w)

  shop_embed_files(shop_descriptors_src shop_descriptor_set ${desc})
  add_library(shop_descriptors STATIC ${shop_descriptors_src})
  add_dependencies(shop_descriptors shop_proto_gen)
endfunction()

# shop_embed_files(out_var symbol file...): writes a C file defining
#   const unsigned char <symbol>[]; const size_t <symbol>_len;
# (one file) or, for several files, <symbol>_<i> arrays plus a table. Used
# for the descriptor set.
function(shop_embed_files out_var symbol)
  set(cfile ${CMAKE_CURRENT_BINARY_DIR}/${symbol}.c)
  add_custom_command(
    OUTPUT ${cfile}
    COMMAND ${CMAKE_COMMAND} -DSYMBOL=${symbol} -DOUTPUT=${cfile} "-DINPUTS=${ARGN}"
            -DMODE=bytes -P ${PROJECT_SOURCE_DIR}/cmake/embed.cmake
    DEPENDS ${ARGN} ${PROJECT_SOURCE_DIR}/cmake/embed.cmake
    VERBATIM)
  set(${out_var} ${cfile} PARENT_SCOPE)
endfunction()

# shop_embed_migrations(out_var symbol dir): writes a C file defining
#   const db_migration <symbol>[]; const size_t <symbol>_count;
# from the numbered files dir/NNN_name.sql, in order. Migrations travel
# inside the binary, so a service applies them wherever it runs.
function(shop_embed_migrations out_var symbol dir)
  file(GLOB sqls CONFIGURE_DEPENDS ${dir}/*.sql)
  list(SORT sqls)
  set(cfile ${CMAKE_CURRENT_BINARY_DIR}/${symbol}.c)
  add_custom_command(
    OUTPUT ${cfile}
    COMMAND ${CMAKE_COMMAND} -DSYMBOL=${symbol} -DOUTPUT=${cfile} "-DINPUTS=${sqls}"
            -DMODE=migrations -P ${PROJECT_SOURCE_DIR}/cmake/embed.cmake
    DEPENDS ${sqls} ${PROJECT_SOURCE_DIR}/cmake/embed.cmake
    VERBATIM)
  set(${out_var} ${cfile} PARENT_SCOPE)
endfunction()

# shop_test(name source... LIBS lib...): one Criterion test binary, registered
# with CTest under its name. Labels: "unit" unless given.
function(shop_test name)
  cmake_parse_arguments(T "" "" "LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_UNPARSED_ARGUMENTS})
  target_link_libraries(${name} PRIVATE ${T_LIBS} PkgConfig::CRITERION)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME ${name} COMMAND ${name} --jobs=1 --verbose=0)
  if(NOT T_LABELS)
    set(T_LABELS unit)
  endif()
  # Criterion reports a test as passing even when LeakSanitizer or UBSan
  # printed a report from its process: CTest reads the output and fails the
  # binary on one. The timeout stops a hung binary instead of the whole run.
  set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}" TIMEOUT 900
                       FAIL_REGULAR_EXPRESSION "ERROR: LeakSanitizer|ERROR: AddressSanitizer|runtime error:")
endfunction()
