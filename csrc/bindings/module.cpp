// The pybind11 module gemma_cpp._core: thin wrappers, no logic of their own.
// Every call that computes releases the GIL; long forwards check for Ctrl-C between layers.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "backend/cpu/thread_pool.h"
#include "decode/generator.h"
#include "kernels/isa.h"
#include "kernels/matmul.h"
#include "model/session.h"
#include "quant/quant.h"

namespace py = pybind11;
using namespace gemma;

// csrc/bindings/speculative.cpp: the drafters and Generator.next_speculative.
void bind_speculative(py::module_& m, py::class_<Generator>& generator, void (*check)(), int default_threads);

namespace {

template <typename T>
T pop_field(py::dict& d, const char* key) {
  if (!d.contains(key)) throw std::invalid_argument(std::string("config is missing field '") + key + "'");
  try {
    return d[key].cast<T>();
  } catch (const py::cast_error&) {
    throw std::invalid_argument(std::string("config field '") + key + "' has the wrong type");
  }
}

ModelConfig config_from_dict(py::dict d) {
  ModelConfig c;
  c.family = pop_field<int>(d, "family");
  c.n_layers = pop_field<int>(d, "n_layers");
  c.d_model = pop_field<int>(d, "d_model");
  c.n_heads = pop_field<int>(d, "n_heads");
  c.n_kv_heads = pop_field<int>(d, "n_kv_heads");
  c.head_dim = pop_field<int>(d, "head_dim");
  c.ffn_dim = pop_field<int>(d, "ffn_dim");
  c.vocab_size = pop_field<int>(d, "vocab_size");
  c.max_position = pop_field<int>(d, "max_position");
  c.rms_eps = pop_field<float>(d, "rms_eps");
  c.embed_scale = pop_field<float>(d, "embed_scale");
  c.query_scale = pop_field<float>(d, "query_scale");
  c.attn_softcap = pop_field<float>(d, "attn_softcap");
  c.final_softcap = pop_field<float>(d, "final_softcap");
  c.gelu_tanh = pop_field<bool>(d, "gelu_tanh");
  c.qk_norm = pop_field<bool>(d, "qk_norm");
  c.sandwich_norms = pop_field<bool>(d, "sandwich_norms");
  c.sliding_window = pop_field<int>(d, "sliding_window");
  c.layer_sliding = pop_field<std::vector<uint8_t>>(d, "layer_sliding");
  c.rope_theta_global = pop_field<float>(d, "rope_theta_global");
  c.rope_theta_local = pop_field<float>(d, "rope_theta_local");
  c.rope_scale_global = pop_field<float>(d, "rope_scale_global");
  return c;
}

// Test-only: a Python callable run at each interrupt check (between layers of a forward), so a
// test can raise a signal from inside the prefill at a known point instead of racing a timer.
// Owned reference, or null; set and read with the GIL held (g_hook_set is its lock-free shadow).
PyObject* g_check_hook = nullptr;
std::atomic<bool> g_hook_set{false};

// The thread that imported the module, when that is Python's main thread: the only one that
// ever sees Ctrl-C, so the only one for which a check is worth taking the GIL (from another
// thread, waiting for the GIL at every check could cost a switch interval, 5 ms, each time).
std::thread::id g_main_thread;
bool g_main_known = false;

// Between layers of a long forward and between tokens: let Python see Ctrl-C.
void check_signals() {
  if (g_main_known && std::this_thread::get_id() != g_main_thread && !g_hook_set.load()) return;
  py::gil_scoped_acquire gil;
  if (g_check_hook != nullptr) {
    PyObject* r = PyObject_CallNoArgs(g_check_hook);
    if (r == nullptr) throw py::error_already_set();
    Py_DECREF(r);
  }
  if (PyErr_CheckSignals() != 0) throw py::error_already_set();
}

int default_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n ? int(n) : 1;
}

// A float32 numpy copy of a logits vector.
// A [rows, cols] weight tensor handed in from Python as bytes, size-checked for its layout.
WeightView weight_view(const py::array_t<uint8_t, py::array::c_style>& data, const std::string& dtype, int64_t rows,
                       int64_t cols, const std::string& layout, const char* who) {
  WeightView W;
  W.dtype = dtype_from_name(dtype);
  W.layout = layout_from_name(layout);
  W.rows = rows;
  W.cols = cols;
  W.row_bytes = quant::row_bytes(W.dtype, cols);
  const int64_t expect = quant::tensor_bytes(W.dtype, W.layout, rows, cols);
  if (data.size() != expect)
    throw std::invalid_argument(std::string(who) + ": " + std::to_string(data.size()) + " bytes, expected " +
                                std::to_string(expect) + " for " + dtype + " " + layout + " [" + std::to_string(rows) +
                                ", " + std::to_string(cols) + "]");
  W.data = data.data();
  return W;
}

py::array_t<float> copy_logits(const std::vector<float>& v) {
  py::array_t<float> out(py::ssize_t(v.size()));
  std::memcpy(out.mutable_data(), v.data(), v.size() * sizeof(float));
  return out;
}

}  // namespace

void bind_batch(py::module_& m, void (*check_signals)());  // bindings/batch.cpp
void bind_device(py::module_& m);  // bindings/device.cpp: ISAs, devices, DeviceError

PYBIND11_MODULE(_core, m) {
  m.doc() = "gemma_cpp C++ core: Gemma forward pass, KV cache, kernels and samplers";
  if (py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>() ==
      PyThread_get_thread_ident()) {
    g_main_thread = std::this_thread::get_id();
    g_main_known = true;
  }

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  py::class_<SamplingParams>(m, "SamplingParams")
      .def(py::init([](float temperature, int top_k, float top_p, float min_p, float rep, float presence,
                       float frequency) {
             SamplingParams p;
             p.temperature = temperature;
             p.top_k = top_k;
             p.top_p = top_p;
             p.min_p = min_p;
             p.repetition_penalty = rep;
             p.presence_penalty = presence;
             p.frequency_penalty = frequency;
             p.validate();
             return p;
           }),
           py::arg("temperature") = 0.f, py::arg("top_k") = 0, py::arg("top_p") = 1.f,
           py::arg("min_p") = 0.f, py::arg("repetition_penalty") = 1.f, py::arg("presence_penalty") = 0.f,
           py::arg("frequency_penalty") = 0.f);

  py::class_<Model, std::shared_ptr<Model>>(m, "ModelCore")
      .def(py::init([](const std::string& path, py::dict config, py::list tensors, uint64_t data_start,
                       const std::string& device) {
             ModelConfig c = config_from_dict(config);
             std::vector<TensorEntry> entries;
             for (auto item : tensors) {
               auto t = item.cast<py::tuple>();
               TensorEntry e;
               e.name = t[0].cast<std::string>();
               e.dtype = dtype_from_name(t[1].cast<std::string>());
               e.shape = t[2].cast<std::vector<int64_t>>();
               e.offset = t[3].cast<uint64_t>();
               e.nbytes = t[4].cast<uint64_t>();
               if (t.size() > 5) e.layout = layout_from_name(t[5].cast<std::string>());
               entries.push_back(std::move(e));
             }
             py::gil_scoped_release nogil;
             return std::make_shared<Model>(path, c, entries, data_start, parse_device(device));
           }),
           py::arg("path"), py::arg("config"), py::arg("tensors"), py::arg("data_start") = 0, py::arg("device") = "cpu")
      .def_property_readonly("device", [](const Model& m) { return device_name(m.device()); })
      .def_property_readonly("weight_bytes", &Model::weight_bytes)
      .def_property_readonly("embed_dtype", [](const Model& m) { return dtype_name(m.embed().dtype); });

  py::class_<Generator> generator(m, "Generator", "A session (KV cache) and the decode loop over it: see decode/generator.h");
  generator
      .def(py::init([](std::shared_ptr<Model> model, int max_seq_len, int n_threads, uint64_t seed,
                       const std::string& kv_dtype) {
             return new Generator(model, max_seq_len, n_threads > 0 ? n_threads : default_threads(), seed,
                                  kv_dtype_from_name(kv_dtype));
           }),
           py::arg("model"), py::arg("max_seq_len"), py::arg("n_threads") = 0, py::arg("seed") = 0,
           py::arg("kv_dtype") = "f32")
      .def(
          "start",
          [](Generator& g, std::vector<int32_t> prompt, const SamplingParams& p, int max_new_tokens,
             std::vector<int32_t> end_ids, uint64_t seed) {
            py::gil_scoped_release nogil;
            return g.start(prompt.data(), int(prompt.size()), p, max_new_tokens, std::move(end_ids), seed,
                           check_signals);
          },
          py::arg("prompt"), py::arg("params"), py::arg("max_new_tokens"), py::arg("end_ids"), py::arg("seed"),
          "Prefill `prompt` (reusing the cached prefix) and arm a generation; returns the tokens run.")
      .def(
          "next",
          [](Generator& g, int k) {
            std::vector<int32_t> out(size_t(std::max(k, 0)));
            int n;
            {
              py::gil_scoped_release nogil;
              n = g.next(out.data(), int(out.size()), check_signals);
            }
            out.resize(size_t(n));
            return out;
          },
          py::arg("k") = 1, "Up to k new token ids; fewer once the generation ended (see stop_reason).")
      .def_property_readonly("stop_reason", [](const Generator& g) -> py::object {
        if (g.stop_reason() == StopReason::None) return py::none();
        return py::str(stop_reason_name(g.stop_reason()));
      })
      .def_property_readonly("generation_id", &Generator::generation_id)
      .def("interrupt", &Generator::interrupt, py::arg("generation_id"),
           "Thread-safe: stop generation `generation_id` (running or next) at its next check.")
      .def(
          "set_mask",
          [](Generator& g, py::object mask) {
            if (mask.is_none()) return g.clear_mask();
            auto a = mask.cast<py::array_t<uint32_t, py::array::c_style | py::array::forcecast>>();
            g.set_mask(a.data(), size_t(a.size()));
          },
          py::arg("mask"), "Allowed next tokens: uint32 words, bit i set = id i allowed (None clears).")
      .def("set_logit_bias", [](Generator& g, std::vector<int32_t> ids, std::vector<float> bias) {
        if (ids.size() != bias.size()) throw std::invalid_argument("logit_bias: ids and values differ in length");
        g.set_logit_bias(ids.data(), bias.data(), int(ids.size()));
      }, py::arg("ids"), py::arg("bias"), "Add bias[i] to the logit of ids[i] (after penalties, before the mask).")
      .def("set_logprobs", &Generator::set_logprobs, py::arg("top"),
           "Record each sampled token's log-probability and the `top` best (top < 0: off).")
      .def("last_logprob", [](const Generator& g) {
        const auto& lp = g.last_logprob();
        return py::make_tuple(lp.id, lp.logprob, lp.top);
      }, "(id, logprob, [(id, logprob), ...]) of the last sampled token (see set_logprobs).")
      .def_property_readonly("kv_dtype", [](Generator& g) { return std::string(kv_dtype_name(g.session().kv_cache().dtype())); })
      .def_property_readonly("kv_bytes_per_token", [](Generator& g) { return g.session().kv_cache().bytes_per_position(); })
      .def(
          "eval",
          [](Generator& g, std::vector<int32_t> tokens, bool all_logits) -> py::object {
            if (!all_logits) {
              py::gil_scoped_release nogil;
              g.eval(tokens.data(), int(tokens.size()), nullptr, check_signals);
              return py::none();
            }
            py::array_t<float> out({py::ssize_t(tokens.size()), py::ssize_t(g.vocab())});
            float* dst = out.mutable_data();
            {
              py::gil_scoped_release nogil;
              g.eval(tokens.data(), int(tokens.size()), dst, check_signals);
            }
            return std::move(out);
          },
          py::arg("tokens"), py::arg("all_logits") = false,
          "Run tokens at the end of the session: [n, vocab] logits if all_logits, else None.")
      .def("last_logits", [](const Generator& g) { return copy_logits(g.last_logits()); })
      .def("sample", [](Generator& g, const SamplingParams& p) {
        py::gil_scoped_release nogil;
        return g.sample(p);
      }, py::arg("params"))
      .def("step", [](Generator& g, int32_t token, const SamplingParams& p) {
        py::gil_scoped_release nogil;
        return g.step(token, p, check_signals);
      }, py::arg("token"), py::arg("params"))
      .def("seed", &Generator::reseed)
      .def("reset", &Generator::reset)
      .def("truncate", &Generator::truncate)
      .def("copy_cache_from", &Generator::copy_cache_from, py::arg("other"),
           py::call_guard<py::gil_scoped_release>())
      .def("can_truncate", [](Generator& g, int n) { return g.session().can_truncate(n); })
      .def_property_readonly("n_past", [](Generator& g) { return g.session().n_past(); })
      .def_property_readonly("tokens", [](Generator& g) { return g.session().tokens(); })
      .def_property_readonly("max_seq_len", [](Generator& g) { return g.session().max_seq_len(); })
      .def_property("n_threads", [](Generator& g) { return g.session().n_threads(); },
                    [](Generator& g, int n) { g.session().set_n_threads(n); });
  bind_speculative(m, generator, check_signals, default_threads());  // speculative.cpp

  m.def("row_bytes", [](const std::string& dtype, int64_t cols) {
    return quant::row_bytes(dtype_from_name(dtype), cols);
  });
  m.def(
      "quantize",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> a, const std::string& dtype,
         int n_threads, std::optional<py::array_t<float, py::array::c_style | py::array::forcecast>> importance) {
        if (a.ndim() != 1 && a.ndim() != 2) throw std::invalid_argument("quantize: expected a 1-D or 2-D array");
        const int64_t rows = a.ndim() == 2 ? a.shape(0) : 1;
        const int64_t cols = a.shape(a.ndim() - 1);
        const DType t = dtype_from_name(dtype);
        const float* imp = nullptr;
        if (importance) {
          if (importance->ndim() != 1 || importance->shape(0) != cols)
            throw std::invalid_argument("quantize: importance must hold one weight per column (" +
                                        std::to_string(cols) + ")");
          imp = importance->data();
          for (int64_t c = 0; c < cols; ++c)
            if (!(imp[c] >= 0.f) || !std::isfinite(imp[c]))
              throw std::invalid_argument("quantize: importance weights must be finite and >= 0");
        }
        py::array_t<uint8_t> out(py::ssize_t(size_mul(rows, quant::row_bytes(t, cols), "quantize")));
        const float* src = a.data();
        uint8_t* dst = out.mutable_data();
        {
          py::gil_scoped_release nogil;
          quant::quantize_rows(t, src, rows, cols, dst, n_threads > 0 ? n_threads : default_threads(), imp);
        }
        return out;
      },
      py::arg("array"), py::arg("dtype"), py::arg("n_threads") = 0, py::arg("importance") = py::none());
  m.def(
      "dequantize",
      [](py::array_t<uint8_t, py::array::c_style> data, const std::string& dtype, int64_t rows,
         int64_t cols, const std::string& layout) {
        const WeightView W = weight_view(data, dtype, rows, cols, layout, "dequantize");
        py::array_t<float> out({py::ssize_t(rows), py::ssize_t(cols)});
        for (int64_t r = 0; r < rows; ++r) dequantize_row(W, r, out.mutable_data() + r * cols);
        return out;
      },
      py::arg("data"), py::arg("dtype"), py::arg("rows"), py::arg("cols"), py::arg("layout") = "rows");
  m.def(
      "tensor_bytes",
      [](const std::string& dtype, const std::string& layout, int64_t rows, int64_t cols) {
        return quant::tensor_bytes(dtype_from_name(dtype), layout_from_name(layout), rows, cols);
      },
      py::arg("dtype"), py::arg("layout"), py::arg("rows"), py::arg("cols"));
  m.def(
      "interleave_rows16",
      [](py::array_t<uint8_t, py::array::c_style> data, const std::string& dtype, int64_t rows, int64_t cols) {
        const WeightView W = weight_view(data, dtype, rows, cols, "rows", "interleave_rows16");
        py::array_t<uint8_t> out(py::ssize_t(quant::tensor_bytes(W.dtype, Layout::Rows16, rows, cols)));
        uint8_t* dst = out.mutable_data();
        {
          py::gil_scoped_release nogil;
          quant::interleave_rows16(W.dtype, W.data, rows, cols, dst);
        }
        return out;
      },
      py::arg("data"), py::arg("dtype"), py::arg("rows"), py::arg("cols"),
      "Rows-layout int8/int4 bytes of a [rows, cols] tensor in the Rows16 kernel layout (quant.h).");
  m.def(
      "matmul",
      [](py::array_t<uint8_t, py::array::c_style> w, const std::string& dtype, int64_t rows, int64_t cols,
         py::array_t<float, py::array::c_style | py::array::forcecast> x, const std::string& isa,
         int n_threads, const std::string& layout) {
        const WeightView W = weight_view(w, dtype, rows, cols, layout, "matmul");
        if (x.ndim() != 2 || x.shape(1) != cols) throw std::invalid_argument("matmul: x must be [T, cols]");
        const int64_t T = x.shape(0);
        py::array_t<float> y({py::ssize_t(T), py::ssize_t(rows)});
        const Isa chosen = isa.empty() ? active_isa() : isa_from_name(isa);
        require_available(chosen);
        const float* xp = x.data();
        float* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          matmul_isa(chosen, W, xp, T, yp, rows, n_threads > 0 ? n_threads : 1);
        }
        return y;
      },
      py::arg("weights"), py::arg("dtype"), py::arg("rows"), py::arg("cols"), py::arg("x"),
      py::arg("isa") = "", py::arg("n_threads") = 1, py::arg("layout") = "rows",
      "Y = X W^T with W stored in `dtype` (for tests and benchmarks of the kernels).");

  bind_batch(m, check_signals);
  bind_device(m);

  m.def("default_threads", &default_threads);
  m.attr("MAX_THREADS") = ThreadPool::kMaxThreads;
  py::dict limits;
  limits["n_layers"] = kMaxLayers;
  limits["d_model"] = kMaxDModel;
  limits["n_heads"] = kMaxHeads;
  limits["n_kv_heads"] = kMaxHeads;
  limits["head_dim"] = kMaxHeadDim;
  limits["ffn_dim"] = kMaxFfn;
  limits["vocab_size"] = kMaxVocab;
  limits["max_position"] = kMaxPosition;
  limits["sliding_window"] = kMaxPosition;
  m.attr("CONFIG_LIMITS") = limits;
  m.def(
      "check_config",
      [](py::dict config) { config_from_dict(config).validate(); },
      py::arg("config"),
      "ValueError naming the field when a normalised config would not load (ModelConfig::validate).");
  m.def(
      "_set_interrupt_check_hook",
      [](py::object fn) {
        PyObject* old = g_check_hook;
        g_check_hook = fn.is_none() ? nullptr : fn.inc_ref().ptr();
        g_hook_set.store(g_check_hook != nullptr);
        Py_XDECREF(old);
      },
      py::arg("fn"), "Test-only: call fn() at every Ctrl-C check inside a forward (None removes it).");
}
