#pragma once
// One error type for the whole engine. Every message says what went wrong and,
// where it can, what to do about it. SC_CHECK / SC_FAIL add file:line.
//
//   SC_CHECK(x.ndim() == 4, Errc::shape_mismatch, "conv2d wants NCHW input, got " << x.shape_str());
#include <sstream>
#include <stdexcept>
#include <string>

namespace stagecraft {

enum class Errc {
  invalid_argument,  ///< a caller passed a value the function cannot accept
  shape_mismatch,    ///< tensor shapes or dtypes do not fit together
  unsupported,       ///< valid request, but this build/backend cannot do it
  not_found,         ///< a file, parameter, stage or key does not exist
  io,                ///< reading or writing a file or socket failed
  parse,             ///< a file or message is malformed
  cuda,              ///< a CUDA runtime / cuBLAS / NCCL call failed
  overloaded,        ///< the engine refused new work because its queues are full
  cancelled,         ///< the job was cancelled by its submitter
  deadline_exceeded, ///< the job's deadline passed before it finished
  stage_failed,      ///< a stage threw while running a job
  node_lost,         ///< the process (node) running the job's stage died or went silent
  internal,          ///< a bug in Stagecraft; please report it
};

const char* errc_name(Errc c);
/// The code errc_name() gives `name`; internal for a name it never gives.
Errc errc_from_name(const std::string& name);

class Error : public std::runtime_error {
 public:
  Error(Errc code, const std::string& message) : std::runtime_error(message), code_(code) {}
  Errc code() const noexcept { return code_; }

 private:
  Errc code_;
};

[[noreturn]] void throw_error(Errc code, const char* file, int line, const std::string& message);

}  // namespace stagecraft

#define SC_FAIL(code, msg)                                                              \
  do {                                                                                  \
    std::ostringstream sc_fail_os_;                                                     \
    sc_fail_os_ << msg;                                                                 \
    ::stagecraft::throw_error(::stagecraft::code, __FILE__, __LINE__, sc_fail_os_.str()); \
  } while (0)

#define SC_CHECK(cond, code, msg) \
  do {                            \
    if (!(cond)) SC_FAIL(code, msg); \
  } while (0)
