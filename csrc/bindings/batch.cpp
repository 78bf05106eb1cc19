// gemma_cpp._core.BatchDecoder: batched decoding over several Generators (decode/batch_decoder.h).
// Thin, like module.cpp (which calls bind_batch); the GIL is released while C++ computes.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

#include "decode/batch_decoder.h"

namespace py = pybind11;
using namespace gemma;

void bind_batch(py::module_& m, void (*check_signals)()) {
  py::class_<BatchDecoder>(m, "BatchDecoder",
                           "One forward pass for the next token of several Generators: see decode/batch_decoder.h")
      .def(py::init([](std::shared_ptr<Model> model, int max_batch, int n_threads) {
             return new BatchDecoder(model, max_batch, n_threads);
           }),
           py::arg("model"), py::arg("max_batch"), py::arg("n_threads"))
      .def_property_readonly("max_batch", &BatchDecoder::max_batch)
      .def_property("n_threads", &BatchDecoder::n_threads, &BatchDecoder::set_n_threads)
      .def(
          "forward_pending",
          [check_signals](BatchDecoder& d, std::vector<Generator*> gens) {
            py::gil_scoped_release nogil;
            return d.forward_pending(gens.data(), int(gens.size()), check_signals);
          },
          py::arg("generators"),
          "Run the pending token of each running generation in one batched pass; each one's next() then "
          "samples from its logits. Returns how many ran.")
      .def(
          "eval",
          [check_signals](BatchDecoder& d, std::vector<Generator*> gens, std::vector<std::vector<int32_t>> tokens,
                          bool all_logits) {
            if (gens.size() != tokens.size())
              throw std::invalid_argument("batch eval: " + std::to_string(gens.size()) + " generators but " +
                                          std::to_string(tokens.size()) + " token lists");
            std::vector<int32_t> flat;
            std::vector<int> counts;
            for (const auto& t : tokens) {
              flat.insert(flat.end(), t.begin(), t.end());
              counts.push_back(int(t.size()));
            }
            const int vocab = d.vocab();
            const py::ssize_t rows = all_logits ? py::ssize_t(flat.size()) : py::ssize_t(gens.size());
            py::array_t<float> out({rows, py::ssize_t(vocab)});
            float* dst = out.mutable_data();
            {
              py::gil_scoped_release nogil;
              d.eval(gens.data(), flat.data(), counts.data(), int(gens.size()), dst, all_logits, check_signals);
            }
            return out;
          },
          py::arg("generators"), py::arg("tokens"), py::arg("all_logits") = false,
          "Low level: run tokens[i] at the end of generators[i]'s session, all in one pass; logits of each "
          "one's last token [n, vocab], or with all_logits of every token [sum len, vocab].");
}
