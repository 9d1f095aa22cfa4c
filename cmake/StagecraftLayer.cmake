# stagecraft_layer(NAME DIR LINKS...) builds one library per layer from the
# sources of DIR (recursively; .cu files only when CUDA is enabled). A layer
# with no sources yet is an INTERFACE library so dependents still configure.
function(stagecraft_layer name dir)
  file(GLOB_RECURSE srcs CONFIGURE_DEPENDS ${dir}/*.cpp)
  if(STAGECRAFT_HAVE_CUDA)
    file(GLOB_RECURSE cu_srcs CONFIGURE_DEPENDS ${dir}/*.cu)
    list(APPEND srcs ${cu_srcs})
  endif()
  if(srcs)
    add_library(${name} STATIC ${srcs})
    target_include_directories(${name} PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>
                                              $<INSTALL_INTERFACE:include/stagecraft>)
    target_link_libraries(${name} PUBLIC ${ARGN})
  else()
    add_library(${name} INTERFACE)
    target_include_directories(${name} INTERFACE $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>
                                                 $<INSTALL_INTERFACE:include/stagecraft>)
    target_link_libraries(${name} INTERFACE ${ARGN})
  endif()
endfunction()

# stagecraft_test(NAME SOURCES... LIBS ...) adds one doctest executable and
# registers its cases with ctest. GPU cases skip themselves at run time.
function(stagecraft_test name)
  cmake_parse_arguments(T "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} doctest::doctest)
  target_compile_definitions(${name} PRIVATE STAGECRAFT_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
                                             STAGECRAFT_BINARY_DIR="${PROJECT_BINARY_DIR}")
  doctest_discover_tests(${name} TEST_PREFIX "${name}: " PROPERTIES TIMEOUT 600)
endfunction()
