# xgrammar (https://github.com/mlc-ai/xgrammar, Apache-2.0): the grammar engine of structured
# output, as in vLLM, SGLang and TensorRT-LLM. Debian has no package; PyPI's wheels hold only
# the Python extension, so the C++ core is built here from PyPI's source distribution of the
# pinned release, checked against its SHA-256. Offline: download that file and configure with
# -DFETCHCONTENT_SOURCE_DIR_XGRAMMAR=<its unpacked directory>.
#
# Built as our own static library from its sources rather than with its CMakeLists.txt, which
# adds -Werror and the Python bindings; its code is C++17 and compiled without our warnings.
include(FetchContent)
set(TANDEM_XGRAMMAR_VERSION 0.2.9)
FetchContent_Declare(xgrammar
    URL "https://files.pythonhosted.org/packages/3a/2f/5bf8e8fa6619cff534932f79b0abc81a417d354bc5093252c1a6081d0a93/xgrammar-${TANDEM_XGRAMMAR_VERSION}.tar.gz"
    URL_HASH SHA256=87b466bca2475e29bb0323abc62c6c33cbcbcff47e5fb800a3e2099ac9620b90
    DOWNLOAD_EXTRACT_TIMESTAMP TRUE)
FetchContent_GetProperties(xgrammar)
if(NOT xgrammar_POPULATED)
    FetchContent_Populate(xgrammar)
endif()

# Upstream bug mlc-ai/xgrammar#800 (open in 0.2.9): a JSON-schema string with minLength or
# maxLength compiles to [^"\\\r\n]{min,max}, which lets raw control characters into the string
# (invalid JSON) and refuses every escape sequence. The same length bound over what a plain
# string allows (an unescaped character other than '"', '\\' and U+0000-U+001F, or an escape)
# fixes both; an escape counts as one character, as maxLength counts decoded characters. The
# source is edited in place, idempotently, and the configure fails if the code moved.
set(xgrammar_converter ${xgrammar_SOURCE_DIR}/cpp/json_schema_converter.cc)
file(READ ${xgrammar_converter} xgrammar_text)
set(xgrammar_buggy [=[      int32_t character =
          builder_.AddCharacterClass({{'"', '"'}, {'\\', '\\'}, {'\r', '\r'}, {'\n', '\n'}}, true);]=])
set(xgrammar_fixed [=[      int32_t character = Choice(
          {builder_.AddCharacterClass({{0, 0x1f}, {'"', '"'}, {'\\', '\\'}}, true),
           Sequence({ByteString("\\"), RuleRef(kBasicEscape)})});  // tandem: xgrammar#800]=])
string(FIND "${xgrammar_text}" "tandem: xgrammar#800" xgrammar_patched)
if(xgrammar_patched EQUAL -1)
    string(FIND "${xgrammar_text}" "${xgrammar_buggy}" xgrammar_at)
    if(xgrammar_at EQUAL -1)
        message(FATAL_ERROR "xgrammar ${TANDEM_XGRAMMAR_VERSION}: the code of bug #800 was not "
            "found in ${xgrammar_converter}; check whether the new release fixes it")
    endif()
    string(REPLACE "${xgrammar_buggy}" "${xgrammar_fixed}" xgrammar_text "${xgrammar_text}")
    file(WRITE ${xgrammar_converter} "${xgrammar_text}")
endif()

file(GLOB xgrammar_sources CONFIGURE_DEPENDS
    ${xgrammar_SOURCE_DIR}/cpp/*.cc
    ${xgrammar_SOURCE_DIR}/cpp/support/*.cc
    ${xgrammar_SOURCE_DIR}/cpp/converter_ext/*.cc)
if(NOT xgrammar_sources)
    message(FATAL_ERROR "xgrammar: no sources under ${xgrammar_SOURCE_DIR}/cpp")
endif()
add_library(tandem_xgrammar STATIC ${xgrammar_sources})
set_target_properties(tandem_xgrammar PROPERTIES CXX_STANDARD 17 CXX_EXTENSIONS OFF)
target_include_directories(tandem_xgrammar SYSTEM PUBLIC
    ${xgrammar_SOURCE_DIR}/include ${xgrammar_SOURCE_DIR}/3rdparty/dlpack/include)
target_include_directories(tandem_xgrammar SYSTEM PRIVATE ${xgrammar_SOURCE_DIR}/3rdparty/picojson)
target_compile_options(tandem_xgrammar PRIVATE -w)
# The sanitizer builds instrument it too, so that its memory is checked with ours.
if(TANDEM_SANITIZE)
    target_compile_options(tandem_xgrammar PRIVATE -fsanitize=address,undefined
        -fno-omit-frame-pointer)
endif()
if(TANDEM_TSAN)
    target_compile_options(tandem_xgrammar PRIVATE -fsanitize=thread -fno-omit-frame-pointer)
endif()
target_link_libraries(tandem_xgrammar PRIVATE Threads::Threads)
