#include "clients/cpp/client.hpp"

#include "core/error.hpp"
#include "transport/wakeup.hpp"

namespace stagecraft::client {

using Clock = std::chrono::steady_clock;

Client::Client(const std::string& endpoint, ClientOptions options)
    : opt_(std::move(options)), sock_(ctx_, zmq::socket_type::dealer) {
  sock_.set(zmq::sockopt::linger, 0);
  if (!opt_.server_public_key.empty()) {
    sock_.set(zmq::sockopt::curve_serverkey, opt_.server_public_key);
    sock_.set(zmq::sockopt::curve_publickey, opt_.client_public_key);
    sock_.set(zmq::sockopt::curve_secretkey, opt_.client_secret_key);
  }
  try {
    sock_.connect(endpoint);
  } catch (const zmq::error_t& e) {
    SC_FAIL(Errc::invalid_argument, "cannot connect to '" << endpoint << "': " << e.what()
                                                          << " (expected tcp://HOST:PORT or ipc://PATH)");
  }
}

void Client::send(const transport::ClientMessage& m) {
  const std::string bytes = transport::encode_client_message(m);
  sock_.send(zmq::buffer(bytes), zmq::send_flags::none);
}

void Client::submit(const std::string& id, const SubmitFields& fields) {
  transport::ClientMessage m;
  m.op = transport::Op::submit;
  m.id = id;
  m.submit = fields;
  send(m);
}

void Client::cancel(const std::string& id) {
  transport::ClientMessage m;
  m.op = transport::Op::cancel;
  m.id = id;
  send(m);
}

void Client::request_status(const std::string& id) {
  transport::ClientMessage m;
  m.op = transport::Op::status;
  m.id = id;
  send(m);
}

void Client::ping() {
  transport::ClientMessage m;
  m.op = transport::Op::ping;
  send(m);
}

std::optional<ServerReply> Client::receive(std::chrono::milliseconds timeout) {
  zmq_pollitem_t item{sock_.handle(), 0, ZMQ_POLLIN, 0};
  transport::poll_ignoring_signals(&item, 1, timeout);
  zmq::message_t msg;
  if (!sock_.recv(msg, zmq::recv_flags::dontwait)) return std::nullopt;
  return transport::decode_server_reply(msg.data(), msg.size());
}

Outcome Client::generate(const std::string& id, SubmitFields fields, Progress progress,
                         std::chrono::milliseconds timeout) {
  fields.progress = fields.progress || bool(progress);
  submit(id, fields);
  const auto give_up = Clock::now() + timeout;
  auto next_ping = Clock::now() + opt_.heartbeat;
  for (;;) {
    const auto now = Clock::now();
    SC_CHECK(now < give_up, Errc::deadline_exceeded,
             "no terminal reply for job '" << id << "' within " << timeout.count()
                                           << " ms; is the server running? (it keeps the job; resubmit the same id)");
    if (now >= next_ping) {
      ping();
      next_ping = now + opt_.heartbeat;
    }
    const auto wait = std::min(std::chrono::duration_cast<std::chrono::milliseconds>(next_ping - now),
                               std::chrono::duration_cast<std::chrono::milliseconds>(give_up - now));
    auto r = receive(std::max(wait, std::chrono::milliseconds(1)));
    if (!r || r->id != id) continue;
    if (r->type == "progress" && progress) progress(r->step, r->of, r->image);
    if (r->type == "result") return Outcome{id, std::move(r->images), std::move(r->timings), "", "", std::nullopt};
    if (r->type == "error") return Outcome{id, {}, {}, r->code, r->message, r->retry_after_ms};
  }
}

nlohmann::json Client::info(transport::Op op, const char* type, std::chrono::milliseconds timeout) {
  transport::ClientMessage m;
  m.op = op;
  send(m);
  const auto give_up = Clock::now() + timeout;
  while (Clock::now() < give_up) {
    auto r = receive(std::chrono::duration_cast<std::chrono::milliseconds>(give_up - Clock::now()));
    if (r && r->type == type) return r->fields;
  }
  SC_FAIL(Errc::deadline_exceeded, "no " << type << " reply within " << timeout.count() << " ms; is the server running?");
}

nlohmann::json Client::health(std::chrono::milliseconds timeout) { return info(transport::Op::health, "health", timeout); }
nlohmann::json Client::stats(std::chrono::milliseconds timeout) { return info(transport::Op::stats, "stats", timeout); }

}  // namespace stagecraft::client
