// libtandem.so is the engine library linked whole (see engine/CMakeLists.txt); this file only
// gives the shared library target a source of its own.
#include <tandem/engine.h>
