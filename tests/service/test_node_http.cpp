// A node's own HTTP page (service/node_http.hpp), driven over raw loopback sockets: what
// probes and scrapes get, and that bad or slow requests are answered or cut off without
// stopping the page for the next client.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "core/error.hpp"
#include "service/node_http.hpp"

using namespace stagecraft;
using namespace std::chrono_literals;

namespace {

/// A connected loopback socket to `port`; -1 if it cannot connect.
int connect_to(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{5, 0};  // a test that waits longer has failed
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

/// Everything the server sends until it closes the connection (or 5 s pass).
std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, size_t(n));
  return out;
}

/// One request on a fresh connection ("Connection: close"), the whole response back.
std::string ask(uint16_t port, const std::string& request) {
  const int fd = connect_to(port);
  REQUIRE(fd >= 0);
  REQUIRE(::send(fd, request.data(), request.size(), 0) == ssize_t(request.size()));
  std::string r = read_all(fd);
  ::close(fd);
  return r;
}

std::string get(uint16_t port, const std::string& path) {
  return ask(port, "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
}

}  // namespace

TEST_CASE("a node's page answers probes and scrapes from its callbacks") {
  std::atomic<bool> ready{false};
  std::atomic<int> scrapes{0};
  service::NodeHttpOptions o;
  o.ready = [&] { return ready.load(); };
  o.metrics = [&] { return "stagecraft_node_jobs_entered_total{node=\"dit\"} " + std::to_string(++scrapes) + "\n"; };
  service::NodeHttp http(o);
  REQUIRE(http.port() != 0);

  CHECK(get(http.port(), "/healthz").find("200 OK") != std::string::npos);
  CHECK(get(http.port(), "/readyz").find("503 Service Unavailable") != std::string::npos);
  ready = true;
  CHECK(get(http.port(), "/readyz").find("200 OK") != std::string::npos);
  const std::string m = get(http.port(), "/metrics");
  CHECK(m.find("text/plain; version=0.0.4") != std::string::npos);
  CHECK(m.find("stagecraft_node_jobs_entered_total{node=\"dit\"} 1") != std::string::npos);
  CHECK(get(http.port(), "/metrics").find("} 2") != std::string::npos);  // computed per scrape
}

TEST_CASE("a node's page refuses what it does not serve, saying what it does") {
  service::NodeHttp http(service::NodeHttpOptions{});
  const std::string nf = get(http.port(), "/v1/images/generations");
  CHECK(nf.find("404 Not Found") != std::string::npos);
  CHECK(nf.find("jobs go to the head's job service") != std::string::npos);
  CHECK(ask(http.port(), "DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").find("405") !=
        std::string::npos);
  CHECK(ask(http.port(), "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
            .find("413") != std::string::npos);
  CHECK(get(http.port(), "/healthz").find("200 OK") != std::string::npos);  // still serving
}

TEST_CASE("a client that sends too slowly is cut off and the page keeps serving") {
  service::NodeHttpOptions o;
  o.read_timeout = 200ms;
  service::NodeHttp http(o);
  const int slow = connect_to(http.port());
  REQUIRE(slow >= 0);
  const std::string part = "GET /metrics HTTP/1.1\r\nHo";
  REQUIRE(::send(slow, part.data(), part.size(), 0) == ssize_t(part.size()));
  // Another client is served meanwhile.
  CHECK(get(http.port(), "/healthz").find("200 OK") != std::string::npos);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string r = read_all(slow);  // returns when the server closes the connection
  const auto waited = std::chrono::steady_clock::now() - t0;
  ::close(slow);
  CHECK(r.empty());
  CHECK(waited < 3s);
  CHECK(get(http.port(), "/healthz").find("200 OK") != std::string::npos);
}

TEST_CASE("a node's page on an address it cannot take says which") {
  service::NodeHttp first(service::NodeHttpOptions{});
  service::NodeHttpOptions o;
  o.port = first.port();
  o.host = "127.0.0.1";
  // SO_REUSEADDR does not let two listeners share a port on Linux.
  CHECK_THROWS_WITH_AS(service::NodeHttp{o}, doctest::Contains("cannot listen for HTTP on 127.0.0.1:"), Error);
  o.host = "not-an-ip";
  CHECK_THROWS_WITH_AS(service::NodeHttp{o}, doctest::Contains("is not an IP address"), Error);
}
