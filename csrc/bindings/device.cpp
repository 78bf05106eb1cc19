// gemma_cpp._core's view of the hardware: the CPU kernels' ISAs and the CUDA GPUs, and the
// DeviceError raised when a device that was asked for cannot be used. Thin, like module.cpp.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "backend/device.h"
#include "kernels/isa.h"

namespace py = pybind11;
using namespace gemma;

void bind_device(py::module_& m) {
  m.def("active_isa", [] { return std::string(isa_name(active_isa())); });
  m.def("set_isa", [](const std::string& name) { set_active_isa(isa_from_name(name)); });
  m.def("available_isas", [] {
    std::vector<std::string> out;
    for (Isa i : available_isas()) out.push_back(isa_name(i));
    return out;
  });

  // A RuntimeError subclass, re-exported as gemma_cpp.DeviceError.
  py::register_exception<DeviceError>(m, "DeviceError", PyExc_RuntimeError);
  m.def("cuda_built", &cuda_built, "Whether this build has the CUDA backend (GEMMA_CUDA=ON).");
  m.def("cuda_unavailable_reason", &cuda_unavailable_reason,
        "Why no CUDA GPU can be used ('' when one can): not built with CUDA, or the runtime's error.");
  m.def("cuda_devices", [] {
    py::list out;
    for (const GpuInfo& g : cuda_devices()) {
      py::dict d;
      d["index"] = g.index;
      d["name"] = g.name;
      d["memory_bytes"] = g.memory_bytes;
      d["compute_capability"] = std::to_string(g.cc_major) + "." + std::to_string(g.cc_minor);
      // DDR: two transfers a clock (bus bits / 8 bytes each): the DRAM-bandwidth roofline.
      d["peak_bandwidth_gbs"] = 2.0 * double(g.memory_clock_khz) * 1e3 * double(g.memory_bus_bits / 8) / 1e9;
      out.append(d);
    }
    return out;
  }, "The CUDA GPUs this process can use: index, name, memory_bytes, compute_capability, peak_bandwidth_gbs.");
  m.def("check_device", [](const std::string& device) { check_device(parse_device(device)); }, py::arg("device"),
        "ValueError for a malformed device string, DeviceError when the device cannot be used here.");
}
