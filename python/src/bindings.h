// Shared declarations of the `tandem` module's source files: each binds one part of the API.
#pragma once

#include <nanobind/nanobind.h>

#include <tandem/engine.h>

namespace tandem::python {

// RequestOutput, Completion and RoutedExperts as read-only Python classes (outputs.cpp).
void bind_outputs(nanobind::module_& m);

// Engine.load_weights(mapping): name -> array (buffer protocol or DLPack) as WeightViews that
// point into the arrays, which stay referenced until the engine lets go of them (weights.cpp).
void load_weights_from_mapping(Engine& engine, nanobind::handle mapping);

}  // namespace tandem::python
