// The pybind11 module gemma_cpp._core: thin wrappers, no logic of their own.
// Every call that computes releases the GIL; long forwards check for Ctrl-C between layers.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "kernels/isa.h"
#include "kernels/matmul.h"
#include "model/session.h"
#include "quant/quant.h"
#include "sample/sampler.h"

namespace py = pybind11;
using namespace gemma;

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
// Owned reference, or null; set and read with the GIL held.
PyObject* g_check_hook = nullptr;

// Between layers of a long forward: let Python see Ctrl-C (only acts on the main thread).
void check_signals() {
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

// A session with its sampler and the logits of the last evaluated position.
class PySession {
 public:
  PySession(std::shared_ptr<const Model> model, int max_seq_len, int n_threads, uint64_t seed, KvDType kv)
      : session_(std::move(model), max_seq_len, n_threads, kv), sampler_(seed) {}

  // Runs tokens through the model. Returns [n, vocab] logits if all_logits, else None
  // (the last position's logits are kept for sample()).
  py::object eval(std::vector<int32_t> tokens, bool all_logits) {
    const int vocab = session_.model().config().vocab_size;
    if (tokens.empty()) throw std::invalid_argument("eval: empty token list");
    if (all_logits) {
      py::array_t<float> out({py::ssize_t(tokens.size()), py::ssize_t(vocab)});
      float* dst = out.mutable_data();
      {
        py::gil_scoped_release nogil;
        session_.forward(tokens.data(), int(tokens.size()), dst, true, check_signals);
        last_.resize(size_t(vocab));
        std::memcpy(last_.data(), dst + (tokens.size() - 1) * size_t(vocab), size_t(vocab) * 4);
        has_last_ = true;
      }
      return std::move(out);
    }
    {
      py::gil_scoped_release nogil;
      last_.resize(size_t(vocab));
      session_.forward(tokens.data(), int(tokens.size()), last_.data(), false, check_signals);
      has_last_ = true;
    }
    return py::none();
  }

  int32_t sample(const SamplingParams& p) {
    if (!has_last_) throw std::runtime_error("sample: no logits yet; eval a prompt first");
    p.validate();
    py::gil_scoped_release nogil;
    work_ = last_;
    const auto& hist = session_.tokens();
    return sampler_.sample(work_.data(), int(work_.size()), p, hist.data(), int(hist.size()));
  }

  // Decode step: feed one token, sample the next. One call per generated token.
  int32_t step(int32_t token, const SamplingParams& p) {
    p.validate();
    py::gil_scoped_release nogil;
    last_.resize(size_t(session_.model().config().vocab_size));
    session_.forward(&token, 1, last_.data(), false);
    has_last_ = true;
    work_ = last_;
    const auto& hist = session_.tokens();
    return sampler_.sample(work_.data(), int(work_.size()), p, hist.data(), int(hist.size()));
  }

  py::array_t<float> last_logits() const {
    if (!has_last_) throw std::runtime_error("no logits yet; eval a prompt first");
    py::array_t<float> out(py::ssize_t(last_.size()));
    std::memcpy(out.mutable_data(), last_.data(), last_.size() * 4);
    return out;
  }

  Session& session() { return session_; }
  void seed(uint64_t s) { sampler_.reseed(s); }
  void reset() {
    session_.reset();
    has_last_ = false;
  }
  void truncate(int n) {
    session_.truncate(n);
    has_last_ = false;
  }

 private:
  Session session_;
  Sampler sampler_;
  std::vector<float> last_, work_;
  bool has_last_ = false;
};

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "gemma_cpp C++ core: Gemma forward pass, KV cache, kernels and samplers";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  py::class_<SamplingParams>(m, "SamplingParams")
      .def(py::init([](float temperature, int top_k, float top_p, float min_p, float rep) {
             SamplingParams p;
             p.temperature = temperature;
             p.top_k = top_k;
             p.top_p = top_p;
             p.min_p = min_p;
             p.repetition_penalty = rep;
             p.validate();
             return p;
           }),
           py::arg("temperature") = 0.f, py::arg("top_k") = 0, py::arg("top_p") = 1.f,
           py::arg("min_p") = 0.f, py::arg("repetition_penalty") = 1.f);

  py::class_<Model, std::shared_ptr<Model>>(m, "ModelCore")
      .def(py::init([](const std::string& path, py::dict config, py::list tensors) {
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
               entries.push_back(std::move(e));
             }
             py::gil_scoped_release nogil;
             return std::make_shared<Model>(path, c, entries);
           }),
           py::arg("path"), py::arg("config"), py::arg("tensors"))
      .def_property_readonly("weight_bytes", &Model::weight_bytes)
      .def_property_readonly("embed_dtype", [](const Model& m) { return dtype_name(m.embed().dtype); });

  py::class_<PySession>(m, "Session")
      .def(py::init([](std::shared_ptr<Model> model, int max_seq_len, int n_threads, uint64_t seed,
                       const std::string& kv_dtype) {
             return new PySession(model, max_seq_len, n_threads > 0 ? n_threads : default_threads(), seed,
                                  kv_dtype_from_name(kv_dtype));
           }),
           py::arg("model"), py::arg("max_seq_len"), py::arg("n_threads") = 0, py::arg("seed") = 0,
           py::arg("kv_dtype") = "f32")
      .def_property_readonly("kv_dtype", [](PySession& s) { return std::string(kv_dtype_name(s.session().kv_cache().dtype())); })
      .def_property_readonly("kv_bytes_per_token", [](PySession& s) { return s.session().kv_cache().bytes_per_position(); })
      .def("eval", &PySession::eval, py::arg("tokens"), py::arg("all_logits") = false)
      .def("sample", &PySession::sample, py::arg("params"))
      .def("step", &PySession::step, py::arg("token"), py::arg("params"))
      .def("last_logits", &PySession::last_logits)
      .def("seed", &PySession::seed)
      .def("reset", &PySession::reset)
      .def("truncate", &PySession::truncate)
      .def("can_truncate", [](PySession& s, int n) { return s.session().can_truncate(n); })
      .def_property_readonly("n_past", [](PySession& s) { return s.session().n_past(); })
      .def_property_readonly("tokens", [](PySession& s) { return s.session().tokens(); })
      .def_property_readonly("max_seq_len", [](PySession& s) { return s.session().max_seq_len(); })
      .def_property("n_threads", [](PySession& s) { return s.session().n_threads(); },
                    [](PySession& s, int n) { s.session().set_n_threads(n); });

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
        py::array_t<uint8_t> out(py::ssize_t(rows * quant::row_bytes(t, cols)));
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
         int64_t cols) {
        const DType t = dtype_from_name(dtype);
        const int64_t rb = quant::row_bytes(t, cols);
        if (data.size() != rows * rb)
          throw std::invalid_argument("dequantize: " + std::to_string(data.size()) + " bytes, expected " +
                                      std::to_string(rows * rb));
        py::array_t<float> out({py::ssize_t(rows), py::ssize_t(cols)});
        for (int64_t r = 0; r < rows; ++r)
          quant::dequantize_row(t, data.data() + r * rb, cols, out.mutable_data() + r * cols);
        return out;
      },
      py::arg("data"), py::arg("dtype"), py::arg("rows"), py::arg("cols"));
  m.def(
      "matmul",
      [](py::array_t<uint8_t, py::array::c_style> w, const std::string& dtype, int64_t rows, int64_t cols,
         py::array_t<float, py::array::c_style | py::array::forcecast> x, const std::string& isa,
         int n_threads) {
        WeightView W;
        W.dtype = dtype_from_name(dtype);
        W.rows = rows;
        W.cols = cols;
        W.row_bytes = quant::row_bytes(W.dtype, cols);
        if (w.size() != rows * W.row_bytes) throw std::invalid_argument("matmul: weight size mismatch");
        W.data = w.data();
        if (x.ndim() != 2 || x.shape(1) != cols) throw std::invalid_argument("matmul: x must be [T, cols]");
        const int64_t T = x.shape(0);
        py::array_t<float> y({py::ssize_t(T), py::ssize_t(rows)});
        const Isa chosen = isa.empty() ? active_isa() : isa_from_name(isa);
        const float* xp = x.data();
        float* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          matmul_isa(chosen, W, xp, T, yp, rows, n_threads > 0 ? n_threads : 1);
        }
        return y;
      },
      py::arg("weights"), py::arg("dtype"), py::arg("rows"), py::arg("cols"), py::arg("x"),
      py::arg("isa") = "", py::arg("n_threads") = 1,
      "Y = X W^T with W stored in `dtype` (for tests and benchmarks of the kernels).");

  m.def("active_isa", [] { return std::string(isa_name(active_isa())); });
  m.def("set_isa", [](const std::string& name) { set_active_isa(isa_from_name(name)); });
  m.def("available_isas", [] {
    std::vector<std::string> out;
    for (Isa i : available_isas()) out.push_back(isa_name(i));
    return out;
  });
  m.def("default_threads", &default_threads);
  m.attr("MAX_THREADS") = ThreadPool::kMaxThreads;
  m.def(
      "_set_interrupt_check_hook",
      [](py::object fn) {
        PyObject* old = g_check_hook;
        g_check_hook = fn.is_none() ? nullptr : fn.inc_ref().ptr();
        Py_XDECREF(old);
      },
      py::arg("fn"), "Test-only: call fn() at every Ctrl-C check inside a forward (None removes it).");
}
