# Writes the input files of the cli_* tests into -DDIR (cmake -P; a FIXTURES_SETUP test):
# a garbage "model", a profile claiming another model, eval data files with a bad line 2, and
# (with -DHEAD=<head program>) a truncated copy of -DMODEL.
cmake_minimum_required(VERSION 3.20)
foreach(v DIR MODEL PROFILE)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "make_fixtures.cmake: needs -D${v}=...")
  endif()
endforeach()
file(MAKE_DIRECTORY "${DIR}")
file(MAKE_DIRECTORY "${DIR}/a_directory.bin")
file(WRITE "${DIR}/garbage.bin" "this is not a model, just some text that is long enough for a header\n")
# A profile measured on another model (its model field names another content hash).
file(READ "${PROFILE}" _p)
string(REGEX REPLACE "# model: [^\n]*" "# model: other/model.bin fnv1a64=0123456789abcdef" _p "${_p}")
file(WRITE "${DIR}/other_model_profile.csv" "${_p}")
# Eval data (token ids; the random model's byte vocabulary has 259 tokens). Line 1 is valid.
set(_ok "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30\t31 32 33 34")
file(WRITE "${DIR}/data_negative_id.txt" "${_ok}\n1 2 -3 4 5 6 7 8 9 10\t11 12 13\n")
file(WRITE "${DIR}/data_partial_id.txt" "${_ok}\r\n1 2 3 12abc 5 6 7 8 9 10\t11 12 13\r\n")
file(WRITE "${DIR}/data_beyond_vocab.txt" "${_ok}\n1 2 70000 4 5 6 7 8 9 10\t11 12 13\n")
if(DEFINED HEAD AND NOT HEAD STREQUAL "")
  execute_process(COMMAND "${HEAD}" -c 1000 "${MODEL}" OUTPUT_FILE "${DIR}/truncated.bin" RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "make_fixtures.cmake: ${HEAD} -c 1000 ${MODEL} failed (${_rc})")
  endif()
endif()
