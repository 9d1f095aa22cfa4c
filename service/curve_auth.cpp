#include "service/curve_auth.hpp"

#include <fstream>
#include <vector>

#include "core/error.hpp"
#include "transport/wakeup.hpp"

namespace stagecraft::service {

namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

/// Z85 text → 32 bytes; empty when `z85` is not a valid 40-character key.
std::string decode_key(const std::string& z85) {
  if (z85.size() != 40) return {};
  uint8_t out[32];
  if (zmq_z85_decode(out, z85.c_str()) == nullptr) return {};
  return std::string(reinterpret_cast<const char*>(out), 32);
}

}  // namespace

std::string read_key_file(const std::string& path) {
  std::ifstream in(path);
  SC_CHECK(in, Errc::io, "cannot read the key file '" << path << "'");
  std::string line;
  while (std::getline(in, line)) {
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    SC_CHECK(!decode_key(line).empty(), Errc::invalid_argument,
             path << ": '" << line.substr(0, 48) << "' is not a 40-character Z85 CurveZMQ key");
    return line;
  }
  SC_FAIL(Errc::invalid_argument, path << " holds no key (expected one 40-character Z85 key)");
}

std::set<std::string> read_allowed_keys(const std::string& path) {
  std::ifstream in(path);
  SC_CHECK(in, Errc::io, "cannot read the allowed-clients file '" << path << "'");
  std::set<std::string> keys;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    std::string key = decode_key(line);
    SC_CHECK(!key.empty(), Errc::invalid_argument,
             path << ":" << n << ": '" << line.substr(0, 48) << "' is not a 40-character Z85 public key");
    keys.insert(std::move(key));
  }
  SC_CHECK(!keys.empty(), Errc::invalid_argument,
           path << " lists no client keys: no client could connect (one Z85 public key per line)");
  return keys;
}

ZapAuthenticator::ZapAuthenticator(zmq::context_t& ctx, std::set<std::string> allowed_z85)
    : sock_(ctx, zmq::socket_type::rep) {
  for (const auto& k : allowed_z85) allowed_.insert(k.size() == 32 ? k : decode_key(k));
  sock_.set(zmq::sockopt::linger, 0);
  sock_.bind("inproc://zeromq.zap.01");
  thread_ = std::thread([this] { run(); });
}

ZapAuthenticator::~ZapAuthenticator() {
  stop_ = true;
  thread_.join();
}

void ZapAuthenticator::run() {
  while (!stop_) {
    zmq_pollitem_t item{sock_.handle(), 0, ZMQ_POLLIN, 0};
    transport::poll_ignoring_signals(&item, 1, std::chrono::milliseconds(100));
    if (!(item.revents & ZMQ_POLLIN)) continue;
    // Request: version, request id, domain, address, identity, mechanism, credentials...
    std::vector<zmq::message_t> req;
    do {
      req.emplace_back();
      (void)sock_.recv(req.back());
    } while (req.back().more());
    const std::string version = req.size() > 0 ? req[0].to_string() : "";
    const std::string request_id = req.size() > 1 ? req[1].to_string() : "";
    const std::string mechanism = req.size() > 5 ? req[5].to_string() : "";
    const bool ok = version == "1.0" && mechanism == "CURVE" && req.size() > 6 && allowed_.count(req[6].to_string());
    if (!ok) denied_++;
    // Reply: version, request id, status code, status text, user id, metadata.
    sock_.send(zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
    sock_.send(zmq::buffer(request_id), zmq::send_flags::sndmore);
    sock_.send(zmq::buffer(std::string(ok ? "200" : "400")), zmq::send_flags::sndmore);
    sock_.send(zmq::buffer(std::string(ok ? "OK" : "client key not on the allow-list")), zmq::send_flags::sndmore);
    sock_.send(zmq::str_buffer(""), zmq::send_flags::sndmore);
    sock_.send(zmq::str_buffer(""), zmq::send_flags::none);
  }
}

}  // namespace stagecraft::service
