// gemma_cpp._core's speculative-decoding part (decode/speculative.h): the drafters and
// Generator.next_speculative. Thin wrappers, as module.cpp's.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>

#include "decode/generator.h"
#include "decode/speculative.h"

namespace py = pybind11;
using namespace gemma;

void bind_speculative(py::module_& m, py::class_<Generator>& generator, void (*check)(), int default_threads) {
  py::class_<Drafter>(m, "Drafter", "Proposes tokens for speculative decoding: see decode/speculative.h");
  py::class_<NgramDrafter, Drafter>(m, "NgramDrafter", "Prompt lookup: copies what followed the last n-gram")
      .def(py::init<int, int>(), py::arg("ngram_min"), py::arg("ngram_max"));
  py::class_<ModelDrafter, Drafter>(m, "ModelDrafter", "A draft model of the same vocabulary, in its own session")
      .def(py::init([default_threads](std::shared_ptr<Model> model, int max_seq_len, int n_threads,
                                      const std::string& kv_dtype, uint64_t seed) {
             return new ModelDrafter(model, max_seq_len, n_threads > 0 ? n_threads : default_threads,
                                     kv_dtype_from_name(kv_dtype), seed);
           }),
           py::arg("model"), py::arg("max_seq_len"), py::arg("n_threads") = 0, py::arg("kv_dtype") = "f32",
           py::arg("seed") = 0)
      .def("reseed", &ModelDrafter::reseed, py::arg("seed"))
      .def_property_readonly("tokens", [](ModelDrafter& d) { return d.session().tokens(); })
      .def_property("n_threads", [](ModelDrafter& d) { return d.session().n_threads(); },
                    [](ModelDrafter& d, int n) { d.session().set_n_threads(n); });

  generator
      .def(
          "next_speculative",
          [check](Generator& g, Drafter& drafter, int draft_len, int cap) {
            std::vector<int32_t> out(size_t(std::max(cap, 0)));
            int n;
            {
              py::gil_scoped_release nogil;
              n = g.next_speculative(drafter, draft_len, out.data(), int(out.size()), check);
            }
            out.resize(size_t(n));
            return out;
          },
          py::arg("drafter"), py::arg("draft_len"), py::arg("cap"),
          "One speculative step: up to `cap` new token ids (at most draft_len + 1); none once ended.")
      .def_property_readonly("spec_stats", [](const Generator& g) {
        const auto& s = g.spec_stats();
        return py::make_tuple(s.drafted, s.accepted, s.rounds);
      }, "(drafted, accepted, verifying forwards) of this generation's speculation.");
}
