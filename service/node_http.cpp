#include "service/node_http.hpp"

#include <optional>
#include <thread>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange without it

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "service/http_listen.hpp"

namespace stagecraft::service {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct NodeHttp::Impl {
  NodeHttpOptions opt;
  asio::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  std::thread thread;

  explicit Impl(NodeHttpOptions o) : opt(std::move(o)) {
    listen_http(acceptor, opt.host, opt.port, "--metrics-http");
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

/// One connection: a request at a time, each within the read timeout; closed after an error.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, NodeHttp::Impl& http) : stream_(std::move(socket)), http_(http) {}
  void start() { read(); }

 private:
  void read() {
    parser_.emplace();
    parser_->body_limit(0);  // nothing here takes a body
    parser_->header_limit(16 * 1024);
    stream_.expires_after(http_.opt.read_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::body_limit) return reply(http::status::payload_too_large, "no body is taken here\n", false);
    if (ec) return close();
    const auto req = parser_->release();
    const std::string target(req.target());
    const bool get = req.method() == http::verb::get;
    const bool known = target == "/healthz" || target == "/readyz" || target == "/metrics";
    if (!known)
      return reply(http::status::not_found,
                   "no such endpoint: " + target.substr(0, 128) +
                       " (a node's own page serves /healthz, /readyz, /metrics; jobs go to the head's job service)\n",
                   req.keep_alive());
    if (!get) return reply(http::status::method_not_allowed, "use GET\n", req.keep_alive());
    if (target == "/healthz") return reply(http::status::ok, "ok\n", req.keep_alive());
    if (target == "/readyz") {
      const bool ready = !http_.opt.ready || http_.opt.ready();
      return reply(ready ? http::status::ok : http::status::service_unavailable, ready ? "ready\n" : "not ready\n",
                   req.keep_alive());
    }
    reply(http::status::ok, http_.opt.metrics ? http_.opt.metrics() : std::string(), req.keep_alive(),
          "text/plain; version=0.0.4; charset=utf-8");
  }

  void reply(http::status status, std::string body, bool keep_alive, const char* type = "text/plain") {
    auto res = std::make_shared<http::response<http::string_body>>(status, 11);
    res->set(http::field::content_type, type);
    res->body() = std::move(body);
    res->keep_alive(keep_alive);
    res->prepare_payload();
    http::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code ec, size_t) {
      if (ec || !res->keep_alive()) return self->close();
      self->read();
    });
  }

  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  }

  beast::tcp_stream stream_;
  NodeHttp::Impl& http_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
};

}  // namespace

void NodeHttp::Impl::accept() {
  acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (!ec) std::make_shared<Session>(std::move(socket), *this)->start();
    if (acceptor.is_open()) accept();
  });
}

NodeHttp::NodeHttp(NodeHttpOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
NodeHttp::~NodeHttp() = default;
uint16_t NodeHttp::port() const { return impl_->acceptor.local_endpoint().port(); }

}  // namespace stagecraft::service
