# `cmake --install BUILD --prefix PREFIX` puts the stagecraft binary, the static
# libraries, the public headers (PREFIX/include/stagecraft/<layer>/...) and a CMake
# package under PREFIX, so that another project embeds the engine or the client:
#
#   find_package(Stagecraft REQUIRED)
#   target_link_libraries(app PRIVATE Stagecraft::engine)   # Engine, stages, the job server
#   target_link_libraries(cli PRIVATE Stagecraft::client)   # the C++ client of `stagecraft serve`
#
# examples/installed/ is such a project; tests/install builds it against an installed tree.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# Stagecraft::engine: everything needed to run pipelines in-process and serve them.
add_library(stagecraft_engine INTERFACE)
target_link_libraries(stagecraft_engine INTERFACE stagecraft_service stagecraft_actors stagecraft_stages
                                                  stagecraft_kernels stagecraft_transport stagecraft_core)
set_target_properties(stagecraft_engine PROPERTIES EXPORT_NAME engine)
set_target_properties(stagecraft_client PROPERTIES EXPORT_NAME client)

install(TARGETS stagecraft_core stagecraft_kernels stagecraft_stages stagecraft_transport stagecraft_actors
                stagecraft_service stagecraft_client stagecraft_engine
        EXPORT StagecraftTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS stagecraft RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
foreach(dir core kernels stages transport actors service clients/cpp)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${dir}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/stagecraft/${dir}
          FILES_MATCHING PATTERN "*.hpp" PATTERN "*.cuh")
endforeach()

set(config_dir ${CMAKE_INSTALL_LIBDIR}/cmake/Stagecraft)
install(EXPORT StagecraftTargets NAMESPACE Stagecraft:: DESTINATION ${config_dir})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/StagecraftConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/StagecraftConfig.cmake INSTALL_DESTINATION ${config_dir})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/StagecraftConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/StagecraftConfig.cmake ${PROJECT_BINARY_DIR}/StagecraftConfigVersion.cmake
              ${PROJECT_SOURCE_DIR}/cmake/FindCAF.cmake
        DESTINATION ${config_dir})
