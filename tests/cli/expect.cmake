# Runs one command line of an example program and checks how it ends (cmake -P driver of the
# cli_* tests registered in examples/CMakeLists.txt).
#   -DCMD=program|arg|arg...   the command, items separated by '|' (arguments may hold blanks)
#   -DRC=N                     the expected exit status
#   -DERR=regex                (optional) stderr must match it: for a rejected command line, the
#                              message naming the flag and the bad value
#   -DOUT=regex                (optional) stdout must match it
#   -DUSAGE=ON                 (optional) stderr must also hold the usage hint
#   -DWORKDIR=dir              (optional) working directory
# Whatever the expected status, a crash, an uncaught exception or an allocation failure fails.
cmake_minimum_required(VERSION 3.20)
if(NOT DEFINED CMD OR NOT DEFINED RC)
  message(FATAL_ERROR "expect.cmake: needs -DCMD=... and -DRC=...")
endif()
string(REPLACE "|" ";" _cmd "${CMD}")
if(NOT DEFINED WORKDIR OR WORKDIR STREQUAL "")
  set(WORKDIR ${CMAKE_CURRENT_BINARY_DIR})
endif()
execute_process(COMMAND ${_cmd} WORKING_DIRECTORY "${WORKDIR}" RESULT_VARIABLE _rc OUTPUT_VARIABLE _out
                ERROR_VARIABLE _err TIMEOUT 60)
string(REPLACE "|" " " _shown "${CMD}")
set(_fail "")
if(NOT "${_rc}" STREQUAL "${RC}")
  string(APPEND _fail "exit status '${_rc}', expected ${RC}\n")
endif()
if(DEFINED ERR AND NOT ERR STREQUAL "" AND NOT _err MATCHES "${ERR}")
  string(APPEND _fail "stderr does not match '${ERR}'\n")
endif()
if(DEFINED OUT AND NOT OUT STREQUAL "" AND NOT _out MATCHES "${OUT}")
  string(APPEND _fail "stdout does not match '${OUT}'\n")
endif()
if(USAGE AND NOT _err MATCHES "usage: ")
  string(APPEND _fail "stderr has no usage hint\n")
endif()
if(_err MATCHES "terminate called|bad_alloc|Segmentation|Aborted|AddressSanitizer|runtime error:")
  string(APPEND _fail "the program crashed or threw\n")
endif()
if(NOT _fail STREQUAL "")
  message(FATAL_ERROR "command: ${_shown}\n${_fail}--- stderr:\n${_err}--- stdout (first 2000 chars):\n"
          "${_out}")
endif()
message(STATUS "ok (exit ${_rc}): ${_shown}\n${_err}")
