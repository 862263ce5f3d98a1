// What in-tree code (tests, benchmarks) reaches inside an Engine besides its public API: the
// model, to drive forward steps directly, and the worker pool they run on. Not installed: the
// public header names neither type.
#pragma once

#include <tandem/engine.h>

#include "kernels/thread_pool.h"
#include "models/model.h"

namespace tandem {

struct EngineInternals {
    static Model& model(Engine& engine);
    static ThreadPool& thread_pool(Engine& engine);
};

// Shorthands for tests.
inline Model& engine_model(Engine& engine) {
    return EngineInternals::model(engine);
}
inline ThreadPool& engine_pool(Engine& engine) {
    return EngineInternals::thread_pool(engine);
}

}  // namespace tandem
