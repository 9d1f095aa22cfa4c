#pragma once
// The listening socket of the HTTP sides (service/http_gateway.hpp, service/node_http.hpp):
// bound with SO_REUSEADDR (a restarted process gets its port back while old connections
// linger in TIME_WAIT), failures named with the flag that chose the address.
#include <cstdint>
#include <string>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange without it

#include <boost/asio/ip/tcp.hpp>

#include "core/error.hpp"

namespace stagecraft::service {

/// Opens, binds and listens `acceptor` on host:port. Throws Error(invalid_argument) when the
/// host is not an IP address, Error(io) naming the address when it cannot listen; `option`
/// (e.g. "--http") names the flag in the first message.
inline void listen_http(boost::asio::ip::tcp::acceptor& acceptor, const std::string& host, uint16_t port,
                        const char* option) {
  boost::system::error_code ec;
  const auto address = boost::asio::ip::make_address(host, ec);
  SC_CHECK(!ec, Errc::invalid_argument, option << " host '" << host << "' is not an IP address");
  const boost::asio::ip::tcp::endpoint ep{address, port};
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.set_option(boost::asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(boost::asio::socket_base::max_listen_connections, ec);
  SC_CHECK(!ec, Errc::io, "cannot listen for HTTP on " << host << ":" << port << ": " << ec.message());
}

}  // namespace stagecraft::service
