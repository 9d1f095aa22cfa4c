#pragma once
// The kernel self-test behind `stagecraft selftest` and `make demo`: lists the devices
// found, runs every op of kernels/ops.hpp once on each available device and compares
// it with the naive reference (kernels/reference/), one line per op and device.
//
//   int failures = stagecraft::kernels::run_selftest(std::cout);
//   // cpu: AMD EPYC (2 cores), 7.8 GiB
//   // no CUDA device: running on CPU (built without CUDA ...)
//   // ok    linear              cpu      max_err=2.4e-07  tol=1.0e-04
//   // ...
//   // selftest: 32 ops on 1 device(s), 0 failed
#include <ostream>

namespace stagecraft::kernels {

/// Returns the number of failed checks (0 when everything matches its reference).
int run_selftest(std::ostream& os);

}  // namespace stagecraft::kernels
