// Engine.load_weights({name: array}): a trainer's tensors handed to the engine without a file
// and without a copy. Each value is taken through DLPack (torch, jax, numpy >= 1.22) or the
// buffer protocol (numpy), as a C-contiguous CPU array of f32, f16 or bf16; the engine's model
// reads it in place. The arrays stay referenced by the model until the next load, and the
// reference is dropped under the GIL, whichever thread drops it.
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include <memory>
#include <string>
#include <vector>

#include "python/src/bindings.h"

namespace nb = nanobind;

namespace tandem::python {

namespace {

using CpuArray = nb::ndarray<nb::ro, nb::c_contig, nb::device::cpu>;

// The safetensors name of a float dtype the models compute with, or "" for any other.
std::string safetensors_dtype(nb::dlpack::dtype t) {
    if (t == nb::dtype<float>()) return "F32";
    if (t.code == uint8_t(nb::dlpack::dtype_code::Float) && t.bits == 16 && t.lanes == 1)
        return "F16";
    if (t.code == uint8_t(nb::dlpack::dtype_code::Bfloat) && t.bits == 16 && t.lanes == 1)
        return "BF16";
    return "";
}

// Python objects kept alive by the engine; released with the GIL held.
struct HeldArrays {
    std::vector<CpuArray> arrays;
};

std::shared_ptr<const void> hold(HeldArrays* held) {
    return std::shared_ptr<const void>(held, [](const void* p) {
        nb::gil_scoped_acquire locked;
        delete static_cast<const HeldArrays*>(p);
    });
}

}  // namespace

void load_weights_from_mapping(Engine& engine, nb::handle mapping) {
    if (!nb::hasattr(mapping, "items"))
        throw nb::type_error("load_weights: expected a path or a mapping of name -> array");
    auto held = std::make_unique<HeldArrays>();
    std::map<std::string, WeightView> views;
    for (nb::handle item : mapping.attr("items")()) {
        const std::string name = nb::cast<std::string>(item[0]);
        CpuArray array;
        // No implicit conversion: a non-contiguous or non-CPU tensor would be copied silently.
        if (!nb::try_cast(item[1], array, /*convert=*/false))
            throw nb::type_error(("load_weights: tensor " + name +
                                  ": expected a C-contiguous CPU array (numpy, or a torch "
                                  "tensor after .detach().contiguous())")
                                     .c_str());
        const std::string dtype = safetensors_dtype(array.dtype());
        if (dtype.empty())
            throw nb::type_error(
                ("load_weights: tensor " + name + ": expected float32, float16 or bfloat16")
                    .c_str());
        WeightView view{.dtype = dtype, .data = array.data()};
        for (size_t d = 0; d < array.ndim(); ++d)
            view.shape.push_back(int64_t(array.shape(d)));
        views.emplace(name, std::move(view));
        held->arrays.push_back(std::move(array));
    }
    std::shared_ptr<const void> owner = hold(held.release());
    nb::gil_scoped_release unlocked;
    engine.load_weights(std::move(views), std::move(owner));
}

}  // namespace tandem::python
