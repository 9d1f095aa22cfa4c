#pragma once
// CurveZMQ for the front door: the server's secret key from a file, and a ZAP
// handler (ZeroMQ's authentication protocol, RFC 27) that admits only clients
// whose public key is on an allow-list. Without a ZAP handler ZeroMQ would
// accept any client that knows the server's public key.
//
//   ZapAuthenticator zap(ctx, read_allowed_keys("clients.txt"));   // before bind
//   sock.set(zmq::sockopt::curve_server, 1);
//   sock.set(zmq::sockopt::curve_secretkey, read_key_file("server.secret"));
//
// Keys are Z85 text (40 characters), as `zmq_curve_keypair` and
// `stagecraft keygen` write them.
#include <atomic>
#include <set>
#include <string>
#include <thread>

#include <zmq.hpp>

namespace stagecraft::service {

/// The first 40-character Z85 key in `path` (blank lines and '#' comments skipped).
/// Error(io / invalid_argument) naming the file when there is none.
std::string read_key_file(const std::string& path);
/// Every key in `path`, one per line; Error naming the file and line for a malformed one.
std::set<std::string> read_allowed_keys(const std::string& path);

class ZapAuthenticator {
 public:
  /// Binds inproc://zeromq.zap.01 on `ctx` and answers from its own thread.
  ZapAuthenticator(zmq::context_t& ctx, std::set<std::string> allowed_z85);
  ~ZapAuthenticator();
  ZapAuthenticator(const ZapAuthenticator&) = delete;
  ZapAuthenticator& operator=(const ZapAuthenticator&) = delete;
  uint64_t denied() const { return denied_.load(); }

 private:
  void run();
  zmq::socket_t sock_;
  std::set<std::string> allowed_;  ///< 32-byte binary keys
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> denied_{0};
  std::thread thread_;
};

}  // namespace stagecraft::service
