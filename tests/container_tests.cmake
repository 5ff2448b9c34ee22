# Containers and orchestration (issue 10), included at the end of
# tests/CMakeLists.txt:
#   container_test    docker/Dockerfile built and run with podman (the
#                     `prebuilt` target: the runtime stage fed with this tree's
#                     binaries); health, a greedy stream through the C++
#                     client, metrics, SIGTERM drain. Skipped (77) where podman
#                     is not installed; scripts/install-deps.sh installs it.
#   deploy_yaml_test  docker/compose.yaml and docker/k8s/*.yaml parse, and
#                     their flags, ports, probes and grace periods match
#                     streamgen-server --help and the Dockerfile.
if(TARGET streamgen-server AND TARGET streamgen-client)
  add_test(NAME container_test
    COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/container_test.py
            --build-dir ${CMAKE_BINARY_DIR}
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  # RUN_SERIAL: it builds an image (both cores) and is timed.
  set_tests_properties(container_test PROPERTIES TIMEOUT 1800 SKIP_RETURN_CODE 77 RUN_SERIAL ON)

  add_test(NAME deploy_yaml_test
    COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/deploy_yaml_test.py
            --server ${CMAKE_BINARY_DIR}/server/streamgen-server
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(deploy_yaml_test PROPERTIES TIMEOUT 120)
endif()
