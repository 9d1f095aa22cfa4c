#include "service/http_gateway.hpp"

#include <atomic>
#include <cstdio>
#include <ctime>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange without it

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "core/error.hpp"
#include "service/http_listen.hpp"
#include "service/job_server.hpp"
#include "transport/job_protocol.hpp"
#include "transport/wakeup.hpp"

namespace stagecraft::service {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Json = nlohmann::json;

namespace {

std::string base64(const std::string& in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += {t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], t[v & 63]};
  }
  if (i + 1 == in.size()) {
    const uint32_t v = uint8_t(in[i]) << 16;
    out += {t[v >> 18], t[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    const uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += {t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], '='};
  }
  return out;
}

/// The OpenAI API's error body.
Json openai_error(const std::string& message, const std::string& type, const std::string& code,
                  const std::string& param = "") {
  return {{"error",
           {{"message", message}, {"type", type}, {"param", param.empty() ? Json(nullptr) : Json(param)},
            {"code", code}}}};
}

http::status status_of(const std::string& code) {
  if (code == "overloaded" || code == "too_many_jobs") return http::status::too_many_requests;
  if (code == "shutting_down" || code == "cancelled") return http::status::service_unavailable;
  if (code == "deadline_exceeded") return http::status::gateway_timeout;
  if (code == "stage_failed" || code == "internal") return http::status::internal_server_error;
  return http::status::bad_request;
}

const char* type_of(const std::string& code) {
  if (code == "overloaded" || code == "too_many_jobs") return "rate_limit_error";
  if (code == "stage_failed" || code == "internal" || code == "shutting_down" || code == "cancelled" ||
      code == "deadline_exceeded")
    return "server_error";
  return "invalid_request_error";
}

/// The field an invalid_argument message is about, for the error body's `param`.
std::string param_of(const std::string& message) {
  for (const char* f : {"prompt", "steps", "guidance", "width", "height", "num_images", "scheduler", "deadline_ms",
                        "priority", "negative_prompt"})
    if (message.find(f) != std::string::npos) return f == std::string("num_images") ? "n" : f;
  return "";
}

}  // namespace

/// The in-process ZeroMQ connection to the job server: one thread owns the DEALER; HTTP
/// sessions hand it submits and get the terminal reply back on the Asio executor.
class GatewayBridge {
 public:
  using Done = std::function<void(transport::ServerReply)>;

  GatewayBridge(zmq::context_t& ctx, const std::string& endpoint) : sock_(ctx, zmq::socket_type::dealer) {
    sock_.set(zmq::sockopt::linger, 0);
    sock_.connect(endpoint);
    thread_ = std::thread([this] { run(); });
  }
  ~GatewayBridge() {
    stop_ = true;
    wake_.notify();
    thread_.join();
  }
  void submit(const std::string& id, std::string message, Done done) {
    {
      std::lock_guard lk(mu_);
      outgoing_.push_back(std::move(message));
      pending_[id] = std::move(done);
    }
    wake_.notify();
  }
  /// Forgets a job whose HTTP client gave up, and cancels it.
  void abandon(const std::string& id) {
    transport::ClientMessage m;
    m.op = transport::Op::cancel;
    m.id = id;
    {
      std::lock_guard lk(mu_);
      if (!pending_.erase(id)) return;
      outgoing_.push_back(transport::encode_client_message(m));
    }
    wake_.notify();
  }

 private:
  void run() {
    auto next_ping = std::chrono::steady_clock::now();
    while (!stop_) {
      zmq_pollitem_t items[2] = {{sock_.handle(), 0, ZMQ_POLLIN, 0}, {nullptr, wake_.fd(), ZMQ_POLLIN, 0}};
      transport::poll_ignoring_signals(items, 2, std::chrono::milliseconds(500));
      if (items[1].revents & ZMQ_POLLIN) wake_.drain();
      std::deque<std::string> out;
      bool busy = false;
      {
        std::lock_guard lk(mu_);
        out.swap(outgoing_);
        busy = !pending_.empty();
      }
      for (auto& m : out) sock_.send(zmq::buffer(m), zmq::send_flags::none);
      // The server cancels the jobs of a connection that stays silent: keep ours alive.
      if (busy && std::chrono::steady_clock::now() >= next_ping) {
        transport::ClientMessage ping;
        sock_.send(zmq::buffer(transport::encode_client_message(ping)), zmq::send_flags::none);
        next_ping = std::chrono::steady_clock::now() + std::chrono::seconds(2);
      }
      zmq::message_t msg;
      while (sock_.recv(msg, zmq::recv_flags::dontwait)) {
        transport::ServerReply r;
        try {
          r = transport::decode_server_reply(msg.data(), msg.size());
        } catch (const std::exception&) {
          continue;
        }
        if (r.type != "result" && r.type != "error") continue;
        Done done;
        {
          std::lock_guard lk(mu_);
          auto it = pending_.find(r.id);
          if (it == pending_.end()) continue;
          done = std::move(it->second);
          pending_.erase(it);
        }
        done(std::move(r));
      }
    }
  }

  zmq::socket_t sock_;
  transport::Wakeup wake_;
  std::mutex mu_;
  std::deque<std::string> outgoing_;
  std::unordered_map<std::string, Done> pending_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

struct HttpGateway::Impl {
  JobServer& server;
  HttpOptions opt;
  asio::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  std::unique_ptr<GatewayBridge> bridge;
  std::atomic<uint64_t> next_id{1};
  std::thread thread;

  Impl(JobServer& s, HttpOptions o) : server(s), opt(std::move(o)) {
    bridge = std::make_unique<GatewayBridge>(server.context(), server.inproc_endpoint());
    listen_http(acceptor, opt.host, opt.port, "--http");
    accept();
    thread = std::thread([this] { ioc.run(); });
  }

  ~Impl() {
    ioc.stop();
    thread.join();
  }

  void accept();
};

namespace {

/// One HTTP connection: reads requests (each within the read timeout), answers them in order.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, HttpGateway::Impl& gw) : stream_(std::move(socket)), gw_(gw) {}
  void start() { read(); }

 private:
  void read() {
    parser_.emplace();
    parser_->body_limit(gw_.opt.max_body_bytes);
    parser_->header_limit(16 * 1024);
    stream_.expires_after(gw_.opt.read_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::operation_aborted)
      return close();
    if (ec == http::error::body_limit)
      return reply_json(http::status::payload_too_large,
                        openai_error("the request body is larger than " + std::to_string(gw_.opt.max_body_bytes) +
                                         " bytes",
                                     "invalid_request_error", "body_too_large"),
                        false);
    if (ec)
      return reply_json(http::status::bad_request,
                        openai_error("malformed HTTP request: " + ec.message(), "invalid_request_error",
                                     "bad_request"),
                        false);
    request_ = parser_->release();
    route();
  }

  void route() {
    const std::string target(request_.target());
    const auto method = request_.method();
    if (target == "/healthz" && method == http::verb::get) return reply_text(http::status::ok, "ok\n", "text/plain");
    if (target == "/readyz" && method == http::verb::get) {
      const bool ready = gw_.server.ready();
      return reply_text(ready ? http::status::ok : http::status::service_unavailable,
                        ready ? "ready\n" : "not ready\n", "text/plain");
    }
    if (target == "/metrics" && method == http::verb::get)
      return reply_text(http::status::ok, gw_.server.metrics_text(), "text/plain; version=0.0.4; charset=utf-8");
    if (target == "/v1/images/generations") {
      if (method != http::verb::post)
        return reply_json(http::status::method_not_allowed,
                          openai_error("use POST", "invalid_request_error", "method_not_allowed"));
      return generate();
    }
    reply_json(http::status::not_found,
               openai_error("no such endpoint: " + target.substr(0, 128) +
                                " (try /v1/images/generations, /healthz, /readyz, /metrics)",
                            "invalid_request_error", "not_found"));
  }

  void generate() {
    const std::string type(request_[http::field::content_type]);
    if (type.rfind("application/json", 0) != 0)
      return reply_json(http::status::unsupported_media_type,
                        openai_error("Content-Type must be application/json, got '" + type.substr(0, 64) + "'",
                                     "invalid_request_error", "unsupported_media_type"));
    Json body = Json::parse(request_.body(), nullptr, false);
    if (body.is_discarded() || !body.is_object())
      return reply_json(http::status::bad_request,
                        openai_error("the body is not a JSON object", "invalid_request_error", "invalid_json"));
    transport::ClientMessage m;
    m.op = transport::Op::submit;
    m.id = "http-" + std::to_string(gw_.next_id++);
    std::string field;
    try {
      auto& f = m.submit;
      field = "prompt";
      if (!body.contains("prompt") || !body["prompt"].is_string())
        throw std::invalid_argument("prompt is required and must be a string");
      f.prompt = body["prompt"].get<std::string>();
      field = "n";
      if (body.contains("n")) f.num_images = body["n"].get<int64_t>();
      field = "size";
      if (body.contains("size")) {
        const std::string size = body["size"].get<std::string>();
        int w = 0, h = 0;
        char x = 0;
        if (std::sscanf(size.c_str(), "%d%c%d", &w, &x, &h) != 3 || x != 'x' || w <= 0 || h <= 0)
          throw std::invalid_argument("size must be \"WIDTHxHEIGHT\", e.g. \"256x256\"");
        f.width = w, f.height = h;
      }
      field = "response_format";
      if (body.contains("response_format") && body["response_format"] != "b64_json")
        throw std::invalid_argument("response_format must be \"b64_json\" (this server returns no URLs)");
      for (const char* key : {"seed", "steps", "priority", "deadline_ms"}) {
        field = key;
        if (!body.contains(key)) continue;
        const int64_t v = body[key].get<int64_t>();
        if (field == "seed") {
          if (v < 0) throw std::invalid_argument("seed must be >= 0");
          f.seed = uint64_t(v);
        }
        if (field == "steps") f.steps = v;
        if (field == "priority") f.priority = v;
        if (field == "deadline_ms") f.deadline_ms = v;
      }
      field = "guidance";
      if (body.contains("guidance")) f.guidance = body["guidance"].get<double>();
      field = "negative_prompt";
      if (body.contains("negative_prompt")) f.negative_prompt = body["negative_prompt"].get<std::string>();
      field = "scheduler";
      if (body.contains("scheduler")) f.scheduler = body["scheduler"].get<std::string>();
    } catch (const std::exception& e) {
      const std::string why = dynamic_cast<const Json::exception*>(&e) ? field + " has the wrong type" : e.what();
      return reply_json(http::status::bad_request, openai_error(why, "invalid_request_error", "invalid_value", field));
    }
    auto self = shared_from_this();
    const std::string id = m.id;
    // A generation may take long: the read timeout must not cut it; the job timeout does.
    stream_.expires_never();
    timer_.emplace(stream_.get_executor());
    timer_->expires_after(gw_.opt.job_timeout);
    timer_->async_wait([self, id](beast::error_code ec) {
      if (ec) return;
      self->gw_.bridge->abandon(id);
      self->reply_json(http::status::gateway_timeout,
                       openai_error("no result within the job timeout", "server_error", "timeout"));
    });
    gw_.bridge->submit(id, transport::encode_client_message(m), [self](transport::ServerReply r) {
      asio::post(self->stream_.get_executor(), [self, r = std::move(r)] { self->on_reply(r); });
    });
  }

  void on_reply(const transport::ServerReply& r) {
    if (!timer_) return;
    timer_->cancel();
    timer_.reset();
    if (r.type == "error") {
      Json body = openai_error(r.message, type_of(r.code), r.code, r.code == "invalid_argument" ? param_of(r.message) : "");
      std::optional<int64_t> retry = r.retry_after_ms;
      return reply_json(status_of(r.code), body, true, retry);
    }
    Json data = Json::array();
    for (const auto& im : r.images) data.push_back({{"b64_json", base64(im.data)}, {"seed", im.seed}});
    reply_json(http::status::ok, {{"created", std::time(nullptr)}, {"data", data}});
  }

  void reply_text(http::status status, std::string text, const char* type) {
    auto res = std::make_shared<http::response<http::string_body>>(status, request_.version());
    res->set(http::field::content_type, type);
    res->keep_alive(request_.keep_alive());
    res->body() = std::move(text);
    res->prepare_payload();
    write(res, request_.keep_alive());
  }

  void reply_json(http::status status, const Json& body, bool keep_alive = true,
                  std::optional<int64_t> retry_after_ms = std::nullopt) {
    auto res = std::make_shared<http::response<http::string_body>>(status, request_.version() ? request_.version() : 11);
    res->set(http::field::content_type, "application/json");
    if (retry_after_ms) res->set(http::field::retry_after, std::to_string((*retry_after_ms + 999) / 1000));
    keep_alive = keep_alive && request_.keep_alive();
    res->keep_alive(keep_alive);
    res->body() = body.dump();
    res->prepare_payload();
    write(res, keep_alive);
  }

  void write(std::shared_ptr<http::response<http::string_body>> res, bool keep_alive) {
    stream_.expires_after(gw_.opt.read_timeout);
    http::async_write(stream_, *res, [self = shared_from_this(), res, keep_alive](beast::error_code ec, size_t) {
      if (ec || !keep_alive) return self->close();
      self->read();
    });
  }

  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  }

  beast::tcp_stream stream_;
  HttpGateway::Impl& gw_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> request_;
  std::optional<asio::steady_timer> timer_;
};

}  // namespace

void HttpGateway::Impl::accept() {
  acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (!ec) std::make_shared<Session>(std::move(socket), *this)->start();
    accept();
  });
}

HttpGateway::HttpGateway(JobServer& server, HttpOptions options)
    : impl_(std::make_unique<Impl>(server, std::move(options))) {}

HttpGateway::~HttpGateway() = default;

uint16_t HttpGateway::port() const { return impl_->acceptor.local_endpoint().port(); }

}  // namespace stagecraft::service
